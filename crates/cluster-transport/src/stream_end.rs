//! The end of a [`MessageStream`](crate::MessageStream), shared by the transports: once `recv`
//! has returned [`Incoming::Closed`] or an error, every later call fails the same way.

use crate::{CloseInfo, Incoming, TransportError};

/// How a stream ended, if it has.
#[derive(Debug, Default)]
pub(crate) struct StreamEnd(Option<Done>);

#[derive(Debug)]
enum Done {
    Closed(CloseInfo),
    Failed,
}

impl StreamEnd {
    /// `Ok` while the stream is open; after its end, the error a further `recv` returns:
    /// [`TransportError::Closed`] after a close handshake, else [`TransportError::Lost`].
    pub(crate) fn check(&self) -> Result<(), TransportError> {
        match &self.0 {
            Some(Done::Closed(info)) => Err(TransportError::Closed(info.clone())),
            Some(Done::Failed) => Err(TransportError::lost("the stream has ended")),
            None => Ok(()),
        }
    }

    /// Notes what `recv` returned: [`Incoming::Closed`] and errors end the stream.
    pub(crate) fn record(&mut self, result: &Result<Incoming, TransportError>) {
        match result {
            Ok(Incoming::Closed(info)) => self.0 = Some(Done::Closed(info.clone())),
            Err(_) => self.0 = Some(Done::Failed),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_message_keeps_the_stream_open() {
        let mut end = StreamEnd::default();
        end.record(&Ok(Incoming::Text(Bytes::from_static(b"x"))));
        assert!(end.check().is_ok());
    }

    #[test]
    fn after_a_close_every_read_says_closed() {
        let mut end = StreamEnd::default();
        end.record(&Ok(Incoming::Closed(CloseInfo::normal("bye"))));
        for _ in 0..2 {
            match end.check() {
                Err(TransportError::Closed(info)) => assert_eq!(info, CloseInfo::normal("bye")),
                other => panic!("expected Closed, got {other:?}"),
            }
        }
    }

    #[test]
    fn after_an_error_every_read_says_lost() {
        let mut end = StreamEnd::default();
        end.record(&Err(TransportError::protocol("bad")));
        assert!(
            matches!(end.check(), Err(TransportError::Lost { reason, source: None }) if reason == "the stream has ended")
        );
    }
}

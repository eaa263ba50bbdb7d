//! Wire rules both ends of an ETP connection keep, written once: the client's sans-IO
//! [`Session`](crate::session::Session) and the server-side runtime (`cluster-etp`'s `Conn`)
//! take them from here.
//!
//! - **Ack ids**: each side numbers its own emits with ack per connection, from
//!   [`FIRST_ACK_ID`] up by one; [`NO_ACK`] (0) asks for no ack ([`wants_ack`]).
//! - **Ack matching**: a frame named `__ack_<event>` is an acknowledgement, matched by its ack
//!   id alone ([`acked_id`]), never dispatched; the event name after `__ack_` is not checked,
//!   and an ack for an id nobody waits for is ignored.
//! - **Ping ids**: our pings are numbered from [`FIRST_PING_ID`]; the payload is the id as 8
//!   big-endian bytes ([`ping_payload`]), and a pong is ours when its payload decodes to the id
//!   of a ping we wait for ([`pong_id`]); any other pong is ignored.
//! - **Close**: the end of a connection takes at most [`CLOSE_TIMEOUT`].
//! - **Write high-water mark**: a side stops taking in the peer's events while *more than* the
//!   mark of bytes wait to be written ([`over_high_water`]; 1 MiB by default,
//!   [`DEFAULT_WRITE_HIGH_WATER`]), so a peer that does not read what it is sent is slowed down
//!   to its own reading pace.
//!
//! Pure values and functions: no IO, no clock, no runtime.
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use cluster_proto::{frame, wire, Frame};
//!
//! // A ping's payload, and the pong that echoes it.
//! let payload = wire::ping_payload(wire::FIRST_PING_ID);
//! assert_eq!(wire::pong_id(&payload), Some(1));
//! assert_eq!(wire::pong_id(b"foreign"), None);
//!
//! // An ack is matched by its id, whatever the event name after `__ack_`.
//! let ack = Frame::decode(frame::encode_ack_to_bytes("ANY:EVENT", 7, b"ok")).unwrap();
//! assert_eq!(wire::acked_id(&ack), Some(7));
//! let event = Frame::decode(Bytes::from_static(b"CONFIG:SEND||3||{}")).unwrap();
//! assert_eq!(wire::acked_id(&event), None);
//! assert!(wire::wants_ack(event.ack_id()));
//!
//! assert!(!wire::over_high_water(1 << 20, wire::DEFAULT_WRITE_HIGH_WATER));
//! assert!(wire::over_high_water((1 << 20) + 1, wire::DEFAULT_WRITE_HIGH_WATER));
//! ```

use crate::frame::Frame;
use std::time::Duration;

/// The ack id of a frame that asks for no acknowledgement.
pub const NO_ACK: u64 = 0;

/// The ack id of a side's first emit with ack on a connection; each next one is one more.
pub const FIRST_ACK_ID: u64 = 1;

/// Whether an event frame with `ack_id` asks the receiver for an acknowledgement.
#[must_use]
pub const fn wants_ack(ack_id: u64) -> bool {
    ack_id != NO_ACK
}

/// The ack id `frame` acknowledges, when it is an acknowledgement (`__ack_<event>`); `None`
/// for an event. Acks are matched by this id alone: the event name is not checked.
#[must_use]
pub fn acked_id(frame: &Frame) -> Option<u64> {
    frame.is_ack().then(|| frame.ack_id())
}

/// The id of a side's first ping on a connection; each next one is one more.
pub const FIRST_PING_ID: u64 = 1;

/// The payload of the ping numbered `id`: the id as 8 big-endian bytes.
#[must_use]
pub const fn ping_payload(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The ping id a pong's `payload` carries: `None` when it is not 8 bytes (not a ping of ours).
#[must_use]
pub fn pong_id(payload: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(payload).ok().map(u64::from_be_bytes)
}

/// How long the end of a connection may take: after a side sends a close, how long it waits
/// for the peer's close reply (and for what was queued before the close to be written);
/// after the peer closed, how long the writer may take to flush and echo the close. Past it
/// the transport is dropped, which the peer sees as a broken connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The default write high-water mark: 1 MiB (see [`over_high_water`]).
pub const DEFAULT_WRITE_HIGH_WATER: usize = 1 << 20;

/// Whether `queued` bytes waiting to be written are over the high-water mark `high_water`:
/// then the side takes in no further event of the peer's until the queue is back at or under
/// the mark. A mark of `0` means: only while nothing waits.
#[must_use]
pub const fn over_high_water(queued: usize, high_water: usize) -> bool {
    queued > high_water
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn ping_ids_round_trip_big_endian() {
        for id in [FIRST_PING_ID, 2, 0x0102_0304_0506_0708, u64::MAX] {
            assert_eq!(pong_id(&ping_payload(id)), Some(id));
        }
        assert_eq!(ping_payload(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(pong_id(&[0; 7]), None);
        assert_eq!(pong_id(&[0; 9]), None);
        assert_eq!(pong_id(b""), None);
    }

    #[test]
    fn acks_are_matched_by_id_only() {
        let ack = Frame::decode(Bytes::from_static(b"__ack_X||5||no")).unwrap();
        assert_eq!(acked_id(&ack), Some(5));
        let event = Frame::decode(Bytes::from_static(b"X||5||no")).unwrap();
        assert_eq!(acked_id(&event), None);
        assert!(wants_ack(5));
        assert!(!wants_ack(NO_ACK));
    }

    #[test]
    fn the_high_water_mark_is_exceeded_only_above_it() {
        assert!(!over_high_water(0, 0));
        assert!(over_high_water(1, 0));
        assert!(!over_high_water(10, 10));
        assert!(over_high_water(11, 10));
    }
}

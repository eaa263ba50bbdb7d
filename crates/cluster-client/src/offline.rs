//! [`OfflineClient`]: the config from a local file instead of the config service (as isp-kit's
//! `cluster.OfflineClient`).

use crate::apply::panic_message;
use crate::error::OfflineError;
use crate::handler::EventHandler;
use bytes::Bytes;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

/// Reads the remote config from a local file and hands it to the handler's config receiver,
/// once, bounded by the handler's config timeout. For running a module without a config
/// service (local development, tests).
///
/// Routes and required modules are not served: their receivers are never called.
///
/// # Examples
/// ```no_run
/// use cluster_client::{EventHandler, OfflineClient};
/// use bytes::Bytes;
///
/// # async fn demo() -> Result<(), cluster_client::OfflineError> {
/// let handler = EventHandler::new().remote_config_receiver(|config: Bytes| async move {
///     println!("config: {}", String::from_utf8_lossy(&config));
///     Ok::<(), std::convert::Infallible>(())
/// });
/// OfflineClient::new("conf/remote.json").run(handler).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OfflineClient {
    path: PathBuf,
}

impl OfflineClient {
    /// A client that reads the config from `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Reads the file and applies it. Without a config receiver, does nothing (and does not
    /// read the file), as in Go.
    ///
    /// # Errors
    /// [`OfflineError::Read`] when the file cannot be read; [`OfflineError::Receiver`] when the
    /// receiver refuses the config, panics, or takes longer than the handler's timeout (its
    /// future is then dropped).
    pub async fn run(&self, handler: EventHandler) -> Result<(), OfflineError> {
        let Some(receiver) = handler.config.clone() else {
            return Ok(());
        };
        let config = tokio::fs::read(&self.path)
            .await
            .map_err(|source| OfflineError::Read {
                path: self.path.display().to_string(),
                source,
            })?;
        let timeout = handler.config_apply_timeout;
        let apply =
            AssertUnwindSafe(async move { receiver.receive_config(Bytes::from(config)).await })
                .catch_unwind();
        match tokio::time::timeout(timeout, apply).await {
            Ok(Ok(Ok(()))) => {
                tracing::info!(path = %self.path.display(), "offline config applied");
                Ok(())
            }
            Ok(Ok(Err(err))) => Err(OfflineError::Receiver(err.to_string())),
            Ok(Err(panic)) => Err(OfflineError::Receiver(format!(
                "panicked: {}",
                panic_message(&*panic)
            ))),
            Err(_) => Err(OfflineError::Receiver(format!(
                "timed out after {timeout:?}"
            ))),
        }
    }

    /// Does nothing: there is no connection. Present for parity with [`crate::Client::close`].
    pub async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn temp_file(name: &str, content: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "cluster-client-offline-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn hands_the_file_to_the_config_receiver() {
        let path = temp_file("ok", br#"{"a":1}"#);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let handler = EventHandler::new().remote_config_receiver(move |c: Bytes| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(c);
                Ok::<(), std::io::Error>(())
            }
        });
        let client = OfflineClient::new(&path);
        client.run(handler).await.unwrap();
        client.close().await;
        assert_eq!(*seen.lock().unwrap(), [Bytes::from_static(br#"{"a":1}"#)]);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn reports_missing_files_and_receiver_failures() {
        let receiver = |_: Bytes| async { Err::<(), _>("nope") };
        let missing = OfflineClient::new("/nonexistent/cluster-client/config.json");
        let err = missing
            .run(EventHandler::new().remote_config_receiver(receiver))
            .await
            .unwrap_err();
        assert!(matches!(err, OfflineError::Read { .. }), "{err}");
        // Without a config receiver the file is not even read.
        missing.run(EventHandler::new()).await.unwrap();

        let path = temp_file("refused", b"{}");
        let err = OfflineClient::new(&path)
            .run(EventHandler::new().remote_config_receiver(receiver))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "receive config: nope");
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_the_receiver_by_the_handler_timeout() {
        let path = temp_file("slow", b"{}");
        let slow = |_: Bytes| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), std::io::Error>(())
        };
        let handler =
            EventHandler::new().remote_config_receiver_with_timeout(slow, Duration::from_secs(1));
        let err = OfflineClient::new(&path).run(handler).await.unwrap_err();
        assert!(err.to_string().contains("timed out after 1s"), "{err}");
        let handler = EventHandler::new().remote_config_receiver(|c: Bytes| async move {
            assert!(c.is_empty(), "bug");
            Ok::<(), std::io::Error>(())
        });
        let err = OfflineClient::new(&path).run(handler).await.unwrap_err();
        assert!(err.to_string().contains("panicked: bug"), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}

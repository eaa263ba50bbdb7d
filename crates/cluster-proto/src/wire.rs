//! Wire rules both ends of an ETP connection keep, written once: the client's sans-IO
//! [`Session`](crate::session::Session) and the server-side runtime (`cluster-etp`'s `Conn`)
//! take them from here.
//!
//! Pure values and functions: no IO, no clock, no runtime.
//!
//! # Example
//! ```
//! use cluster_proto::wire;
//! use std::time::Duration;
//!
//! assert_eq!(wire::CLOSE_TIMEOUT, Duration::from_secs(1));
//! ```

use std::time::Duration;

/// How long the end of a connection may take: after a side sends a close, how long it waits
/// for the peer's close reply (and for what was queued before the close to be written);
/// after the peer closed, how long the writer may take to flush and echo the close. Past it
/// the transport is dropped, which the peer sees as a broken connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

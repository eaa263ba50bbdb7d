//! Settings of a connection ([`ConnConfig`]) and the constants its defaults and its end use.

use cluster_transport::log_limit::LogLimit;

/// The default of [`ConnConfig::max_concurrent_handlers`].
pub const DEFAULT_MAX_CONCURRENT_HANDLERS: usize = 256;
/// The default of [`ConnConfig::flush_batch`].
pub const DEFAULT_FLUSH_BATCH: usize = 64;
/// The default of [`ConnConfig::queued_bytes_high_water`]: 1 MiB, both ends' default
/// ([`cluster_proto::wire::DEFAULT_WRITE_HIGH_WATER`]). Far more than the control
/// traffic of a cluster ever queues, and short enough that a producer pacing itself with
/// [`Conn::writable`](super::Conn::writable) does not run megabytes ahead of its socket: a
/// frame queued that far ahead has left the cache by the time the writer copies it (the
/// `etp` bench's flood on 2 workers, 2026-11-27: 0.86–0.95 of the floor paced at 1 MiB
/// against 0.68–0.74 unpaced, three interleaved runs; see the bench's docs).
pub const DEFAULT_QUEUED_BYTES_HIGH_WATER: usize = cluster_proto::wire::DEFAULT_WRITE_HIGH_WATER;
/// The default of [`ConnConfig::max_queued_bytes`]: 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;
/// The close code sent when the write queue goes over [`ConnConfig::max_queued_bytes`]
/// (1008, policy violation: the peer does not read what it is sent).
pub const CLOSE_QUEUE_OVERFLOW: u16 = cluster_transport::CLOSE_POLICY_VIOLATION;
/// How long the end of a connection may take: the rule of both ends, from
/// [`cluster_proto::wire::CLOSE_TIMEOUT`].
pub use cluster_proto::wire::CLOSE_TIMEOUT;

/// Settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// How many [`Reply::Later`](super::Reply::Later) futures may run at once on this connection
    /// (default [`DEFAULT_MAX_CONCURRENT_HANDLERS`], 256). When that many run, the reader waits for
    /// one to finish before it reads on, so a fast peer is slowed down instead of filling memory.
    /// `0` is taken as `1`.
    pub max_concurrent_handlers: usize,
    /// The writer flushes the transport when its queue is empty or after this many frames fed
    /// without a flush, whichever comes first (default [`DEFAULT_FLUSH_BATCH`], 64). `0` is
    /// taken as `1` (flush every frame). It counts the frames the writer task feeds: frames
    /// that callers feed themselves while the writer waits (see the writer's docs) go out at
    /// the writer's next flush, or once the transport's own write buffer is full.
    pub flush_batch: usize,
    /// When more bytes than this wait in the write queue, the reader dispatches no further
    /// event, and [`Conn::writable`](super::Conn::writable) waits, until the writer has
    /// drained the queue to this mark (default [`DEFAULT_QUEUED_BYTES_HIGH_WATER`], 1 MiB).
    /// Acks, pongs and the peer's close are still read meanwhile; see the
    /// [module docs](super#backpressure). `0` means: dispatch an event only when the queue is
    /// empty.
    pub queued_bytes_high_water: usize,
    /// The most bytes the write queue holds (default [`DEFAULT_MAX_QUEUED_BYTES`], 64 MiB). A
    /// frame that would take the queue over it is refused with
    /// [`ConnError::QueueFull`](super::ConnError::QueueFull), and the connection is closed with
    /// [`CLOSE_QUEUE_OVERFLOW`] after what is queued (or dropped after [`CLOSE_TIMEOUT`] if the
    /// peer still does not read). Keep it well above `queued_bytes_high_water` and the largest
    /// frame you send.
    pub max_queued_bytes: usize,
    /// How many warnings a peer can cause per interval (default [`LogLimit::default`]: 5 per
    /// 10 s, then one summary line with the count); see the [module docs](super#log-volume).
    pub log_limit: LogLimit,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            max_concurrent_handlers: DEFAULT_MAX_CONCURRENT_HANDLERS,
            flush_batch: DEFAULT_FLUSH_BATCH,
            queued_bytes_high_water: DEFAULT_QUEUED_BYTES_HIGH_WATER,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            log_limit: LogLimit::default(),
        }
    }
}

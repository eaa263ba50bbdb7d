//! A module in one call (work in progress).

pub mod duration;
pub mod local;
pub mod logs;
mod observability;

pub use duration::GoDuration;
pub use local::LocalConfig;
pub use logs::LogLevel;

//! cluster-client: work in progress.

//! cluster-testkit: work in progress.

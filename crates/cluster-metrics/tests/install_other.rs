//! `install` refuses to replace a global recorder set by someone else.

use cluster_metrics::prometheus::{self, InstallError};

#[test]
fn another_global_recorder_is_an_error() {
    // Any other recorder: here a second one of ours, set directly.
    let (_, recorder) = prometheus::build();
    cluster_metrics::metrics::set_global_recorder(recorder).unwrap();
    assert_eq!(
        prometheus::install().unwrap_err(),
        InstallError::OtherRecorder
    );
    assert!(prometheus::installed().is_none());
    assert!(
        prometheus::install()
            .unwrap_err()
            .to_string()
            .contains("already set")
    );
}

//! isp-kit's metrics, on the `metrics` facade (work in progress).

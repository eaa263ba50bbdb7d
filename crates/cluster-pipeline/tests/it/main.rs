//! The pipeline's integration tests, in one test binary; each test captures its logs with a
//! subscriber of its own thread. `trace_context.rs` stays a binary of its own: it installs the
//! global OpenTelemetry set-up (`SpanRecorder::global`).

mod axum;
mod layers;

//! Log set-up shared by both binaries: one JSON object per line on stderr, filtered by
//! `RUST_LOG` (default `info`). Lambda forwards stderr to CloudWatch as-is.

use tracing_subscriber::EnvFilter;

/// Install the global JSON subscriber. Safe to call once per process.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

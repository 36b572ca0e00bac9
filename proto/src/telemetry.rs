//! Logging: JSON lines by default, human-readable with `LOG_FORMAT=pretty`, filtered by
//! `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,amq_protocol=warn"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE).with_writer(std::io::stderr);
    // A second init (tests starting several services in one process) keeps the first.
    let _ = if pretty {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    };
}

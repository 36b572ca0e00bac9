//! Logging and tracing, set up once per process by [`init`].
//!
//! Logs: JSON lines by default, human-readable with `LOG_FORMAT=pretty`, filtered by
//! `RUST_LOG` (default `info`). Errors are logged once, where they are handled, with their
//! causes: `error.cause_chain = %Chain(&e)`.
//!
//! Traces ([`otlp`]): with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, the
//! process's `tracing` spans are also OpenTelemetry spans, exported over OTLP/HTTP
//! (protobuf) in batches from the SDK's own thread, and every log line inside a span carries
//! its `trace_id` and `span_id` ([`log_ids`]). Unset, no OpenTelemetry layer is installed:
//! spans cost what they cost before, and [`propagation`] reads and writes no `traceparent`.

pub mod log_ids;
pub mod otlp;
pub mod propagation;

use std::fmt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the process's subscriber: logs, and trace export when configured. The service
/// name of the spans is `OTEL_SERVICE_NAME`, else the binary's name (`gateway`, `agent`, ...).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,amq_protocol=warn"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let tracer = otlp::tracer_from_env(&binary_name());
    let ids = tracer.is_some();
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Our own spans only: their fields are declared where they are made (ids, names,
            // counts, outcomes), while a log event may carry an error's text (a URL, a server's
            // message) and a library's span whatever the library puts in it. Events stay in
            // the logs, which name the span they were written in.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && ours(meta.target()) && meta.name() != DETACHED
            }))
    });
    let fmt_layer = tracing_subscriber::fmt::layer().with_span_events(FmtSpan::NONE).with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // A second init (tests starting several services in one process) keeps the first.
    let _ = if pretty {
        registry
            .with(fmt_layer.event_format(log_ids::WithTraceIds::new(
                tracing_subscriber::fmt::format().compact(),
                ids,
                false,
            )))
            .try_init()
    } else {
        let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true);
        registry
            .with(
                fmt_layer
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(log_ids::WithTraceIds::new(json, ids, true)),
            )
            .try_init()
    };
}

/// Exports the spans still buffered; call before the process exits.
pub fn shutdown() {
    otlp::shutdown();
}

const DETACHED: &str = "detached";

/// A root span for work that outlives the span it starts in (an MCP session opened during one
/// task serves later ones): libraries that spawn tasks keep the current span alive in them.
/// Never exported.
pub fn detached() -> tracing::Span {
    tracing::info_span!(parent: None, "detached")
}

/// Whether a span was made by Euglena's crates (targets are module paths).
fn ours(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    matches!(krate, "gateway" | "agent" | "runtime" | "proto" | "metrics_sidecar" | "autoscaler")
}

fn binary_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "euglena".to_owned())
}

/// An error and its sources on one line, `outer: cause: root cause`, the same in JSON and
/// pretty logs (the JSON formatter records only an error's own message). A cause whose
/// text equals the previous one (a transparent wrapper) is shown once.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            if text != last {
                write!(f, ": {text}")?;
            }
            last = text;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading metrics failed")]
        Read(#[source] Inner),
        #[error(transparent)]
        Same(Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("service unavailable")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out after 2s");
        let e = Outer::Read(Inner(io()));
        assert_eq!(Chain(&e).to_string(), "reading metrics failed: service unavailable: timed out after 2s");
        let e = Outer::Same(Inner(io()));
        assert_eq!(Chain(&e).to_string(), "service unavailable: timed out after 2s");
    }
}

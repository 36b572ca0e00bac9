//! The OpenTelemetry tracer provider, built from the standard `OTEL_*` variables when an OTLP
//! endpoint is configured. The SDK reads the rest itself: `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s: every export is bounded), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`(`_ARG`) and the batch settings
//! `OTEL_BSP_*` (a batch every 5 s by default).
//!
//! Export runs on the batch processor's own thread with a blocking HTTP client, so a slow or
//! absent collector never holds a tokio worker; a full queue drops spans, never blocks.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether this process exports spans (set once by `telemetry::init`).
pub fn is_on() -> bool {
    PROVIDER.get().is_some()
}

/// The variables that decide whether spans are exported (the SDK reads the rest).
#[derive(Debug, Default)]
pub struct Switch {
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub sdk_disabled: Option<String>,
    pub traces_exporter: Option<String>,
}

impl Switch {
    fn from_process() -> Self {
        Self {
            endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
            traces_endpoint: std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok(),
            sdk_disabled: std::env::var("OTEL_SDK_DISABLED").ok(),
            traces_exporter: std::env::var("OTEL_TRACES_EXPORTER").ok(),
        }
    }

    /// An OTLP endpoint (the general one or the traces one), and neither
    /// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. An empty value is unset
    /// (compose passes every variable, set or not).
    pub fn on(&self) -> bool {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        let is = |v: &Option<String>, word: &str| v.as_deref().is_some_and(|v| v.trim().eq_ignore_ascii_case(word));
        (set(&self.endpoint) || set(&self.traces_endpoint))
            && !is(&self.sdk_disabled, "true")
            && !is(&self.traces_exporter, "none")
    }
}

/// The tracer for the `tracing` bridge, or `None` when export is not configured. An exporter
/// that cannot be built (a malformed endpoint) is a configuration error: exit 2 naming it.
pub(super) fn tracer_from_env(service: &str) -> Option<SdkTracer> {
    if !Switch::from_process().on() {
        return None;
    }
    let exporter =
        match opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{service}: OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces: {e}");
                std::process::exit(2);
            }
        };
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME, read by the builder's detectors, wins over the binary's name.
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("euglena");
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

/// Flushes and stops the exporter; spans ended after this are dropped.
pub(super) fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        tracing::warn!(error = %e, "trace export did not shut down cleanly");
    }
}

#[cfg(test)]
mod tests {
    use super::Switch;

    #[test]
    fn export_needs_an_endpoint_and_no_opt_out() {
        let url = || Some("http://127.0.0.1:4318".to_owned());
        assert!(!Switch::default().on());
        assert!(!Switch { endpoint: Some(" ".into()), ..Switch::default() }.on());
        assert!(Switch { endpoint: url(), ..Switch::default() }.on());
        assert!(Switch { traces_endpoint: url(), ..Switch::default() }.on());
        assert!(!Switch { endpoint: url(), sdk_disabled: Some("TRUE".into()), ..Switch::default() }.on());
        assert!(!Switch { endpoint: url(), traces_exporter: Some("none".into()), ..Switch::default() }.on());
        assert!(Switch { endpoint: url(), sdk_disabled: Some("false".into()), ..Switch::default() }.on());
    }
}

//! W3C trace context across processes: a span continues the `traceparent` a client sent (or
//! the one a task carries), and a task records the context of the span that submitted it.
//! Everything here is a no-op while trace export is off, so the hot path pays nothing.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::otlp;

/// The W3C `traceparent` of the current span (`00-{trace}-{span}-{flags}`), when tracing is
/// on and the span is valid.
pub fn current_traceparent() -> Option<String> {
    if !otlp::is_on() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Makes `span` (not yet entered) a child of the remote span `traceparent` names; `false`
/// when tracing is off or the value is not a valid `traceparent` (the span then starts a
/// trace of its own).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) -> bool {
    if !otlp::is_on() {
        return false;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// [`continue_trace`] from a request's `traceparent` header, if it has a readable one.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    if !otlp::is_on() {
        return false;
    }
    headers.get("traceparent").and_then(|v| v.to_str().ok()).is_some_and(|tp| continue_trace(span, tp))
}

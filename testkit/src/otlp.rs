//! A test OTLP/HTTP receiver on 127.0.0.1: it keeps every `POST /v1/traces` body as sent
//! (to search the raw bytes for what must never be exported) and decodes the spans with
//! `opentelemetry-proto`, the exporter's own message definitions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One received span, flattened: ids as lowercase hex, attributes as strings.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    pub attributes: HashMap<String, String>,
}

#[derive(Default)]
struct Received {
    bodies: Vec<Bytes>,
    spans: Vec<Span>,
}

/// The receiver; serves until dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new().route("/v1/traces", post(collect)).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind otlp receiver");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, received, task }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for processes that export here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().expect("lock").spans.clone()
    }

    /// Every request body received, concatenated: what left the processes, byte for byte.
    pub fn raw(&self) -> Vec<u8> {
        self.received.lock().expect("lock").bodies.iter().flat_map(|b| b.iter().copied()).collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collect(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> axum::http::StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Span {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                        .collect(),
                });
            }
        }
    }
    let mut r = received.lock().expect("lock");
    r.bodies.push(body);
    r.spans.extend(spans);
    axum::http::StatusCode::OK
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The spans of one trace as an indented tree (children under their parent, in start
/// order as received), for a test's failure message and the report.
pub fn tree(spans: &[Span]) -> String {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    fn walk(spans: &[Span], parent: &str, depth: usize, out: &mut String) {
        for s in spans.iter().filter(|s| s.parent_id == parent) {
            let mut attrs: Vec<String> = s
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with("code.") && !k.starts_with("thread.") && k.as_str() != "target")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attrs.sort();
            out.push_str(&format!("{}{} [{}] {}\n", "  ".repeat(depth), s.name, s.service, attrs.join(" ")));
            walk(spans, &s.span_id, depth + 1, out);
        }
    }
    // Roots: no parent, or a parent outside the set (the client's own span).
    let mut roots: Vec<&str> =
        spans.iter().filter(|s| !ids.contains(s.parent_id.as_str())).map(|s| s.parent_id.as_str()).collect();
    roots.dedup();
    let mut seen = std::collections::HashSet::new();
    for r in roots {
        if seen.insert(r) {
            if !r.is_empty() {
                out.push_str(&format!("(remote parent {r})\n"));
            }
            walk(spans, r, usize::from(!r.is_empty()), &mut out);
        }
    }
    out
}

//! The HTTP edge in front of every route, as two layers (each layer of axum's clones every
//! layer inside it per request, so the edge's concerns share two instead of ten):
//! - [`front`], outside the router: the request id (a client's plausible one, else a fresh
//!   one, echoed back), `nosniff` and `no-store`, and every error response the router or
//!   axum's own extractors produce (unknown route, wrong method, a path that is not UTF-8)
//!   turned into problem+json like ours.
//! - [`guard`], on each route (it needs the matched route): the request's span, its metrics,
//!   a declared oversize body refused before anything reads it, and a deadline.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::http_metrics;
use crate::problem::{ApiError, problem_response};

/// What [`guard`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// No request outlives it, whatever a dependency does.
    pub deadline: Duration,
    pub body_limit: usize,
}

/// The body limit in force, for extractors that report it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = http_metrics::method_label(req.method());
    let route_label = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    // The fields are only evaluated when the span is enabled.
    let span = tracing::info_span!("http", method = %req.method(), route = route_label,
        request_id = req.headers().get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or(""));
    if !span.is_disabled() {
        // The client's W3C trace, when it sent one and tracing is on.
        runtime::telemetry::propagation::continue_from_headers(&span, req.headers());
    }
    // `413` at once when `Content-Length` declares more than the limit, instead of after the
    // deadline while a client trickles (or never sends) the body.
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let resp = if declared.is_some_and(|n| n > g.body_limit as u64) {
        too_large(g.body_limit).into_response()
    } else {
        req.extensions_mut().insert(BodyLimit(g.body_limit));
        match tokio::time::timeout(g.deadline, next.run(req)).instrument(span.clone()).await {
            Ok(resp) => resp,
            Err(_) => {
                tracing::warn!(parent: &span, limit_ms = g.deadline.as_millis() as u64, "request deadline exceeded");
                ApiError::Unavailable { detail: "the request took too long; try again".into(), retry_after: 1 }
                    .into_response()
            }
        }
    };
    // Failures are logged once, with their cause, where they happen (see problem.rs).
    let elapsed = start.elapsed();
    tracing::debug!(parent: &span, status = resp.status().as_u16(), latency_ms = elapsed.as_millis() as u64, "request finished");
    http_metrics::record(method, route_label, resp.status().as_u16(), elapsed);
    resp
}

/// Outside the router (`Router::layer` runs inside each route's method router, before it
/// adds `Allow` to a 405). A client's `X-Request-Id` is kept only when it is a plausible id
/// (see [`well_formed_id`]), else a fresh one is made; the response carries it.
pub async fn front(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(X_REQUEST_ID) {
        Some(v) if well_formed_id(v.as_bytes()) => v.clone(),
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            let fresh = HeaderValue::from_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
                .unwrap_or_else(|_| HeaderValue::from_static("unset"));
            req.headers_mut().insert(X_REQUEST_ID, fresh.clone());
            fresh
        }
    };
    let mut resp = as_problem(next.run(req).await);
    // API answers carry one user's tasks and must not sit in shared caches, unless the route
    // chose its own caching (the console's assets).
    let h = resp.headers_mut();
    h.entry(X_REQUEST_ID).or_insert(id);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes"))
}

/// Rewrites bare error responses (empty or plain text: the router's own 404/405 and axum's
/// extractor rejections) into problems, keeping their headers (`Allow` on 405). Their text
/// is not passed on. Our handlers' JSON answers (problems, `/ready`'s 503) pass untouched.
fn as_problem(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_bare(resp.headers()) {
        return resp;
    }
    let (parts, _body) = resp.into_parts();
    let (slug, detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", "no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            ("method-not-allowed", format!("this method is not allowed here; allowed: {allow}"))
        }
        StatusCode::BAD_REQUEST => ("bad-request", "the request path or query could not be decoded".to_owned()),
        other => ("error", other.canonical_reason().unwrap_or("error").to_lowercase()),
    };
    let mut problem = problem_response(status, slug, detail);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

const X_REQUEST_ID: &str = "x-request-id";

pub fn well_formed_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

fn is_bare(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/plain"))
}

#[cfg(test)]
mod tests {
    use super::well_formed_id;

    #[test]
    fn request_ids() {
        for ok in ["a", "0f8e-11", "req_1.2:3", &"x".repeat(64)] {
            assert!(well_formed_id(ok.as_bytes()), "{ok}");
        }
        for bad in ["", " ", "a b", "id\nforged log line", "<script>", &"x".repeat(65), "é"] {
            assert!(!well_formed_id(bad.as_bytes()), "{bad:?}");
        }
    }
}

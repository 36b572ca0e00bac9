//! The HTTP edge in front of every route: a deadline on every request, a declared oversize
//! body refused before anything reads it, and every error response the router or axum's
//! own extractors produce (unknown route, wrong method, a path that is not UTF-8) becomes
//! problem+json like ours.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::{ApiError, problem_response};

/// No request outlives its deadline, whatever a dependency does.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request deadline exceeded");
            ApiError::Unavailable { detail: "the request took too long; try again".into(), retry_after: 1 }
                .into_response()
        }
    }
}

/// The body limit in force, for extractors that report it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// `413` at once when `Content-Length` declares more than the limit, instead of after the
/// request deadline while a client trickles (or never sends) the body.
pub async fn declared_length(State(limit): State<usize>, mut req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit).into_response();
    }
    req.extensions_mut().insert(BodyLimit(limit));
    next.run(req).await
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes"))
}

/// Rewrites bare error responses (empty or plain text: the router's own 404/405 and axum's
/// extractor rejections) into problems, keeping their headers (`Allow` on 405). Their text
/// is not passed on. Our handlers' JSON answers (problems, `/ready`'s 503) pass untouched.
pub async fn problem_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
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

/// Every response: `nosniff`, and `no-store` unless the route chose its own caching (the
/// console's assets): API answers carry one user's tasks and must not sit in shared caches.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A client's `X-Request-Id` is kept only when it is a plausible id (1..=64 of
/// `[A-Za-z0-9._:-]`); anything else is dropped so a fresh one is made. It reaches our logs
/// and is echoed back, so it must not carry a megabyte or a forged log line.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let valid = req.headers().get(X_REQUEST_ID).is_none_or(|v| well_formed_id(v.as_bytes()));
    if !valid {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    next.run(req).await
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

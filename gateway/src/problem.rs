//! API errors as RFC 9457 problem details. `detail` is always written for the user;
//! unexpected errors are logged with their cause chain and answered generically.
//!
//! A 5xx is logged once, here or where its cause is handled (a failed publish in
//! `submission`, a passed deadline in `edge`): the trace layer does not log failures.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("not a bearer token")]
    NotBearer,
    #[error("empty bearer token")]
    EmptyToken,
    #[error("invalid token")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: u64 },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// RFC 9457 problem details; `detail` is written for the user.
// The body of every problem response and, through its derived schema, the `Problem` of the
// OpenAPI document: one definition of both.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:euglena:problem:{slug}`.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingToken | Self::NotBearer | Self::EmptyToken | Self::InvalidToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Gone(_) => (StatusCode::GONE, "gone"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too-many-requests"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// A problem+json response with `status` and a user-safe `detail`.
pub fn problem_response(status: StatusCode, slug: &str, detail: String) -> Response {
    let body = Problem {
        kind: format!("urn:euglena:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("error"),
        status: status.as_u16(),
        detail,
    };
    let mut resp = (status, serde_json::to_string(&body).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.parts();
        let mut resp = problem_response(status, slug, self.detail());
        let headers = resp.headers_mut();
        match &self {
            Self::MissingToken | Self::NotBearer | Self::EmptyToken | Self::InvalidToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            Self::TooManyRequests { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
}

impl ApiError {
    /// The problem's status code and `urn:euglena:problem:` slug.
    pub fn status_and_slug(&self) -> (StatusCode, &'static str) {
        self.parts()
    }

    /// The problem's user-safe `detail` (REST and MCP say the same); an unexpected error is
    /// logged here with its cause chain and answered generically.
    pub fn detail(&self) -> String {
        match self {
            Self::Unexpected(e) => {
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                tracing::error!(error.cause_chain = %runtime::telemetry::Chain(e), "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            Self::MissingToken => "an Authorization: Bearer <JWT> header is required".to_owned(),
            Self::NotBearer => {
                "the Authorization header must use the Bearer scheme: Authorization: Bearer <JWT>".to_owned()
            }
            Self::EmptyToken => {
                "the bearer token is empty: send Authorization: Bearer <JWT> (is the variable holding the token set?)"
                    .to_owned()
            }
            Self::InvalidToken => "the bearer token is invalid or expired".to_owned(),
            Self::NotFound => "no such resource".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<proto::store::StoreError> for ApiError {
    fn from(e: proto::store::StoreError) -> Self {
        match e {
            proto::store::StoreError::Redis(e) => {
                tracing::error!(error.cause_chain = %runtime::telemetry::Chain(&e), "redis call failed");
                Self::Unavailable { detail: "the task store is unavailable; try again".into(), retry_after: 1 }
            }
            other => Self::Unexpected(other.into()),
        }
    }
}

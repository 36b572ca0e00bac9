//! The OpenAPI 3.1 document, generated from the handlers' own annotations: every route is
//! registered through [`utoipa_axum`], so a route cannot be served without being documented.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;

/// The problems every bearer-authenticated route can answer (`responses(AuthProblems, ..)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthProblems {
    #[response(
        status = 401,
        description = "Missing, malformed or invalid bearer token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "Anonymous sign-ins are not allowed, or (/admin) the token has no operator role",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
}

/// A task id that is not one of the caller's tasks.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such task of yours", content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct TaskNotFound(Problem);

/// What a JSON body can be refused with before its handler runs (`JsonBody`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyProblems {
    #[response(status = 400, description = "Malformed JSON", content_type = "application/problem+json")]
    Malformed(Problem),
    #[response(status = 413, description = "Body over MAX_BODY_BYTES", content_type = "application/problem+json")]
    TooLarge(Problem),
    #[response(status = 415, description = "Not JSON", content_type = "application/problem+json")]
    NotJson(Problem),
    #[response(
        status = 422,
        description = "A field is invalid (named in detail), or the body is not an object",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
}

/// A dependency down or the request deadline passed.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "Redis or RabbitMQ is unavailable, or the request deadline passed; see Retry-After",
    content_type = "application/problem+json"
)]
#[allow(dead_code)]
pub struct Unavailable(Problem);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Euglena",
        description = "Submit LLM agent tasks (mandates), follow them live, be called back when they end.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, crate::events::TaskEvent)),
    tags(
        (name = "tasks", description = "Submit, read, list, follow and cancel your tasks"),
        (name = "system", description = "Public: the agent fleet, health, readiness, metrics, this document"),
        (name = "console", description = "The web console and what only it uses"),
        (name = "admin", description = "Operators only (OPERATOR_CLAIM): any user's tasks, the dead-letter queue, bulk cancel and retry, the audit stream"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description =
            Some("A Supabase access token (ES256/RS256/EdDSA from the project's JWKS, or HS256).".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Keeps the rendered document for [`openapi_json`]; the router calls it once.
pub fn publish(doc: &utoipa::openapi::OpenApi) {
    let _ = DOCUMENT.set(doc.to_pretty_json().unwrap_or_default());
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.get().cloned().unwrap_or_default())
}

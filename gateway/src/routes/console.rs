//! The web console (`GET /`): static assets compiled into the binary, served with a strict
//! Content-Security-Policy (same origin only, no inline code), plus, in local mode only,
//! development tokens. The fleet's sampled history it charts is [`super::samples`].

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problem::ApiError;
use crate::state::AppState;

/// Nothing but this origin: no CDN, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

fn asset(body: &'static str, content_type: &'static str) -> Asset {
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(body.as_bytes()))[..16]);
    Asset { body, content_type, etag }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| asset(include_str!("../../console/index.html"), "text/html; charset=utf-8"));
static APP_JS: LazyLock<Asset> =
    LazyLock::new(|| asset(include_str!("../../console/app.js"), "text/javascript; charset=utf-8"));
static APP_CSS: LazyLock<Asset> =
    LazyLock::new(|| asset(include_str!("../../console/app.css"), "text/css; charset=utf-8"));

/// The page revalidates every load (a new gateway version shows at once); its assets are
/// cached for five minutes and revalidated by ETag after that.
fn serve(a: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(a.etag.as_str());
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { a.body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The console (HTML).
#[utoipa::path(get, path = "/", tag = "console", responses((status = 200, description = "The web console", body = String, content_type = "text/html")))]
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers, "no-cache")
}

/// The console's script.
#[utoipa::path(get, path = "/console/app.js", tag = "console", responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
pub async fn app_js(headers: HeaderMap) -> Response {
    serve(&APP_JS, &headers, "public, max-age=300")
}

/// The console's stylesheet.
#[utoipa::path(get, path = "/console/app.css", tag = "console", responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
pub async fn app_css(headers: HeaderMap) -> Response {
    serve(&APP_CSS, &headers, "public, max-age=300")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConsoleConfig {
    /// Whether `POST /dev/token` mints development tokens (local mode).
    dev_tokens: bool,
    /// Which claim makes a token an operator's (`OPERATOR_CLAIM`), so the console offers the
    /// operators' page only to them; absent when nobody is.
    #[serde(skip_serializing_if = "Option::is_none")]
    operator_claim: Option<OperatorClaimView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OperatorClaimView {
    /// The claim's path, e.g. `["app_metadata", "euglena_role"]`.
    path: Vec<String>,
    value: String,
}

/// What the console may offer on this gateway.
#[utoipa::path(get, path = "/console/config", tag = "console", responses((status = 200, description = "Console settings", body = ConsoleConfig)))]
pub async fn config(State(state): State<AppState>) -> Json<ConsoleConfig> {
    let operator_claim = state
        .settings
        .auth
        .operator_claim
        .as_ref()
        .map(|c| OperatorClaimView { path: c.path.clone(), value: c.value.clone() });
    Json(ConsoleConfig { dev_tokens: dev_secret(&state).is_some(), operator_claim })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// The user id (`sub`) of the token.
    #[schema(min_length = 1, max_length = 64)]
    sub: String,
    /// With the operator role (`OPERATOR_CLAIM`), to try the operators' routes locally.
    #[serde(default)]
    operator: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DevToken {
    token: String,
    /// Seconds until it expires.
    expires_in: u64,
    /// Always true: this is a development token, not a user's sign-in.
    development: bool,
}

const DEV_TOKEN_TTL: u64 = 3600;

/// Local mode only (`CONSOLE_DEV_TOKENS=true`): an HS256 token for any `sub`, so the console
/// can be tried without a Supabase project. `404` everywhere else. Answered only to a client
/// on this machine (a loopback peer that no proxy forwarded), `403` to anyone else: a token
/// for any user must never be one request away for whoever can reach the port.
#[utoipa::path(post, path = "/dev/token", tag = "console",
    request_body(content = DevTokenRequest, content_type = "application/json"),
    responses((status = 200, description = "A development token", body = DevToken),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not asked from this machine", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Development tokens are off", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "sub is empty, too long or has control characters", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn dev_token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    crate::extract::JsonBody(req): crate::extract::JsonBody<DevTokenRequest>,
) -> Result<Json<DevToken>, ApiError> {
    let secret = dev_secret(&state).ok_or(ApiError::NotFound)?;
    let local = peer.is_some_and(|Extension(ConnectInfo(p))| p.ip().is_loopback())
        && !headers.contains_key("x-forwarded-for")
        && !headers.contains_key(header::FORWARDED);
    if !local {
        tracing::warn!("development token refused to a client that is not on this machine");
        return Err(ApiError::Forbidden(
            "development tokens are issued to clients on the gateway's own machine only".into(),
        ));
    }
    let sub = req.sub.trim();
    if sub.is_empty() || sub.len() > 64 || sub.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable("sub: 1 to 64 characters, no control characters".into()));
    }
    let auth = &state.settings.auth;
    let mut claims = crate::auth::dev_token::claims(sub, &auth.audience, auth.issuer.as_deref(), DEV_TOKEN_TTL)?;
    if req.operator {
        let role = auth
            .operator_claim
            .as_ref()
            .ok_or_else(|| ApiError::Unprocessable("operator: OPERATOR_CLAIM is none on this gateway".into()))?;
        crate::auth::dev_token::make_operator(&mut claims, role);
    }
    let token = crate::auth::dev_token::sign_hs256(secret, &claims)?;
    Ok(Json(DevToken { token, expires_in: DEV_TOKEN_TTL, development: true }))
}

fn dev_secret(state: &AppState) -> Option<&[u8]> {
    if state.settings.console_dev_tokens { state.settings.auth.hs256_secret() } else { None }
}

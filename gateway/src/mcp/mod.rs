//! `/mcp`: Euglena as an MCP server (streamable HTTP, the official Rust SDK `rmcp`), so MCP
//! hosts (desktop assistants, IDEs, other agents) can delegate mandates to it.
//!
//! It is the REST API behind another protocol, not a second one: the same bearer JWT (checked
//! by [`authenticate`] before the SDK sees the request, so a refusal is the REST `401`
//! problem), the same admission and validation (`routes::tasks::prepare` and `Submissions`),
//! the same ownership (another user's task is "no such resource"). The tools are in
//! [`tools`]; what each error says is the REST problem's `detail` ([`tools::tool_error`]).
//!
//! Stateless mode (no MCP session kept in this process): any gateway replica answers any
//! request, and a follower's stream lives exactly as long as its `tools/call`.

pub mod tasks;
pub mod tools;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;

use crate::auth::AuthUser;
use crate::state::AppState;

/// The `/mcp` service: the SDK's streamable-HTTP transport over [`tools::Euglena`].
/// `/mcp`: JSON-RPC over streamable HTTP, described by the MCP specification and its own
/// `tools/list`, not by the OpenAPI document (see ARCHITECTURE §2); authenticated first.
pub fn router(state: &AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route_service("/mcp", service(state))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
}

pub fn service(state: &AppState) -> StreamableHttpService<tools::Euglena, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_max_request_body_bytes(state.settings.max_body_bytes)
        .with_cancellation_token(state.shutdown.child_token());
    // The SDK's Host allow-list guards unauthenticated servers on a developer's machine
    // against DNS rebinding; every request here carries a bearer token a rebinding page
    // cannot read, and the gateway is reached by whatever name its load balancer has.
    config = config.disable_allowed_hosts();
    let for_service = state.clone();
    StreamableHttpService::new(
        move || Ok(tools::Euglena::new(for_service.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The bearer JWT, checked as for every REST route; the caller is put in the request's
/// extensions, where the SDK hands it to the tools (with the rest of the request's parts).
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match AuthUser::from_request_parts(&mut parts, &state).await {
        Ok(user) => {
            parts.extensions.insert(user);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

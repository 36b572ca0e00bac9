//! The HTTP surface; one module per resource.

pub mod actions;
pub mod admin;
pub mod console;
pub mod recovery;
pub mod samples;
pub mod system;
pub mod tasks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use crate::{edge, openapi};

/// The API: every documented route, plus `undocumented` (routes another protocol describes,
/// such as `/mcp`, given by the caller so this module needs none of their code), behind the
/// same edge layers.
pub fn router(state: AppState, undocumented: Router<AppState>) -> Router {
    let (routes, doc) = documented();
    openapi::publish(&doc);
    let guard = edge::Guard { deadline: state.settings.request_timeout, body_limit: state.settings.max_body_bytes };
    let api = routes
        .merge(undocumented)
        .layer(DefaultBodyLimit::max(guard.body_limit))
        .layer(axum::middleware::from_fn_with_state(guard, edge::guard))
        .with_state(state);
    Router::new().fallback_service(api).layer(axum::middleware::from_fn(edge::front))
}

/// Every API route with its OpenAPI annotation: a route cannot be served undocumented.
fn documented() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::events))
        .routes(routes!(actions::decide))
        .routes(routes!(actions::message))
        .routes(routes!(recovery::extend))
        .routes(routes!(recovery::retry))
        .routes(routes!(admin::tasks))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(admin::redrive))
        .routes(routes!(admin::cancel_many))
        .routes(routes!(admin::retry_many))
        .routes(routes!(admin::audit))
        .routes(routes!(system::agents_count))
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(console::index))
        .routes(routes!(console::app_js))
        .routes(routes!(console::app_css))
        .routes(routes!(console::config))
        .routes(routes!(samples::samples))
        .routes(routes!(console::dev_token))
        .split_for_parts()
}

/// What connections past `GATEWAY_MAX_CONNECTIONS` get (see `runtime::serve`): the probes, so a
/// load balancer or orchestrator never sees a healthy gateway as dead because users hold every
/// connection, and a fast `503` for everything else instead of a wait in the backlog.
pub fn reserve_router(state: AppState) -> Router {
    let busy = || async {
        metrics::counter!("http_requests_shed_total").increment(1);
        crate::problem::ApiError::Unavailable {
            detail: "the gateway is at its connection limit; try again shortly".into(),
            retry_after: 1,
        }
    };
    Router::new()
        .route("/health", axum::routing::get(system::health))
        .route("/ready", axum::routing::get(system::ready))
        .fallback(busy)
        .layer(axum::middleware::from_fn(edge::front))
        .with_state(state)
}

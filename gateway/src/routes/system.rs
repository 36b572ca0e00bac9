//! Public endpoints: agent count, liveness, readiness, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use proto::presence::AgentCount;
use serde::Serialize;

use crate::problem::ApiError;
use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many agents are alive, and how many of them are busy.
#[utoipa::path(get, path = "/agents/count", tag = "system",
    responses((status = 200, description = "The fleet", body = AgentCount), crate::openapi::Unavailable))]
pub async fn agents_count(State(state): State<AppState>) -> Result<Json<AgentCount>, ApiError> {
    let mut conn = state.redis.clone();
    let count = proto::presence::count(&mut conn, state.store.keys(), state.settings.common.heartbeat_ttl)
        .await
        .map_err(proto::store::StoreError::Redis)?;
    Ok(Json(count))
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "ok"
}

#[derive(Serialize, utoipa::ToSchema)]
struct Components {
    redis: bool,
    rabbitmq: bool,
}

/// Whether this gateway can serve: Redis and RabbitMQ each answered within 1 s.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    status: &'static str,
    components: Components,
}

/// Readiness, the load balancer's check.
#[utoipa::path(get, path = "/ready", tag = "system", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A dependency is down", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let redis_probe = async {
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    };
    let (redis, rabbitmq) = tokio::join!(redis_probe, state.submissions.publisher().ready(PROBE_TIMEOUT));
    let ok = redis && rabbitmq;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "unavailable" },
            components: Components { redis, rabbitmq },
        }),
    )
}

/// Prometheus metrics: requests by route template and status, latencies, tasks, webhooks.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    runtime::ops::metrics_text().await
}

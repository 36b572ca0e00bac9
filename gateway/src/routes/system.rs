//! Public endpoints: agent count, liveness, readiness, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::problem::ApiError;
use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Serialize)]
pub struct AgentCount {
    pub count: u64,
    pub busy: u64,
    pub idle: u64,
}

pub async fn agents_count(State(state): State<AppState>) -> Result<Json<AgentCount>, ApiError> {
    let mut conn = state.redis.clone();
    let c = proto::presence::count(&mut conn, state.store.keys(), state.settings.common.heartbeat_ttl)
        .await
        .map_err(proto::store::StoreError::Redis)?;
    Ok(Json(AgentCount { count: c.count, busy: c.busy, idle: c.idle }))
}

pub async fn health() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct Components {
    redis: bool,
    rabbitmq: bool,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    components: Components,
}

pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let redis_probe = async {
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    };
    let (redis, rabbitmq) = tokio::join!(redis_probe, state.publisher.ready(PROBE_TIMEOUT));
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

//! `GET /ops/samples`: the fleet's sampled history for the console's chart.
//!
//! Public, like the agent count: it shows fleet figures (queue depth, agents, dead letters),
//! never a task or a user, and the console charts it before anyone signs in. Being public,
//! it must cost Redis nothing per request: requests are answered from the process-wide copy
//! in [`crate::samples_cache`].

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::samples_cache;
use crate::state::AppState;

/// The metrics sidecar's samples of the last `minutes` (default 60, at most 1440): queue
/// depth, in-flight tasks, live and busy agents, dead letters. Public, like the agent count:
/// no task or user data. Refreshed at most every `OPS_SAMPLES_CACHE_SECONDS`.
#[utoipa::path(get, path = "/ops/samples", tag = "console",
    params(("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "How far back (default 60)")),
    responses((status = 200, description = "Samples", body = samples_cache::Samples),
        (status = 400, description = "Unknown query parameter", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "minutes out of range", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is unavailable", body = crate::problem::Problem, content_type = "application/problem+json")))]
pub async fn samples(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    crate::extract::only_params(&q, &["minutes"])?;
    let minutes = crate::extract::ranged_param(&q, "minutes", 60, 1..=samples_cache::MAX_MINUTES)?;
    let body = state.samples.body(&state.redis, state.store.keys(), minutes).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

//! `GET /ops/samples`: the fleet's sampled history for the console's chart.
//!
//! Public, like the agent count: it shows fleet figures (queue depth, agents, dead letters),
//! never a task or a user, and the console charts it before anyone signs in. Being public,
//! it must cost Redis nothing per request: one process-wide copy of the last day is kept and
//! brought up to date at most once per `OPS_SAMPLES_CACHE_SECONDS` (one short `XRANGE` of
//! the samples newer than the copy; concurrent requests share it), and requests are answered
//! from memory. The copy holds at most a day of samples.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use proto::samples::Sample;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::problem::ApiError;
use crate::state::AppState;

const MAX_MINUTES: i64 = 1440;
/// A day at the sidecar's fastest useful rate; the chart needs far fewer.
const MAX_SAMPLES: usize = 20_000;
/// Serialized answers kept per refresh (one per `minutes` asked for; the console asks for one).
const MAX_BODIES: usize = 8;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Samples {
    /// Oldest first; a value the sidecar could not read is absent, never zero.
    samples: Vec<Sample>,
}

#[derive(Clone)]
pub struct SamplesCache {
    inner: Arc<Mutex<Held>>,
    ttl: Duration,
}

#[derive(Default)]
struct Held {
    samples: VecDeque<Sample>,
    refreshed: Option<Instant>,
    bodies: HashMap<i64, Bytes>,
}

impl SamplesCache {
    pub fn new(ttl: Duration) -> Self {
        Self { inner: Arc::new(Mutex::new(Held::default())), ttl }
    }

    /// The JSON answer for the last `minutes`, reading Redis only when the copy is stale.
    async fn body(&self, state: &AppState, minutes: i64) -> Result<Bytes, ApiError> {
        // One lock for refresh and read: concurrent misses wait for the one read in progress.
        let mut copy = self.inner.lock().await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        if copy.refreshed.is_none_or(|at| at.elapsed() >= self.ttl) {
            let day_ago = now_ms - MAX_MINUTES * 60_000;
            let from = copy.samples.back().map_or(day_ago, |s| s.at + 1).max(day_ago);
            let new = proto::samples::since(&mut state.redis.clone(), state.store.keys(), from, MAX_SAMPLES)
                .await
                .map_err(proto::store::StoreError::Redis)?;
            copy.samples.extend(new);
            while copy.samples.front().is_some_and(|s| s.at < day_ago) || copy.samples.len() > MAX_SAMPLES {
                copy.samples.pop_front();
            }
            copy.refreshed = Some(Instant::now());
            copy.bodies.clear();
        }
        if let Some(body) = copy.bodies.get(&minutes) {
            return Ok(body.clone());
        }
        let since = now_ms - minutes * 60_000;
        let start = copy.samples.partition_point(|s| s.at < since);
        let samples: Vec<Sample> = copy.samples.range(start..).copied().collect();
        let body = Bytes::from(serde_json::to_vec(&Samples { samples }).map_err(anyhow::Error::from)?);
        if copy.bodies.len() < MAX_BODIES {
            copy.bodies.insert(minutes, body.clone());
        }
        Ok(body)
    }
}

/// The metrics sidecar's samples of the last `minutes` (default 60, at most 1440): queue
/// depth, in-flight tasks, live and busy agents, dead letters. Public, like the agent count:
/// no task or user data. Refreshed at most every `OPS_SAMPLES_CACHE_SECONDS`.
#[utoipa::path(get, path = "/ops/samples", tag = "console",
    params(("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "How far back (default 60)")),
    responses((status = 200, description = "Samples", body = Samples),
        (status = 400, description = "Unknown query parameter", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "minutes out of range", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json")))]
pub async fn samples(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    crate::extract::only_params(&q, &["minutes"])?;
    let minutes = crate::extract::ranged_param(&q, "minutes", 60, 1..=MAX_MINUTES)?;
    let body = state.samples.body(&state, minutes).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

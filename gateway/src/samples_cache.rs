//! The process-wide copy of the metrics sidecar's samples behind `GET /ops/samples`: the
//! last day, brought up to date at most once per `OPS_SAMPLES_CACHE_SECONDS` (one short
//! `XRANGE` of the samples newer than the copy; concurrent requests share it), so the public
//! route costs Redis nothing per request. The copy holds at most a day of samples.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use proto::Keys;
use proto::samples::Sample;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::problem::ApiError;

/// The most `GET /ops/samples` asks for: a day.
pub const MAX_MINUTES: i64 = 1440;
/// A day at the sidecar's fastest useful rate; the chart needs far fewer.
const MAX_SAMPLES: usize = 20_000;
/// Serialized answers kept per refresh (one per `minutes` asked for; the console asks for one).
const MAX_BODIES: usize = 8;

// The body of `GET /ops/samples` (a doc comment would change the OpenAPI document).
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
    pub async fn body(&self, redis: &ConnectionManager, keys: &Keys, minutes: i64) -> Result<Bytes, ApiError> {
        // One lock for refresh and read: concurrent misses wait for the one read in progress.
        let mut copy = self.inner.lock().await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        if copy.refreshed.is_none_or(|at| at.elapsed() >= self.ttl) {
            let day_ago = now_ms - MAX_MINUTES * 60_000;
            let from = copy.samples.back().map_or(day_ago, |s| s.at + 1).max(day_ago);
            let new = proto::samples::since(&mut redis.clone(), keys, from, MAX_SAMPLES)
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

//! Bounds on event streams, the one thing a signed-in user can hold open for minutes:
//! - per user, across replicas: at most `SSE_MAX_STREAMS_PER_USER`, counted by leases in
//!   Redis ([`proto::stream_leases`]); one more is `429` with `Retry-After`. A new stream is
//!   refused rather than the oldest closed: `EventSource` reconnects a closed stream by
//!   itself, so closing the oldest would make two tabs evict each other forever, while a
//!   refusal is visible to the one client that asked for too much;
//! - per gateway: at most `SSE_MAX_STREAMS` (half the connection cap by default), so streams
//!   never take every connection; one more is `503` with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use proto::store::StoreError;
use proto::stream_leases::{RENEW_EVERY, StreamLeases};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::problem::ApiError;

/// What a refused client is told to wait: streams last minutes, so sooner is pointless.
const RETRY_AFTER_SECONDS: u64 = 5;
/// Giving a lease back must not hold a task forever when Redis is gone; the lease expires anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct StreamLimits {
    leases: StreamLeases,
    global: Arc<Semaphore>,
    per_user: usize,
}

/// One open stream's place: held for as long as the stream runs, given back on drop.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    _lease: DropGuard,
}

impl StreamLimits {
    pub fn new(leases: StreamLeases, global: usize, per_user: usize) -> Self {
        Self { leases, global: Arc::new(Semaphore::new(global)), per_user }
    }

    pub async fn acquire(&self, user: &str) -> Result<StreamSlot, ApiError> {
        let permit = self.global.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("sse_streams_refused_total", "reason" => "gateway").increment(1);
            ApiError::Unavailable {
                detail:
                    "this gateway is serving as many event streams as it can; retry shortly or poll GET /tasks/{id}"
                        .into(),
                retry_after: RETRY_AFTER_SECONDS,
            }
        })?;
        let id = uuid::Uuid::new_v4().to_string();
        if !self.leases.open(user, &id, self.per_user).await.map_err(StoreError::Redis)? {
            metrics::counter!("sse_streams_refused_total", "reason" => "user").increment(1);
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "you already have {} event streams open, the most one user may; close one or poll GET /tasks/{{id}}",
                    self.per_user
                ),
                retry_after: RETRY_AFTER_SECONDS,
            });
        }
        let stop = CancellationToken::new();
        tokio::spawn(keep(self.leases.clone(), user.to_owned(), id, stop.clone()));
        Ok(StreamSlot { _permit: permit, _lease: stop.drop_guard() })
    }
}

/// Renews the lease until the stream ends, then gives it back.
async fn keep(leases: StreamLeases, user: String, id: String, stop: CancellationToken) {
    metrics::gauge!("sse_streams_open").increment(1.0);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(RENEW_EVERY) => match leases.renew(&user, &id).await {
                Ok(true) => {}
                // Expired while Redis was unreachable: this stream then runs uncounted until it
                // ends (at SSE_MAX_SECONDS at the latest), which is the cheaper mistake.
                Ok(false) => tracing::warn!("event stream lease had expired; not renewed"),
                Err(e) => tracing::warn!(error = %e, "event stream lease not renewed"),
            },
        }
    }
    metrics::gauge!("sse_streams_open").decrement(1.0);
    match tokio::time::timeout(CLOSE_TIMEOUT, leases.close(&user, &id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "event stream lease left to expire"),
        Err(_) => tracing::debug!("event stream lease left to expire (redis slow)"),
    }
}

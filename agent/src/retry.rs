//! Retrying Redis writes that must not be lost to a blip.

use std::time::Duration;

use proto::store::StoreError;
use runtime::backoff::{self, Backoff};
use tokio_util::sync::CancellationToken;

/// How long a store write keeps retrying before the delivery is given back to the broker.
pub const STORE_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Retries `op` on Redis errors with backoff for up to [`STORE_RETRY_BUDGET`]; other errors
/// end it at once. Nothing else interrupts it: it is for the writes a delivery cannot settle
/// without (its take-over, its terminal write), where giving up early on a drain would hand
/// back a task that is about to run or has already run.
pub async fn redis<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retry(None, op).await
}

/// [`redis`] that a cancelled `stop` also ends, at once: for a tick's progress, which an
/// interrupted run can do without (it resumes from its last checkpoint).
pub async fn redis_unless_stopped<T, F, Fut>(stop: &CancellationToken, op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retry(Some(stop), op).await
}

async fn retry<T, F, Fut>(stop: Option<&CancellationToken>, op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let stopped = || stop.is_some_and(CancellationToken::is_cancelled);
    let again = |e: &StoreError, delay: Duration, _| match e {
        StoreError::Redis(e) if started.elapsed() < STORE_RETRY_BUDGET && !stopped() => {
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis write failed; retrying");
            true
        }
        _ => false,
    };
    backoff::retry(Backoff::new(Duration::from_millis(100), Duration::from_secs(5)), stop, op, again).await
}

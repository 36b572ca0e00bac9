//! Retrying Redis writes that must not be lost to a blip.

use std::time::Duration;

use proto::backoff::Backoff;
use proto::store::StoreError;
use tokio_util::sync::CancellationToken;

/// How long a store write keeps retrying before the delivery is given back to the broker.
pub const STORE_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Retries `op` on Redis errors with backoff for up to [`STORE_RETRY_BUDGET`]. Other
/// errors, and a cancelled `stop`, end it at once.
pub async fn redis<T, F, Fut>(stop: &CancellationToken, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match op().await {
            Err(StoreError::Redis(e)) if started.elapsed() < STORE_RETRY_BUDGET && !stop.is_cancelled() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis write failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Err(StoreError::Redis(e)),
                }
            }
            other => return other,
        }
    }
}

//! Task-end webhooks: a signed POST to the task's `webhook_url` when it ends.
//!
//! Where it runs, and why: a dispatcher beside every gateway replica takes due deliveries
//! from the Redis queue ([`proto::webhook_queue`]) with a lease, so agents never wait on a
//! receiver, replicas never send the same attempt twice, and a gateway killed mid-attempt
//! leaves the delivery due again when its lease ends. The queue entry is written by the
//! same script that ends the task, so no path to a terminal status skips it.
//!
//! Each delivery is at least once: `webhook-id` is stable across attempts (receivers
//! deduplicate on it), `webhook-timestamp` is the attempt's, and the body is the same
//! every time.

mod settings;
pub mod sign;

pub use settings::WebhookSettings;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use proto::address_policy::{
    GuardedResolver, Lookup, Policy, TargetError, blocked_in, check_literal_host, check_target,
};
use proto::store::TaskStore;
use proto::webhook_queue::{Settled, WebhookQueue};
use proto::{TaskId, TaskStatus};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Deliveries taken per claim, and sent at once.
const BATCH: usize = 32;
const PARALLEL: usize = 16;
/// How often an idle dispatcher looks for due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// No retry waits longer than this, whatever the backoff or `Retry-After` say.
const MAX_DELAY: Duration = Duration::from_secs(3600);
const MAX_URL_BYTES: usize = 2048;

/// Checks a submitted `webhook_url`: http(s), no credentials, and every address the host
/// has now is public (unless `WEBHOOK_ALLOW_PRIVATE`). The error is safe to show the user.
pub async fn check_url(settings: &WebhookSettings, lookup: &dyn Lookup, raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_BYTES {
        return Err(format!("webhook_url: longer than {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("webhook_url: not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("webhook_url: must be an http or https URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("webhook_url: must not carry credentials; the signature authenticates the sender".into());
    }
    let policy = Policy { allow_private: settings.allow_private, exempt: Vec::new() };
    match tokio::time::timeout(Duration::from_secs(3), check_target(&policy, lookup, &url)).await {
        Ok(Ok(())) => Ok(url.to_string()),
        Ok(Err(TargetError::Blocked(b))) => {
            tracing::info!(host = %b.host, ip = %b.ip, class = b.class, "webhook_url refused by the address policy");
            Err(format!("webhook_url: {b}"))
        }
        Ok(Err(e @ TargetError::Unresolved(_))) => Err(format!("webhook_url: {e}")),
        Err(_) => Err("webhook_url: its host did not resolve in time".into()),
    }
}

pub struct Dispatcher {
    queue: WebhookQueue,
    store: TaskStore,
    http: reqwest::Client,
    settings: WebhookSettings,
    policy: Policy,
}

impl Dispatcher {
    pub fn new(
        queue: WebhookQueue,
        store: TaskStore,
        settings: WebhookSettings,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Self> {
        let policy = Policy { allow_private: settings.allow_private, exempt: Vec::new() };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { lookup, policy: policy.clone() }))
            // A redirect is a failed attempt: following it would need the policy again, and
            // receivers are expected to answer at the URL they gave.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("Euglena-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { queue, store, http, settings, policy })
    }

    pub fn spawn(self, stop: CancellationToken) {
        tokio::spawn(async move { self.run(stop).await });
    }

    async fn run(self, stop: CancellationToken) {
        // Long enough for one attempt and its bookkeeping; a dispatcher that died mid-attempt
        // leaves the delivery to another after this.
        let lease = self.settings.timeout + Duration::from_secs(30);
        let mut backoff = proto::backoff::Backoff::reconnect();
        loop {
            match self.queue.backlog().await {
                Ok(n) => metrics::gauge!("webhook_backlog").set(n as f64),
                Err(e) => tracing::debug!(error = %e, "webhook backlog unknown"),
            }
            let wait = match self.queue.claim(BATCH, lease).await {
                Ok(ids) if ids.is_empty() => POLL,
                Ok(ids) => {
                    backoff = proto::backoff::Backoff::reconnect();
                    let n = ids.len();
                    futures_util::stream::iter(ids).for_each_concurrent(PARALLEL, |id| self.deliver(id)).await;
                    if n == BATCH { Duration::ZERO } else { POLL }
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "webhook queue unavailable");
                    d
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    #[tracing::instrument(skip_all, fields(correlation_id = %id))]
    async fn deliver(&self, id: TaskId) {
        if let Err(e) = self.try_deliver(id).await {
            // The lease makes it due again; nothing is lost.
            tracing::warn!(error = %e, "webhook bookkeeping failed; the delivery will be retried");
        }
    }

    async fn try_deliver(&self, id: TaskId) -> Result<(), proto::store::StoreError> {
        let Some(rec) = self.store.get(id).await? else {
            return self.queue.settle(id, Settled::Orphaned, "task record gone").await;
        };
        let (Some(url), Some(kind)) = (rec.webhook_url.clone(), event_type(rec.status)) else {
            return self.queue.settle(id, Settled::Orphaned, "no webhook for this task").await;
        };
        let ended = rec.finished_at.clone().unwrap_or_else(|| rec.updated_at.clone());
        let body = json!({
            "type": kind,
            "timestamp": ended,
            "data": {"correlation_id": rec.id, "status": rec.status},
        })
        .to_string();
        let msg_id = format!("msg_{}", rec.id.to_string().replace('-', ""));
        let outcome = self.post(&url, &msg_id, &body).await;
        match outcome {
            Attempt::Delivered(code) => {
                metrics::counter!("webhook_deliveries_total", "outcome" => "delivered").increment(1);
                tracing::info!(status = code, "webhook delivered");
                self.queue.settle(id, Settled::Delivered, &code.to_string()).await
            }
            Attempt::Gone => {
                metrics::counter!("webhook_deliveries_total", "outcome" => "gone").increment(1);
                tracing::info!("webhook receiver answered 410 Gone; not retrying");
                self.queue.settle(id, Settled::Gone, "410").await
            }
            Attempt::Failed { last, retry_after } => {
                let since_end = chrono::DateTime::parse_from_rfc3339(&ended)
                    .map(|t| (chrono::Utc::now() - t.to_utc()).to_std().unwrap_or_default())
                    .unwrap_or_default();
                if since_end >= self.settings.retry_for {
                    metrics::counter!("webhook_deliveries_total", "outcome" => "gave_up").increment(1);
                    tracing::warn!(last, "webhook retries exhausted; giving up");
                    return self.queue.settle(id, Settled::GaveUp, &last).await;
                }
                let attempts = self.queue.record_failure(id, &last).await?;
                let delay = next_delay(self.settings.retry_base, attempts, retry_after);
                self.queue.schedule(id, delay).await?;
                metrics::counter!("webhook_deliveries_total", "outcome" => "retry").increment(1);
                tracing::info!(
                    last,
                    attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    "webhook attempt failed; retrying"
                );
                Ok(())
            }
        }
    }

    async fn post(&self, url: &str, msg_id: &str, body: &str) -> Attempt {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(_) => return Attempt::Failed { last: "invalid URL".into(), retry_after: None },
        };
        if let Err(b) = check_literal_host(&self.policy, &parsed) {
            tracing::warn!(host = %b.host, ip = %b.ip, class = b.class, "webhook refused by the address policy");
            return Attempt::Failed { last: "refused by the address policy".into(), retry_after: None };
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign::signature(&self.settings.keys, msg_id, timestamp, body.as_bytes());
        let sent = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered(r.status().as_u16()),
            Ok(r) if r.status() == reqwest::StatusCode::GONE => Attempt::Gone,
            Ok(r) => {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Attempt::Failed { last: r.status().as_u16().to_string(), retry_after }
            }
            Err(e) => {
                let last = if let Some(b) = blocked_in(&e) {
                    tracing::warn!(host = %b.host, ip = %b.ip, class = b.class, "webhook refused by the address policy");
                    "refused by the address policy"
                } else if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                };
                Attempt::Failed { last: last.into(), retry_after: None }
            }
        }
    }
}

enum Attempt {
    Delivered(u16),
    Gone,
    Failed { last: String, retry_after: Option<Duration> },
}

fn event_type(status: TaskStatus) -> Option<&'static str> {
    match status {
        TaskStatus::Completed => Some("task.completed"),
        TaskStatus::Failed => Some("task.failed"),
        TaskStatus::Cancelled => Some("task.cancelled"),
        TaskStatus::InQueue | TaskStatus::InProgress => None,
    }
}

/// `base · 2^(attempts-1)` with ±20 % jitter, at least the receiver's `Retry-After`, at
/// most an hour.
pub fn next_delay(base: Duration, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let jitter = 0.8 + fastrand::f64() * 0.4;
    let d = exp.mul_f64(jitter).max(retry_after.unwrap_or_default());
    d.min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_grow_and_stay_bounded(attempts in 1u32..100, base_ms in 100u64..10_000, ra in proptest::option::of(0u64..10_000)) {
            let base = Duration::from_millis(base_ms);
            let d = next_delay(base, attempts, ra.map(Duration::from_secs));
            prop_assert!(d <= MAX_DELAY);
            prop_assert!(d >= base.mul_f64(0.8).min(MAX_DELAY));
            if let Some(s) = ra {
                prop_assert!(d >= Duration::from_secs(s).min(MAX_DELAY), "Retry-After is honoured");
            }
        }
    }

    #[test]
    fn doubling() {
        let base = Duration::from_secs(5);
        let d3 = next_delay(base, 3, None);
        assert!(d3 >= Duration::from_secs(16) && d3 <= Duration::from_secs(24), "{d3:?}");
    }
}

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
//!
//! Fairness: a dispatcher keeps up to [`PARALLEL`] attempts in flight and claims a delivery
//! only when a place is free, so each lease starts with its attempt and outlives it (an
//! attempt is bounded by the timeout plus [`BOOKKEEPING`]; the lease adds [`LEASE_MARGIN`]).
//! One user has at most [`PER_USER`] attempts in flight; their other due deliveries wait
//! (rescheduled, not counted as attempts), so a user's slow receivers hold up only that
//! user's webhooks.

mod settings;
pub mod sign;

pub use settings::WebhookSettings;

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use proto::TaskStatus;
use proto::store::TaskStore;
use proto::webhook_queue::{Hook, Settled, WebhookQueue};
use runtime::address_policy::{Lookup, Outbound, Policy, TargetError, blocked_in, check_target, guarded_client};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Attempts in flight at once per gateway.
pub const PARALLEL: usize = 32;
/// Attempts in flight at once for one user's tasks.
pub const PER_USER: usize = 4;
/// Reading the record and settling the outcome, beyond the HTTP attempt itself.
const BOOKKEEPING: Duration = Duration::from_secs(10);
/// At shutdown the dispatcher drains for the timeout + [`BOOKKEEPING`]; this is its owner's
/// grace beyond the timeout.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(15);
/// How much longer a lease lives than the attempt it covers can take.
const LEASE_MARGIN: Duration = Duration::from_secs(20);
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
            Err("webhook_url: its host is not a public address".into())
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
    outbound: Outbound,
    /// Attempts in flight per user.
    users: Arc<Mutex<HashMap<String, usize>>>,
}

impl Dispatcher {
    pub fn new(
        queue: WebhookQueue,
        store: TaskStore,
        settings: WebhookSettings,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Self> {
        let policy = Policy { allow_private: settings.allow_private, exempt: Vec::new() };
        // A redirect is a failed attempt: receivers are expected to answer at the URL they gave.
        let http = guarded_client(lookup.clone(), policy.clone(), settings.proxy.as_ref())?
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("Euglena-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let outbound = Outbound { policy, lookup, proxied: settings.proxy.is_some() };
        Ok(Self { queue, store, http, settings, outbound, users: Arc::default() })
    }

    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::new(self).run(stop))
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let attempt_bound = self.settings.timeout + BOOKKEEPING;
        let lease = attempt_bound + LEASE_MARGIN;
        let mut in_flight = JoinSet::new();
        let mut backoff = runtime::backoff::Backoff::reconnect();
        loop {
            match self.queue.backlog().await {
                Ok(n) => metrics::gauge!("webhook_backlog").set(n as f64),
                Err(e) => tracing::debug!(error = %e, "webhook backlog unknown"),
            }
            let free = PARALLEL - in_flight.len();
            let mut wait = POLL;
            if free > 0 {
                match self.queue.claim(free, lease).await {
                    Ok(ids) => {
                        backoff = runtime::backoff::Backoff::reconnect();
                        let mut started = 0;
                        for hook in &ids {
                            if let Some(job) = self.start(*hook).await {
                                let me = self.clone();
                                in_flight.spawn(async move {
                                    // The lease covers this bound, so no second attempt overlaps it.
                                    if tokio::time::timeout(attempt_bound, me.attempt(job)).await.is_err() {
                                        tracing::warn!(
                                            "webhook attempt overran its bound; its lease makes it due again"
                                        );
                                    }
                                });
                                started += 1;
                            }
                        }
                        // More may be due at once; deliveries that were all put off are not.
                        if ids.len() == free && started > 0 {
                            wait = Duration::ZERO;
                        }
                    }
                    Err(e) => {
                        wait = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "webhook queue unavailable");
                    }
                }
            }
            tokio::select! {
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => break,
            }
        }
        // Attempts in flight may finish; any cut short are due again when their lease ends.
        let drained = tokio::time::timeout(attempt_bound, async { while in_flight.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(left = in_flight.len(), "webhook attempts cut short at shutdown; they will be retried");
            in_flight.shutdown().await;
        }
    }

    /// Reads the delivery's record and takes a place for its user, or settles or defers it.
    #[tracing::instrument(skip_all, fields(correlation_id = %hook.id, action = hook.action))]
    async fn start(&self, hook: Hook) -> Option<Job> {
        match self.prepare(hook).await {
            Ok(job) => job,
            Err(e) => {
                // The lease makes it due again; nothing is lost.
                tracing::warn!(error = %e, "webhook bookkeeping failed; the delivery will be retried");
                None
            }
        }
    }

    async fn prepare(&self, hook: Hook) -> Result<Option<Job>, proto::store::StoreError> {
        let id = hook.id;
        let Some(rec) = self.store.get(id).await? else {
            self.queue.settle(&hook, Settled::Orphaned, "task record gone").await?;
            return Ok(None);
        };
        let kind = if hook.action {
            // Moot once the call was decided (or the task ended): the status says so.
            rec.pending_action
                .as_ref()
                .filter(|_| rec.status == TaskStatus::RequiresAction)
                .map(|_| "task.requires_action")
        } else {
            event_type(rec.status)
        };
        let (Some(url), Some(kind)) = (rec.webhook_url.clone(), kind) else {
            self.queue.settle(&hook, Settled::Orphaned, "no webhook for this task").await?;
            return Ok(None);
        };
        let user = rec.user_id.clone();
        let Some(place) = self.enter(&user) else {
            // Not an attempt: the user's own slow receivers are what it waits for.
            metrics::counter!("webhook_deliveries_total", "outcome" => "deferred").increment(1);
            self.queue.schedule(&hook, self.settings.timeout).await?;
            return Ok(None);
        };
        let ended = rec.finished_at.clone().unwrap_or_else(|| rec.updated_at.clone());
        let mut data = json!({"correlation_id": rec.id, "status": rec.status});
        let mut msg_id = format!("msg_{}", id.to_string().replace('-', ""));
        if rec.runs > 0 {
            // Each run of a retried or extended task ends once, and is announced once.
            msg_id = format!("{msg_id}_r{}", rec.runs);
        }
        if rec.status == TaskStatus::Incomplete {
            // A run that stops incomplete may still end (a cancel) before any extend.
            msg_id = format!("{msg_id}_incomplete");
        }
        if hook.action
            && let Some(p) = &rec.pending_action
        {
            data["call_id"] = json!(p.call_id);
            // One announcement per call: receivers deduplicate on webhook-id.
            msg_id = format!("{msg_id}_{}", p.call_id.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
        }
        let body = json!({"type": kind, "timestamp": ended, "data": data}).to_string();
        let traceparent = rec.traceparent.clone();
        Ok(Some(Job { hook, msg_id, url, body, ended, traceparent, _place: place }))
    }

    fn enter(&self, user: &str) -> Option<UserPlace> {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = users.entry(user.to_owned()).or_insert(0);
        if *n >= PER_USER {
            return None;
        }
        *n += 1;
        Some(UserPlace { users: self.users.clone(), user: user.to_owned() })
    }

    /// One attempt, a `webhook.delivery` span in the task's trace (no URL, no body).
    async fn attempt(self: Arc<Self>, job: Job) {
        let span = tracing::info_span!(
            "webhook.delivery",
            correlation_id = %job.hook.id,
            announcement = job.hook.action,
            outcome = tracing::field::Empty
        );
        if let Some(tp) = &job.traceparent {
            runtime::telemetry::propagation::continue_trace(&span, tp);
        }
        let attempt = async {
            if let Err(e) = self.try_attempt(&job).await {
                tracing::warn!(error = %e, "webhook bookkeeping failed; the delivery will be retried");
            }
        };
        attempt.instrument(span).await;
    }

    async fn try_attempt(&self, job: &Job) -> Result<(), proto::store::StoreError> {
        let id = &job.hook;
        let attempt = self.post(&job.url, &job.msg_id, &job.body).await;
        let outcome = match &attempt {
            Attempt::Delivered(_) => "delivered",
            Attempt::Gone => "gone",
            Attempt::Refused => "refused",
            Attempt::Failed { .. } => "failed",
        };
        tracing::Span::current().record("outcome", outcome);
        match attempt {
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
            Attempt::Refused => {
                // The address will not become public by waiting; retrying for a day only
                // keeps probing the network on the user's behalf.
                metrics::counter!("webhook_deliveries_total", "outcome" => "gave_up").increment(1);
                self.queue.settle(id, Settled::GaveUp, REFUSED).await
            }
            Attempt::Failed { last, retry_after } => {
                let since_end = chrono::DateTime::parse_from_rfc3339(&job.ended)
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
        match self.outbound.precheck(&parsed).await {
            Ok(()) => {}
            Err(TargetError::Blocked(b)) => {
                tracing::warn!(host = %b.host, ip = %b.ip, class = b.class, "webhook refused by the address policy");
                return Attempt::Refused;
            }
            Err(TargetError::Unresolved(_)) => {
                return Attempt::Failed { last: "host did not resolve".into(), retry_after: None };
            }
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
                if let Some(b) = blocked_in(&e) {
                    tracing::warn!(host = %b.host, ip = %b.ip, class = b.class, "webhook refused by the address policy");
                    return Attempt::Refused;
                }
                let last = if e.is_timeout() { "timeout" } else { "connection failed" };
                Attempt::Failed { last: last.into(), retry_after: None }
            }
        }
    }
}

/// What `webhook_last` says of a delivery the address policy refused.
const REFUSED: &str = "refused: not a public address";

/// One attempt to make, holding its user's place until it ends.
struct Job {
    hook: Hook,
    /// `webhook-id`: stable across attempts.
    msg_id: String,
    url: String,
    body: String,
    ended: String,
    /// The task's trace: each attempt is a span in it.
    traceparent: Option<String>,
    _place: UserPlace,
}

struct UserPlace {
    users: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for UserPlace {
    fn drop(&mut self) {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

enum Attempt {
    Delivered(u16),
    Gone,
    /// The address policy refused the target.
    Refused,
    Failed {
        last: String,
        retry_after: Option<Duration>,
    },
}

fn event_type(status: TaskStatus) -> Option<&'static str> {
    match status {
        TaskStatus::Completed => Some("task.completed"),
        TaskStatus::Failed => Some("task.failed"),
        TaskStatus::Cancelled => Some("task.cancelled"),
        TaskStatus::Incomplete => Some("task.incomplete"),
        TaskStatus::InQueue | TaskStatus::InProgress | TaskStatus::RequiresAction => None,
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

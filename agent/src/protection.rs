//! ECS task scale-in protection: a busy agent holds it, an idle one releases it, so the
//! autoscaler's scale-in (which only picks a count) can only stop idle agents.
//!
//! ECS injects `ECS_AGENT_URI` into every task; with it set, this module `PUT`s
//! `$ECS_AGENT_URI/task-protection/v1/state` with `{"ProtectionEnabled":true,
//! "ExpiresInMinutes":N}` when the agent becomes busy (its first running task), again every
//! `ECS_PROTECTION_RENEW_SECONDS` while it stays busy (ECS resets the expiry on each call),
//! and `{"ProtectionEnabled":false}` when it becomes idle and once more on shutdown. The
//! ECS agent answers 200 with `{"protection":{..}}`, 200 with `{"failure":{"Reason",..}}`
//! when ECS refused (e.g. a task outside a service), or 4xx/5xx with `{"error":{"Code",
//! "Message"}}`; only the first is a success.
//!
//! Guarantees: it runs as its own tokio task, driven by the registry's busy flag, so a slow
//! or failing endpoint never delays a delivery; failures are logged and retried with
//! backoff and are never fatal. The expiry bounds how long protection can outlive an agent
//! that stopped renewing (wedged, or its endpoint failing); renewal, not the expiry, covers
//! long tasks, so `ECS_PROTECTION_MINUTES` need not exceed `TASK_TIMEOUT_SECONDS`.
//!
//! The decisions are a small state machine ([`Plan`]); [`drive`] runs it against any
//! sender, [`EcsAgent`] is the real one.

use std::time::Duration;

use runtime::backoff::Backoff;
use runtime::config::{ConfigError, Env};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Timeout of one request; the ECS agent itself gives ECS 4 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole release on shutdown: drain (90 s) + interrupt grace (10 s) + this stays
/// inside Fargate's 120 s stop timeout.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ProtectionSettings {
    /// `$ECS_AGENT_URI/task-protection/v1/state`.
    pub endpoint: String,
    /// `ExpiresInMinutes` of every enable (1..=2880, ECS's bounds).
    pub expires_in_minutes: u32,
    /// How often a busy agent renews; shorter than the expiry.
    pub renew_every: Duration,
}

impl ProtectionSettings {
    /// `None` when `ECS_AGENT_URI` is unset (not on ECS). The other variables are checked
    /// either way, so a bad value fails at start and not first on ECS.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let expires_in_minutes: u32 = env.ranged("ECS_PROTECTION_MINUTES", 60, 1..=2880)?;
        let expiry = u64::from(expires_in_minutes) * 60;
        let renew = env.ranged("ECS_PROTECTION_RENEW_SECONDS", expiry / 2, 1..=u64::from(u32::MAX))?;
        if renew >= expiry {
            return Err(ConfigError::new(
                "ECS_PROTECTION_RENEW_SECONDS",
                format!("{renew} must be shorter than ECS_PROTECTION_MINUTES ({expiry} s)"),
            ));
        }
        let Some(uri) = env.opt_string("ECS_AGENT_URI") else { return Ok(None) };
        match url::Url::parse(&uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(_) => return Err(ConfigError::new("ECS_AGENT_URI", "must be an http(s) URL")),
            Err(e) => return Err(ConfigError::new("ECS_AGENT_URI", format!("{uri:?}: {e}"))),
        }
        Ok(Some(Self {
            endpoint: format!("{}/task-protection/v1/state", uri.trim_end_matches('/')),
            expires_in_minutes,
            renew_every: Duration::from_secs(renew),
        }))
    }
}

/// What to ask the ECS agent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Became busy (or the state is unknown after a failure): protect.
    Enable,
    /// Still busy at the renewal time: protect again, which resets the expiry.
    Renew,
    /// Idle (or shutting down): release.
    Disable,
}

/// The documented request body.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct StateRequest {
    pub protection_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<u32>,
}

impl StateRequest {
    pub fn new(action: Action, expires_in_minutes: u32) -> Self {
        match action {
            Action::Enable | Action::Renew => {
                Self { protection_enabled: true, expires_in_minutes: Some(expires_in_minutes) }
            }
            Action::Disable => Self { protection_enabled: false, expires_in_minutes: None },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error("ECS agent endpoint unreachable")]
    Transport(#[from] reqwest::Error),
    #[error("ECS agent endpoint answered {status}: {code}: {message}")]
    Rejected { status: u16, code: String, message: String },
    #[error("ECS refused the protection update: {reason}: {detail}")]
    Failure { reason: String, detail: String },
}

#[derive(Debug, Default, Deserialize)]
struct StateResponse {
    failure: Option<FailureBody>,
    error: Option<ErrorBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FailureBody {
    reason: Option<String>,
    detail: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// The ECS agent's task protection endpoint; the client is built once.
#[derive(Clone)]
pub struct EcsAgent {
    http: reqwest::Client,
    endpoint: String,
    expires_in_minutes: u32,
}

impl EcsAgent {
    pub fn new(settings: &ProtectionSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self { http, endpoint: settings.endpoint.clone(), expires_in_minutes: settings.expires_in_minutes })
    }

    pub async fn put(&self, action: Action) -> Result<(), ProtectionError> {
        let body = StateRequest::new(action, self.expires_in_minutes);
        let resp = self.http.put(&self.endpoint).json(&body).send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        // Lenient: a 2xx without a readable body still counts as done.
        let parsed: StateResponse = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let e = parsed.error.unwrap_or_default();
            return Err(ProtectionError::Rejected {
                status: status.as_u16(),
                code: e.code.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
            });
        }
        if let Some(f) = parsed.failure {
            return Err(ProtectionError::Failure {
                reason: f.reason.unwrap_or_default(),
                detail: f.detail.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

/// What this agent believes ECS holds for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Off,
    On {
        renew_at: Instant,
    },
    /// A request failed: it may or may not have been applied, so the next wanted state is
    /// sent even if it looks like a repeat.
    Unknown,
}

/// The next thing the driver should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Send(Action),
    /// Nothing to send before this time (a renewal or a retry), unless the state changes.
    SleepUntil(Instant),
    /// Nothing to send until the busy flag changes.
    Wait,
}

/// The decision logic, free of I/O: which request the busy flag and the clock call for,
/// and when a failed one may be retried.
#[derive(Debug)]
pub struct Plan {
    held: Held,
    retry_at: Option<Instant>,
    backoff: Backoff,
    renew_every: Duration,
}

impl Plan {
    /// A new ECS task starts unprotected.
    pub fn new(renew_every: Duration) -> Self {
        Self { held: Held::Off, retry_at: None, backoff: Backoff::new(RETRY_BASE, RETRY_CAP), renew_every }
    }

    pub fn step(&self, busy: bool, now: Instant) -> Step {
        let action = match (busy, self.held) {
            (true, Held::Off | Held::Unknown) => Action::Enable,
            (true, Held::On { renew_at }) if now >= renew_at => Action::Renew,
            (true, Held::On { renew_at }) => return Step::SleepUntil(renew_at),
            (false, Held::On { .. } | Held::Unknown) => Action::Disable,
            (false, Held::Off) => return Step::Wait,
        };
        match self.retry_at {
            Some(at) if now < at => Step::SleepUntil(at),
            _ => Step::Send(action),
        }
    }

    /// Records the outcome of `action`; on failure returns the delay before a retry.
    pub fn record(&mut self, action: Action, ok: bool, now: Instant) -> Option<Duration> {
        if ok {
            self.backoff.reset();
            self.retry_at = None;
            self.held = match action {
                Action::Enable | Action::Renew => Held::On { renew_at: now + self.renew_every },
                Action::Disable => Held::Off,
            };
            return None;
        }
        // A failed renewal leaves the earlier protection running until its expiry: keep
        // renewing. Anything else leaves the state unknown.
        if action != Action::Renew {
            self.held = Held::Unknown;
        }
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        Some(delay)
    }

    /// Whether protection may be on (so shutdown should release it).
    pub fn may_hold(&self) -> bool {
        self.held != Held::Off
    }
}

/// Starts the protection loop on its own task; it stops (releasing protection) when
/// `stop` is cancelled.
pub fn spawn(
    settings: &ProtectionSettings,
    busy: watch::Receiver<bool>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let agent = EcsAgent::new(settings)?;
    tracing::info!(
        endpoint = %settings.endpoint,
        expires_in_minutes = settings.expires_in_minutes,
        renew_every_s = settings.renew_every.as_secs(),
        "ECS scale-in protection on"
    );
    let plan = Plan::new(settings.renew_every);
    let send = move |action| {
        let agent = agent.clone();
        async move { agent.put(action).await }
    };
    Ok(tokio::spawn(drive(plan, busy, stop, send).instrument(tracing::info_span!("scale_in_protection"))))
}

/// Runs `plan` against `busy` until `stop`, sending with `send`; then releases protection
/// if it may be held, within [`SHUTDOWN_BUDGET`].
pub async fn drive<F, Fut>(mut plan: Plan, mut busy: watch::Receiver<bool>, stop: CancellationToken, mut send: F)
where
    F: FnMut(Action) -> Fut,
    Fut: Future<Output = Result<(), ProtectionError>>,
{
    let mut watching = true;
    while !stop.is_cancelled() {
        let is_busy = *busy.borrow_and_update();
        let until = match plan.step(is_busy, Instant::now()) {
            Step::Send(action) => {
                attempt(&mut plan, &mut send, action).await;
                continue;
            }
            Step::SleepUntil(at) => Some(at),
            Step::Wait => None,
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = sleep_until(until) => {}
            changed = busy.changed(), if watching => {
                // The registry went away: keep the current state until told to stop.
                watching = changed.is_ok();
            }
        }
    }
    if !plan.may_hold() {
        return;
    }
    let release = async {
        loop {
            match attempt(&mut plan, &mut send, Action::Disable).await {
                None => break,
                Some(delay) => tokio::time::sleep(delay).await,
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_BUDGET, release).await.is_err() {
        tracing::warn!("could not release scale-in protection before exit; it lapses at its expiry");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `action`, records the outcome in `plan` and logs it; returns the retry delay of
/// a failure.
async fn attempt<F, Fut>(plan: &mut Plan, send: &mut F, action: Action) -> Option<Duration>
where
    F: FnMut(Action) -> Fut,
    Fut: Future<Output = Result<(), ProtectionError>>,
{
    let result = send(action).await;
    let retry = plan.record(action, result.is_ok(), Instant::now());
    match result {
        Ok(()) => {
            metrics::gauge!("agent_scale_in_protected").set(if action == Action::Disable { 0.0 } else { 1.0 });
            tracing::info!(?action, "scale-in protection updated");
        }
        Err(e) => {
            metrics::counter!("agent_scale_in_protection_failures_total").increment(1);
            let e = anyhow::Error::from(e);
            tracing::warn!(
                ?action,
                error = %format_args!("{e:#}"),
                retry_in_ms = retry.unwrap_or_default().as_millis() as u64,
                "scale-in protection update failed; retrying"
            );
        }
    }
    retry
}

#[cfg(test)]
mod tests;

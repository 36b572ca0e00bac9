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

use proto::backoff::Backoff;
use proto::config::{ConfigError, Env};
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
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const RENEW: Duration = Duration::from_secs(30);

    fn send_ok(plan: &mut Plan, busy: bool) -> Action {
        let now = Instant::now();
        let Step::Send(action) = plan.step(busy, now) else {
            panic!("expected a send, got {:?}", plan.step(busy, now))
        };
        assert_eq!(plan.record(action, true, now), None);
        action
    }

    #[tokio::test(start_paused = true)]
    async fn busy_enables_renews_at_the_interval_and_idle_disables() {
        let mut plan = Plan::new(RENEW);
        assert_eq!(plan.step(false, Instant::now()), Step::Wait, "a new task is unprotected: nothing to release");
        assert_eq!(send_ok(&mut plan, true), Action::Enable);
        let renew_at = Instant::now() + RENEW;
        assert_eq!(plan.step(true, Instant::now()), Step::SleepUntil(renew_at));
        tokio::time::advance(RENEW - Duration::from_millis(1)).await;
        assert_eq!(plan.step(true, Instant::now()), Step::SleepUntil(renew_at), "not before the renewal time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(send_ok(&mut plan, true), Action::Renew);
        assert_eq!(plan.step(true, Instant::now()), Step::SleepUntil(Instant::now() + RENEW), "the next renewal");
        assert_eq!(send_ok(&mut plan, false), Action::Disable, "idle releases at once, renewal pending or not");
        assert_eq!(plan.step(false, Instant::now()), Step::Wait);
        assert!(!plan.may_hold());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_with_backoff_and_then_reset() {
        let mut plan = Plan::new(RENEW);
        let now = Instant::now();
        assert_eq!(plan.step(true, now), Step::Send(Action::Enable));
        let d1 = plan.record(Action::Enable, false, now).expect("retry delay");
        assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&d1), "{d1:?}");
        assert_eq!(plan.step(true, now), Step::SleepUntil(now + d1), "no hot loop");
        tokio::time::advance(d1).await;
        let now = Instant::now();
        assert_eq!(plan.step(true, now), Step::Send(Action::Enable), "retried once the delay is over");
        let d2 = plan.record(Action::Enable, false, now).expect("retry delay");
        assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&d2), "backs off: {d2:?}");
        tokio::time::advance(d2).await;
        assert_eq!(send_ok(&mut plan, true), Action::Enable);
        // A later failure starts from the base delay again.
        tokio::time::advance(RENEW).await;
        let d = plan.record(Action::Renew, false, Instant::now()).expect("retry");
        assert!(d <= Duration::from_secs(1), "backoff was reset: {d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_the_current_state_is_sent_not_the_failed_one() {
        // Enable failed (maybe applied), then the agent went idle: release to be sure.
        let mut plan = Plan::new(RENEW);
        let d = plan.record(Action::Enable, false, Instant::now()).expect("retry");
        tokio::time::advance(d).await;
        assert_eq!(send_ok(&mut plan, false), Action::Disable);
        assert_eq!(plan.step(false, Instant::now()), Step::Wait);

        // Disable failed, then the agent got busy again: enable, not a renewal.
        send_ok(&mut plan, true);
        let d = plan.record(Action::Disable, false, Instant::now()).expect("retry");
        tokio::time::advance(d).await;
        assert_eq!(send_ok(&mut plan, true), Action::Enable);

        // A failed renewal keeps renewing (the earlier protection still runs).
        tokio::time::advance(RENEW).await;
        let d = plan.record(Action::Renew, false, Instant::now()).expect("retry");
        tokio::time::advance(d).await;
        assert_eq!(plan.step(true, Instant::now()), Step::Send(Action::Renew));
    }

    #[test]
    fn request_bodies_match_the_ecs_agent_api() {
        let on = serde_json::to_value(StateRequest::new(Action::Enable, 60)).expect("json");
        assert_eq!(on, serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": 60}));
        let renew = serde_json::to_value(StateRequest::new(Action::Renew, 5)).expect("json");
        assert_eq!(renew, serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": 5}));
        let off = serde_json::to_value(StateRequest::new(Action::Disable, 60)).expect("json");
        assert_eq!(off, serde_json::json!({"ProtectionEnabled": false}));
    }

    #[test]
    fn settings() {
        assert!(ProtectionSettings::from_env(&Env::default()).expect("off by default").is_none());
        let env = Env::default().with("ECS_AGENT_URI", "http://169.254.170.2/api/abc-123/");
        let s = ProtectionSettings::from_env(&env).expect("valid").expect("on");
        assert_eq!(s.endpoint, "http://169.254.170.2/api/abc-123/task-protection/v1/state");
        assert_eq!((s.expires_in_minutes, s.renew_every), (60, Duration::from_secs(1800)));
        let s = ProtectionSettings::from_env(&env.clone().with("ECS_PROTECTION_MINUTES", "1")).expect("v").expect("on");
        assert_eq!(s.renew_every, Duration::from_secs(30), "half the expiry by default");
        for (var, value) in [
            ("ECS_PROTECTION_MINUTES", "0"),
            ("ECS_PROTECTION_MINUTES", "2881"),
            ("ECS_PROTECTION_RENEW_SECONDS", "3600"),
            ("ECS_PROTECTION_RENEW_SECONDS", "0"),
            ("ECS_AGENT_URI", "169.254.170.2/api"),
            ("ECS_AGENT_URI", "ftp://169.254.170.2/api"),
        ] {
            let e = ProtectionSettings::from_env(&env.clone().with(var, value)).expect_err(value);
            assert_eq!(e.var, var, "{value}");
        }
        // Checked even off ECS, so a typo fails at start.
        let e = ProtectionSettings::from_env(&Env::default().with("ECS_PROTECTION_MINUTES", "x")).expect_err("bad");
        assert_eq!(e.var, "ECS_PROTECTION_MINUTES");
    }

    type Sent = Arc<Mutex<Vec<Action>>>;
    type Reply = std::future::Ready<Result<(), ProtectionError>>;

    /// A sender that records each action and answers from a script (then succeeds).
    fn scripted(script: Vec<bool>) -> (Sent, impl FnMut(Action) -> Reply) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let mut script = script.into_iter();
        let send = move |a| {
            log.lock().expect("lock").push(a);
            let ok = script.next().unwrap_or(true);
            std::future::ready(if ok {
                Ok(())
            } else {
                Err(ProtectionError::Rejected { status: 500, code: "ServerException".into(), message: "test".into() })
            })
        };
        (sent, send)
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_follows_the_busy_flag_renews_retries_and_releases_on_stop() {
        let (busy_tx, busy_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        // The first enable fails, the retry succeeds.
        let (sent, send) = scripted(vec![false]);
        let task = tokio::spawn(drive(Plan::new(RENEW), busy_rx, stop.clone(), send));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(sent.lock().expect("lock").is_empty(), "idle: nothing sent");

        busy_tx.send_replace(true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*sent.lock().expect("lock"), [Action::Enable, Action::Enable], "enable, retried after a failure");
        tokio::time::sleep(RENEW * 2 + Duration::from_secs(1)).await;
        assert_eq!(sent.lock().expect("lock")[2..], [Action::Renew, Action::Renew], "renewed while busy");

        busy_tx.send_replace(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sent.lock().expect("lock").last(), Some(&Action::Disable));
        tokio::time::sleep(RENEW * 3).await;
        assert_eq!(sent.lock().expect("lock").len(), 5, "no renewals while idle");

        // Busy again when the agent stops: released on the way out.
        busy_tx.send_replace(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        task.await.expect("driver");
        assert_eq!(sent.lock().expect("lock")[5..], [Action::Enable, Action::Disable]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_while_idle_sends_nothing_and_a_failing_release_gives_up_within_the_budget() {
        let (_busy_tx, busy_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let (sent, send) = scripted(vec![]);
        stop.cancel();
        drive(Plan::new(RENEW), busy_rx, stop, send).await;
        assert!(sent.lock().expect("lock").is_empty());

        let (busy_tx, busy_rx) = watch::channel(true);
        let stop = CancellationToken::new();
        let (sent, send) = scripted(std::iter::once(true).chain(std::iter::repeat_n(false, 100)).collect());
        let task = tokio::spawn(drive(Plan::new(RENEW), busy_rx, stop.clone(), send));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let started = Instant::now();
        task.await.expect("driver");
        assert!(started.elapsed() <= SHUTDOWN_BUDGET, "bounded: {:?}", started.elapsed());
        let sent = sent.lock().expect("lock");
        assert_eq!(sent[0], Action::Enable);
        assert!(sent[1..].len() >= 2 && sent[1..].iter().all(|a| *a == Action::Disable), "{sent:?}");
        drop(busy_tx);
    }
}

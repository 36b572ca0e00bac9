//! The protection plan (renewals, backoff, release) in paused time, the request bodies, and
//! the driver against a scripted ECS agent endpoint.

use std::sync::{Arc, Mutex};

use super::*;

const RENEW: Duration = Duration::from_secs(30);

fn send_ok(plan: &mut Plan, busy: bool) -> Action {
    let now = Instant::now();
    let Step::Send(action) = plan.step(busy, now) else { panic!("expected a send, got {:?}", plan.step(busy, now)) };
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

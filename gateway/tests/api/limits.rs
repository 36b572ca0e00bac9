//! Per-user admission limits (ARCHITECTURE §2 "Rate limit", "Active cap"): exact under concurrency,
//! shared by gateway replicas through Redis, 429 with `Retry-After`, and every terminal
//! transition frees an active-task slot.

use futures_util::future::join_all;
use proto::store::{Finish, NewTask, Takeover};
use proto::{Keys, TaskId, TaskStatus};
use redis::AsyncCommands;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{detail, header, problem};

const USER: &str = "limits-user";

async fn post(app: &Harness, base: &str, i: usize) -> reqwest::Response {
    app.http
        .post(format!("{base}/tasks"))
        .bearer_auth(app.token_for(USER))
        .json(&json!({"mandate": format!("task {i}"), "max_ticks": 1}))
        .send()
        .await
        .expect("request")
}

/// Counts 202s and checks every other answer is a 429 problem with a sane `Retry-After`
/// and a detail containing `says`.
async fn tally(responses: Vec<reqwest::Response>, says: &str, max_retry: u64) -> usize {
    let mut accepted = 0;
    for resp in responses {
        if resp.status() == 202 {
            accepted += 1;
            continue;
        }
        let (headers, body) = problem(resp, 429).await;
        let retry: u64 = header(&headers, "retry-after").parse().expect("Retry-After in seconds");
        assert!((1..=max_retry).contains(&retry), "Retry-After {retry}");
        assert!(detail(&body).contains(says), "{body}");
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_exact_under_fifty_concurrent_submissions() {
    // One submission per 10 s, bursts of 10: a 50-request burst gets exactly 10 through.
    let app = Harness::start(&[("SUBMIT_RATE_PER_MINUTE", "6"), ("SUBMIT_BURST", "10")]).await;
    let base = app.url("");
    let responses = join_all((0..50).map(|i| post(&app, &base, i))).await;
    assert_eq!(tally(responses, "too many submissions", 10).await, 10);
    // Other users have their own budget.
    let other = app.submit("someone-else", json!({"mandate": "mine", "max_ticks": 1})).await;
    assert_eq!(other.status(), 202);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_the_limit() {
    let limits = [("SUBMIT_RATE_PER_MINUTE", "6"), ("SUBMIT_BURST", "10")];
    let mut app = Harness::start(&limits).await;
    let second = format!("http://{}", app.start_replica(&limits).await);
    let first = app.url("");
    let responses = join_all((0..24).map(|i| {
        let base = if i % 2 == 0 { first.clone() } else { second.clone() };
        let app = &app;
        async move { post(app, &base, i).await }
    }))
    .await;
    assert_eq!(tally(responses, "too many submissions", 10).await, 10, "one budget across both replicas");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_cap_is_exact_under_fifty_concurrent_submissions() {
    let app = Harness::start(&[("MAX_ACTIVE_TASKS_PER_USER", "5")]).await;
    let base = app.url("");
    let responses = join_all((0..50).map(|i| post(&app, &base, i))).await;
    assert_eq!(tally(responses, "still queued or running", 60).await, 5);
    let active: usize = app.redis.clone().scard(Keys::new(app.ns.prefix.clone()).active(USER)).await.expect("scard");
    assert_eq!(active, 5);
    app.cleanup().await;
}

async fn submit_id(app: &Harness) -> TaskId {
    let resp = app.submit(USER, json!({"mandate": "slot", "max_ticks": 3})).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let body: Value = resp.json().await.expect("json");
    body["correlation_id"].as_str().expect("id").parse().expect("uuid")
}

async fn assert_full(app: &Harness) {
    let resp = app.submit(USER, json!({"mandate": "one too many", "max_ticks": 3})).await;
    problem(resp, 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_terminal_transition_frees_a_slot() {
    let app = Harness::start(&[("MAX_ACTIVE_TASKS_PER_USER", "2")]).await;
    let a = submit_id(&app).await;
    let b = submit_id(&app).await;
    assert_full(&app).await;

    // Cancelled while queued.
    assert_eq!(app.cancel(USER, a).await.status(), 202);
    let c = submit_id(&app).await;
    assert_full(&app).await;

    // Gave up: the delivery limit (1) is reached, so the next delivery fails the task.
    assert_eq!(app.claim(b, "w1", 1).await, 1);
    assert_full(&app).await;
    let gave_up = app.take_over(b, "w2", 1).await;
    assert!(matches!(gave_up, Takeover::GaveUp { attempts: 1 }), "{gave_up:?}");
    let d = submit_id(&app).await;
    assert_full(&app).await;

    // A running task asked to cancel holds its slot until the agent ends it.
    let attempt = app.claim(c, "w1", 5).await;
    let rec = app.record(c).await.expect("record");
    assert_eq!(app.cancel(USER, c).await.status(), 202);
    assert_full(&app).await;
    let cancelled =
        Finish { status: TaskStatus::Cancelled, result: None, error: None, ticks_used: Some(1), tokens_used: None };
    assert_eq!(
        app.store.finish(&rec, Some(attempt), &cancelled).await.expect("finish"),
        proto::store::FinishOutcome::Written
    );
    let e = submit_id(&app).await;
    assert_full(&app).await;

    // Completed by an agent.
    let attempt = app.claim(d, "w1", 5).await;
    let rec = app.record(d).await.expect("record");
    let done =
        Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(1), tokens_used: None };
    assert_eq!(
        app.store.finish(&rec, Some(attempt), &done).await.expect("finish"),
        proto::store::FinishOutcome::Written
    );
    let f = submit_id(&app).await;
    assert_full(&app).await;

    // Never enqueued (the submission's undo).
    let rec = app.record(e).await.expect("record");
    let undo = NewTask {
        id: e,
        user_id: USER.into(),
        mandate: rec.mandate.clone(),
        max_ticks: rec.max_ticks,
        created_at: chrono::Utc::now(),
        idempotency: None,
        webhook_url: None,
        tools: Vec::new(),
        max_tokens: None,
        expires_at: None,
        traceparent: None,
    };
    assert!(app.store.abort_submit(&undo).await.expect("abort"));
    submit_id(&app).await;
    assert_full(&app).await;
    assert_eq!(app.record(f).await.expect("record").status, TaskStatus::InQueue);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_by_a_vanished_record_is_reclaimed() {
    let app = Harness::start(&[("MAX_ACTIVE_TASKS_PER_USER", "1")]).await;
    let key = Keys::new(app.ns.prefix.clone()).active(USER);
    let _: i64 = app.redis.clone().sadd(&key, TaskId::new().to_string()).await.expect("sadd");
    submit_id(&app).await;
    assert_full(&app).await;
    app.cleanup().await;
}

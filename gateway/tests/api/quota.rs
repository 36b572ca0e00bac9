//! The daily tick quota (ARCHITECTURE §2 "Quota"): reserved atomically at submit, exact under
//! concurrency, 429 with `Retry-After` when exceeded, refunded when a queued task is
//! cancelled.

use futures_util::future::join_all;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{assert_ready, detail, header, problem};

const USER: &str = "quota-user";

/// The integers written in a text.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_reserve_exactly_the_limit_and_cancel_refunds() {
    // The rate limit is not what this test is about; keep it out of the way.
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "100"), ("SUBMIT_RATE_PER_MINUTE", "0")]).await;

    let responses =
        join_all((0..50).map(|i| app.submit(USER, json!({"mandate": format!("task {i}"), "max_ticks": 10})))).await;
    let mut accepted = Vec::new();
    let mut over = 0;
    for resp in responses {
        match resp.status().as_u16() {
            202 => {
                let body: Value = resp.json().await.expect("json");
                accepted.push(body["correlation_id"].as_str().expect("id").parse::<proto::TaskId>().expect("uuid"));
            }
            429 => {
                let (headers, body) = problem(resp, 429).await;
                let retry: u64 = header(&headers, "retry-after")
                    .parse()
                    .unwrap_or_else(|e| panic!("Retry-After must be an integer number of seconds ({e})"));
                assert!((1..=86_400).contains(&retry), "Retry-After {retry} is not within a day");
                assert!(detail(&body).contains("quota"), "{body}");
                assert!(numbers(detail(&body)).contains(&0), "detail must report the 0 remaining ticks: {body}");
                over += 1;
            }
            other => panic!("unexpected status {other}: {:?}", resp.text().await),
        }
    }
    assert_eq!((accepted.len(), over), (10, 40), "exactly 100 / 10 submissions fit");
    assert_eq!(app.quota_used(USER).await, 100, "the counter holds exactly the accepted reservations");
    assert_ready(&app, 10).await;
    // Only the accepted tasks have records.
    let list: Value = app
        .http
        .get(app.url("/tasks?limit=100"))
        .bearer_auth(app.token_for(USER))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(list["tasks"].as_array().expect("tasks").len(), 10);

    // Cancelling a queued task gives its whole reservation back.
    let victim = accepted[3];
    let resp = app.cancel(USER, victim).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(app.quota_used(USER).await, 90, "cancel while queued refunds max_ticks");

    // A second cancel is a conflict and must not refund twice.
    problem(app.cancel(USER, victim).await, 409).await;
    assert_eq!(app.quota_used(USER).await, 90, "a refused cancel must not refund again");

    // The refund is usable; the 429 reports what is left.
    let (_, body) = problem(app.submit(USER, json!({"mandate": "too big", "max_ticks": 20})).await, 429).await;
    assert!(numbers(detail(&body)).contains(&10), "detail must report the 10 remaining ticks: {body}");
    app.submit_ok(USER, "fits again", 10).await;
    assert_eq!(app.quota_used(USER).await, 100);
    // The cancelled task's message is still in the queue (agents skip it); plus the new one.
    assert_ready(&app, 11).await;
    problem(app.submit(USER, json!({"mandate": "one more", "max_ticks": 1})).await, 429).await;
    assert_eq!(app.quota_used(USER).await, 100);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_per_user() {
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "30")]).await;
    app.submit_ok("alice", "alice 1", 30).await;
    problem(app.submit("alice", json!({"mandate": "alice 2", "max_ticks": 1})).await, 429).await;
    // Bob's budget is untouched by alice's.
    app.submit_ok("bob", "bob 1", 30).await;
    assert_eq!(app.quota_used("alice").await, 30);
    assert_eq!(app.quota_used("bob").await, 30);
    assert_ready(&app, 2).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_positive_limit_means_unlimited() {
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "0")]).await;
    for i in 0..3 {
        app.submit_ok(USER, &format!("big {i}"), 200).await;
    }
    assert_eq!(app.quota_used(USER).await, 600, "reservations are still counted");
    assert_ready(&app, 3).await;
    app.cleanup().await;
}

use proto::TaskStatus;
use serde_json::Value;
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_queued_never_runs() {
    let mut app = Harness::start(&[]).await;
    let id = app.submit_ok("alice", "never mind", 10).await;
    let resp = app.cancel("alice", id).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(app.quota_used("alice").await, 0, "whole reservation refunded");

    app.spawn_agent(AGENT, "a1", &env_refs(&pace(10, 1)));
    app.eventually("the queued envelope is consumed", SOON, || async { app.ready("").await == 0 }).await;
    // Give the agent time to (wrongly) claim it, then check it did not.
    let probe = app.submit_ok("alice", "probe", 2).await;
    app.wait_for(probe, SOON, |r| r.status.is_terminal()).await;
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::Cancelled);
    assert_eq!(rec.attempt, 0, "never claimed");
    assert_eq!(app.ready(".dlq").await, 0);
    assert_eq!(app.cancel("alice", id).await.status(), 409);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_running_stops_at_the_next_tick() {
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(AGENT, "a1", &env_refs(&pace(200, 40)));
    let id = app.submit_ok("alice", "long task", 50).await;
    app.wait_for(id, SOON, |r| r.tick.is_some_and(|t| t >= 2)).await;
    let resp = app.cancel("alice", id).await;
    assert_eq!(resp.status(), 202);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Cancelled);
    let ticks = rec.tick.expect("tick");
    assert!(ticks < 10, "stopped promptly, at tick {ticks}");
    assert_eq!(app.quota_used("alice").await, i64::from(ticks), "unused ticks refunded");
    let result = rec.result.expect("partial result");
    assert_eq!(result["success"], false);
    app.eventually("message acked", SOON, || async { app.ready("").await == 0 }).await;
    assert_eq!(app.ready(".dlq").await, 0);
    app.cleanup().await;
}

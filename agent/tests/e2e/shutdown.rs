use std::time::Duration;

use proto::TaskStatus;
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_running_task_to_completion() {
    let mut app = Harness::start(&[]).await;
    let mut env = pace(200, 6);
    env.push(("AGENT_DRAIN_SECONDS", "30".into()));
    let a = app.spawn_agent(AGENT, "drainer", &env_refs(&env));
    let id = app.submit_ok("alice", "finish me", 10).await;
    app.wait_for(id, SOON, |r| r.tick.is_some_and(|t| t >= 1)).await;
    app.agent(a).sigterm();
    let status = app.agent(a).wait_exit(SOON).await.expect("agent exits after draining");
    assert!(status.success(), "clean exit: {status:?}");
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::Completed, "drained, not abandoned");
    assert_eq!(app.agent_count().await["count"], 0, "deregistered on the way out: {}", app.agent(a).log_text());
    assert_eq!(app.ready("").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_drain_requeues_and_another_agent_resumes() {
    let mut app = Harness::start(&[]).await;
    let mut env = pace(200, 30);
    env.push(("AGENT_DRAIN_SECONDS", "1".into()));
    let a = app.spawn_agent(AGENT, "leaver", &env_refs(&env));
    let id = app.submit_ok("alice", "outlive the drain", 40).await;
    app.wait_for(id, SOON, |r| r.tick.is_some_and(|t| t >= 2)).await;
    app.agent(a).sigterm();
    let status = app.agent(a).wait_exit(SOON).await.expect("agent exits after the drain period");
    assert!(status.success(), "clean exit: {status:?}");
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::InProgress, "not terminal: handed back");
    let left_at = rec.tick.expect("tick");
    app.eventually("the envelope is back in the queue", SOON, || async { app.ready("").await == 1 }).await;
    assert_eq!(app.agent_count().await["count"], 0);

    let mut env = pace(10, 30);
    env.push(("AGENT_DRAIN_SECONDS", "1".into()));
    app.spawn_agent(AGENT, "successor", &env_refs(&env));
    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempt, 2);
    let first_resumed = app
        .events(id)
        .await
        .iter()
        .filter(|e| e.get("attempt").is_some_and(|a| a == "2"))
        .find_map(|e| e.get("tick")?.parse::<u32>().ok());
    assert_eq!(first_resumed, Some(left_at + 1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.cleanup().await;
}

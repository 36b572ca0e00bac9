use std::time::Duration;

use proto::TaskStatus;
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_task_resumes_from_checkpoint_on_another_and_completes_once() {
    let mut app = Harness::start(&[]).await;
    let env = pace(250, 12);
    let a = app.spawn_agent(AGENT, "victim", &env_refs(&env));
    let id = app.submit_ok("alice", "survive a crash", 20).await;
    let rec = app.wait_for(id, SOON, |r| r.tick.unwrap_or(0) >= 3).await;
    assert_eq!(rec.worker_id.as_deref(), Some("victim"));
    app.agent(a).kill();
    let killed_at = app.record(id).await.expect("record").tick.expect("tick");

    app.spawn_agent(AGENT, "rescuer", &env_refs(&env));
    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempt, 2, "exactly one redelivery");
    assert_eq!(done.worker_id.as_deref(), Some("rescuer"));
    assert_eq!(done.tick, Some(13));

    let events = app.events(id).await;
    let terminal = events.iter().filter(|e| e.get("status").is_some_and(|s| s == "completed")).count();
    assert_eq!(terminal, 1, "one terminal write");
    let resumed_ticks: Vec<u32> = events
        .iter()
        .filter(|e| e.get("attempt").is_some_and(|a| a == "2"))
        .filter_map(|e| e.get("tick")?.parse().ok())
        .collect();
    assert_eq!(resumed_ticks.first().copied(), Some(killed_at + 1), "resumed after the last checkpointed tick");
    assert_eq!(app.ready("").await, 0);
    assert_eq!(app.ready(".dlq").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_that_keeps_killing_its_agent_fails_after_the_delivery_limit() {
    let limit = [("AGENT_MAX_DELIVERIES", "2")];
    let mut app = Harness::start(&limit).await;
    let mut env = pace(200, 40);
    env.push(("AGENT_MAX_DELIVERIES", "2".into()));
    let id = app.submit_ok("alice", "crash every time", 50).await;
    for attempt in 1..=2 {
        let i = app.spawn_agent(AGENT, &format!("doomed{attempt}"), &env_refs(&env));
        app.wait_for(id, SOON, |r| r.attempt == attempt && r.tick.is_some_and(|t| t >= 1)).await;
        app.agent(i).kill();
        // Let the broker notice the dead consumer before the next one starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.spawn_agent(AGENT, "judge", &env_refs(&env));
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(rec.error.as_deref(), Some("gave up after 2 deliveries"));
    // The agent writes the terminal record first and dead-letters the message right after
    // (ack only after the terminal write), so the DLQ may lag the record by a moment.
    app.eventually("the message went to the dead-letter queue", SOON, || async { app.ready(".dlq").await == 1 }).await;
    assert_eq!(app.ready(".dlq").await, 1, "exactly one dead-lettered message");
    // Quota: the unused part of the reservation came back.
    assert_eq!(app.quota_used("alice").await, i64::from(rec.ticks_used));
    app.cleanup().await;
}

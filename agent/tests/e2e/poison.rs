use proto::{TaskEnvelope, TaskId, TaskStatus};
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_agent_keeps_consuming() {
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(AGENT, "a1", &env_refs(&pace(10, 1)));

    // Not JSON at all, no id anywhere: dead-lettered, nothing else to update.
    app.publish_raw(b"\x00\x01 definitely not json", None).await;

    // Valid JSON, invalid envelope, but its id names a record: that record is failed.
    let id = TaskId::new();
    let env = TaskEnvelope {
        correlation_id: id,
        mandate: "x".into(),
        max_ticks: 3,
        user_id: Some("alice".into()),
        submitted_at: None,
        v: None,
        seq: 0,
    };
    assert!(app.store.adopt(&env).await.expect("adopt"));
    let bad = format!(r#"{{"correlation_id":"{id}","mandate":"","max_ticks":3}}"#);
    app.publish_raw(bad.as_bytes(), Some(&id.to_string())).await;

    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(rec.error.as_deref(), Some("invalid envelope"));
    app.eventually("both poison messages in the DLQ", SOON, || async { app.ready(".dlq").await == 2 }).await;

    // The same agent still works.
    let ok = app.submit_ok("alice", "after the poison", 3).await;
    let rec = app.wait_for(ok, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(app.ready(".dlq").await, 2);
    app.cleanup().await;
}

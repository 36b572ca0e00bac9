//! A run's terminal write: fenced by its attempt, and the step that forgets the task's
//! memories.

use std::time::Duration;

use proto::TaskStatus;
use proto::store::{Finish, FinishOutcome, MemoryCleanup, Takeover};
use redis::AsyncCommands;

use crate::support::Fixture;

fn completed() -> Finish {
    Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(1), tokens_used: None }
}

#[tokio::test]
async fn finish_forgets_the_tasks_memories_in_the_same_step() {
    let t = Fixture::submitted(5).await;
    // The gateway's store (Leave) and a Qdrant agent's never touch memory:{id}.
    let key = t.remember().await;
    assert!(matches!(t.take(&t.store, "agent-a", 1).await, Takeover::Claimed(_)));
    assert!(matches!(t.take(&t.store, "agent-a", 1).await, Takeover::GaveUp { attempts: 1 }));
    assert!(t.ttl(&key).await > 0, "left alone without cleanup");

    // The agent's store: the terminal write deletes them, no DEL of its own.
    let t = Fixture::submitted(5).await;
    let key = t.remember().await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(c) = t.take(&agent, "agent-a", 5).await else { panic!("claim") };
    assert_eq!(t.ttl(&key).await, 900, "kept while running");
    assert_eq!(agent.finish(&c.record, Some(1), &completed()).await.expect("finish"), FinishOutcome::Written);
    assert_eq!(t.ttl(&key).await, -2, "deleted with the terminal write");

    // MEMORY_RETENTION_SECONDS: kept that long after the end instead.
    let t = Fixture::submitted(5).await;
    let key = t.remember().await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Retain(Duration::from_secs(60)));
    let Takeover::Claimed(c) = t.take(&agent, "agent-a", 5).await else { panic!("claim") };
    assert_eq!(agent.finish(&c.record, Some(1), &completed()).await.expect("finish"), FinishOutcome::Written);
    let left = t.ttl(&key).await;
    assert!((1..=60).contains(&left), "retained 60 s, TTL {left}");
}

#[tokio::test]
async fn a_stale_attempts_finish_deletes_and_writes_nothing() {
    let t = Fixture::submitted(5).await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(old) = t.take(&agent, "agent-a", 5).await else { panic!("claim") };
    let cp = r#"{"tick":1}"#;
    agent
        .progress(
            &old.record,
            1,
            &proto::store::Tick { tick: 1, action: "think", checkpoint: cp, tool: None, tokens_used: 0 },
        )
        .await
        .expect("progress");
    let Takeover::Claimed(new) = t.take(&agent, "agent-b", 5).await else { panic!("claim") };
    let key = t.remember().await;
    let mut conn = t.store.connection();
    let quota = old.record.quota_key.clone().expect("quota key");
    let reserved: i64 = conn.get(&quota).await.expect("quota");
    let events: usize = conn.xlen(t.store.keys().events(t.id())).await.expect("events");
    let before = t.record().await;

    assert_eq!(agent.finish(&old.record, Some(1), &completed()).await.expect("finish"), FinishOutcome::Refused);
    assert_eq!(t.record().await, before, "the record is untouched");
    assert_eq!(t.ttl(&key).await, 900, "the memories are untouched");
    assert_eq!(t.store.checkpoint(t.id()).await.expect("redis").as_deref(), Some(cp), "so is the checkpoint");
    assert_eq!(conn.get::<_, i64>(&quota).await.expect("quota"), reserved, "nothing refunded");
    assert_eq!(conn.xlen::<_, usize>(t.store.keys().events(t.id())).await.expect("events"), events);
    let active: bool = conn.sismember(t.store.keys().active("alice"), t.id().to_string()).await.expect("active");
    assert!(active, "the slot stays taken");

    // The owner's finish does it all.
    assert_eq!(agent.finish(&new.record, Some(2), &completed()).await.expect("finish"), FinishOutcome::Written);
    assert_eq!(t.ttl(&key).await, -2);
    assert_eq!(t.store.checkpoint(t.id()).await.expect("redis"), None);
}

//! A delivery's take-over: the claim reads what the run needs in the step that fences,
//! names the owner's keys from the envelope, adopts an envelope without a record, and its
//! own endings forget the task's memories.

use proto::store::{CancelOutcome, Finish, MemoryCleanup, ProgressOutcome, Takeover};
use proto::{TaskEnvelope, TaskId, TaskStatus};
use redis::AsyncCommands;

use crate::support::Fixture;

#[tokio::test]
async fn the_claim_returns_the_record_and_the_checkpoint_of_the_attempt_it_fences() {
    let t = Fixture::submitted(5).await;
    let Takeover::Claimed(first) = t.take(&t.store, "agent-a", 5).await else { panic!("claim") };
    assert_eq!((first.attempt, first.checkpoint.as_deref()), (1, None), "nothing recorded yet");
    assert_eq!((first.record.status, first.record.attempt), (TaskStatus::InProgress, 1), "{:#?}", first.record);
    assert_eq!(first.record.worker_id.as_deref(), Some("agent-a"));
    assert!(first.record.started_at.is_some());
    assert_eq!(first.record, t.record().await, "the record as the claim left it");
    let quota_key = t.store.quota_key("alice", t.envelope.submitted_at.expect("at"));
    assert_eq!(first.record.quota_key, Some(quota_key), "the envelope names the record's owner");

    let cp = r#"{"tick":1,"notes":["after tick 1"]}"#;
    let fenced = &first.record;
    assert_eq!(
        t.store
            .progress(
                fenced,
                1,
                &proto::store::Tick { tick: 1, action: "think", checkpoint: cp, tool: None, tokens_used: 0 }
            )
            .await
            .expect("progress"),
        ProgressOutcome::Continue { messages: 0 }
    );
    let Takeover::Claimed(second) = t.take(&t.store, "agent-b", 5).await else { panic!("claim") };
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint.as_deref(), Some(cp), "resumes from what attempt 1 recorded");
    assert_eq!((second.record.attempt, second.record.tick), (2, Some(1)), "{:#?}", second.record);
    assert_eq!(second.record.worker_id.as_deref(), Some("agent-b"));
    assert_eq!(second.record.started_at, first.record.started_at, "started once");

    // The fenced attempt can no longer move the checkpoint the next claim would read.
    let stale = r#"{"tick":2}"#;
    assert_eq!(
        t.store
            .progress(
                fenced,
                1,
                &proto::store::Tick { tick: 2, action: "think", checkpoint: stale, tool: None, tokens_used: 0 }
            )
            .await
            .expect("progress"),
        ProgressOutcome::Fenced
    );
    let Takeover::Claimed(third) = t.take(&t.store, "agent-c", 5).await else { panic!("claim") };
    assert_eq!((third.attempt, third.checkpoint.as_deref()), (3, Some(cp)));
}

#[tokio::test]
async fn a_wrong_owner_guess_writes_nothing_under_its_keys() {
    let t = Fixture::submitted(5).await;
    let Takeover::Claimed(claimed) = t.take(&t.store, "agent-a", 5).await else { panic!("claim") };
    let rec = claimed.record;
    assert_eq!(t.store.cancel(&rec).await.expect("cancel"), CancelOutcome::Requested);
    let keys = t.store.keys().clone();
    let mut conn = t.store.connection();
    let quota = rec.quota_key.clone().expect("quota key");
    let reserved: i64 = conn.get(&quota).await.expect("quota");

    // The delivery that ends the cancelled task has an envelope naming someone else: it ends
    // it under the record's own keys (the active slot and the reservation are alice's).
    let at = "2026-01-01T12:00:00Z".parse().expect("a time");
    let mallorys = TaskEnvelope { user_id: Some("mallory".into()), submitted_at: Some(at), ..t.envelope.clone() };
    let got = t.store.take_over(&mallorys, "agent-b", 5).await.expect("take over");
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Cancelled)), "{got:?}");
    let refunded: i64 = conn.get(&quota).await.expect("quota");
    assert_eq!(reserved - refunded, 5, "alice's unused ticks refunded");
    let active: bool = conn.sismember(keys.active("alice"), t.id().to_string()).await.expect("active");
    assert!(!active, "alice's slot released");
    for k in [keys.active("mallory"), keys.user_tasks("mallory"), keys.quota("mallory", "20260101")] {
        let exists: bool = conn.exists(&k).await.expect("exists");
        assert!(!exists, "{k} written");
    }
}

#[tokio::test]
async fn an_envelope_without_a_record_is_adopted_and_taken_over() {
    let t = Fixture::submitted(5).await;
    // Another producer's envelope: the three Python fields only.
    let theirs = TaskEnvelope {
        correlation_id: TaskId::new(),
        mandate: "from elsewhere".into(),
        max_ticks: 3,
        user_id: None,
        submitted_at: None,
        v: None,
        seq: 0,
    };
    let Takeover::Claimed(c) = t.store.take_over(&theirs, "agent-a", 5).await.expect("take over") else {
        panic!("claim")
    };
    assert_eq!((c.attempt, c.checkpoint.as_deref()), (1, None));
    assert_eq!((c.record.id, c.record.status, c.record.max_ticks), (theirs.correlation_id, TaskStatus::InProgress, 3));
    assert_eq!((c.record.user_id.as_str(), c.record.quota_key.as_deref()), ("", None), "no owner, no reservation");
    assert!(!t.store.adopt(&theirs).await.expect("adopt"), "adopted once");

    // Its record has no owner, and the envelope names none: a give-up matches without a rekey.
    let got = t.store.take_over(&theirs, "agent-b", 1).await.expect("take over");
    assert!(matches!(got, Takeover::GaveUp { attempts: 1 }), "{got:?}");
}

#[tokio::test]
async fn the_claims_own_endings_keep_the_memories_for_a_retry_and_forget_them_once_completed() {
    // Gave up on the claim: failed, so kept with the checkpoint for a retry.
    let t = Fixture::submitted(5).await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    assert!(matches!(t.take(&agent, "agent-a", 1).await, Takeover::Claimed(_)));
    let key = t.remember().await;
    assert!(matches!(t.take(&agent, "agent-b", 1).await, Takeover::GaveUp { attempts: 1 }));
    let kept = t.ttl(&key).await;
    assert!(kept > 6 * 86_400, "gave up: kept for CHECKPOINT_RETENTION_SECONDS, ttl {kept}");
    // A redelivery of a task that failed elsewhere leaves them too.
    let got = t.take(&agent, "agent-c", 5).await;
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Failed)), "{got:?}");
    assert!(t.ttl(&key).await > 0, "failed: kept");

    // A redelivery of a task that completed elsewhere (memories left by a crash of the agent
    // that completed it) forgets them.
    let t = Fixture::submitted(5).await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(c) = t.take(&agent, "agent-a", 5).await else { panic!("claim") };
    let done =
        Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(1), tokens_used: None };
    t.store.finish(&c.record, Some(c.attempt), &done).await.expect("finish");
    let key = t.remember().await;
    let got = t.take(&agent, "agent-b", 5).await;
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Completed)), "{got:?}");
    assert_eq!(t.ttl(&key).await, -2, "completed: deleted");

    // Cancelled while its run was interrupted.
    let t = Fixture::submitted(5).await;
    let agent = t.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(c) = t.take(&agent, "agent-a", 5).await else { panic!("claim") };
    t.store.cancel(&c.record).await.expect("cancel");
    let key = t.remember().await;
    let got = t.take(&agent, "agent-b", 5).await;
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Cancelled)), "{got:?}");
    assert!(t.ttl(&key).await > 0, "cancelled: kept for a retry");
}

//! Stopping at a budget and being admitted again, script by script: `incomplete` settles the
//! run once (ticks and tokens refunded, the active slot freed, the checkpoint kept); extend,
//! retry and restart admit the task again with the next enqueue number; the limits apply as
//! at submit; an operation admits a task once; the daily token quota is exact under
//! concurrency; a task not started before its expiry fails and is refunded.

use std::time::Duration;

use proto::store::{
    CancelOutcome, Finish, Limits, NewTask, Readmission, ReadmitOutcome, SubmitOutcome, Takeover, TaskStore,
};
use proto::task::IncompleteReason;
use proto::{TaskEnvelope, TaskStatus};
use redis::AsyncCommands;

use crate::support::{Fixture, Scratch};

/// The fixture's task, claimed, with `ticks` recorded (each spending 100 tokens), then
/// ended as `status` (`incomplete` at its token budget, or failed).
async fn ran(t: &Fixture, ticks: u32, status: TaskStatus) {
    let Takeover::Claimed(c) = t.take(&t.store, "agent-a", 5).await else { panic!("claim") };
    for tick in 1..=ticks {
        let cp = format!(r#"{{"tick":{tick}}}"#);
        t.store
            .progress(
                &c.record,
                c.attempt,
                &proto::store::Tick {
                    tick,
                    action: "think",
                    checkpoint: &cp,
                    tool: None,
                    tokens_used: u64::from(tick) * 100,
                },
            )
            .await
            .expect("progress");
    }
    let error = match status {
        TaskStatus::Incomplete => Some(IncompleteReason::MaxTokens.as_str().to_owned()),
        _ => Some("the model API refused the key".to_owned()),
    };
    let fin =
        Finish { status, result: None, error, ticks_used: Some(ticks), tokens_used: Some(u64::from(ticks) * 100) };
    t.store.finish(&c.record, Some(c.attempt), &fin).await.expect("finish");
}

fn limits() -> Limits {
    Limits { daily_ticks: 100, daily_tokens: 10_000, token_estimate: 500, max_active: 5, ..Limits::NONE }
}

async fn counter(store: &TaskStore, key: String) -> i64 {
    store.connection().get::<_, Option<i64>>(key).await.expect("redis").unwrap_or(0)
}

async fn tokens_reserved(store: &TaskStore, user: &str) -> i64 {
    counter(store, store.keys().tokens(user, &proto::time::utc_day(chrono::Utc::now()))).await
}

/// A task of alice's with a token budget, submitted under [`limits`].
async fn budgeted(max_tokens: u64) -> Fixture {
    let t =
        Fixture::submitted_with(NewTask { max_tokens: Some(max_tokens), ..NewTask::new("alice", "m", 5) }, &limits())
            .await;
    assert_eq!(tokens_reserved(&t.store, "alice").await, i64::try_from(max_tokens).expect("small"));
    t
}

#[tokio::test]
async fn incomplete_settles_the_run_once_keeps_the_checkpoint_and_extend_resumes_it() {
    let t = budgeted(300).await;
    ran(&t, 2, TaskStatus::Incomplete).await;
    let rec = t.record().await;
    assert_eq!(
        (rec.status, rec.incomplete_reason, rec.tokens_used),
        (TaskStatus::Incomplete, Some(IncompleteReason::MaxTokens), 200)
    );
    assert!(rec.finished_at.is_none(), "not ended");
    assert_eq!(t.quota_used("alice").await, 2, "5 ticks reserved, 3 unused refunded");
    assert_eq!(tokens_reserved(&t.store, "alice").await, 200, "300 reserved, 100 unspent refunded");
    assert!(t.store.checkpoint(t.id()).await.expect("redis").is_some(), "kept for the extend");
    let active: bool =
        t.store.connection().sismember(t.store.keys().active("alice"), t.id().to_string()).await.expect("redis");
    assert!(!active, "the active slot is free");
    // A late copy of its message is not run.
    assert!(matches!(t.take(&t.store, "agent-b", 5).await, Takeover::Parked));

    let ticks_only = Readmission::Extend { max_ticks: Some(9), max_tokens: None };
    assert_eq!(
        t.store.readmit(&rec, ticks_only, &limits(), None).await.expect("readmit"),
        ReadmitOutcome::NotRaised("max_tokens"),
        "it stopped at its token budget: that one must rise"
    );
    let extend = Readmission::Extend { max_ticks: None, max_tokens: Some(200) };
    assert_eq!(
        t.store.readmit(&rec, extend, &limits(), None).await.expect("readmit"),
        ReadmitOutcome::NotRaised("max_tokens")
    );
    let retry = t.store.readmit(&rec, Readmission::Retry, &limits(), None).await.expect("readmit");
    assert_eq!(retry, ReadmitOutcome::WrongState(TaskStatus::Incomplete), "retry is for failed or cancelled");

    let extend = Readmission::Extend { max_ticks: Some(8), max_tokens: Some(1000) };
    assert_eq!(
        t.store.readmit(&rec, extend, &limits(), None).await.expect("readmit"),
        ReadmitOutcome::Admitted { seq: 1 }
    );
    let rec = t.record().await;
    assert_eq!(
        (rec.status, rec.max_ticks, rec.max_tokens, rec.seq, rec.runs),
        (TaskStatus::InQueue, 8, Some(1000), 1, 1)
    );
    assert_eq!(rec.history.len(), 1);
    assert_eq!((rec.history[0].status, rec.history[0].tick), (TaskStatus::Incomplete, 2));
    assert_eq!(t.quota_used("alice").await, 2 + 6, "the 6 ticks it may still run");
    assert_eq!(tokens_reserved(&t.store, "alice").await, 200 + 800, "the 800 tokens it may still spend");
    assert_eq!(t.store.stale_resumes(i64::MAX, 10).await.expect("resuming"), vec![t.id()], "published by the caller");

    // The first enqueue's copy is stale; the new one resumes from tick 2 with a new attempt.
    assert!(matches!(t.take(&t.store, "agent-b", 5).await, Takeover::Stale));
    let resumed = TaskEnvelope { seq: 1, ..t.envelope.clone() };
    let Takeover::Claimed(c) = t.store.take_over(&resumed, "agent-c", 5).await.expect("take over") else {
        panic!("claim")
    };
    assert_eq!((c.attempt, c.checkpoint.as_deref()), (2, Some(r#"{"tick":2}"#)));
    // It ends; each run was settled once: 8 ticks reserved in all, 5 used; 1000 tokens, 450 spent.
    let fin = Finish {
        status: TaskStatus::Completed,
        result: None,
        error: None,
        ticks_used: Some(5),
        tokens_used: Some(450),
    };
    t.store.finish(&c.record, Some(c.attempt), &fin).await.expect("finish");
    assert_eq!(t.quota_used("alice").await, 5);
    assert_eq!(tokens_reserved(&t.store, "alice").await, 450);
    assert!(t.store.checkpoint(t.id()).await.expect("redis").is_none(), "completed: dropped");
}

#[tokio::test]
async fn a_cancel_of_an_incomplete_task_ends_it_without_a_second_refund() {
    let t = budgeted(300).await;
    ran(&t, 1, TaskStatus::Incomplete).await;
    assert_eq!((t.quota_used("alice").await, tokens_reserved(&t.store, "alice").await), (1, 100));
    assert_eq!(t.store.cancel(&t.record().await).await.expect("cancel"), CancelOutcome::Cancelled);
    assert_eq!(t.record().await.status, TaskStatus::Cancelled);
    assert_eq!((t.quota_used("alice").await, tokens_reserved(&t.store, "alice").await), (1, 100), "settled once");
}

#[tokio::test]
async fn a_failed_task_retries_from_its_checkpoint_or_from_the_start_and_not_once_the_checkpoint_expired() {
    let t = Fixture::submitted(5).await;
    ran(&t, 3, TaskStatus::Failed).await;
    let rec = t.record().await;
    assert!(t.store.checkpoint(t.id()).await.expect("redis").is_some(), "a failed run keeps its checkpoint");
    let wrong = Readmission::Extend { max_ticks: Some(9), max_tokens: None };
    assert_eq!(
        t.store.readmit(&rec, wrong, &Limits::NONE, None).await.expect("x"),
        ReadmitOutcome::WrongState(TaskStatus::Failed)
    );

    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &Limits::NONE, None).await.expect("x"),
        ReadmitOutcome::Admitted { seq: 1 }
    );
    let again = t.record().await;
    assert_eq!(
        (again.status, again.tick, again.error.as_deref(), again.finished_at.as_deref()),
        (TaskStatus::InQueue, Some(3), None, None)
    );
    assert_eq!(again.history[0].error.as_deref(), Some("the model API refused the key"));
    let resumed = TaskEnvelope { seq: 1, ..t.envelope.clone() };
    let Takeover::Claimed(c) = t.store.take_over(&resumed, "agent-b", 5).await.expect("take over") else {
        panic!("claim")
    };
    assert_eq!(c.checkpoint.as_deref(), Some(r#"{"tick":3}"#), "resumes at its last tick");
    t.store
        .finish(
            &c.record,
            Some(c.attempt),
            &Finish {
                status: TaskStatus::Failed,
                result: None,
                error: Some("again".into()),
                ticks_used: None,
                tokens_used: None,
            },
        )
        .await
        .expect("finish");

    // From the start: the checkpoint and the ticks used go.
    let rec = t.record().await;
    assert_eq!(
        t.store.readmit(&rec, Readmission::Restart, &Limits::NONE, None).await.expect("x"),
        ReadmitOutcome::Admitted { seq: 2 }
    );
    let restarted = t.record().await;
    assert_eq!((restarted.tick, restarted.ticks_used, restarted.history.len()), (None, 0, 2));
    assert!(t.store.checkpoint(t.id()).await.expect("redis").is_none());

    // Failed again after a tick, and its checkpoint expired: 410 territory.
    let t = Fixture::submitted(5).await;
    ran(&t, 1, TaskStatus::Failed).await;
    let _: i64 = t.store.connection().del(t.store.keys().checkpoint(t.id())).await.expect("redis");
    let rec = t.record().await;
    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &Limits::NONE, None).await.expect("x"),
        ReadmitOutcome::CheckpointGone
    );
    assert_eq!(
        t.store.readmit(&rec, Readmission::Restart, &Limits::NONE, None).await.expect("x"),
        ReadmitOutcome::Admitted { seq: 1 }
    );
}

#[tokio::test]
async fn an_operation_admits_a_task_once_and_the_limits_apply_as_at_submit() {
    let t = Fixture::submitted(5).await;
    ran(&t, 1, TaskStatus::Failed).await;
    let rec = t.record().await;
    // Another task of alice's is running: at a cap of one, no room.
    let busy = NewTask::new("alice", "busy", 1);
    assert!(matches!(t.store.submit(&busy, &Limits::NONE).await.expect("submit"), SubmitOutcome::Accepted { .. }));
    let full = Limits { max_active: 1, ..Limits::NONE };
    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &full, None).await.expect("x"),
        ReadmitOutcome::TooManyActive { active: 1 }
    );
    // 1 tick used of the 5 reserved and 1 by the other; a retry reserves the 4 it may still run.
    let tight = Limits { daily_ticks: 4, ..Limits::NONE };
    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &tight, None).await.expect("x"),
        ReadmitOutcome::OverQuota { remaining: 2 }
    );
    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &Limits::NONE, Some("op-1")).await.expect("x"),
        ReadmitOutcome::Admitted { seq: 1 }
    );
    // Cut off and repeated: this operation already admitted it, whatever its status now.
    let rec = t.record().await;
    assert_eq!(
        t.store.readmit(&rec, Readmission::Retry, &Limits::NONE, Some("op-1")).await.expect("x"),
        ReadmitOutcome::AlreadyDone(TaskStatus::InQueue)
    );
}

#[tokio::test]
async fn the_daily_token_quota_is_exact_under_40_concurrent_submits_and_refunded_at_every_end() {
    let scratch = Scratch::new();
    let limits = Limits { daily_tokens: 1000, ..Limits::NONE };
    let tasks: Vec<NewTask> =
        (0..40).map(|i| NewTask { max_tokens: Some(100), ..NewTask::new("bob", format!("m{i}"), 2) }).collect();
    let outcomes = futures_util::future::join_all(tasks.iter().map(|task| scratch.store.submit(task, &limits))).await;
    let accepted: Vec<&NewTask> = tasks
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o.as_ref().expect("submit"), SubmitOutcome::Accepted { .. }))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(accepted.len(), 10, "1000 tokens, 100 each");
    assert!(outcomes.iter().all(|o| matches!(
        o.as_ref().expect("submit"),
        SubmitOutcome::Accepted { .. } | SubmitOutcome::OverTokenQuota { remaining: 0 }
    )));
    assert_eq!(tokens_reserved(&scratch.store, "bob").await, 1000);
    // Every kind of end gives back what was not spent.
    let ended = [
        (TaskStatus::Completed, 30),
        (TaskStatus::Failed, 0),
        (TaskStatus::Cancelled, 10),
        (TaskStatus::Incomplete, 100),
    ];
    for (task, (status, spent)) in accepted.iter().zip(ended) {
        let rec = scratch.record(task.id).await.expect("record");
        let fin = Finish {
            status,
            result: None,
            error: Some("max_tokens".into()).filter(|_| status == TaskStatus::Incomplete),
            ticks_used: Some(0),
            tokens_used: Some(spent),
        };
        scratch.store.finish(&rec, None, &fin).await.expect("finish");
    }
    let queued = scratch.record(accepted[4].id).await.expect("record");
    assert_eq!(scratch.store.cancel(&queued).await.expect("cancel"), CancelOutcome::Cancelled);
    // Refunds: 70 (completed), 100 (failed), 90 (cancelled), none (incomplete, all spent), 100 (cancelled queued).
    assert_eq!(tokens_reserved(&scratch.store, "bob").await, 1000 - 70 - 100 - 90 - 100);
}

#[tokio::test]
async fn a_task_not_started_before_its_expiry_fails_and_is_refunded_at_the_claim_or_by_the_reconciler() {
    let scratch = Scratch::new();
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(200);
    let limits = Limits { daily_ticks: 50, ..Limits::NONE };
    let a = NewTask { expires_at: Some(soon), ..NewTask::new("carol", "a", 5) };
    let b = NewTask { expires_at: Some(soon), ..NewTask::new("carol", "b", 5) };
    for task in [&a, &b] {
        assert!(matches!(scratch.store.submit(task, &limits).await.expect("submit"), SubmitOutcome::Accepted { .. }));
    }
    assert_eq!(scratch.quota_used("carol").await, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An agent claims `a` too late.
    let got = scratch.store.take_over(&a.envelope(), "agent", 5).await.expect("take over");
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Failed)), "{got:?}");
    // No agent reaches `b`: the reconciler's pass.
    let due = scratch.store.due_expiring(chrono::Utc::now().timestamp_millis(), 10).await.expect("due");
    assert!(due.contains(&b.id), "{due:?}");
    for id in due {
        scratch.store.expire_queued(id).await.expect("expire");
    }
    for task in [&a, &b] {
        let rec = scratch.record(task.id).await.expect("record");
        assert_eq!((rec.status, rec.error.as_deref()), (TaskStatus::Failed, Some("expired in queue")));
    }
    assert_eq!(scratch.quota_used("carol").await, 0, "refunded");
    assert!(scratch.store.due_expiring(i64::MAX, 10).await.expect("due").is_empty());
}

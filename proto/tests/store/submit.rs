//! Admission: a batch admits each submission in turn; the undo closes and refunds a
//! submission the broker never confirmed once, and never once an agent has claimed it.

use proto::reconcile::NOT_ENQUEUED;
use proto::store::{Idempotency, Limits, NewTask, SubmitOutcome, Takeover};
use proto::{TaskId, TaskStatus};
use redis::AsyncCommands;

use crate::support::{Fixture, Scratch};

#[tokio::test]
async fn an_unconfirmed_submission_is_aborted_once_with_its_reservation_refunded() {
    let t = Fixture::submitted(5).await;
    let task = NewTask::from_envelope(&t.envelope);
    let quota = t.store.quota_key("alice", task.created_at);
    let mut conn = t.store.connection();
    assert_eq!(conn.get::<_, i64>(&quota).await.expect("quota"), 5, "reserved at submit");

    assert!(t.store.abort_submit(&task).await.expect("abort"));
    let rec = t.record().await;
    assert_eq!((rec.status, rec.error.as_deref(), rec.attempt), (TaskStatus::Failed, Some(NOT_ENQUEUED), 0));
    assert_eq!(conn.get::<_, i64>(&quota).await.expect("quota"), 0, "the whole reservation refunded");
    assert!(!t.store.abort_submit(&task).await.expect("abort again"), "once");
    assert!(!t.store.confirm(&t.task).await.expect("confirm"), "a confirm after the undo is not an acceptance");
}

/// A publish that timed out may still have landed and been claimed: the undo must then
/// leave the task to its agent (no overwrite, no refund of ticks in use).
#[tokio::test]
async fn undoing_a_submission_never_overrides_a_claimed_task() {
    let t = Scratch::new();
    let task = NewTask::new("alice", "landed late", 10);
    let limits = Limits { daily_ticks: 100, ..Limits::NONE };
    t.store.submit(&task, &limits).await.expect("submit");
    let claimed = t.store.take_over(&task.envelope(), "agent-1", 5).await.expect("take over");
    assert!(matches!(&claimed, Takeover::Claimed(c) if c.attempt == 1), "{claimed:?}");

    assert!(!t.store.abort_submit(&task).await.expect("abort"), "refused");
    let rec = t.record(task.id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::InProgress, "the agent owns it");
    assert_eq!(t.quota_used("alice").await, 10, "reservation kept");

    // And an unclaimed one is failed and refunded exactly once.
    let other = NewTask { id: TaskId::new(), ..task.clone() };
    t.store.submit(&other, &limits).await.expect("submit");
    assert!(t.store.abort_submit(&other).await.expect("abort"));
    assert!(!t.store.abort_submit(&other).await.expect("abort again"), "idempotent");
    let rec = t.record(other.id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(t.quota_used("alice").await, 10, "only the first task's reservation remains");
}

/// One group-committed call admits its submissions in turn, each as if on its own: the
/// active cap, the quota and an idempotency key all see the earlier ones of the same batch.
#[tokio::test]
async fn a_batched_submit_admits_each_in_turn() {
    const USER: &str = "batch-user";
    let t = Scratch::new();
    let keyed = |key: &str| {
        let mut task = NewTask::new(USER, "batched", 2);
        task.idempotency = Some(Idempotency { key: key.into(), fingerprint: "f".into() });
        task
    };
    let capped = Limits { max_active: 2, ..Limits::NONE };
    let tasks = [keyed("a"), keyed("a"), NewTask::new(USER, "batched", 2), NewTask::new(USER, "batched", 2)];
    let out = t.store.submit_many(&tasks, &capped).await.expect("one call");
    let kinds: Vec<&str> = out
        .iter()
        .map(|o| match o.as_ref().expect("outcome") {
            SubmitOutcome::Accepted { .. } => "accepted",
            SubmitOutcome::Duplicate(_) => "duplicate",
            SubmitOutcome::TooManyActive { .. } => "too_many_active",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["accepted", "duplicate", "accepted", "too_many_active"]);
    assert!(t.record(tasks[0].id).await.is_some() && t.record(tasks[1].id).await.is_none());
    assert!(t.record(tasks[2].id).await.is_some() && t.record(tasks[3].id).await.is_none());

    let quota = Limits { daily_ticks: 3, ..Limits::NONE };
    let other = "batch-quota";
    let tasks = [NewTask::new(other, "q", 2), NewTask::new(other, "q", 2), NewTask::new(other, "q", 1)];
    let out = t.store.submit_many(&tasks, &quota).await.expect("one call");
    assert!(matches!(out[0], Ok(SubmitOutcome::Accepted { remaining: Some(1) })), "{out:?}");
    assert!(matches!(out[1], Ok(SubmitOutcome::OverQuota { remaining: 1 })), "{out:?}");
    assert!(matches!(out[2], Ok(SubmitOutcome::Accepted { remaining: Some(0) })), "{out:?}");
    assert_eq!(t.quota_used(other).await, 3);
}

/// One confirm call for a batch: a task the undo closed first is refused, the others are
/// confirmed, and a confirmed task's idempotency claim turns from pending to done.
#[tokio::test]
async fn a_batched_confirm_answers_each_task() {
    const USER: &str = "confirm-user";
    let t = Scratch::new();
    let mut keyed = NewTask::new(USER, "keyed", 2);
    keyed.idempotency = Some(Idempotency { key: "k".into(), fingerprint: "f".into() });
    let tasks = [keyed, NewTask::new(USER, "undone", 2), NewTask::new(USER, "plain", 2)];
    for o in t.store.submit_many(&tasks, &Limits::NONE).await.expect("submit") {
        assert!(matches!(o, Ok(SubmitOutcome::Accepted { .. })), "{o:?}");
    }
    assert!(t.store.abort_submit(&tasks[1]).await.expect("abort"));
    let batch: Vec<_> = tasks.iter().map(|task| t.store.confirmation(task)).collect();
    assert_eq!(t.store.confirm_many(&batch).await.expect("confirm"), [true, false, true]);

    let replay = t.store.submit(&tasks[0], &Limits::NONE).await.expect("replay");
    let SubmitOutcome::Duplicate(claim) = replay else { panic!("{replay:?}") };
    assert!(claim.confirmed && claim.task_id == tasks[0].id, "{claim:?}");
    assert!(t.store.due_unconfirmed(i64::MAX, 10).await.expect("due").is_empty(), "all out of the index");
}

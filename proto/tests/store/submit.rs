//! Admission's undo: a submission the broker never confirmed is closed and refunded once,
//! and never once an agent has claimed it.

use proto::TaskStatus;
use proto::reconcile::NOT_ENQUEUED;
use proto::store::{NewTask, Takeover};
use redis::AsyncCommands;

use crate::support::Fixture;

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
    assert!(!t.store.confirm(t.id()).await.expect("confirm"), "a confirm after the undo is not an acceptance");
}

#[tokio::test]
async fn a_claimed_submission_is_not_aborted() {
    let t = Fixture::submitted(5).await;
    assert!(matches!(t.take(&t.store, "agent-a", 5).await, Takeover::Claimed(_)));
    assert!(!t.store.abort_submit(&NewTask::from_envelope(&t.envelope)).await.expect("abort"));
    assert_eq!(t.record().await.status, TaskStatus::InProgress, "the agent owns it");
}

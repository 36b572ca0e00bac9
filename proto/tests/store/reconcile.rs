//! The reconciler's closes end only what nobody else will end; its lease has one holder.

use std::time::Duration;

use chrono::Utc;
use proto::TaskStatus;
use proto::reconcile::{CloseOutcome, DeadLetter, NOT_ENQUEUED};

use crate::support::Fixture;

#[tokio::test]
async fn a_stranded_submission_is_closed_as_not_enqueued() {
    let t = Fixture::submitted(5).await;
    let cutoff = Utc::now().timestamp_millis() + 1000;
    assert_eq!(t.store.due_unconfirmed(cutoff, 10).await.expect("due"), vec![t.id()]);
    assert_eq!(t.store.close_unconfirmed(t.id()).await.expect("close"), CloseOutcome::Closed);
    let rec = t.record().await;
    assert_eq!((rec.status, rec.error.as_deref()), (TaskStatus::Failed, Some(NOT_ENQUEUED)));
    assert!(t.store.due_unconfirmed(cutoff, 10).await.expect("due").is_empty(), "out of the index");
}

#[tokio::test]
async fn a_confirmed_task_is_left_to_its_agent_until_dead_lettered() {
    let t = Fixture::submitted(5).await;
    let cutoff = Utc::now().timestamp_millis() + 1000;
    assert!(t.store.confirm(&t.task).await.expect("confirm"));
    assert!(t.store.due_unconfirmed(cutoff, 10).await.expect("due").is_empty(), "confirmed");
    assert_eq!(t.store.close_unconfirmed(t.id()).await.expect("close"), CloseOutcome::Skipped);
    assert_eq!(t.record().await.status, TaskStatus::InQueue);

    let letter = DeadLetter {
        reason: Some("delivery_limit".into()),
        count: Some(6),
        first_death_at: "2026-12-06T00:00:00Z".into(),
    };
    assert_eq!(t.store.close_dead_lettered(t.id(), &letter).await.expect("close"), CloseOutcome::Closed);
    let rec = t.record().await;
    assert_eq!((rec.status, rec.error.as_deref()), (TaskStatus::Failed, Some("dead-lettered after 6 deliveries")));
    assert_eq!(
        t.store.close_dead_lettered(t.id(), &DeadLetter::default()).await.expect("close"),
        CloseOutcome::Skipped,
        "ended"
    );
    let (listed, next) = t.store.dead_letters(10, None).await.expect("dead letters");
    assert_eq!(next, None);
    assert_eq!(listed.len(), 1, "indexed once per task: the last copy's headers");
    assert_eq!(listed[0].0, t.id());
}

#[tokio::test]
async fn one_holder_has_the_lease_until_it_gives_it_up() {
    let t = Fixture::submitted(1).await;
    let ttl = Duration::from_secs(30);
    assert!(t.store.hold_lease("a", ttl).await.expect("lease"));
    assert!(t.store.hold_lease("a", ttl).await.expect("lease"), "extended by its holder");
    assert!(!t.store.hold_lease("b", ttl).await.expect("lease"));
    t.store.release_lease("b").await.expect("release");
    assert!(!t.store.hold_lease("b", ttl).await.expect("lease"), "only the holder gives it up");
    t.store.release_lease("a").await.expect("release");
    assert!(t.store.hold_lease("b", ttl).await.expect("lease"));
}

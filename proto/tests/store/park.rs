//! Parking and resuming, script by script, and each crash window between the writes:
//! - the agent parks (checkpoint + record in one script) and dies before its ack: the
//!   redelivery finds the task parked and is acked unrun;
//! - the gateway writes the decision and dies before its publish: the task is marked
//!   resuming, the reconciler re-publishes with the next enqueue number, and a copy of the
//!   first number that did land is stale;
//! - a decision races a second one, or a cancel: one wins.

use proto::store::{CancelOutcome, DecideOutcome, MessageOutcome, ParkOutcome, Parking, Takeover};
use proto::task::{ActionDecision, RequiredAction, Verdict};
use proto::{TaskEnvelope, TaskStatus};

use crate::support::Fixture;

fn action() -> RequiredAction {
    RequiredAction {
        call_id: "call_1".into(),
        tool: "files/delete".into(),
        arguments: serde_json::json!({"path": "a"}),
        expires_at: "2030-01-01T00:00:00.000Z".into(),
    }
}

/// The fixture's task, claimed by agent-a and parked on `call_1`.
async fn parked(t: &Fixture) {
    let Takeover::Claimed(c) = t.take(&t.store, "agent-a", 5).await else { panic!("claim") };
    let (action, schema, partial) =
        (action(), serde_json::json!({"type": "object"}), serde_json::json!({"success": false}));
    let parking =
        Parking { action: &action, expires_ms: 1, schema: &schema, partial: &partial, checkpoint: r#"{"tick":0}"# };
    assert_eq!(t.store.park(&c.record, c.attempt, &parking).await.expect("park"), ParkOutcome::Parked);
}

fn decision(verdict: Verdict) -> ActionDecision {
    ActionDecision { call_id: "call_1".into(), decision: verdict, arguments: None }
}

#[tokio::test]
async fn a_parked_task_holds_its_call_and_a_redelivery_of_its_message_is_not_run() {
    let t = Fixture::submitted(5).await;
    parked(&t).await;
    let rec = t.record().await;
    assert_eq!(rec.status, TaskStatus::RequiresAction);
    assert_eq!(rec.pending_action, Some(action()));
    assert_eq!(rec.to_response().required_action, Some(action()));
    // The agent died between the park and its ack: the broker redelivers.
    assert!(matches!(t.take(&t.store, "agent-b", 5).await, Takeover::Parked));
    assert_eq!(t.record().await.attempt, 1, "not taken over");
    assert_eq!(t.store.expired_parked(2, 10).await.expect("due"), vec![t.id()], "due for expiry after expires_ms");
}

#[tokio::test]
async fn a_decision_puts_the_task_back_with_a_new_enqueue_number_and_the_old_message_is_stale() {
    let t = Fixture::submitted(5).await;
    parked(&t).await;
    let rec = t.record().await;
    assert_eq!(
        t.store.decide(&rec, &decision(Verdict::Approve)).await.expect("decide"),
        DecideOutcome::Resumed { seq: 1 }
    );
    assert_eq!(t.store.decide(&rec, &decision(Verdict::Deny)).await.expect("again"), DecideOutcome::AlreadyDecided);
    let other = ActionDecision { call_id: "call_7".into(), ..decision(Verdict::Deny) };
    assert_eq!(t.store.decide(&rec, &other).await.expect("unknown"), DecideOutcome::Unknown);
    let rec = t.record().await;
    assert_eq!((rec.status, rec.seq, rec.pending_action.clone()), (TaskStatus::InQueue, 1, None));
    assert_eq!(rec.decision, Some(decision(Verdict::Approve)));
    assert!(t.store.expired_parked(i64::MAX, 10).await.expect("due").is_empty(), "no longer parked");

    // The first enqueue's message, redelivered late: stale, acked unrun.
    assert!(matches!(t.take(&t.store, "agent-b", 5).await, Takeover::Stale));
    // The gateway died before confirming its publish: the reconciler publishes number 2.
    assert_eq!(t.store.stale_resumes(i64::MAX, 10).await.expect("due"), vec![t.id()]);
    assert_eq!(t.store.republish(t.id()).await.expect("republish"), Some(2));
    let late: TaskEnvelope = rec.envelope(1);
    let current = rec.envelope(2);
    assert!(
        matches!(t.store.take_over(&late, "agent-c", 5).await.expect("take"), Takeover::Stale),
        "number 1 landed late"
    );
    let Takeover::Claimed(c) = t.store.take_over(&current, "agent-d", 5).await.expect("take") else { panic!("claim") };
    assert_eq!((c.attempt, c.checkpoint.as_deref()), (2, Some(r#"{"tick":0}"#)), "resumes from the parked checkpoint");
    assert_eq!(c.record.decision, Some(decision(Verdict::Approve)), "the run reads the decision");
    // Once claimed, a republish finds it moved on and drops the mark.
    assert_eq!(t.store.republish(t.id()).await.expect("republish"), None);
    assert!(t.store.stale_resumes(i64::MAX, 10).await.expect("due").is_empty());
}

#[tokio::test]
async fn resumes_do_not_spend_the_delivery_limit() {
    let t = Fixture::submitted(5).await;
    for round in 1..=3u32 {
        let env = t.record().await.envelope(t.record().await.seq);
        let Takeover::Claimed(c) = t.store.take_over(&env, "agent", 1).await.expect("take") else {
            panic!("round {round}: a resumed task gets its own deliveries")
        };
        let (action, schema, partial) = (
            RequiredAction { call_id: format!("call_{round}"), ..action() },
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let parking = Parking { action: &action, expires_ms: 1, schema: &schema, partial: &partial, checkpoint: "{}" };
        assert_eq!(t.store.park(&c.record, c.attempt, &parking).await.expect("park"), ParkOutcome::Parked);
        let d = ActionDecision { call_id: format!("call_{round}"), ..decision(Verdict::Deny) };
        assert!(matches!(t.store.decide(&t.record().await, &d).await.expect("decide"), DecideOutcome::Resumed { .. }));
    }
}

#[tokio::test]
async fn cancel_wins_over_a_parked_call_and_a_later_decision_conflicts() {
    let t = Fixture::submitted(5).await;
    parked(&t).await;
    let rec = t.record().await;
    assert_eq!(t.store.cancel(&rec).await.expect("cancel"), CancelOutcome::Cancelled);
    let rec = t.record().await;
    assert_eq!(rec.status, TaskStatus::Cancelled);
    assert_eq!(rec.result, Some(serde_json::json!({"success": false})), "what the run had gathered");
    assert!(matches!(
        t.store.decide(&rec, &decision(Verdict::Approve)).await.expect("decide"),
        DecideOutcome::Terminal(TaskStatus::Cancelled)
    ));
    assert!(t.store.expired_parked(i64::MAX, 10).await.expect("due").is_empty(), "the mark went with it");
}

#[tokio::test]
async fn messages_are_counted_bounded_and_refused_after_the_end() {
    let t = Fixture::submitted(5).await;
    for n in 1..=3 {
        assert_eq!(
            t.store.send_message(t.id(), &format!("m{n}"), 3).await.expect("send"),
            MessageOutcome::Sent { count: n }
        );
    }
    assert_eq!(t.store.send_message(t.id(), "m4", 3).await.expect("send"), MessageOutcome::Full);
    assert_eq!(t.store.messages(t.id(), 1).await.expect("read"), vec!["m2".to_owned(), "m3".to_owned()]);
    assert_eq!(t.record().await.messages, 3);
    t.store.cancel(&t.record().await).await.expect("cancel");
    assert_eq!(
        t.store.send_message(t.id(), "late", 10).await.expect("send"),
        MessageOutcome::Terminal(TaskStatus::Cancelled)
    );
}

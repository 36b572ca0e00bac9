//! An operator's redrive, end to end: messages an agent could not run (an envelope mangled
//! on the wire, while the task's record is intact) are dead-lettered and their tasks failed;
//! once "fixed" (the redrive publishes the record's own envelope), the redrive completes
//! them and takes exactly their dead letters out of the DLQ.

use proto::{TaskEnvelope, TaskId, TaskStatus};
use serde_json::{Value, json};
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_of_poison_then_fixed_tasks_completes_them_and_empties_the_dlq_of_exactly_those() {
    let mut app = Harness::start(&[("RECONCILE_INTERVAL_MS", "200")]).await;
    app.spawn_agent(AGENT, "a1", &env_refs(&pace(10, 1)));
    app.publish_raw(b"\x00 not json, not ours to redrive", None).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let id = TaskId::new();
        let env = TaskEnvelope {
            correlation_id: id,
            mandate: format!("poisoned task {i}"),
            max_ticks: 3,
            user_id: Some("alice".into()),
            submitted_at: None,
            v: None,
            seq: 0,
        };
        assert!(app.store.adopt(&env).await.expect("adopt"));
        let mangled = format!(r#"{{"correlation_id":"{id}","mandate":"","max_ticks":3}}"#);
        app.publish_raw(mangled.as_bytes(), Some(&id.to_string())).await;
        ids.push(id);
    }
    for id in &ids {
        let rec = app.wait_for(*id, SOON, |r| r.status.is_terminal()).await;
        assert_eq!((rec.status, rec.error.as_deref()), (TaskStatus::Failed, Some("invalid envelope")));
    }
    app.eventually("three dead letters", SOON, || async { app.ready(".dlq").await == 3 }).await;
    let token = app.operator_token("ops");
    app.eventually("both indexed", SOON, || async {
        let list: Value = app
            .http
            .get(app.url("/admin/dead-letters"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        list["dead_letters"].as_array().map(Vec::len) == Some(2)
    })
    .await;

    let dry: Value = app
        .http
        .post(app.url("/admin/dead-letters/redrive"))
        .bearer_auth(&token)
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(dry["results"].as_array().expect("results").len(), 2, "{dry}");
    assert_eq!(app.ready(".dlq").await, 3, "a dry run changes nothing");

    let done: Value = app
        .http
        .post(app.url("/admin/dead-letters/redrive"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(done["results"].as_array().expect("results").iter().all(|r| r["outcome"] == "redriven"), "{done}");
    for id in &ids {
        let rec = app.wait_for(*id, SOON, |r| r.status.is_terminal()).await;
        assert_eq!((rec.status, rec.runs), (TaskStatus::Completed, 1), "{rec:#?}");
    }
    // The pass held the foreign message unacknowledged and its channel's close returns it;
    // the broker counts it as ready again a moment later, not necessarily at once.
    app.eventually("only the foreign poison is left", SOON, || async { app.ready(".dlq").await == 1 }).await;
    app.cleanup().await;
}

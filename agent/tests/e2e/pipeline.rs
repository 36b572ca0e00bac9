use proto::TaskStatus;
use serde_json::Value;
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_task_completes_with_a_result_and_ordered_transitions() {
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(AGENT, "a1", &env_refs(&pace(100, 3)));
    let resp =
        app.submit("alice", serde_json::json!({"mandate": "summarise the offline model", "max_ticks": 10})).await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().expect("ascii").to_owned();
    let body: Value = resp.json().await.expect("json");
    let id: proto::TaskId = body["correlation_id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(location, format!("/tasks/{id}"));

    // Poll as a client would and record every status seen.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SOON;
    let final_body = loop {
        let b: Value = app.get_task("alice", id).await.json().await.expect("json");
        let status = b["status"].as_str().expect("status").to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "completed" {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "not completed: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let order = ["in_queue", "in_progress", "completed"];
    let positions: Vec<usize> = seen.iter().map(|s| order.iter().position(|o| o == s).expect("known status")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "statuses out of order: {seen:?}");

    assert_eq!(final_body["attempt"], 1);
    assert_eq!(final_body["tick"], 4, "3 thinking ticks + exit");
    assert_eq!(final_body["result"]["success"], true);
    assert!(!final_body["result"]["deliverables"].as_array().expect("array").is_empty());
    assert!(final_body["finished_at"].as_str().expect("finished_at").ends_with('Z'));

    // The event stream tells the same story, in order, with one terminal event. It starts
    // with the claim: the admission writes no event (a follower is told `in_queue` from the
    // record).
    let events = app.events(id).await;
    let statuses: Vec<&str> = events.iter().map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"in_progress"));
    assert_eq!(statuses.last(), Some(&"completed"));
    assert_eq!(statuses.iter().filter(|s| **s == "completed").count(), 1);
    let ticks: Vec<u32> = events.iter().filter_map(|e| e.get("tick")?.parse().ok()).collect();
    assert_eq!(ticks, vec![1, 2, 3, 4]);

    // Unused ticks went back to the quota: only the 4 used remain reserved.
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(app.quota_used("alice").await, 4);
    assert_eq!(app.ready("").await, 0);
    assert_eq!(app.ready(".dlq").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_envelope_without_a_record_still_runs() {
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(AGENT, "a1", &env_refs(&pace(10, 1)));
    let id = proto::TaskId::new();
    let body = format!(r#"{{"correlation_id":"{id}","mandate":"from the python gateway","max_ticks":3}}"#);
    app.publish_raw(body.as_bytes(), None).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.user_id, "", "no owner: invisible to every API user");
    app.cleanup().await;
}

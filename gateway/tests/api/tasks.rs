//! The task resource (ARCHITECTURE §2): submit, read, list, cancel, the envelope on the queue, and
//! the public system endpoints.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use proto::{TaskId, TaskStatus};
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{assert_ready, header, problem};

/// Checks the TaskResponse of a task that was just submitted.
fn assert_fresh(body: &Value, mandate: &str, max_ticks: u32) -> TaskId {
    let id: TaskId = body["correlation_id"].as_str().expect("correlation_id").parse().expect("uuid");
    let uuid: uuid::Uuid = id.to_string().parse().expect("uuid");
    assert_eq!(uuid.get_version_num(), 4, "ids are UUID v4");
    assert_eq!(body["status"], "in_queue", "{body}");
    assert_eq!(body["mandate"], mandate, "{body}");
    assert_eq!(body["max_ticks"], max_ticks, "{body}");
    assert_eq!(body["tick"], Value::Null, "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    assert_eq!(body["error"], Value::Null, "{body}");
    assert_eq!(body["attempt"], 0, "{body}");
    for field in ["created_at", "updated_at"] {
        let ts = body[field].as_str().unwrap_or_else(|| panic!("{field} missing: {body}"));
        assert!(ts.ends_with('Z'), "{field} must be UTC with Z: {ts}");
        let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("{field} {ts}: {e}"));
        let age = chrono::Utc::now().signed_duration_since(t);
        assert!(age.num_seconds().abs() < 60, "{field} {ts} is not now");
    }
    for absent in ["started_at", "finished_at"] {
        assert!(body.get(absent).is_none_or(Value::is_null), "{absent} on a queued task: {body}");
    }
    id
}

async fn list(app: &Harness, user: &str, query: &str) -> Value {
    let resp = app
        .http
        .get(app.url(&format!("/tasks{query}")))
        .bearer_auth(app.token_for(user))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "GET /tasks{query}");
    resp.json().await.expect("json")
}

/// Follows `next_cursor` with page size `limit`; returns the ids in order and the page count.
async fn page_through(app: &Harness, user: &str, limit: usize) -> (Vec<TaskId>, usize) {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // Cursors are `{score}:{uuid}`: nothing in them needs percent-encoding.
        let query = match &cursor {
            Some(c) => format!("/tasks?limit={limit}&cursor={c}"),
            None => format!("/tasks?limit={limit}"),
        };
        let resp = app.http.get(app.url(&query)).bearer_auth(app.token_for(user)).send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let page: Value = resp.json().await.expect("json");
        pages += 1;
        assert!(pages <= 50, "paging does not terminate");
        let tasks = page["tasks"].as_array().expect("tasks");
        assert!(tasks.len() <= limit, "page larger than limit {limit}: {page}");
        for t in tasks {
            ids.push(t["correlation_id"].as_str().expect("id").parse().expect("uuid"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(tasks.len(), limit, "only a full page may have a next page: {page}");
                cursor = Some(c.to_owned());
            }
            None => {
                assert_eq!(page["next_cursor"], Value::Null, "next_cursor is null on the last page: {page}");
                return (ids, pages);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_returns_202_with_location_and_the_task() {
    let app = Harness::start(&[]).await;
    let resp = app.submit("alice", json!({"mandate": "  find three papers on quorum queues \n", "max_ticks": 7})).await;
    assert_eq!(resp.status(), 202);
    let location = header(resp.headers(), "location").to_owned();
    let ct = header(resp.headers(), "content-type").to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.expect("json");
    let id = assert_fresh(&body, "find three papers on quorum queues", 7);
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(body["created_at"], body["updated_at"]);

    // GET returns the same task.
    let resp = app.get_task("alice", id).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.expect("json");
    assert_eq!(got, body, "GET must return what POST returned");

    // Redis holds the record with the owner and the reservation.
    let rec = app.record(id).await.expect("record");
    assert_eq!((rec.user_id.as_str(), rec.status, rec.max_ticks, rec.attempt), ("alice", TaskStatus::InQueue, 7, 0));
    assert_eq!(app.quota_used("alice").await, 7);

    // The queue holds exactly one persistent envelope for it.
    assert_ready(&app, 1).await;
    let msg = take_message(&app).await;
    let delivery = msg.delivery;
    let props = &delivery.properties;
    let id_str = id.to_string();
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some(id_str.as_str()), "message_id");
    assert_eq!(props.correlation_id().as_ref().map(|s| s.as_str()), Some(id_str.as_str()), "correlation_id");
    assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    let env: Value = serde_json::from_slice(&delivery.data).expect("envelope JSON");
    assert_eq!(env["correlation_id"], id_str, "{env}");
    assert_eq!(env["mandate"], "find three papers on quorum queues", "{env}");
    assert_eq!(env["max_ticks"], 7, "{env}");
    assert_eq!(env["user_id"], "alice", "{env}");
    assert_eq!(env["v"], 1, "{env}");
    let submitted = env["submitted_at"].as_str().expect("submitted_at");
    chrono::DateTime::parse_from_rfc3339(submitted).expect("submitted_at is RFC 3339");
    // It parses as the shared contract type, too.
    let parsed = proto::TaskEnvelope::parse(&delivery.data).expect("TaskEnvelope");
    assert_eq!(parsed.correlation_id, id);
    assert_eq!(app.ready("").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ticks_defaults_to_50() {
    let app = Harness::start(&[]).await;
    let resp = app.submit("alice", json!({"mandate": "no budget given"})).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    let id = assert_fresh(&body, "no budget given", 50);
    assert_eq!(app.record(id).await.expect("record").max_ticks, 50);
    assert_eq!(app.quota_used("alice").await, 50, "the default is what gets reserved");
    let msg = take_message(&app).await;
    let env: Value = serde_json::from_slice(&msg.delivery.data).expect("json");
    assert_eq!(env["max_ticks"], 50, "{env}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_newest_first_through_the_callers_tasks_only() {
    let app = Harness::start(&[]).await;
    let mut alice = Vec::new();
    let mut bob = Vec::new();
    for i in 0..5 {
        alice.push(app.submit_ok("alice", &format!("alice {i}"), 1).await);
        if i % 2 == 1 {
            bob.push(app.submit_ok("bob", &format!("bob {i}"), 1).await);
        }
        // Distinct creation milliseconds, so "newest first" has one right answer.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let newest_first: Vec<TaskId> = alice.iter().rev().copied().collect();

    let (ids, pages) = page_through(&app, "alice", 2).await;
    assert_eq!(pages, 3);
    assert_eq!(ids, newest_first, "pages of 2 must yield all 5, newest first, once each");

    // Page boundaries that divide evenly, and the default page size.
    let (ids, pages) = page_through(&app, "alice", 5).await;
    assert_eq!((ids.as_slice(), pages), (newest_first.as_slice(), 1));
    let (ids, pages) = page_through(&app, "alice", 4).await;
    assert_eq!((ids.as_slice(), pages), (newest_first.as_slice(), 2));
    let all = list(&app, "alice", "").await;
    assert_eq!(all["tasks"].as_array().expect("tasks").len(), 5);
    assert_eq!(all["next_cursor"], Value::Null);

    // Each item is a full TaskResponse, with timestamps non-increasing.
    let first = list(&app, "alice", "?limit=5").await;
    let stamps: Vec<&str> =
        first["tasks"].as_array().expect("tasks").iter().map(|t| t["created_at"].as_str().expect("ts")).collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "newest first: {stamps:?}");
    assert_eq!(first["tasks"][0]["status"], "in_queue");
    assert_eq!(first["tasks"][0]["mandate"], "alice 4");

    let (ids, _) = page_through(&app, "bob", 1).await;
    let bob_newest: Vec<TaskId> = bob.iter().rev().copied().collect();
    assert_eq!(ids, bob_newest, "bob sees his own tasks only");
    let (ids, pages) = page_through(&app, "carol", 2).await;
    assert!(ids.is_empty() && pages == 1, "a user with no tasks gets an empty list");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_queued_task_then_conflict() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok("alice", "cancel me", 12).await;
    assert_eq!(app.quota_used("alice").await, 12);

    let resp = app.cancel("alice", id).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["correlation_id"], id.to_string());
    assert_eq!(body["status"], "cancelled", "{body}");
    let finished = body["finished_at"].as_str().expect("finished_at on a cancelled task");
    assert!(finished.ends_with('Z'), "{finished}");
    assert_eq!(app.quota_used("alice").await, 0, "cancelling a queued task refunds it");

    let got: Value = app.get_task("alice", id).await.json().await.expect("json");
    assert_eq!(got["status"], "cancelled");

    // Terminal: a second cancel is a conflict and changes nothing.
    let (_, problem_body) = problem(app.cancel("alice", id).await, 409).await;
    assert!(problem_body["detail"].as_str().expect("detail").contains("cancelled"), "{problem_body}");
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::Cancelled);
    assert_eq!(app.quota_used("alice").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_agent_count() {
    let app = Harness::start(&[]).await;
    let resp = app.http.get(app.url("/health")).send().await.expect("request");
    assert_eq!(resp.status(), 200);

    let resp = app.http.get(app.url("/ready")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let ready: Value = resp.json().await.expect("json");
    assert_eq!(ready["components"], json!({"redis": true, "rabbitmq": true}), "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");

    assert_eq!(app.agent_count().await, json!({"count": 0, "busy": 0, "idle": 0}));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_requests_by_route_template() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok("alice", "count me", 1).await;
    assert_eq!(app.get_task("alice", id).await.status(), 200);

    let resp = app.http.get(app.url("/metrics")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("http_requests_total{")).collect();
    assert!(
        requests.iter().any(|l| l.contains(r#"route="/tasks""#) && l.contains(r#"status="202""#)),
        "no http_requests_total for POST /tasks:\n{}",
        requests.join("\n")
    );
    assert!(
        requests.iter().any(|l| l.contains(r#"route="/tasks/{id}""#)),
        "GET /tasks/{{id}} must be counted under its template:\n{}",
        requests.join("\n")
    );
    assert!(!text.contains(&id.to_string()), "a raw task id leaked into a metric label");
    assert!(text.contains("http_request_duration_seconds"), "latency histogram missing");
    app.cleanup().await;
}

/// Takes the next message off the test's input queue.
async fn take_message(app: &Harness) -> lapin::message::BasicGetMessage {
    app.channel
        .basic_get(app.ns.queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_skips_and_prunes_expired_records() {
    let app = Harness::start(&[]).await;
    let kept = app.submit_ok("alice", "kept", 1).await;
    let gone = app.submit_ok("alice", "expired", 1).await;
    let keys = proto::Keys::new(app.ns.prefix.clone());
    let _: i64 = redis::AsyncCommands::del(&mut app.redis.clone(), keys.task(gone)).await.expect("del");
    let resp = app.http.get(app.url("/tasks")).bearer_auth(app.token_for("alice")).send().await.expect("list");
    let body: Value = resp.json().await.expect("json");
    let ids: Vec<&str> =
        body["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["correlation_id"].as_str()).collect();
    assert_eq!(ids, vec![kept.to_string().as_str()]);
    let members: Vec<String> =
        redis::AsyncCommands::zrange(&mut app.redis.clone(), keys.user_tasks("alice"), 0, -1).await.expect("zrange");
    assert_eq!(members, vec![kept.to_string()], "the expired id is pruned from the index");
    app.cleanup().await;
}

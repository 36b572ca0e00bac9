//! Submission is all-or-nothing (ARCHITECTURE §2): with the broker unreachable or silent, POST
//! /tasks answers 503 with `Retry-After` within its deadline, the record is not left
//! `in_queue`, the quota is refunded, and /ready reports the broker down.

use std::time::{Duration, Instant};

use proto::{Keys, TaskId, TaskStatus};
use redis::AsyncCommands;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{header, problem, wait_serving};

const USER: &str = "broker-user";
/// A correctness bound for "no request hangs", generous enough not to flake.
const BOUND: Duration = Duration::from_secs(5);

async fn task_ids(app: &Harness) -> Vec<TaskId> {
    let key = Keys::new(app.ns.prefix.clone()).user_tasks(USER);
    let ids: Vec<String> = app.redis.clone().zrange(key, 0, -1).await.expect("zrange");
    ids.iter().map(|s| s.parse().expect("task id")).collect()
}

/// Submits against a broken broker and checks the 503 and everything it must leave behind.
async fn assert_submit_unavailable(app: &Harness, attempts: usize) {
    for i in 0..attempts {
        let started = Instant::now();
        let resp = app.submit(USER, json!({"mandate": format!("never enqueued {i}"), "max_ticks": 10})).await;
        let elapsed = started.elapsed();
        let (headers, body) = problem(resp, 503).await;
        assert!(elapsed < BOUND, "submit {i} took {elapsed:?}");
        let retry: u64 = header(&headers, "retry-after").parse().expect("Retry-After in seconds");
        assert!(retry >= 1, "Retry-After {retry}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(!detail.contains("127.0.0.1") && !detail.contains("amqp"), "detail leaks internals: {detail}");
    }

    assert_eq!(app.quota_used(USER).await, 0, "the reservation must be refunded");
    assert_eq!(app.ready("").await, 0, "nothing reached the queue");
    let ids = task_ids(app).await;
    assert!(ids.len() <= attempts, "at most one record per attempt: {ids:?}");
    for id in ids {
        if let Some(rec) = app.record(id).await {
            assert_eq!(rec.status, TaskStatus::Failed, "a record that was never enqueued must not stay in_queue");
            let error = rec.error.clone().unwrap_or_default();
            assert!(error.contains("not enqueued"), "error must say why: {rec:?}");
            assert!(rec.finished_at.is_some());
        }
    }

    let started = Instant::now();
    let resp = app.http.get(app.url("/ready")).send().await.expect("request");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "/ready probes are bounded by 1 s each; took {elapsed:?}");
    assert_eq!(resp.status(), 503);
    let ready: Value = resp.json().await.expect("json");
    assert_eq!(ready["components"]["rabbitmq"], json!(false), "{ready}");
    assert_eq!(ready["components"]["redis"], json!(true), "{ready}");
    assert_ne!(ready["status"], json!("ready"), "{ready}");

    // Liveness is unaffected.
    assert_eq!(app.http.get(app.url("/health")).send().await.expect("request").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_connections_gives_503_and_no_trace() {
    let app = Harness::start(&[
        ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("PUBLISH_TIMEOUT_MS", "1000"),
        ("REQUEST_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    wait_serving(&app).await;
    // Twice: once connecting, once within the reconnect cool-down.
    assert_submit_unavailable(&app, 2).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_times_out_into_503() {
    // A broker that accepts TCP connections and never answers (a black-holed network path):
    // the publish deadline, not the client, must end the request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let app = Harness::start(&[
        ("RABBITMQ_URL", url.as_str()),
        ("PUBLISH_TIMEOUT_MS", "1000"),
        ("REQUEST_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    wait_serving(&app).await;
    assert_submit_unavailable(&app, 1).await;
    app.cleanup().await;
    holder.abort();
}

/// A 5xx is logged once, with its cause, where it is handled: not again by the trace layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_submit_logs_one_error_line_with_its_cause() {
    let app = Harness::start(&[]).await;
    let closed = format!("amqp://guest:guest@{}/%2f", testkit::free_port());
    let gw = testkit::GatewayProc::spawn(env!("CARGO_BIN_EXE_gateway"), &app.ns, &[("RABBITMQ_URL", &closed)]).await;
    let resp = app
        .http
        .post(gw.url("/tasks"))
        .bearer_auth(app.token_for(USER))
        .json(&json!({"mandate": "logged once", "max_ticks": 3}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
    // The undo runs after the response: wait until it has logged.
    testkit::eventually("undo logged", Duration::from_secs(5), || async {
        gw.log_text().contains("submission undone")
    })
    .await;
    let log = gw.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(r#""level":"ERROR""#)).collect();
    assert_eq!(errors.len(), 1, "one ERROR line for one failed submit:\n{}", errors.join("\n"));
    assert!(errors[0].contains("publish failed") && errors[0].contains("error.cause_chain"), "{}", errors[0]);
    assert!(!log.contains("response failed"), "the trace layer must not log the 5xx again:\n{log}");
}

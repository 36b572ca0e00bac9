//! Task-end webhooks (ARCHITECTURE §2 "Webhooks"): a signed POST per Standard Webhooks when a task
//! ends, verified here with our own HMAC (not the code under test); retries after a
//! failure keep the `webhook-id`, `410` stops them, delivery survives the delivering gateway
//! being killed mid-backoff, and a private-address URL is refused without a connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use proto::store::{Finish, Limits, Readmission, ReadmitOutcome, Takeover};
use proto::{TaskId, TaskStatus};
use serde_json::{Value, json};
use sha2::Sha256;
use testkit::{GatewayProc, Harness};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::common::{detail, problem};

/// `whsec_` + base64 of 32 bytes, test-only.
const SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC10ZXN0LXdlYmhvb2stc2U=";
const PREVIOUS: &str = "whsec_cHJldmlvdXMtd2ViaG9vay1zZWNyZXQtcHJldmlvdXMtMDA=";
const USER: &str = "hook-user";
const WAIT: Duration = Duration::from_secs(15);

fn key(secret: &str) -> Vec<u8> {
    STANDARD.decode(secret.strip_prefix("whsec_").expect("prefix")).expect("base64")
}

/// Verifies a request's Standard Webhooks signature with `secret`, independently of the
/// gateway's signing code; returns the parsed body.
fn verify(req: &Request, secret: &str) -> Value {
    let h = |name: &str| {
        req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("{name} missing")).to_owned()
    };
    let (id, ts, sigs) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let ts_n: i64 = ts.parse().expect("timestamp in seconds");
    assert!((chrono::Utc::now().timestamp() - ts_n).abs() < 300, "timestamp {ts} is not now");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&req.body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert!(sigs.split(' ').any(|s| s == want), "no signature by this secret in {sigs:?}");
    serde_json::from_slice(&req.body).expect("JSON body")
}

async fn hooks(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default().into_iter().filter(|r| r.url.path() == "/hook").collect()
}

async fn wait_hooks(app: &Harness, server: &MockServer, n: usize) -> Vec<Request> {
    app.eventually(&format!("{n} webhook requests"), WAIT, || async { hooks(server).await.len() >= n }).await;
    hooks(server).await
}

fn hook_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("WEBHOOK_SECRET", SECRET), ("WEBHOOK_ALLOW_PRIVATE", "true"), ("WEBHOOK_RETRY_BASE_MS", "300")];
    env.extend_from_slice(extra);
    env
}

async fn submit_hooked(app: &Harness, base: &str, url: &str) -> TaskId {
    let resp = app
        .http
        .post(format!("{base}/tasks"))
        .bearer_auth(app.token_for(USER))
        .json(&json!({"mandate": "call me back", "max_ticks": 3, "webhook_url": url}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["webhook_url"], json!(url), "TaskResponse shows the webhook");
    body["correlation_id"].as_str().expect("id").parse().expect("uuid")
}

/// Ends the task as an agent would, through the store's scripts.
async fn end(app: &Harness, id: TaskId, status: TaskStatus) {
    let attempt = app.claim(id, "agent-1", 5).await;
    let rec = app.record(id).await.expect("record");
    let fin = Finish { status, result: None, error: None, ticks_used: Some(1), tokens_used: None };
    assert_eq!(
        app.store.finish(&rec, Some(attempt), &fin).await.expect("finish"),
        proto::store::FinishOutcome::Written
    );
}

async fn webhook_state(app: &Harness, id: TaskId) -> Option<String> {
    let key = proto::Keys::new(app.ns.prefix.clone()).task(id);
    redis::AsyncCommands::hget(&mut app.redis.clone(), key, "webhook_state").await.expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_announces_itself_signed() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let app = Harness::start(&hook_env(&[("WEBHOOK_SECRET_PREVIOUS", PREVIOUS)])).await;
    let url = format!("{}/hook", receiver.uri());
    let done = submit_hooked(&app, &app.url(""), &url).await;
    let failed = submit_hooked(&app, &app.url(""), &url).await;
    end(&app, done, TaskStatus::Completed).await;
    end(&app, failed, TaskStatus::Failed).await;
    let cancelled = submit_hooked(&app, &app.url(""), &url).await;
    assert_eq!(app.cancel(USER, cancelled).await.status(), 202);

    let got = wait_hooks(&app, &receiver, 3).await;
    let mut seen = Vec::new();
    for req in &got {
        // Both the current and the previous secret sign during a rotation.
        let body = verify(req, SECRET);
        assert_eq!(verify(req, PREVIOUS), body);
        assert_eq!(req.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        let id: TaskId = body["data"]["correlation_id"].as_str().expect("id").parse().expect("uuid");
        let msg_id = req.headers.get("webhook-id").and_then(|v| v.to_str().ok()).expect("id");
        assert_eq!(msg_id, format!("msg_{}", id.to_string().replace('-', "")));
        assert!(body["timestamp"].as_str().expect("timestamp").ends_with('Z'));
        seen.push((id, body["type"].as_str().expect("type").to_owned(), body["data"]["status"].clone()));
    }
    seen.sort_by_key(|(id, ..)| *id);
    let mut want = vec![
        (done, "task.completed".to_owned(), json!("completed")),
        (failed, "task.failed".to_owned(), json!("failed")),
        (cancelled, "task.cancelled".to_owned(), json!("cancelled")),
    ];
    want.sort_by_key(|(id, ..)| *id);
    assert_eq!(seen, want);
    app.eventually("delivery recorded", WAIT, || async {
        webhook_state(&app, done).await.as_deref() == Some("delivered")
    })
    .await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_with_the_same_id_and_410_stops() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let app = Harness::start(&hook_env(&[])).await;
    let id = submit_hooked(&app, &app.url(""), &format!("{}/hook", receiver.uri())).await;
    end(&app, id, TaskStatus::Completed).await;
    let got = wait_hooks(&app, &receiver, 3).await;
    let ids: Vec<&str> =
        got.iter().map(|r| r.headers.get("webhook-id").and_then(|v| v.to_str().ok()).expect("id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one webhook-id across retries: {ids:?}");
    let bodies: Vec<Value> = got.iter().map(|r| verify(r, SECRET)).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]), "the same body every attempt");
    app.eventually("delivered", WAIT, || async { webhook_state(&app, id).await.as_deref() == Some("delivered") }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hooks(&receiver).await.len(), 3, "nothing after the 200");

    // A receiver that answers 410 Gone is not called again.
    let gone = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(410)).mount(&gone).await;
    let id = submit_hooked(&app, &app.url(""), &format!("{}/hook", gone.uri())).await;
    end(&app, id, TaskStatus::Completed).await;
    wait_hooks(&app, &gone, 1).await;
    app.eventually("stopped", WAIT, || async { webhook_state(&app, id).await.as_deref() == Some("gone") }).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(hooks(&gone).await.len(), 1, "410 stops retries");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_the_delivering_gateway_killed_mid_backoff() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    // The in-process gateway has no webhook secret, so no dispatcher: the delivering gateway
    // is a separate process, killed for real between its failed attempt and the retry.
    let app = Harness::start(&[]).await;
    let slow_retry = [("WEBHOOK_SECRET", SECRET), ("WEBHOOK_ALLOW_PRIVATE", "true"), ("WEBHOOK_RETRY_BASE_MS", "4000")];
    let bin = env!("CARGO_BIN_EXE_gateway");
    let mut first = GatewayProc::spawn(bin, &app.ns, &slow_retry).await;
    let id = submit_hooked(&app, &first.url(""), &format!("{}/hook", receiver.uri())).await;
    end(&app, id, TaskStatus::Completed).await;
    wait_hooks(&app, &receiver, 1).await;
    // Mid backoff: the failed attempt is recorded (the receiver saw it a moment before).
    app.eventually("the failed attempt recorded", WAIT, || async {
        webhook_state(&app, id).await.as_deref() == Some("retrying")
    })
    .await;
    first.kill();
    let _restarted = GatewayProc::spawn(bin, &app.ns, &slow_retry).await;
    app.eventually("delivered after the kill", Duration::from_secs(30), || async {
        webhook_state(&app, id).await.as_deref() == Some("delivered")
    })
    .await;
    let got = hooks(&receiver).await;
    assert_eq!(got.len(), 2, "one failed attempt before the kill, one delivery after");
    assert_eq!(got[0].headers.get("webhook-id"), got[1].headers.get("webhook-id"));
    verify(&got[1], SECRET);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_without_a_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let app = Harness::start(&[("WEBHOOK_SECRET", SECRET)]).await;
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
    ] {
        let resp = app.submit(USER, json!({"mandate": "x", "max_ticks": 1, "webhook_url": url})).await;
        let (_, body) = problem(resp, 422).await;
        let d = detail(&body);
        assert_eq!(d, "webhook_url: its host is not a public address", "{url}");
    }
    for bad in ["ftp://example.com/x", "not a url", "http://user:pw@example.com/hook"] {
        let resp = app.submit(USER, json!({"mandate": "x", "max_ticks": 1, "webhook_url": bad})).await;
        problem(resp, 422).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "no connection to a private address");
    assert_eq!(app.ready("").await, 0, "nothing enqueued");
    app.cleanup().await;

    // Without a secret there is no webhook at all.
    let plain = Harness::start(&[]).await;
    let resp =
        plain.submit(USER, json!({"mandate": "x", "max_ticks": 1, "webhook_url": "https://example.com/hook"})).await;
    let (_, body) = problem(resp, 422).await;
    assert!(detail(&body).contains("WEBHOOK_SECRET"), "{body}");
    plain.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_task_announces_its_pending_call_and_later_its_end() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let app = Harness::start(&hook_env(&[])).await;
    let url = format!("{}/hook", receiver.uri());
    let id = submit_hooked(&app, &app.url(""), &url).await;
    let attempt = app.claim(id, "agent-1", 5).await;
    let rec = app.record(id).await.expect("record");
    let action = proto::task::RequiredAction {
        call_id: "call_1".into(),
        tool: "files/delete".into(),
        arguments: json!({"path": "a"}),
        expires_at: "2030-01-01T00:00:00.000Z".into(),
    };
    let (schema, partial) = (json!({}), json!({"success": false}));
    let parking = proto::store::Parking {
        action: &action,
        expires_ms: i64::MAX,
        schema: &schema,
        partial: &partial,
        checkpoint: "{}",
    };
    app.store.park(&rec, attempt, &parking).await.expect("park");

    let got = wait_hooks(&app, &receiver, 1).await;
    let body = verify(&got[0], SECRET);
    assert_eq!(body["type"], "task.requires_action");
    assert_eq!(body["data"]["call_id"], "call_1");
    let first_id = got[0].headers.get("webhook-id").and_then(|v| v.to_str().ok()).expect("id").to_owned();
    assert_eq!(first_id, format!("msg_{}_call1", id.to_string().replace('-', "")), "one id per call");

    assert_eq!(app.cancel(USER, id).await.status(), 202);
    let got = wait_hooks(&app, &receiver, 2).await;
    let end = verify(&got[1], SECRET);
    assert_eq!(end["type"], "task.cancelled");
    assert_ne!(got[1].headers.get("webhook-id").and_then(|v| v.to_str().ok()), Some(first_id.as_str()));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_run_is_announced_and_the_next_run_s_end_is_announced_under_its_own_id() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let app = Harness::start(&hook_env(&[])).await;
    let id = submit_hooked(&app, &app.url(""), &format!("{}/hook", receiver.uri())).await;
    let attempt = app.claim(id, "agent-1", 5).await;
    let rec = app.record(id).await.expect("record");
    let stop = Finish {
        status: TaskStatus::Incomplete,
        result: None,
        error: Some("max_ticks".into()),
        ticks_used: Some(3),
        tokens_used: None,
    };
    app.store.finish(&rec, Some(attempt), &stop).await.expect("finish");
    let first = wait_hooks(&app, &receiver, 1).await;
    let body = verify(&first[0], SECRET);
    assert_eq!((body["type"].as_str(), body["data"]["status"].as_str()), (Some("task.incomplete"), Some("incomplete")));
    app.eventually("delivered", WAIT, || async { webhook_state(&app, id).await.as_deref() == Some("delivered") }).await;

    let extend = Readmission::Extend { max_ticks: Some(5), max_tokens: None };
    let rec = app.record(id).await.expect("record");
    assert!(matches!(
        app.store.readmit(&rec, extend, &Limits::NONE, None).await.expect("readmit"),
        ReadmitOutcome::Admitted { .. }
    ));
    let env = proto::TaskEnvelope { seq: 1, ..rec.envelope(1) };
    let Takeover::Claimed(c) = app.store.take_over(&env, "agent-2", 5).await.expect("take over") else {
        panic!("claim")
    };
    let done =
        Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(4), tokens_used: None };
    app.store.finish(&c.record, Some(c.attempt), &done).await.expect("finish");
    let both = wait_hooks(&app, &receiver, 2).await;
    let ids: Vec<String> = both.iter().map(|r| r.headers["webhook-id"].to_str().expect("ascii").to_owned()).collect();
    let base = format!("msg_{}", id.to_string().replace('-', ""));
    assert_eq!(ids, vec![format!("{base}_incomplete"), format!("{base}_r1")], "each run's end once, under its own id");
    assert_eq!(verify(&both[1], SECRET)["type"], "task.completed");
}

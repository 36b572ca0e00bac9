//! Operators and spend: every `/admin` route refuses anyone without the operator claim
//! (forged claims in unsigned or wrong-key tokens included); dead letters are listed without
//! being consumed; a redrive dry run changes nothing and a redrive takes out exactly its
//! dead letters; a bulk retry cut off by a killed gateway and repeated retries each task
//! once; the audit stream holds every call. Spend: the daily token quota is exact under 40
//! concurrent submits; a task nobody starts in time fails "expired in queue", refunded.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lapin::options::{BasicGetOptions, BasicNackOptions};
use proto::store::Finish;
use proto::{TaskId, TaskStatus};
use serde_json::{Value, json};
use testkit::{GatewayProc, Harness};

use crate::common::{claims, detail, problem, sign};

const WAIT: Duration = Duration::from_secs(20);

fn operator_claims(sub: &str) -> Value {
    let mut c = claims(sub);
    c["app_metadata"] = json!({"euglena_role": "operator", "provider": "email"});
    c
}

fn operator() -> String {
    sign(&operator_claims("ops-1"))
}

const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("get", "/admin/tasks"),
    ("get", "/admin/dead-letters"),
    ("get", "/admin/audit"),
    ("post", "/admin/dead-letters/redrive"),
    ("post", "/admin/tasks/cancel"),
    ("post", "/admin/tasks/retry"),
];

async fn call(app: &Harness, m: &str, p: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
    let url = app.url(p);
    let mut req = if m == "post" { app.http.post(url).json(body) } else { app.http.get(url) };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_anyone_but_an_operator() {
    let app = Harness::start(&[]).await;
    let forged_unsigned = {
        // alg "none": the operator claim with no signature at all.
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&operator_claims("mallory")))
    };
    let forged_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &operator_claims("mallory"),
        &EncodingKey::from_secret(b"not-the-gateway-secret-not-the-gateway-secret"),
    )
    .expect("sign");
    let user = app.token_for("alice");
    let body = json!({"dry_run": true});
    for (m, p) in ADMIN_ROUTES {
        let (_, refused) = problem(call(&app, m, p, Some(&user), &body).await, 403).await;
        assert!(detail(&refused).contains("operators"), "{m} {p}: {refused}");
        for token in [forged_unsigned.as_str(), forged_key.as_str()] {
            problem(call(&app, m, p, Some(token), &body).await, 401).await;
        }
        problem(call(&app, m, p, None, &body).await, 401).await;
        let ok = call(&app, m, p, Some(&operator()), &body).await;
        assert_eq!(ok.status(), 200, "{m} {p}: {:?}", ok.text().await);
    }
    // A role elsewhere in the claims is not the operator's: only app_metadata (server-set).
    let mut user_meta = claims("eve");
    user_meta["user_metadata"] = json!({"euglena_role": "operator"});
    problem(call(&app, "get", "/admin/tasks", Some(&sign(&user_meta)), &body).await, 403).await;
    app.cleanup().await;
}

/// Rejects every ready message of the input queue without requeue, as a consumer that could
/// not handle them would: the broker dead-letters them.
async fn reject_all(app: &Harness) -> usize {
    let mut n = 0;
    while let Some(msg) =
        app.channel.basic_get(app.ns.queue.as_str().into(), BasicGetOptions { no_ack: false }).await.expect("basic.get")
    {
        msg.delivery.acker.nack(BasicNackOptions { requeue: false, multiple: false }).await.expect("nack");
        n += 1;
    }
    n
}

async fn admin_get(app: &Harness, path: &str) -> Value {
    let resp = app.http.get(app.url(path)).bearer_auth(operator()).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

async fn admin_post(app: &Harness, path: &str, body: &Value) -> Value {
    let resp = app.http.post(app.url(path)).bearer_auth(operator()).json(body).send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_without_being_consumed_and_a_redrive_removes_exactly_its_own() {
    let app = Harness::start(&[("RECONCILE_INTERVAL_MS", "200")]).await;
    let poison = app.submit_ok("alice", "poison", 3).await;
    let other = app.submit_ok("bob", "other", 3).await;
    assert_eq!(reject_all(&app).await, 2);
    for id in [poison, other] {
        let rec = app.wait_for(id, WAIT, |r| r.status == TaskStatus::Failed).await;
        assert!(rec.error.as_deref().is_some_and(|e| e.starts_with("dead-lettered")), "{rec:?}");
    }
    app.eventually("both indexed", WAIT, || async {
        admin_get(&app, "/admin/dead-letters").await["dead_letters"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let listed = admin_get(&app, "/admin/dead-letters?limit=1").await;
    assert_eq!(listed["dead_letters"][0]["reason"], "rejected");
    assert_eq!(listed["dead_letters"][0]["status"], "failed");
    let page2 = admin_get(
        &app,
        &format!("/admin/dead-letters?limit=1&cursor={}", listed["next_cursor"].as_str().expect("cursor")),
    )
    .await;
    assert_ne!(listed["dead_letters"][0]["correlation_id"], page2["dead_letters"][0]["correlation_id"]);
    assert_eq!(app.ready(".dlq").await, 2, "listing consumed nothing");

    let dry = admin_post(&app, "/admin/dead-letters/redrive", &json!({"ids": [poison], "dry_run": true})).await;
    assert_eq!(dry["results"][0]["outcome"], "would_redrive");
    assert_eq!(app.record(poison).await.expect("record").status, TaskStatus::Failed, "a dry run changes nothing");
    assert_eq!((app.ready(".dlq").await, app.ready("").await), (2, 0));

    let done =
        admin_post(&app, "/admin/dead-letters/redrive", &json!({"ids": [poison], "operation_id": "redrive-1"})).await;
    assert_eq!(done["results"][0]["outcome"], "redriven", "{done}");
    let rec = app.record(poison).await.expect("record");
    assert_eq!((rec.status, rec.seq, rec.history.len()), (TaskStatus::InQueue, 1, 1));
    assert_eq!((app.ready(".dlq").await, app.ready("").await), (1, 1), "exactly its dead letter left the DLQ");
    let left = admin_get(&app, "/admin/dead-letters").await;
    assert_eq!(left["dead_letters"].as_array().expect("list").len(), 1);
    assert_eq!(left["dead_letters"][0]["correlation_id"], other.to_string());
    // Repeated (a client retry): nothing is done twice.
    let again =
        admin_post(&app, "/admin/dead-letters/redrive", &json!({"ids": [poison], "operation_id": "redrive-1"})).await;
    assert_eq!(again["results"][0]["outcome"], "skipped", "{again}");

    // Every call is in the audit stream, newest first.
    let audit = admin_get(&app, "/admin/audit?limit=100").await;
    let entries = audit["entries"].as_array().expect("entries");
    let phases: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["phase"].as_str().unwrap_or(""),
                e["dry_run"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(phases.len(), 6, "{phases:?}");
    assert!(phases.iter().all(|(a, _, _)| *a == "dead_letters.redrive"));
    assert_eq!(phases[5], ("dead_letters.redrive", "started", true));
    assert_eq!(entries[2]["results"][poison.to_string()], "redriven", "{}", entries[2]);
    assert!(entries.iter().all(|e| e["operator"] == "ops-1"));
    app.cleanup().await;
}

async fn failed_tasks(app: &Harness, n: usize) -> Vec<TaskId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = app.submit_ok(&format!("user-{}", i % 7), &format!("task {i}"), 2).await;
        let rec = app.record(id).await.expect("record");
        let fin = Finish {
            status: TaskStatus::Failed,
            result: None,
            error: Some("model down".into()),
            ticks_used: Some(0),
            tokens_used: None,
        };
        app.store.finish(&rec, None, &fin).await.expect("finish");
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_cut_off_by_a_killed_gateway_and_repeated_retries_each_task_once() {
    let app = Harness::start(&[]).await;
    let ids = failed_tasks(&app, 400).await;
    let mut doomed = GatewayProc::spawn(env!("CARGO_BIN_EXE_gateway"), &app.ns, &[]).await;
    let body = json!({"status": "failed", "limit": 1000, "operation_id": "retry-all-1"});
    let url = doomed.url("/admin/tasks/retry");
    let http = app.http.clone();
    let cut = tokio::spawn(async move { http.post(url).bearer_auth(operator()).json(&body).send().await });
    // Kill it once it has retried some (each retry publishes an envelope), not all.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.ready("").await < 400 + 10 {
        assert!(tokio::time::Instant::now() < deadline, "the bulk call never got under way");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    doomed.kill();
    assert!(cut.await.expect("join").is_err(), "the call was cut off");
    let mid: usize = futures_util::future::join_all(ids.iter().map(|id| app.record(*id)))
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_some_and(|r| r.runs > 0))
        .count();
    assert!(mid < ids.len(), "killed half way ({mid} of {} retried)", ids.len());

    // The same call again, through another gateway. Tasks it already retried are now queued
    // (so the filter passes them by); none is retried twice.
    let again = admin_post(
        &app,
        "/admin/tasks/retry",
        &json!({"status": "failed", "limit": 1000, "operation_id": "retry-all-1"}),
    )
    .await;
    let retried = again["results"].as_array().expect("results").iter().filter(|r| r["outcome"] == "retried").count();
    assert_eq!(retried, ids.len() - mid, "{again}");
    for id in &ids {
        let rec = app.record(*id).await.expect("record");
        // (A retry admitted but not yet published when the gateway died is published by the
        // reconciler with the next enqueue number: still one run.)
        assert_eq!((rec.status, rec.runs, rec.history.len()), (TaskStatus::InQueue, 1, 1), "{id}");
    }
    // The same ids named explicitly: each already done by this operation.
    let named = admin_post(&app, "/admin/tasks/retry", &json!({"ids": &ids[..5], "operation_id": "retry-all-1"})).await;
    assert!(named["results"].as_array().expect("results").iter().all(|r| r["outcome"] == "already_done"), "{named}");
    let audit = admin_get(&app, "/admin/audit?limit=100").await;
    let started = audit["entries"].as_array().expect("entries").iter().filter(|e| e["phase"] == "started").count();
    assert_eq!(started, 3, "the cut-off call left its start behind");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_any_users_tasks_by_status_and_cancel_in_bulk() {
    let app = Harness::start(&[]).await;
    let a = app.submit_ok("alice", "one", 2).await;
    let b = app.submit_ok("bob", "two", 2).await;
    let failed = failed_tasks(&app, 1).await[0];
    let queued = admin_get(&app, "/admin/tasks?status=in_queue").await;
    let listed: Vec<&str> =
        queued["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["correlation_id"].as_str()).collect();
    assert_eq!(listed, vec![b.to_string(), a.to_string()], "newest first, any user, that status only");
    assert_eq!(queued["tasks"][0]["user_id"], "bob");
    let bobs = admin_get(&app, "/admin/tasks?user=bob").await;
    assert_eq!(bobs["tasks"].as_array().expect("tasks").len(), 1);
    let old = admin_get(&app, "/admin/tasks?older_than=3600").await;
    assert_eq!(old["tasks"], json!([]));

    let dry = admin_post(&app, "/admin/tasks/cancel", &json!({"status": "in_queue", "dry_run": true})).await;
    assert_eq!(dry["results"].as_array().expect("results").len(), 2);
    assert_eq!(app.record(a).await.expect("record").status, TaskStatus::InQueue);
    let done = admin_post(&app, "/admin/tasks/cancel", &json!({"ids": [a, b, failed]})).await;
    let outcomes: Vec<&str> =
        done["results"].as_array().expect("results").iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(outcomes, vec!["cancelled", "cancelled", "skipped"]);
    assert_eq!(app.quota_used("alice").await, 0, "refunded");
    let bad = app
        .http
        .post(app.url("/admin/tasks/cancel"))
        .bearer_auth(operator())
        .json(&json!({"limit": 5000}))
        .send()
        .await
        .expect("request");
    problem(bad, 422).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_token_quota_is_exact_under_40_concurrent_submits() {
    let app = Harness::start(&[("DAILY_TOKEN_LIMIT", "1000"), ("DAILY_TICK_LIMIT", "0")]).await;
    let sends = (0..40).map(|i| app.submit("alice", json!({"mandate": format!("m{i}"), "max_tokens": 100})));
    let replies = futures_util::future::join_all(sends).await;
    let mut accepted = 0;
    for r in replies {
        match r.status().as_u16() {
            202 => accepted += 1,
            _ => {
                let (_, body) = problem(r, 429).await;
                assert!(detail(&body).contains("daily token quota"), "{body}");
            }
        }
    }
    assert_eq!(accepted, 10);
    // A task without a budget reserves TASK_TOKEN_ESTIMATE (50,000): over the limit too.
    problem(app.submit("bob", json!({"mandate": "no budget"})).await, 429).await;
    for bad in [json!(0), json!(-1), json!(3_000_000)] {
        let (_, body) = problem(app.submit("carol", json!({"mandate": "m", "max_tokens": bad})).await, 422).await;
        assert!(detail(&body).contains("max_tokens"), "{body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_nobody_starts_in_time_fails_expired_in_queue_and_is_refunded() {
    let app = Harness::start(&[("RECONCILE_INTERVAL_MS", "200"), ("DAILY_TICK_LIMIT", "100")]).await;
    let resp =
        app.submit("alice", json!({"mandate": "soon or never", "max_ticks": 7, "expires_after_seconds": 2})).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert!(body["expires_at"].is_string(), "{body}");
    let id: TaskId = body["correlation_id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(app.quota_used("alice").await, 7);
    let rec = app.wait_for(id, WAIT, |r| r.status.is_terminal()).await;
    assert_eq!((rec.status, rec.error.as_deref()), (TaskStatus::Failed, Some("expired in queue")));
    assert_eq!(app.quota_used("alice").await, 0, "refunded");
    problem(app.submit("alice", json!({"mandate": "m", "expires_after_seconds": 0})).await, 422).await;
    app.cleanup().await;
}

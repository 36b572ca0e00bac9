//! Bearer JWT authentication (ARCHITECTURE §2 "Auth"): every broken token is a 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"`, checked before the body is read, and
//! a caller never sees another user's task.

use base64::Engine;
use jsonwebtoken::Algorithm;
use proto::TaskStatus;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{assert_no_side_effects, assert_ready, claims, header, problem, sign, sign_with};

const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

/// Sends `authorization` to `GET /tasks` and to `POST /tasks` with a valid body; both must
/// be 401 invalid_token and nothing may be enqueued.
async fn assert_rejected(app: &Harness, authorization: &str, what: &str) {
    let get = app.http.get(app.url("/tasks")).header("authorization", authorization).send().await.expect("request");
    let (headers, body) = problem(get, 401).await;
    assert_eq!(header(&headers, "www-authenticate"), INVALID_TOKEN, "{what}: GET /tasks; body {body}");

    let post = app
        .http
        .post(app.url("/tasks"))
        .header("authorization", authorization)
        .json(&json!({"mandate": "must not be accepted", "max_ticks": 5}))
        .send()
        .await
        .expect("request");
    let (headers, body) = problem(post, 401).await;
    assert_eq!(header(&headers, "www-authenticate"), INVALID_TOKEN, "{what}: POST /tasks; body {body}");
    assert_eq!(app.ready("").await, 0, "{what}: nothing may be enqueued");
}

async fn assert_token_rejected(token: &str, what: &str) {
    let app = Harness::start(&[]).await;
    assert_rejected(&app, &format!("Bearer {token}"), what).await;
    assert_eq!(app.quota_used("mallory").await, 0);
    app.cleanup().await;
}

fn with(sub: &str, key: &str, value: Value) -> Value {
    let mut c = claims(sub);
    c[key] = value;
    c
}

fn without(sub: &str, key: &str) -> Value {
    let mut c = claims(sub);
    c.as_object_mut().expect("object").remove(key);
    c
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401_with_bearer_challenge() {
    let app = Harness::start(&[]).await;
    for (method, path) in [("GET", "/tasks"), ("POST", "/tasks"), ("GET", &*format!("/tasks/{}", uuid::Uuid::new_v4()))]
    {
        let req = match method {
            "GET" => app.http.get(app.url(path)),
            _ => app.http.post(app.url(path)).json(&json!({"mandate": "x"})),
        };
        let (headers, _) = problem(req.send().await.expect("request"), 401).await;
        let challenge = header(&headers, "www-authenticate");
        assert!(challenge.starts_with("Bearer"), "{method} {path}: WWW-Authenticate {challenge:?}");
    }
    assert_eq!(app.ready("").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_accepted() {
    // The control case for every rejection below: the same claims, correctly signed, pass.
    let app = Harness::start(&[]).await;
    let token = sign(&claims("alice"));
    let resp = app.http.get(app.url("/tasks")).bearer_auth(&token).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    // The scheme is case-insensitive (RFC 7235).
    let resp =
        app.http.get(app.url("/tasks")).header("authorization", format!("bearer {token}")).send().await.expect("req");
    assert_eq!(resp.status(), 200);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_token_is_rejected() {
    assert_token_rejected("garbage", "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_scheme_and_empty_bearer_are_rejected() {
    let app = Harness::start(&[]).await;
    let token = sign(&claims("mallory"));
    assert_rejected(&app, &format!("Basic {token}"), "Basic scheme").await;
    assert_rejected(&app, "Bearer", "Bearer without a token").await;
    assert_rejected(&app, "Bearer ", "Bearer with an empty token").await;
    assert_rejected(&app, &token, "token without a scheme").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_beyond_leeway_is_rejected() {
    let exp = chrono::Utc::now().timestamp() - 120;
    assert_token_rejected(&sign(&with("mallory", "exp", json!(exp))), "expired 2 min ago").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expired_within_leeway_is_accepted() {
    // ARCHITECTURE §2: 30 s leeway; a token that expired 5 s ago still passes.
    let app = Harness::start(&[]).await;
    let exp = chrono::Utc::now().timestamp() - 5;
    let token = sign(&with("alice", "exp", json!(exp)));
    let resp = app.http.get(app.url("/tasks")).bearer_auth(token).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_is_rejected() {
    assert_token_rejected(&sign(&with("mallory", "aud", json!("someone-else"))), "wrong aud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_audience_is_rejected() {
    assert_token_rejected(&sign(&without("mallory", "aud")), "no aud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anon_role_is_rejected() {
    assert_token_rejected(&sign(&with("mallory", "role", json!("anon"))), "role anon").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_role_is_rejected() {
    assert_token_rejected(&sign(&with("mallory", "role", json!("service_role"))), "role service_role").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_role_is_rejected() {
    assert_token_rejected(&sign(&without("mallory", "role")), "no role").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_rejected() {
    let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(&claims("mallory").to_string());
    assert_token_rejected(&format!("{header}.{payload}."), "alg none, empty signature").await;
    // The same with the case games some libraries fall for.
    let header = b64(r#"{"alg":"None","typ":"JWT"}"#);
    assert_token_rejected(&format!("{header}.{payload}."), "alg None").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hmac_algorithm_with_the_right_secret_is_rejected() {
    // The algorithm is pinned to HS256 for the shared secret.
    let token = sign_with(&claims("mallory"), testkit::SECRET.as_bytes(), Algorithm::HS512);
    assert_token_rejected(&token, "HS512 with the right secret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_exp_is_rejected() {
    assert_token_rejected(&sign(&without("mallory", "exp")), "no exp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_sub_is_rejected() {
    assert_token_rejected(&sign(&without("mallory", "sub")), "no sub").await;
    assert_token_rejected(&sign(&with("mallory", "sub", json!(""))), "empty sub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_with_another_secret_is_rejected() {
    let token = sign_with(&claims("mallory"), b"another-secret-another-secret-another-0123", Algorithm::HS256);
    assert_token_rejected(&token, "other secret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_payload_is_rejected() {
    // A valid token whose payload was swapped for another user's: the signature no longer matches.
    let token = sign(&claims("mallory"));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(&claims("alice").to_string());
    assert_token_rejected(&parts.join("."), "tampered payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_task_is_not_found() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok("alice", "alice's private mandate", 5).await;

    let (_, body) = problem(app.get_task("bob", id).await, 404).await;
    assert!(!body.to_string().contains("alice"), "a 404 must not reveal the owner: {body}");
    problem(app.cancel("bob", id).await, 404).await;

    // Indistinguishable from a task that does not exist.
    let absent: proto::TaskId = uuid::Uuid::new_v4().to_string().parse().expect("id");
    let (_, absent_body) = problem(app.get_task("bob", absent).await, 404).await;
    assert_eq!(body, absent_body, "another user's task must look exactly like a missing one");

    // Bob's cancel changed nothing, and bob's list does not show it.
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::InQueue);
    assert!(!rec.cancel_requested);
    assert_eq!(app.quota_used("alice").await, 5);
    let resp = app.get_task("alice", id).await;
    assert_eq!(resp.status(), 200);
    let resp = app.http.get(app.url("/tasks")).bearer_auth(app.token_for("bob")).send().await.expect("request");
    let list: Value = resp.json().await.expect("json");
    assert_eq!(list["tasks"], json!([]));
    assert_ready(&app, 1).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_before_the_body() {
    let app = Harness::start(&[]).await;
    // No token + malformed JSON: 401, not 400.
    let resp = app
        .http
        .post(app.url("/tasks"))
        .header(CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    problem(resp, 401).await;
    // Bad token + wrong content type: 401, not 415.
    let resp = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth("garbage")
        .header(CONTENT_TYPE, "text/plain")
        .body("hello")
        .send()
        .await
        .expect("request");
    let (headers, _) = problem(resp, 401).await;
    assert_eq!(header(&headers, "www-authenticate"), INVALID_TOKEN);
    // Bad token + invalid mandate: 401, not 422.
    let resp = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth("garbage")
        .json(&json!({"mandate": "", "max_ticks": 0}))
        .send()
        .await
        .expect("request");
    problem(resp, 401).await;
    assert_no_side_effects(&app, "mallory").await;
    app.cleanup().await;
}

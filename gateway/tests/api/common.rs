//! Helpers shared by the API tests: token crafting and problem-response checks.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};
use testkit::Harness;

/// Claims the gateway accepts for `sub`, valid for ten minutes.
pub(crate) fn claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 600})
}

pub(crate) fn sign_with(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// HS256 with the harness's secret.
pub(crate) fn sign(claims: &Value) -> String {
    sign_with(claims, testkit::SECRET.as_bytes(), Algorithm::HS256)
}

/// Checks an RFC 9457 problem response with `status` and returns its headers and body.
pub(crate) async fn problem(resp: reqwest::Response, status: u16) -> (HeaderMap, Value) {
    let got = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    assert_eq!(got.as_u16(), status, "unexpected status; body: {text}");
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(ct, "application/problem+json", "content-type of a {status} problem; body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {text}"));
    for field in ["type", "title", "detail"] {
        let v = body[field].as_str().unwrap_or_else(|| panic!("problem field {field} missing or not a string: {body}"));
        assert!(!v.is_empty(), "problem field {field} is empty: {body}");
    }
    assert_eq!(body["status"], json!(status), "problem status field: {body}");
    (headers, body)
}

pub(crate) fn detail(body: &Value) -> &str {
    body["detail"].as_str().expect("detail")
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap_or_else(|| panic!("header {name} missing")).to_str().expect("ascii header")
}

/// Polls the input queue's ready count until it equals `want` (publisher confirms make it
/// exact almost at once; the poll only absorbs the broker's bookkeeping lag).
pub(crate) async fn assert_ready(app: &Harness, want: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let got = app.ready("").await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "input queue holds {got} ready messages, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that a rejected request left no trace: nothing enqueued, no quota reserved,
/// no task listed for `user`.
pub(crate) async fn assert_no_side_effects(app: &Harness, user: &str) {
    assert_eq!(app.ready("").await, 0, "a rejected request must enqueue nothing");
    assert_eq!(app.quota_used(user).await, 0, "a rejected request must reserve no quota");
    let resp = app.http.get(app.url("/tasks")).bearer_auth(app.token_for(user)).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.expect("json");
    assert_eq!(list["tasks"], json!([]), "a rejected request must create no task record");
}

/// Waits until the gateway serves (it warms its broker link before accepting).
pub(crate) async fn wait_serving(app: &Harness) {
    app.eventually("gateway serving /health", Duration::from_secs(10), || async {
        matches!(app.http.get(app.url("/health")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

//! Request validation (ARCHITECTURE §2 "TaskRequest"): every bad body is a problem response with
//! the right status, and leaves nothing behind (no message, no quota, no record).

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{assert_no_side_effects, detail, problem};

const USER: &str = "val-user";

/// Posts `body` as JSON, expects `status` and no side effects; returns the problem body.
async fn rejected_json(app: &Harness, body: Value, status: u16) -> Value {
    let (_, problem_body) = problem(app.submit(USER, body).await, status).await;
    assert_no_side_effects(app, USER).await;
    problem_body
}

/// Posts raw bytes with a content type.
async fn rejected_raw(app: &Harness, content_type: Option<&str>, body: impl Into<reqwest::Body>, status: u16) -> Value {
    let mut req = app.http.post(app.url("/tasks")).bearer_auth(app.token_for(USER)).body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let (_, problem_body) = problem(req.send().await.expect("request"), status).await;
    assert_no_side_effects(app, USER).await;
    problem_body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_blank_mandates_are_422() {
    let app = Harness::start(&[]).await;
    for mandate in ["", "   ", " \t\n\r "] {
        let body = rejected_json(&app, json!({"mandate": mandate, "max_ticks": 5}), 422).await;
        assert!(detail(&body).contains("mandate"), "{mandate:?}: detail must name the field: {body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mandate_is_422() {
    let app = Harness::start(&[]).await;
    let body = rejected_json(&app, json!({"max_ticks": 5}), 422).await;
    assert!(detail(&body).contains("mandate"), "{body}");
    let body = rejected_json(&app, json!({"mandate": null}), 422).await;
    assert!(detail(&body).contains("mandate"), "{body}");
    let body = rejected_json(&app, json!({"mandate": 42}), 422).await;
    assert!(detail(&body).starts_with("mandate"), "{body}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandate_over_8000_chars_is_422() {
    let app = Harness::start(&[]).await;
    let body = rejected_json(&app, json!({"mandate": "m".repeat(8001), "max_ticks": 5}), 422).await;
    assert!(detail(&body).contains("mandate"), "{body}");
    // Counted in characters, not bytes: 8001 two-byte characters are still too many.
    rejected_json(&app, json!({"mandate": "é".repeat(8001), "max_ticks": 5}), 422).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_values_are_accepted() {
    // The control case for the limits: exactly 8000 characters (16000 bytes, padded with
    // whitespace that trimming removes), max_ticks 1 and 200.
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "0")]).await;
    let long = format!("  {}\n", "é".repeat(8000));
    let resp = app.submit(USER, json!({"mandate": long, "max_ticks": 1})).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["mandate"].as_str().expect("mandate").chars().count(), 8000, "the mandate is stored trimmed");
    assert_eq!(body["max_ticks"], 1);
    let resp = app.submit(USER, json!({"mandate": "m", "max_ticks": 200})).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    assert_eq!(app.ready("").await, 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ticks_out_of_range_is_422() {
    let app = Harness::start(&[]).await;
    for bad in [json!(0), json!(201), json!(-1), json!(i64::MAX), json!(u64::MAX)] {
        let body = rejected_json(&app, json!({"mandate": "fine", "max_ticks": bad}), 422).await;
        assert!(detail(&body).contains("max_ticks"), "max_ticks {bad}: detail must name the field: {body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ticks_of_the_wrong_type_is_422_naming_the_field() {
    let app = Harness::start(&[]).await;
    for bad in [json!("10"), json!(1.5), json!(true), json!([10]), json!({"n": 10})] {
        let body = rejected_json(&app, json!({"mandate": "fine", "max_ticks": bad}), 422).await;
        assert!(detail(&body).starts_with("max_ticks"), "max_ticks {bad}: detail must start with the field: {body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_is_422() {
    let app = Harness::start(&[]).await;
    let body = rejected_json(&app, json!({"mandate": "fine", "max_ticks": 5, "priority": "high"}), 422).await;
    assert!(detail(&body).contains("priority"), "detail must name the unknown field: {body}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_json_shape_is_422() {
    let app = Harness::start(&[]).await;
    rejected_json(&app, json!(["mandate", "x"]), 422).await;
    rejected_json(&app, json!("mandate"), 422).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = Harness::start(&[]).await;
    for raw in [r#"{"mandate": "x""#, "{nope}", "", "{\"mandate\": \"x\", }"] {
        rejected_raw(&app, Some("application/json"), raw, 400).await;
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_with_trailing_data_is_400() {
    // A complete JSON value followed by more bytes is not a JSON document (RFC 8259);
    // serde_json::from_slice and axum's Json reject it, and so must the gateway.
    let app = Harness::start(&[]).await;
    for raw in [r#"{"mandate": "x"} trailing"#, r#"{"mandate": "x"}{"mandate": "y"}"#] {
        rejected_raw(&app, Some("application/json"), raw, 400).await;
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = Harness::start(&[]).await;
    let valid = json!({"mandate": "fine", "max_ticks": 5}).to_string();
    rejected_raw(&app, Some("text/plain"), valid.clone(), 415).await;
    rejected_raw(&app, Some("application/x-www-form-urlencoded"), "mandate=fine", 415).await;
    rejected_raw(&app, None, valid.clone(), 415).await;
    // The control case: the same bytes as application/json (with parameters) are accepted.
    let resp = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth(app.token_for(USER))
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(valid)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_64_kib_is_413() {
    let app = Harness::start(&[]).await;
    // Valid JSON, so only the size can be the reason.
    let big = json!({"mandate": "m".repeat(64 * 1024), "max_ticks": 5}).to_string();
    assert!(big.len() > 64 * 1024);
    rejected_raw(&app, Some("application/json"), big, 413).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_limit_out_of_range_is_422() {
    let app = Harness::start(&[]).await;
    for limit in ["0", "101", "-1", "abc", ""] {
        let resp = app
            .http
            .get(app.url(&format!("/tasks?limit={limit}")))
            .bearer_auth(app.token_for(USER))
            .send()
            .await
            .expect("request");
        let (_, body) = problem(resp, 422).await;
        assert!(detail(&body).contains("limit"), "limit={limit}: {body}");
    }
    // The bounds themselves are fine.
    for limit in ["1", "100"] {
        let resp = app
            .http
            .get(app.url(&format!("/tasks?limit={limit}")))
            .bearer_auth(app.token_for(USER))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "limit={limit}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursor_is_400() {
    let app = Harness::start(&[]).await;
    let id = uuid::Uuid::new_v4();
    for cursor in ["garbage".to_owned(), "12:not-a-uuid".to_owned(), format!("x:{id}"), "".to_owned()] {
        let resp = app
            .http
            .get(app.url(&format!("/tasks?cursor={cursor}")))
            .bearer_auth(app.token_for(USER))
            .send()
            .await
            .expect("request");
        let (_, body) = problem(resp, 400).await;
        assert!(detail(&body).contains("cursor"), "cursor={cursor:?}: {body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_id_that_is_not_a_uuid_is_404() {
    let app = Harness::start(&[]).await;
    for path in ["/tasks/not-a-uuid", "/tasks/not-a-uuid/cancel"] {
        let req = if path.ends_with("cancel") { app.http.post(app.url(path)) } else { app.http.get(app.url(path)) };
        let resp = req.bearer_auth(app.token_for(USER)).send().await.expect("request");
        problem(resp, 404).await;
    }
    // A well-formed id that does not exist is a 404 too.
    let absent: proto::TaskId = uuid::Uuid::new_v4().to_string().parse().expect("id");
    problem(app.get_task(USER, absent).await, 404).await;
    problem(app.cancel(USER, absent).await, 404).await;
    app.cleanup().await;
}

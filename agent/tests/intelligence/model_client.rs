//! The OpenAI-compatible model client against a wiremock server: repair retry, retries
//! that honour `Retry-After`, and errors that end the task instead of retrying forever.
//! The last test runs whole tasks through the gateway and an agent process.

use std::time::Duration;

use agent::checkpoint::LoopState;
use agent::meter::Meter;
use agent::model::openai::{LlmSettings, OpenAiModel, ResponseMode};
use agent::model::prompt::Dialect;
use agent::model::{Action, Model, ModelError, ToolOffer, View};
use proto::TaskStatus;
use runtime::telemetry::Chain;
use serde_json::json;
use testkit::Harness;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Script, chat_requests, completion, decision};
use crate::{AGENT, SOON};

fn model(server: &MockServer, max_retries: u32) -> OpenAiModel {
    OpenAiModel::new(LlmSettings {
        api_key: "test-key".to_owned().into(),
        base_url: format!("{}/v1", server.uri()),
        model: "test-model".into(),
        embedding_model: "local".into(),
        timeout: Duration::from_secs(10),
        max_retries,
        response_mode: ResponseMode::JsonSchema,
        temperature: None,
        max_tokens: 1024,
        action_max_tokens: 512,
        dialect: Dialect::Full,
    })
    .expect("model")
}

async fn decide(m: &OpenAiModel, meter: &Meter) -> Result<agent::model::Decision, ModelError> {
    let state = LoopState::default();
    m.decide(&View {
        mandate: "find zebras",
        max_ticks: 5,
        state: &state,
        memories: &[],
        meter,
        search: true,
        tools: ToolOffer::none(),
    })
    .await
}

/// A reply the server cut off at `max_tokens`.
fn cut_off(content: &str) -> serde_json::Value {
    let mut c = completion(content);
    c["choices"][0]["finish_reason"] = json!("length");
    c
}

#[tokio::test]
async fn every_call_is_bounded_and_a_cut_off_reply_is_asked_again_shorter() {
    let server = MockServer::start().await;
    let first = ResponseTemplate::new(200).set_body_json(cut_off(r#"{"thought": "a thought that runs on and on"#));
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(first)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&decision("think", None, None, &[]))))
        .mount(&server)
        .await;
    let meter = Meter::default();
    let d = decide(&model(&server, 0), &meter).await.expect("asked again");
    assert_eq!(d.action, Action::Think);
    let bodies: Vec<serde_json::Value> =
        chat_requests(&server).await.iter().map(|b| serde_json::from_str(b).expect("json")).collect();
    assert_eq!(bodies.len(), 2);
    for b in &bodies {
        assert_eq!(b["max_tokens"], 512, "a tick's action carries its bound: {b}");
        let schema = &b["response_format"]["json_schema"]["schema"];
        assert_eq!(schema["properties"]["thought"]["maxLength"], 300, "the schema bounds strings");
    }
    let retry = bodies[1]["messages"].as_array().expect("messages");
    assert_eq!(retry.len(), 2, "a fresh turn, not the cut-off text");
    assert!(retry[1]["content"].as_str().expect("text").contains("cut off at the length limit (512 tokens)"));
    assert_eq!(meter.total().model_calls, 2);
}

#[tokio::test]
async fn failed_calls_count_in_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&decision("exit", None, None, &[]))))
        .mount(&server)
        .await;
    let meter = Meter::default();
    decide(&model(&server, 3), &meter).await.expect("after two 503s");
    let usage = meter.total();
    assert_eq!((usage.model_calls, usage.failed_calls), (3, 2), "every request the server saw: {usage:?}");
    assert_eq!(usage.total_tokens, 120);
}

#[tokio::test]
async fn without_a_search_provider_search_is_not_offered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&decision("think", None, None, &[]))))
        .mount(&server)
        .await;
    let meter = Meter::default();
    let state = LoopState::default();
    let view = View {
        mandate: "m",
        max_ticks: 3,
        state: &state,
        memories: &[],
        meter: &meter,
        search: false,
        tools: ToolOffer::none(),
    };
    model(&server, 0).decide(&view).await.expect("decided");
    let body: serde_json::Value = serde_json::from_str(&chat_requests(&server).await[0]).expect("json");
    let types = &body["response_format"]["json_schema"]["schema"]["properties"]["action"]["properties"]["type"]["enum"];
    assert_eq!(types, &json!(["visit", "think", "exit"]));
    assert!(!body["messages"][0]["content"].as_str().expect("system").contains("`search`"));
}

#[tokio::test]
async fn a_malformed_reply_gets_one_repair_turn() {
    let server = MockServer::start().await;
    let script =
        Script::new(vec!["Sure! I will search for zebras.".into(), decision("search", Some("zebras"), None, &[])]);
    Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(script).expect(2).mount(&server).await;
    let meter = Meter::default();
    let d = decide(&model(&server, 0), &meter).await.expect("repaired");
    assert_eq!(d.action, Action::Search { query: "zebras".into() });
    let bodies = chat_requests(&server).await;
    let repair: serde_json::Value = serde_json::from_str(&bodies[1]).expect("json");
    let messages = repair["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4, "system, task, the bad reply, the repair request");
    assert_eq!(messages[2]["content"], "Sure! I will search for zebras.");
    assert!(messages[3]["content"].as_str().expect("text").contains("the reply contained no JSON object"));
    assert_eq!(repair["response_format"]["type"], "json_schema");
    assert_eq!(meter.total().total_tokens, 240, "both calls counted");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("{\"action\": {\"type\": \"fly\"}}")))
        .expect(2)
        .mount(&server)
        .await;
    let r = decide(&model(&server, 0), &Meter::default()).await;
    assert!(matches!(&r, Err(ModelError::Malformed(m)) if m.contains("unknown action type")), "{r:?}");
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1").set_body_json(
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&decision("think", None, None, &[]))))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let d = decide(&model(&server, 3), &Meter::default()).await.expect("succeeds after the wait");
    assert_eq!(d.action, Action::Think);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", started.elapsed());
    assert_eq!(chat_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn outages_become_transient_and_bad_credentials_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .expect(3)
        .mount(&server)
        .await;
    let r = decide(&model(&server, 2), &Meter::default()).await;
    let e = r.expect_err("an outage");
    assert!(matches!(e, ModelError::Transient { .. }), "{e:?}");
    // The client's error stays attached as the cause, for the log.
    assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    assert!(Chain(&e).to_string().starts_with("model unavailable: HTTP 503 after retries"), "{}", Chain(&e));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "Incorrect API key", "type": "invalid_request_error"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let r = decide(&model(&server, 5), &Meter::default()).await;
    let e = r.expect_err("bad credentials");
    assert!(matches!(e, ModelError::Permanent { .. }), "{e:?}");
    assert!(e.reason().contains("401") && e.reason().contains("OPENAI_API_KEY"), "{e:?}");
    assert!(
        Chain(&e).to_string().contains("Incorrect API key"),
        "the cause chain has the API's message: {}",
        Chain(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_pipeline_a_401_fails_the_task_and_a_lost_tick_does_not() {
    let openai = MockServer::start().await;
    // Wrong key: 401 once, never retried.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer wrong-key"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key"}})))
        .expect(1)
        .mount(&openai)
        .await;
    // Right key: garbage twice (one tick lost), then exit and a result.
    let script = Script::new(vec![
        "garbage".into(),
        "still garbage".into(),
        decision("exit", None, Some("an answer"), &[]),
        json!({"success": true, "deliverables": ["an answer"], "notes": "done", "sources": []}).to_string(),
    ]);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer right-key"))
        .respond_with(script)
        .mount(&openai)
        .await;
    let mut app = Harness::start(&[]).await;
    let base = format!("{}/v1", openai.uri());
    let common = [("OPENAI_BASE_URL", base.as_str()), ("EMBEDDING_MODEL", "local"), ("LLM_MAX_RETRIES", "2")];
    app.spawn_agent(AGENT, "wrong", &[common.as_slice(), &[("OPENAI_API_KEY", "wrong-key")]].concat());
    let id = app.submit_ok("alice", "doomed by a bad key", 5).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Failed);
    let error = rec.error.expect("error");
    assert!(error.contains("401") && error.contains("OPENAI_API_KEY"), "{error}");
    assert_eq!(rec.attempt, 1, "failed, not requeued");
    assert_eq!(app.ready(".dlq").await, 0);
    app.agent(0).kill();

    app.spawn_agent(AGENT, "right", &[common.as_slice(), &[("OPENAI_API_KEY", "right-key")]].concat());
    let id = app.submit_ok("alice", "survive garbage", 5).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:?}");
    let actions: Vec<String> = app.events(id).await.into_iter().filter_map(|e| e.get("action").cloned()).collect();
    assert_eq!(actions, vec!["invalid", "exit"], "the lost tick is recorded and the loop went on");
    assert_eq!(rec.result.expect("result")["deliverables"][0], "an answer");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outage_is_waited_out_without_spending_a_delivery() {
    let openai = MockServer::start().await;
    // Down for the first call (no client retries configured), then back.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&openai)
        .await;
    let script = Script::new(vec![
        decision("exit", None, Some("after the outage"), &[]),
        json!({"success": true, "deliverables": ["after the outage"], "notes": "done", "sources": []}).to_string(),
    ]);
    Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(script).mount(&openai).await;
    let mut app = Harness::start(&[]).await;
    let base = format!("{}/v1", openai.uri());
    app.spawn_agent(
        AGENT,
        "patient",
        &[("OPENAI_BASE_URL", base.as_str()), ("EMBEDDING_MODEL", "local"), ("LLM_MAX_RETRIES", "0")],
    );
    let id = app.submit_ok("alice", "outlive an outage", 5).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:?}");
    assert_eq!(rec.attempt, 1, "waited in place, not requeued");
    assert_eq!(rec.result.expect("result")["deliverables"][0], "after the outage");
    app.cleanup().await;
}

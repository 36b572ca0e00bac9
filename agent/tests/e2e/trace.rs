//! One OpenTelemetry trace from the client's request to every tick, model call and the
//! webhook: a gateway process and agent processes export over OTLP/HTTP to a test receiver
//! (`testkit::otlp`); the task is submitted with a known `traceparent`, its first agent is
//! killed -9 mid-run and another resumes it, and the spans of both runs, the gateway's and
//! the webhook's land in the client's trace with the right parents. Nothing the user wrote,
//! no token and no result is in the exported bytes.

use std::collections::HashMap;
use std::time::Duration;

use proto::TaskStatus;
use serde_json::{Value, json};
use testkit::mcp::McpServerProc;
use testkit::otlp::{OtlpReceiver, Span, tree};
use testkit::{GatewayProc, Harness};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{AGENT, SOON};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// A Standard Webhooks signing key (`whsec_` + base64 of ≥ 24 bytes).
const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC10ZXN0LXdlYmhvb2stc2U=";
const MANDATE: &str = "Trace marker MANDATE-7f3a9c: gather notes on euglena phototaxis";
/// In every tool call's arguments (the offline model calls one tool per `tool:` line).
const ARGUMENT: &str = "ARGUMENT-5d2e81";
const CALLS: usize = 8;

fn find<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_request_through_a_crash_to_the_webhook() {
    let receiver = OtlpReceiver::start().await;
    let py = McpServerProc::python("").await;
    let servers = json!({"py": {"url": py.url}}).to_string();
    let mandate = std::iter::once(MANDATE.to_owned())
        .chain((0..CALLS).map(|i| format!("tool: py/echo {{\"text\": \"{ARGUMENT} {i}\"}}")))
        .collect::<Vec<_>>()
        .join("\n");
    let endpoint = receiver.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Export each batch at once: the first agent is killed, and what it buffered dies with it.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    // The harness's in-process gateway has no webhook secret, so only the gateway process
    // (the one exporting spans) delivers the webhook.
    let mut app = Harness::start(&[]).await;
    let hooks = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hooks).await;
    let mut gw_env = otel.to_vec();
    gw_env.extend([("WEBHOOK_SECRET", WEBHOOK_SECRET), ("WEBHOOK_ALLOW_PRIVATE", "true"), ("MCP_SERVERS", &servers)]);
    let gateway = GatewayProc::spawn(testkit::binaries::workspace_bin("gateway", "gateway"), &app.ns, &gw_env).await;

    let mut agent_env = otel.to_vec();
    agent_env.extend([("OFFLINE_TICK_DELAY_MS", "300"), ("MCP_SERVERS", &servers)]);
    let victim = app.spawn_agent(AGENT, "victim", &agent_env);

    let token = app.token_for("alice");
    let resp = app
        .http
        .post(gateway.url("/tasks"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({
            "mandate": mandate,
            "max_ticks": 12,
            "tools": ["py"],
            "webhook_url": format!("{}/hook", hooks.uri()),
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["trace_id"], TRACE, "TaskResponse carries the client's trace");
    let id = body["correlation_id"].as_str().expect("id").parse().expect("uuid");

    app.wait_for(id, SOON, |r| r.tick.unwrap_or(0) >= 3).await;
    app.agent(victim).kill();
    let rescuer = app.spawn_agent(AGENT, "rescuer", &agent_env);
    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempt, 2);

    // The rescuer's delivery span ends at its ack; the webhook's once it was delivered.
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::time::Instant::now() < deadline {
        spans = receiver.spans().into_iter().filter(|s| s.trace_id == TRACE).collect::<Vec<_>>();
        let rescued = find(&spans, "delivery").iter().any(|s| s.attributes.get("attempt").is_some_and(|a| a == "2"));
        let hooked = find(&spans, "webhook.delivery").iter().any(|s| s.attributes["outcome"] == "delivered");
        if rescued && hooked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = tree(&spans);
    eprintln!("trace {TRACE}:\n{shown}");

    // The gateway continued the client's span, and the task hangs under its submit span.
    let http = find(&spans, "http");
    let http = http.iter().find(|s| s.attributes.get("route").is_some_and(|r| r == "/tasks")).expect(&shown);
    assert_eq!(http.parent_id, CLIENT_SPAN, "{shown}");
    assert_eq!(http.service, "gateway");
    let submit = *find(&spans, "submit").first().expect(&shown);
    assert_eq!(submit.parent_id, http.span_id, "{shown}");

    // Both runs of the task are in the trace: the killed run's ticks (its delivery span never
    // ended, so it was never exported) and the rescuer's delivery, each under the submit span.
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let deliveries = find(&spans, "delivery");
    assert!(!deliveries.is_empty(), "{shown}");
    for d in &deliveries {
        assert_eq!(d.parent_id, submit.span_id, "a delivery continues the task's trace\n{shown}");
        assert_eq!(d.service, "agent");
    }
    let ticks = find(&spans, "tick");
    let attempts: Vec<&str> = ticks.iter().filter_map(|t| t.attributes.get("attempt").map(String::as_str)).collect();
    assert!(attempts.contains(&"1") && attempts.contains(&"2"), "ticks of both runs: {attempts:?}\n{shown}");
    for t in ticks.iter().filter(|t| t.attributes["attempt"] == "2") {
        assert_eq!(by_id[t.parent_id.as_str()].name, "delivery", "{shown}");
    }

    // Model calls: under a tick (decide) or the delivery (synthesize), named, with tokens
    // and a finish reason.
    let calls = find(&spans, "model.call");
    assert!(calls.iter().any(|c| c.attributes["kind"] == "synthesize"), "{shown}");
    for c in &calls {
        let parent = by_id.get(c.parent_id.as_str()).map(|p| p.name.as_str());
        let expected = if c.attributes["kind"] == "decide" { "tick" } else { "delivery" };
        // A decide of the killed run may hang under a tick whose span ended after the kill.
        if let Some(parent) = parent {
            assert_eq!(parent, expected, "{shown}");
        }
        assert_eq!(c.attributes["model"], "offline-demo");
        assert_eq!(c.attributes["finish_reason"], "stop");
        assert!(c.attributes.contains_key("prompt_tokens") && c.attributes.contains_key("attempt"), "{shown}");
    }

    // Tool calls: under their tick, named, with an outcome; their arguments and results are
    // checked below with everything else that must not be exported.
    let tools = find(&spans, "tool.call");
    assert!(tools.len() >= 3, "{shown}");
    for t in &tools {
        assert_eq!(t.attributes["tool"], "py/echo");
        assert_eq!(t.attributes["outcome"], "ok");
        assert_eq!(by_id.get(t.parent_id.as_str()).map_or("tick", |p| p.name.as_str()), "tick", "{shown}");
    }

    // The webhook is a span of the same trace, under the submit span.
    let hook = find(&spans, "webhook.delivery");
    let hook = hook.iter().find(|s| s.attributes["outcome"] == "delivered").expect(&shown);
    assert_eq!(hook.parent_id, submit.span_id);
    assert_eq!(hook.service, "gateway");

    // Log lines written inside the task's spans name the trace and the span.
    let log = app.agent(rescuer).log_text();
    let marked = format!("{{\"trace_id\":\"{TRACE}\",\"span_id\":\"");
    assert!(log.lines().any(|l| l.starts_with(&marked)), "no log line with the trace id:\n{log}");

    // Nothing sensitive left the processes: not the mandate, the token or the result.
    let raw = receiver.raw();
    let contains = |needle: &str| !needle.is_empty() && raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!raw.is_empty());
    assert!(!contains("MANDATE-7f3a9c"), "the mandate was exported");
    assert!(!contains("phototaxis"), "the mandate was exported");
    assert!(!contains(ARGUMENT), "a tool's arguments or result were exported");
    assert!(!contains(&token), "the bearer token was exported");
    let result = done.result.expect("result");
    for text in result["deliverables"].as_array().into_iter().flatten().chain([&result["notes"]]) {
        if let Some(t) = text.as_str().filter(|t| t.len() >= 12) {
            assert!(!contains(t), "result text was exported: {t}");
        }
    }
    drop(gateway);
    app.cleanup().await;
}

/// A task parked on an approval and resumed by the owner's decision (a new enqueue, a new
/// delivery) continues the trace it was submitted in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_resumed_after_an_approval_stays_in_its_trace() {
    const TRACE2: &str = "0af7651916cd43dd8448eb211c80319c";
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let py = McpServerProc::python("").await;
    let servers = json!({"py": {"url": py.url, "approval": {"delete_record": "always"}}}).to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("MCP_SERVERS", servers.as_str()),
        ("OFFLINE_TICK_DELAY_MS", "50"),
    ];
    let mut app = Harness::start(&[]).await;
    let gateway = GatewayProc::spawn(testkit::binaries::workspace_bin("gateway", "gateway"), &app.ns, &env).await;
    app.spawn_agent(AGENT, "approvals", &env);
    let token = app.token_for("alice");
    let resp = app
        .http
        .post(gateway.url("/tasks"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE2}-b7ad6b7169203331-01"))
        .json(&json!({"mandate": "tool: py/delete_record {\"name\": \"old\"}", "max_ticks": 4, "tools": ["py"]}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["correlation_id"].as_str().expect("id").parse().expect("uuid");
    let parked = app.wait_for(id, SOON, |r| r.status == TaskStatus::RequiresAction).await;
    let call_id = parked.pending_action.expect("pending call").call_id;
    let decided = app
        .http
        .post(gateway.url(&format!("/tasks/{id}/actions/{call_id}")))
        .bearer_auth(&token)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decide");
    assert_eq!(decided.status(), 202);
    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed);

    let deadline = tokio::time::Instant::now() + SOON;
    let spans = loop {
        let spans: Vec<Span> = receiver.spans().into_iter().filter(|s| s.trace_id == TRACE2).collect();
        if find(&spans, "delivery").len() >= 2 || tokio::time::Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shown = tree(&spans);
    eprintln!("trace {TRACE2}:\n{shown}");
    let submit = *find(&spans, "submit").first().expect(&shown);
    let deliveries = find(&spans, "delivery");
    assert_eq!(deliveries.len(), 2, "the parking run and the resumed run\n{shown}");
    for d in &deliveries {
        assert_eq!(d.parent_id, submit.span_id, "{shown}");
    }
    let attempts: Vec<&str> = deliveries.iter().map(|d| d.attributes["attempt"].as_str()).collect();
    assert!(attempts.contains(&"1") && attempts.contains(&"2"), "{attempts:?}");
    let approved = find(&spans, "tool.call");
    assert!(
        approved.iter().any(|t| t.attributes["tool"] == "py/delete_record" && t.attributes["outcome"] == "ok"),
        "{shown}"
    );
    drop(gateway);
    app.cleanup().await;
}

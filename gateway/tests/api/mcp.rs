//! `/mcp` driven by the official MCP Python SDK's client (`testkit/mcp_client.py`, installed
//! by `scripts/test-deps.sh`), against an in-process gateway and a real agent process on the
//! offline model: tools listed, a mandate run to completion and read back, another
//! cancelled, refusals without a token and for another user's task, REST's error texts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::Harness;
use testkit::binaries::workspace_bin;

fn repo() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    Path::new(&dir).parent().expect("workspace root").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_runs_a_mandate_over_mcp() {
    let mut app = Harness::start(&[]).await;
    let agent = workspace_bin("agent", "agent");
    // Short ticks; the task to cancel thinks for 40 of them, so it is still queued or running.
    app.spawn_agent(
        agent.to_str().expect("path"),
        "mcp-a1",
        &[("OFFLINE_TICK_DELAY_MS", "200"), ("OFFLINE_THINK_TICKS", "40")],
    );
    let bobs = app.submit("bob", json!({"mandate": "bob's own task", "max_ticks": 1})).await;
    assert_eq!(bobs.status(), 202);
    let bobs: Value = bobs.json().await.expect("json");

    let python = repo().join(".venv/bin/python");
    assert!(python.is_file(), "no {}: run scripts/test-deps.sh", python.display());
    let run = tokio::process::Command::new(python)
        .arg(repo().join("testkit/mcp_client.py"))
        .args(["--url", &app.url("/mcp"), "--token", &app.token_for("alice")])
        .args(["--other-task", bobs["correlation_id"].as_str().expect("id")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("client within 300 s").expect("run client");
    let transcript = String::from_utf8_lossy(&out.stdout);
    println!("{transcript}");
    assert!(
        out.status.success(),
        "MCP client session failed:\n{transcript}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<Value> = transcript.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(steps.last().map(|s| s["step"].clone()), Some(json!("done")), "the session ran to its end");
    let get = steps.iter().find(|s| s["step"] == "get_task").expect("get_task step");
    assert_eq!(get["status"], "completed");
    // Bob's task is untouched by alice's cancel attempt.
    let rec = app.record(bobs["correlation_id"].as_str().expect("id").parse().expect("uuid")).await.expect("record");
    assert!(!rec.cancel_requested && rec.status != proto::TaskStatus::Cancelled);
    app.cleanup().await;
}

#[tokio::test]
async fn mcp_without_a_valid_token_is_the_rest_401() {
    let app = Harness::start(&[]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    for auth in [None, Some("Bearer not-a-jwt")] {
        let mut req =
            app.http.post(app.url("/mcp")).header("accept", "application/json, text/event-stream").json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    app.cleanup().await;
}

//! The OFFLINE DEMO MODEL through the whole pipeline: it visits the URLs in the mandate
//! (a page served by the test, `VISIT_ALLOW_PRIVATE=true`) and reports their titles and
//! first paragraphs; a refused URL is reported, not fatal.

use proto::TaskStatus;
use redis::AsyncCommands;
use testkit::Harness;

use crate::support::{Reply, Server};
use crate::{AGENT, SOON};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_model_visits_mandate_urls_and_reports_them() {
    let page = Server::start("127.0.0.1", |path| match path {
        "/binary" => Reply::typed("application/octet-stream", vec![0u8; 16]),
        _ => Reply::html(
            "<html><head><title>Local Demo Page</title></head><body><p>Tiny.</p>\
             <p>The first real paragraph of the local demo page, served by the test.</p></body></html>",
        ),
    })
    .await
    .expect("server");
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(
        AGENT,
        "offline",
        &[("OFFLINE_TICK_DELAY_MS", "10"), ("OFFLINE_THINK_TICKS", "1"), ("VISIT_ALLOW_PRIVATE", "true")],
    );
    let good = page.url("/demo");
    let bad = page.url("/binary");
    let id = app.submit_ok("alice", &format!("Summarise {good} and also {bad}."), 10).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.tick, Some(4), "two visits, one thought, exit");
    let result = rec.result.expect("result");
    assert_eq!(result["success"], true);
    assert_eq!(
        result["deliverables"],
        serde_json::json!(["Local Demo Page: The first real paragraph of the local demo page, served by the test."])
    );
    assert_eq!(result["sources"], serde_json::json!([good]));
    let notes = result["notes"].as_str().expect("notes");
    assert!(notes.contains("OFFLINE DEMO MODEL") && notes.contains("visited 1 of 2"), "{notes}");
    assert!(notes.contains("not text"), "the refused URL is reported: {notes}");

    let actions: Vec<String> = app.events(id).await.into_iter().filter_map(|e| e.get("action").cloned()).collect();
    assert_eq!(actions, vec!["visit", "visit", "think", "exit"]);
    let key = proto::Keys::new(app.ns.prefix.clone()).memory(id);
    assert!(!app.redis.clone().exists::<_, bool>(key).await.expect("exists"), "memories deleted at the end");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_model_refuses_private_urls_without_the_test_switch() {
    let page = Server::start("127.0.0.1", |_| Reply::html("<title>secret</title>")).await.expect("server");
    let mut app = Harness::start(&[]).await;
    app.spawn_agent(AGENT, "strict", &[("OFFLINE_TICK_DELAY_MS", "10"), ("OFFLINE_THINK_TICKS", "0")]);
    let id = app.submit_ok("alice", &format!("Read {}", page.url("/admin")), 5).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    let result = rec.result.expect("result");
    assert_eq!(result["success"], false, "nothing could be read");
    assert!(result["notes"].as_str().expect("notes").contains("not a public address"), "{result}");
    assert_eq!(page.connections(), 0);
    app.cleanup().await;
}

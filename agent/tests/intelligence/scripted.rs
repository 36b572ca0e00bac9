//! A whole research task through the gateway and an agent process, against a wiremock
//! OpenAI server, a wiremock search API (Brave's format) and a page served by the test:
//! search → visit → exit → synthesis.

use proto::TaskStatus;
use redis::AsyncCommands;
use serde_json::{Value, json};
use testkit::Harness;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{LocalEmbeddings, Reply, Script, Server, chat_requests, decision};
use crate::{AGENT, SOON};

const PAGE: &str = r#"<!doctype html><html><head><title>Zebra Facts</title></head><body>
<nav>Home | Animals</nav>
<h1>Why zebras have stripes</h1>
<p>Zebra stripes deter biting flies, which struggle to land on striped surfaces: ZEBRA-STRIPES-7731.</p>
<p>Each zebra's pattern is unique, like a fingerprint.</p>
</body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_visit_exit_produces_a_sourced_result_and_uses_memory() {
    let page = Server::start("127.0.0.1", |_| Reply::html(PAGE)).await.expect("page server");
    let page_url = page.url("/zebras");

    let search = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/res/v1/web/search"))
        .and(query_param("q", "why zebras have stripes"))
        .and(header("x-subscription-token", "search-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "web": {"results": [
                {"title": "Zebra Facts", "url": page_url, "description": "Why <strong>zebras</strong> have stripes"},
                {"title": "Not a web page", "url": "ftp://example.org/file", "description": "dropped"}
            ]}
        })))
        .expect(1)
        .mount(&search)
        .await;

    let openai = MockServer::start().await;
    let script = Script::new(vec![
        decision("search", Some("why zebras have stripes"), None, &["REMEMBERED-FACT-42: the user wants reasons"]),
        decision("visit", Some(&page_url), None, &[]),
        decision("exit", None, Some(&format!("Stripes deter biting flies ({page_url})")), &[]),
        json!({
            "success": true,
            "deliverables": ["Zebra stripes deter biting flies."],
            "notes": "one good source",
            "sources": [page_url]
        })
        .to_string(),
    ]);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer test-key"))
        .respond_with(script)
        .expect(4)
        .mount(&openai)
        .await;
    Mock::given(method("POST")).and(path("/v1/embeddings")).respond_with(LocalEmbeddings).mount(&openai).await;

    let mut app = Harness::start(&[]).await;
    let base = format!("{}/v1", openai.uri());
    let search_base = search.uri();
    app.spawn_agent(
        AGENT,
        "researcher",
        &[
            ("OPENAI_API_KEY", "test-key"),
            ("OPENAI_BASE_URL", base.as_str()),
            ("LLM_MODEL", "test-model"),
            ("EMBEDDING_MODEL", "test-embed"),
            ("SEARCH_PROVIDER", "brave"),
            ("SEARCH_API_KEY", "search-key"),
            ("SEARCH_BASE_URL", search_base.as_str()),
            ("VISIT_ALLOW_PRIVATE", "true"),
        ],
    );
    let id = app.submit_ok("alice", "Find out why zebras have stripes", 6).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert_eq!(rec.tick, Some(3));

    let result = rec.result.expect("result");
    eprintln!("result of the scripted run: {result:#}");
    assert_eq!(result["success"], true);
    assert_eq!(result["deliverables"][0], "Zebra stripes deter biting flies.");
    assert!(result["sources"].as_array().expect("sources").contains(&Value::from(page_url.clone())), "{result}");
    assert_eq!(result["usage"]["completion_tokens"], 80, "four chat calls of 20 tokens: {result}");
    assert!(result["usage"]["prompt_tokens"].as_u64().expect("tokens") > 400, "chat plus embedding tokens");

    // The events tell the loop's story.
    let actions: Vec<String> = app.events(id).await.into_iter().filter_map(|e| e.get("action").cloned()).collect();
    assert_eq!(actions, vec!["search", "visit", "exit"]);

    // What the model was shown: search results, then the page, and the memory it asked to keep.
    let bodies = chat_requests(&openai).await;
    assert_eq!(bodies.len(), 4);
    assert!(!bodies[0].contains("REMEMBERED-FACT-42"), "nothing remembered before the first tick");
    assert!(bodies[1].contains("Why zebras have stripes"), "search results reached the model");
    for (i, body) in bodies.iter().enumerate().skip(1) {
        assert!(body.contains("REMEMBERED-FACT-42"), "request {i} carries the retrieved memory");
    }
    assert!(bodies[2].contains("ZEBRA-STRIPES-7731"), "the page text reached the model");
    assert!(!bodies[2].contains("Home | Animals"), "page chrome was dropped");
    let first: Value = serde_json::from_str(&bodies[0]).expect("json");
    assert_eq!(first["model"], "test-model");
    assert_eq!(first["response_format"]["json_schema"]["name"], "euglena_action");
    assert_eq!(page.connections(), 1, "the page was fetched once");

    // Memories were deleted when the task ended.
    let key = proto::Keys::new(app.ns.prefix.clone()).memory(id);
    assert!(!app.redis.clone().exists::<_, bool>(key).await.expect("exists"));
    app.cleanup().await;
}

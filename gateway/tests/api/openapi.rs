//! `GET /openapi.json` (ARCHITECTURE §2): an OpenAPI 3.1 document generated from the code that
//! documents every route the router serves, with schemas, problem responses and the bearer
//! scheme. (Its validity against the 3.1 meta-schema and the live server's conformance to it
//! are checked by `scripts/contract.sh`: openapi-spec-validator and schemathesis.)

use std::collections::BTreeSet;

use serde_json::Value;
use testkit::Harness;

/// Every route `gateway::routes::router` serves.
const ROUTES: [(&str, &str); 26] = [
    ("post", "/tasks"),
    ("get", "/tasks"),
    ("get", "/tasks/{id}"),
    ("post", "/tasks/{id}/cancel"),
    ("get", "/tasks/{id}/events"),
    ("post", "/tasks/{id}/actions/{call_id}"),
    ("post", "/tasks/{id}/messages"),
    ("get", "/agents/count"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/"),
    ("get", "/console/app.js"),
    ("get", "/console/app.css"),
    ("get", "/console/config"),
    ("get", "/ops/samples"),
    ("post", "/dev/token"),
    ("post", "/tasks/{id}/extend"),
    ("post", "/tasks/{id}/retry"),
    ("get", "/admin/tasks"),
    ("get", "/admin/dead-letters"),
    ("post", "/admin/dead-letters/redrive"),
    ("post", "/admin/tasks/cancel"),
    ("post", "/admin/tasks/retry"),
    ("get", "/admin/audit"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route() {
    let app = Harness::start(&[]).await;
    let resp = app.http.get(app.url("/openapi.json")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"), "{}", doc["openapi"]);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| item.as_object().expect("item").keys().map(move |m| (m.clone(), path.clone())))
        .filter(|(m, _)| matches!(m.as_str(), "get" | "post" | "put" | "patch" | "delete"))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, served);

    // Each served route answers (whatever its status, never the router's "no such route").
    for (m, p) in ROUTES {
        let url = app.url(&p.replace("{id}", &uuid::Uuid::new_v4().to_string()).replace("{call_id}", "call_1"));
        let req = if m == "post" { app.http.post(url) } else { app.http.get(url) };
        let resp = req.bearer_auth(app.token_for("alice")).send().await.expect("request");
        assert_ne!(resp.status(), 405, "{m} {p}");
        if !p.contains("{id}") && p != "/dev/token" {
            assert_ne!(resp.status(), 404, "{m} {p}");
        }
    }

    // The pieces a client generator needs.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let submit = &doc["paths"]["/tasks"]["post"];
    assert_eq!(submit["security"][0]["bearer"], serde_json::json!([]));
    for status in ["202", "400", "401", "403", "409", "413", "415", "422", "429", "503"] {
        assert!(submit["responses"][status].is_object(), "POST /tasks documents {status}");
    }
    assert!(submit["responses"]["422"]["content"]["application/problem+json"].is_object());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["TaskRequest"]["properties"]["mandate"]["maxLength"], 8000);
    assert_eq!(schemas["TaskRequest"]["properties"]["max_ticks"]["maximum"], 200);
    assert!(schemas["Usage"]["properties"]["total_tokens"].is_object(), "usage is a typed schema");
    assert!(schemas["Problem"]["properties"]["detail"].is_object());
    app.cleanup().await;
}

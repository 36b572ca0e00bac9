//! The visit tool's limits: size, time, content type. Pages are served from loopback with
//! `VISIT_ALLOW_PRIVATE=true`, as the agent's own tests and local demos do.

use std::sync::Arc;
use std::time::Duration;

use agent::tools::visit::{VisitError, VisitSettings, Visitor};
use runtime::address_policy::SystemLookup;

use crate::support::{Reply, Server};

fn visitor(max_bytes: usize, timeout: Duration) -> Visitor {
    Visitor::new(VisitSettings { max_bytes, timeout, allow_private: true }, Arc::new(SystemLookup), Vec::new())
        .expect("visitor")
}

#[tokio::test]
async fn a_body_over_the_limit_is_cut() {
    let para = "<p>".to_owned() + &"word ".repeat(40) + "</p>\n";
    let page = format!("<html><head><title>Big</title></head><body>{}</body></html>", para.repeat(2000));
    assert!(page.len() > 300_000);
    let server = Server::start("127.0.0.1", move |_| Reply::html(&page)).await.expect("server");
    let got = visitor(16 * 1024, Duration::from_secs(10)).visit(&server.url("/big")).await.expect("page");
    assert!(got.truncated, "cut at the limit");
    assert!(got.text.len() <= 16 * 1024, "{} bytes of text", got.text.len());
    assert!(got.text.starts_with("word word"));
    assert_eq!(got.title.as_deref(), Some("Big"));

    let small = Server::start("127.0.0.1", |_| Reply::html("<p>small page</p>")).await.expect("server");
    let got = visitor(16 * 1024, Duration::from_secs(10)).visit(&small.url("/")).await.expect("page");
    assert!(!got.truncated);
    assert_eq!(got.text, "small page");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let stalls = Server::start("127.0.0.1", |_| Reply {
        stall: Some(Duration::from_secs(30)),
        ..Reply::html("<p>too late</p>")
    })
    .await
    .expect("server");
    let r = visitor(1 << 20, Duration::from_secs(1)).visit(&stalls.url("/slow")).await;
    assert!(matches!(r, Err(VisitError::Timeout(_))), "{r:?}");

    // A server that accepts and never answers at all.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let r = visitor(1 << 20, Duration::from_secs(1)).visit(&format!("http://{addr}/")).await;
    assert!(matches!(r, Err(VisitError::Timeout(_))), "{r:?}");
    hold.abort();
}

#[tokio::test]
async fn binary_content_is_refused() {
    let server = Server::start("127.0.0.1", |path| match path {
        "/bin" => Reply::typed("application/octet-stream", vec![0u8, 1, 2, 3, 255]),
        "/png" => Reply::typed("image/png", b"\x89PNG\r\n\x1a\n".to_vec()),
        "/untyped" => Reply { headers: vec![], ..Reply::typed("", vec![0u8, 159, 146, 150, 0, 0]) },
        "/json" => Reply::typed("application/json", r#"{"answer": 42}"#),
        _ => Reply::typed("text/plain", "first paragraph\n\nsecond paragraph"),
    })
    .await
    .expect("server");
    let v = visitor(1 << 20, Duration::from_secs(10));
    for path in ["/bin", "/png", "/untyped"] {
        let r = v.visit(&server.url(path)).await;
        assert!(matches!(r, Err(VisitError::NotText(_))), "{path}: {r:?}");
    }
    let json = v.visit(&server.url("/json")).await.expect("json is text");
    assert!(json.text.contains("42"));
    let plain = v.visit(&server.url("/txt")).await.expect("plain text");
    assert_eq!(plain.first_paragraph.as_deref(), Some("first paragraph"));
}

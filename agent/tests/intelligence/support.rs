//! Test doubles: a raw HTTP server that counts connections (for "refused without
//! connecting"), a scripted OpenAI chat endpoint, an embeddings endpoint that answers with
//! the local embedding, and a resolver that maps test names to chosen addresses.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use runtime::address_policy::Lookup;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::{Request, Respond, ResponseTemplate};

/// One reply of the raw server.
#[derive(Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent after the headers and before the body: a server that stalls mid-response.
    pub stall: Option<Duration>,
}

impl Reply {
    pub(crate) fn typed(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            stall: None,
        }
    }

    pub(crate) fn html(body: &str) -> Self {
        Self::typed("text/html; charset=utf-8", body)
    }

    pub(crate) fn redirect(location: &str) -> Self {
        Self { status: 302, headers: vec![("location".into(), location.into())], body: Vec::new(), stall: None }
    }
}

type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A tiny HTTP/1.1 server on a chosen loopback address, one request per connection.
pub(crate) struct Server {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(crate) async fn start(ip: &str, handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().expect("ip"), 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let reply = handler(&path);
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    if let Some(d) = reply.stall {
                        let _ = sock.flush().await;
                        tokio::time::sleep(d).await;
                    }
                    let _ = sock.write_all(&reply.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(Self { addr, connections, task })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Names resolve to what the test says; anything else does not exist.
pub(crate) struct FakeDns(pub HashMap<String, Vec<IpAddr>>);

impl FakeDns {
    pub(crate) fn new(pairs: &[(&str, &[&str])]) -> Arc<Self> {
        Arc::new(Self(
            pairs
                .iter()
                .map(|(n, ips)| ((*n).to_owned(), ips.iter().map(|i| i.parse().expect("ip")).collect()))
                .collect(),
        ))
    }
}

#[async_trait]
impl Lookup for FakeDns {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.0.get(host).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such host {host}")))
    }
}

/// A chat-completion reply carrying `content`, with 100 prompt and 20 completion tokens.
pub(crate) fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

/// Answers chat requests with the script's replies in order; the last one repeats.
pub(crate) struct Script {
    replies: Vec<String>,
    next: Mutex<usize>,
}

impl Script {
    pub(crate) fn new(replies: Vec<String>) -> Self {
        Self { replies, next: Mutex::new(0) }
    }
}

impl Respond for Script {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let mut next = self.next.lock().expect("lock");
        let i = (*next).min(self.replies.len() - 1);
        *next += 1;
        ResponseTemplate::new(200).set_body_json(completion(&self.replies[i]))
    }
}

/// The OpenAI embeddings API, answering with the agent's own local embedding.
pub(crate) struct LocalEmbeddings;

impl Respond for LocalEmbeddings {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().expect("json body");
        let inputs: Vec<String> = match &body["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect(),
            other => panic!("unexpected input {other}"),
        };
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": agent::embedding::local_embedding(t)}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": "test-embed", "data": data,
            "usage": {"prompt_tokens": 5, "total_tokens": 5}
        }))
    }
}

/// A decision in the wire format the model is asked for.
pub(crate) fn decision(kind: &str, arg: Option<&str>, deliverable: Option<&str>, remember: &[&str]) -> String {
    let (query, url) = match kind {
        "search" => (arg, None),
        "visit" => (None, arg),
        _ => (None, None),
    };
    json!({
        "thought": format!("next: {kind}"),
        "action": {"type": kind, "query": query, "url": url},
        "notes": null,
        "deliverable": deliverable,
        "remember": remember,
    })
    .to_string()
}

/// Bodies of the chat requests the mock received, oldest first.
pub(crate) async fn chat_requests(server: &wiremock::MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/chat/completions"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

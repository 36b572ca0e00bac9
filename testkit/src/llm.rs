//! A real small model for tests and the evaluation: llama.cpp's OpenAI-compatible server
//! (`scripts/llm_server.py`, installed by `scripts/llm-deps.sh`) on 127.0.0.1, and a
//! recording proxy in front of it that keeps every chat request the agent sent, its time and
//! its answer's status, so a test can check what the server saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::{eventually, free_port};

/// The repository's `scripts/` folder.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The model server, stopped when dropped.
pub struct LocalModel {
    child: Child,
    /// `http://127.0.0.1:<port>`; the OpenAI API is under `/v1`.
    pub url: String,
    pub log: PathBuf,
}

impl LocalModel {
    /// Starts the server with `python` (a venv that has the model installed) and waits until
    /// it answers `/health` (loading takes a few seconds, longer on a busy machine).
    pub async fn start(python: &Path) -> Self {
        let port = free_port().port();
        let log = std::env::temp_dir().join(format!("euglena-llm-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(python)
            .arg(scripts().join("llm_server.py"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start scripts/llm_server.py");
        let model = Self { child, url: format!("http://127.0.0.1:{port}"), log };
        let health = format!("{}/health", model.url);
        eventually("the model server answering /health", Duration::from_secs(180), || async {
            matches!(reqwest::get(&health).await, Ok(r) if r.status() == 200)
        })
        .await;
        model
    }
}

impl Drop for LocalModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One chat request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub body: Value,
    pub status: u16,
    pub took: Duration,
}

#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
    records: Arc<Mutex<Vec<Record>>>,
}

/// Forwards `POST /v1/chat/completions` (and nothing else) to a model server, recording each.
pub struct RecordingProxy {
    /// Point `OPENAI_BASE_URL` at this (`…/v1`).
    pub base_url: String,
    records: Arc<Mutex<Vec<Record>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    pub async fn start(upstream: &str) -> Self {
        let records = Arc::new(Mutex::new(Vec::new()));
        let state = Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            // Longer than any LLM_TIMEOUT_SECONDS a test sets: the agent's own timeout must
            // be what ends a slow call, and the record shows how long it ran.
            http: reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("client"),
            records: records.clone(),
        };
        let app = Router::new().route("/v1/chat/completions", axum::routing::post(forward)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url: format!("http://{addr}/v1"), records, _task: task }
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("records").clone()
    }
}

/// Records its request when dropped: also when the agent gave up and closed the connection
/// (status 499), which drops the handler mid-way.
struct Recording {
    records: Arc<Mutex<Vec<Record>>>,
    body: Value,
    status: u16,
    started: Instant,
}

impl Drop for Recording {
    fn drop(&mut self) {
        let record = Record { body: self.body.take(), status: self.status, took: self.started.elapsed() };
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
    }
}

async fn forward(State(up): State<Upstream>, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut recording = Recording { records: up.records.clone(), body: parsed, status: 499, started: Instant::now() };
    let sent = up
        .http
        .post(format!("{}/v1/chat/completions", up.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let (status, answer) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(_) => (502, Bytes::new()),
    };
    recording.status = status;
    drop(recording);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (code, [("content-type", "application/json")], answer).into_response()
}

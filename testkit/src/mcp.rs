//! MCP servers for tests, started on 127.0.0.1: the official Python SDK's server
//! (`testkit/mcp_server.py`, tools `echo`, `add`, `slow`, `delete_record`, logging every call
//! with its idempotency key) and the reference `server-everything` from npm. Both are
//! installed into `.venv` by `scripts/test-deps.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, free_port};

/// The checkout the tests run in: cargo sets `CARGO_MANIFEST_DIR` (the tested package's
/// directory) when it runs a test. The compile-time value can name another checkout that
/// shares the target directory and built this crate from the same sources.
fn repo() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    Path::new(&dir).parent().expect("workspace root").to_path_buf()
}

/// A test MCP server process; killed when dropped.
pub struct McpServerProc {
    pub url: String,
    pub port: u16,
    child: Child,
    log: PathBuf,
}

/// One call the Python server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub tool: String,
    pub arguments: Value,
    /// `_meta["io.euglena/idempotency_key"]`.
    pub key: Option<String>,
    /// Whether the configured bearer token came (`None`: none was configured).
    pub authorized: Option<bool>,
}

impl McpServerProc {
    /// The Python SDK server; `token` makes it record whether `Authorization: Bearer
    /// <token>` came with each call.
    pub async fn python(token: &str) -> Self {
        let port = free_port().port();
        let log = std::env::temp_dir().join(format!("euglena-mcp-{port}-{}.jsonl", uuid::Uuid::new_v4().simple()));
        std::fs::write(&log, "").expect("log");
        let mut cmd = Command::new(repo().join(".venv/bin/python"));
        cmd.arg(repo().join("testkit/mcp_server.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--log")
            .arg(&log)
            .arg("--token")
            .arg(token)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Self::start(cmd, port, log).await
    }

    /// `@modelcontextprotocol/server-everything` over streamable HTTP.
    pub async fn everything() -> Self {
        let port = free_port().port();
        let mut cmd = Command::new(repo().join(".venv/node/node_modules/.bin/mcp-server-everything"));
        cmd.arg("streamableHttp").env("PORT", port.to_string()).stdout(Stdio::null()).stderr(Stdio::null());
        Self::start(cmd, port, PathBuf::new()).await
    }

    async fn start(mut cmd: Command, port: u16, log: PathBuf) -> Self {
        let child = cmd.spawn().expect("start the MCP server (scripts/test-deps.sh installs it)");
        let server = Self { url: format!("http://127.0.0.1:{port}/mcp"), port, child, log };
        eventually("the MCP server listens", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        server
    }

    /// The calls received so far, in order (Python server only).
    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Call {
                tool: v["tool"].as_str().unwrap_or("").to_owned(),
                arguments: v["arguments"].clone(),
                key: v["key"].as_str().map(str::to_owned),
                authorized: v["authorized"].as_bool(),
            })
            .collect()
    }

    /// SIGKILL: the server is down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for McpServerProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

//! Calls to the configured MCP servers over streamable HTTP, through the official Rust SDK
//! (`rmcp`). One session per server, opened on first use and dropped on any transport error
//! so the next use opens a new one; every step has a timeout; tool lists are cached and
//! listed again after [`LIST_TTL`] or when a call names a tool the list lacks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ContentBlock, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::config::{McpServer, McpServers};

/// How long a server's tool list is trusted before it is listed again.
pub const LIST_TTL: Duration = Duration::from_secs(60);
/// The `_meta` key carrying a call's idempotency key.
pub const IDEMPOTENCY_META: &str = "io.euglena/idempotency_key";

/// A tool as the model and clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// `<server>/<tool>`.
    pub full_name: String,
    pub description: String,
    pub input_schema: Value,
    pub needs_approval: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no MCP server named {0:?} is configured")]
    UnknownServer(String),
    #[error("MCP server {server} has no tool {tool:?}")]
    UnknownTool { server: String, tool: String },
    #[error("MCP server {server} did not answer within {secs} s")]
    Timeout { server: String, secs: u64 },
    #[error("MCP server {server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
}

/// Timeouts and bounds of every MCP call.
#[derive(Debug, Clone, Copy)]
pub struct McpLimits {
    /// Connecting and the initialize handshake, and each tool listing.
    pub connect: Duration,
    /// One tool call (`MCP_CALL_TIMEOUT_SECONDS`).
    pub call: Duration,
    /// Characters of a tool's result kept (`MCP_RESULT_MAX_CHARS`).
    pub result_chars: usize,
}

impl Default for McpLimits {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), call: Duration::from_secs(30), result_chars: 8000 }
    }
}

/// What a tool call returned: its text content, cut to the bound.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    pub text: String,
    /// The tool said the call failed (`isError`).
    pub is_error: bool,
    pub truncated: bool,
}

type Session = RunningService<RoleClient, ()>;

struct ServerState {
    session: Option<Arc<Session>>,
    tools: Option<(Instant, Arc<Vec<ToolInfo>>)>,
}

/// The process's MCP clients, one per configured server.
pub struct McpClients {
    servers: McpServers,
    limits: McpLimits,
    state: HashMap<String, Mutex<ServerState>>,
}

impl McpClients {
    pub fn new(servers: McpServers, limits: McpLimits) -> Self {
        let state =
            servers.iter().map(|s| (s.name.clone(), Mutex::new(ServerState { session: None, tools: None }))).collect();
        Self { servers, limits, state }
    }

    pub fn servers(&self) -> &McpServers {
        &self.servers
    }

    pub fn limits(&self) -> McpLimits {
        self.limits
    }

    fn server(&self, name: &str) -> Result<(&McpServer, &Mutex<ServerState>), McpError> {
        match (self.servers.get(name), self.state.get(name)) {
            (Some(s), Some(st)) => Ok((s, st)),
            _ => Err(McpError::UnknownServer(name.to_owned())),
        }
    }

    /// The server's tools, from the cache while it is fresh (`refresh` lists them again).
    pub async fn tools(&self, server: &str, refresh: bool) -> Result<Arc<Vec<ToolInfo>>, McpError> {
        let (cfg, state) = self.server(server)?;
        let mut st = state.lock().await;
        if !refresh
            && let Some((at, tools)) = &st.tools
            && at.elapsed() < LIST_TTL
        {
            return Ok(tools.clone());
        }
        let session = self.session(cfg, &mut st).await?;
        let listed = tokio::time::timeout(self.limits.connect, session.list_all_tools()).await;
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                st.session = None;
                return Err(unavailable(server, &e));
            }
            Err(_) => {
                st.session = None;
                return Err(McpError::Timeout { server: server.to_owned(), secs: self.limits.connect.as_secs() });
            }
        };
        let infos: Arc<Vec<ToolInfo>> = Arc::new(
            tools
                .into_iter()
                .map(|t| ToolInfo {
                    full_name: format!("{server}/{}", t.name),
                    description: t.description.as_deref().unwrap_or("").chars().take(1000).collect(),
                    input_schema: Value::Object((*t.input_schema).clone()),
                    needs_approval: cfg.needs_approval(&t.name),
                })
                .collect(),
        );
        st.tools = Some((Instant::now(), infos.clone()));
        Ok(infos)
    }

    /// One tool, listing the server again if its cached list lacks it.
    pub async fn tool(&self, server: &str, tool: &str) -> Result<ToolInfo, McpError> {
        let full = format!("{server}/{tool}");
        for refresh in [false, true] {
            if let Some(t) = self.tools(server, refresh).await?.iter().find(|t| t.full_name == full) {
                return Ok(t.clone());
            }
        }
        Err(McpError::UnknownTool { server: server.to_owned(), tool: tool.to_owned() })
    }

    /// Calls `tool` on `server` with `arguments` and the idempotency key in `_meta`, so a
    /// server can recognise a call repeated after a crash.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
        idempotency_key: &str,
    ) -> Result<CallOutput, McpError> {
        let (cfg, state) = self.server(server)?;
        let session = {
            let mut st = state.lock().await;
            self.session(cfg, &mut st).await?
        };
        let mut meta = RequestMetaObject::new();
        meta.insert(IDEMPOTENCY_META.to_owned(), Value::String(idempotency_key.to_owned()));
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments);
        params.meta = Some(meta);
        let called = tokio::time::timeout(self.limits.call, session.call_tool(params)).await;
        let result = match called {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                state.lock().await.session = None;
                return Err(unavailable(server, &e));
            }
            Err(_) => {
                // The session may hold the abandoned request; a fresh one starts clean.
                state.lock().await.session = None;
                return Err(McpError::Timeout { server: server.to_owned(), secs: self.limits.call.as_secs() });
            }
        };
        let mut parts: Vec<String> = result
            .content
            .iter()
            .map(|c| match c {
                ContentBlock::Text(t) => t.text.clone(),
                ContentBlock::Image(_) => "[image]".to_owned(),
                ContentBlock::Audio(_) => "[audio]".to_owned(),
                ContentBlock::Resource(_) => "[embedded resource]".to_owned(),
                ContentBlock::ResourceLink(r) => format!("[resource {}]", r.uri),
                _ => "[content]".to_owned(),
            })
            .collect();
        if parts.is_empty()
            && let Some(s) = &result.structured_content
        {
            parts.push(s.to_string());
        }
        let text = parts.join("\n");
        let truncated = text.chars().count() > self.limits.result_chars;
        let text = if truncated { text.chars().take(self.limits.result_chars).collect() } else { text };
        Ok(CallOutput { text, is_error: result.is_error == Some(true), truncated })
    }

    async fn session(&self, cfg: &McpServer, st: &mut ServerState) -> Result<Arc<Session>, McpError> {
        if let Some(s) = &st.session
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let name = cfg.name.as_str();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(self.limits.connect)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| McpError::Unavailable { server: name.to_owned(), reason: e.to_string() })?;
        let mut headers = HashMap::new();
        for (h, v) in &cfg.headers {
            // Both were checked when the configuration was read.
            if let (Ok(h), Ok(mut v)) =
                (http::HeaderName::from_bytes(h.as_bytes()), http::HeaderValue::from_str(v.expose_secret()))
            {
                v.set_sensitive(true);
                headers.insert(h, v);
            }
        }
        let config = StreamableHttpClientTransportConfig::with_uri(cfg.url.as_str())
            .custom_headers(headers)
            .control_request_timeout(self.limits.connect)
            .session_recovery_timeout(self.limits.connect)
            .reinit_on_expired_session(true);
        // The SDK's session and transport tasks keep the span they were started in: started in
        // a task's delivery span, that span would live (and never be exported) as long as the
        // session, which serves the process's later tasks too.
        let detached = crate::telemetry::detached();
        let transport = detached.in_scope(|| StreamableHttpClientTransport::with_client(client, config));
        let open = ().serve(transport).instrument(detached);
        let session = match tokio::time::timeout(self.limits.connect, open).await {
            Ok(Ok(s)) => Arc::new(s),
            Ok(Err(e)) => return Err(McpError::Unavailable { server: name.to_owned(), reason: e.to_string() }),
            Err(_) => return Err(McpError::Timeout { server: name.to_owned(), secs: self.limits.connect.as_secs() }),
        };
        st.session = Some(session.clone());
        Ok(session)
    }
}

fn unavailable(server: &str, e: &rmcp::ServiceError) -> McpError {
    McpError::Unavailable { server: server.to_owned(), reason: e.to_string() }
}

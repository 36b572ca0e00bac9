//! The MCP tools: `run_mandate`, `get_task`, `list_tasks`, `cancel_task`, `follow_task`.
//! Each is the REST route of the same meaning called with the caller [`super::authenticate`]
//! put in the request, and answers a TaskResponse (or a page of them) as structured content
//! and as JSON text, for hosts that show only text.
//!
//! A refusal (validation, quota, not found, conflict) is a tool error (`isError: true`) whose
//! text is the REST problem's `detail` and whose structured content is
//! `{"status", "type", "detail"}`: MCP hosts show a tool error's text to the model and the
//! user, while they show JSON-RPC errors opaquely. Unknown tools and malformed arguments are
//! JSON-RPC `invalid params`, as the protocol asks.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::model::{CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

use super::tasks as mcp_tasks;
use crate::auth::AuthUser;
use crate::problem::ApiError;
use crate::routes::tasks::{self, TaskList, TaskRequest};
use crate::state::AppState;
use proto::task::TaskResponse;

/// How often `follow_task` reads the record while the task runs.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// `follow_task` answers the task as it stands after this long at most (`wait_seconds`).
const FOLLOW_DEFAULT_WAIT: u64 = 300;
const FOLLOW_MAX_WAIT: u64 = 900;

/// One MCP server instance per request (stateless mode); it holds only the shared state.
#[derive(Clone)]
pub struct Euglena {
    state: AppState,
}

impl Euglena {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// How long a task can be read back: its record's lifetime.
    fn ttl(&self) -> Duration {
        self.state.settings.common.task_record_ttl
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunMandate {
    mandate: String,
    #[serde(default)]
    max_ticks: Option<i64>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    expires_after_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRef {
    correlation_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Follow {
    correlation_id: String,
    #[serde(default)]
    wait_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn id_schema(extra: Value) -> Arc<JsonObject> {
    let mut props = json!({"correlation_id": {"type": "string", "format": "uuid", "description": "The task id"}});
    if let (Value::Object(p), Value::Object(e)) = (&mut props, extra) {
        p.extend(e);
    }
    schema(
        json!({"type": "object", "properties": props, "required": ["correlation_id"], "additionalProperties": false}),
    )
}

/// The tools as listed; the limits shown are the defaults (`MAX_MANDATE_CHARS`, `MAX_TICKS_LIMIT`).
fn catalogue() -> Vec<Tool> {
    vec![
        Tool::new(
            "run_mandate",
            "Submit a mandate to a Euglena research agent; answers the queued task at once \
             (follow it with follow_task or poll get_task). Same quota, rate limit and active-task cap as POST /tasks.",
            schema(json!({
                "type": "object",
                "properties": {
                    "mandate": {"type": "string", "minLength": 1, "maxLength": 8000, "description": "What the agent should do"},
                    "max_ticks": {"type": "integer", "minimum": 1, "maximum": 200, "description": "Tick budget (default 50)"},
                    "max_tokens": {"type": "integer", "minimum": 1, "description": "Token budget (prompt + completion, every model call); the task stops incomplete at it"},
                    "expires_after_seconds": {"type": "integer", "minimum": 1, "maximum": 604800, "description": "Not started by then, the task fails (expired in queue)"},
                    "tools": {"type": "array", "items": {"type": "string"}, "maxItems": 32,
                              "description": "MCP tools the agent may call: <server> or <server>/<tool> from the operator's MCP_SERVERS"},
                    "webhook_url": {"type": "string", "format": "uri", "description": "Signed task-end webhook (needs WEBHOOK_SECRET on the server)"},
                    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255,
                                        "description": "As the Idempotency-Key header: the same key and request answer the same task"}
                },
                "required": ["mandate"],
                "additionalProperties": false
            })),
        ),
        Tool::new("get_task", "One of your tasks: status, tick, result.", id_schema(json!({}))),
        Tool::new(
            "list_tasks",
            "Your tasks, newest first.",
            schema(json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                    "cursor": {"type": "string", "description": "next_cursor of the previous page"}
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "cancel_task",
            "Cancel one of your tasks: a queued one at once, a running one at its next tick.",
            id_schema(json!({})),
        ),
        Tool::new(
            "follow_task",
            "Wait for one of your tasks to end, with a progress notification per tick and status change \
             (send a progressToken); answers the task when it ends or after wait_seconds.",
            id_schema(json!({"wait_seconds": {"type": "integer", "minimum": 1, "maximum": FOLLOW_MAX_WAIT}})),
        ),
    ]
}

/// A refusal as the caller sees it over REST: the problem's detail, status and type.
pub fn tool_error(e: &ApiError) -> CallToolResult {
    let (status, slug) = e.status_and_slug();
    let detail = e.detail();
    let mut result = CallToolResult::error(vec![ContentBlock::text(detail.clone())]);
    result.structured_content =
        Some(json!({"status": status.as_u16(), "type": format!("urn:euglena:problem:{slug}"), "detail": detail}));
    result
}

fn answer(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

/// A refusal of a protocol request (`tasks/get`, `tasks/cancel`), with the REST detail.
fn protocol_error(e: &ApiError) -> ErrorData {
    match e {
        ApiError::NotFound => ErrorData::invalid_params(e.detail(), None),
        ApiError::Conflict(_) | ApiError::BadRequest(_) | ApiError::Unprocessable(_) => {
            ErrorData::invalid_request(e.detail(), None)
        }
        _ => ErrorData::internal_error(e.detail(), None),
    }
}

/// The caller `authenticate` put in the request (absent only if the route lost its layer).
fn user_of(ctx: &RequestContext<RoleServer>) -> Option<AuthUser> {
    ctx.extensions.get::<axum::http::request::Parts>().and_then(|p| p.extensions.get::<AuthUser>()).cloned()
}

fn args<T: DeserializeOwned>(arguments: Option<JsonObject>) -> Result<T, ErrorData> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default()))
        .map_err(|e| ErrorData::invalid_params(format!("arguments: {e}"), None))
}

impl Euglena {
    async fn run(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Result<Value, ApiError>, ErrorData> {
        let parts = ctx.extensions.get::<axum::http::request::Parts>();
        // `authenticate` ran before the SDK: a request without the caller never gets here.
        let Some(user) = user_of(ctx) else {
            return Ok(Err(ApiError::MissingToken));
        };
        let state = &self.state;
        Ok(match name {
            "run_mandate" => {
                let a: RunMandate = args(arguments)?;
                self.submit_traced(&user, a, parts.map(|p| &p.headers)).await.map(|t| json!(t))
            }
            "get_task" => {
                let a: TaskRef = args(arguments)?;
                tasks::owned(state, &user, &a.correlation_id).await.map(|r| json!(r.to_response()))
            }
            "list_tasks" => {
                let a: ListArgs = args(arguments)?;
                self.list(&user, a).await
            }
            "cancel_task" => {
                let a: TaskRef = args(arguments)?;
                tasks::cancel_owned(state, &user, &a.correlation_id).await.map(|r| json!(r.to_response()))
            }
            "follow_task" => {
                let a: Follow = args(arguments)?;
                self.follow(&user, a, ctx).await
            }
            other => return Err(ErrorData::invalid_params(format!("no tool named {other}"), None)),
        })
    }

    async fn submit(&self, user: &AuthUser, a: RunMandate) -> Result<TaskResponse, ApiError> {
        let key = a.idempotency_key.map(|k| tasks::parse_idempotency_key(k.as_bytes())).transpose()?;
        let req = TaskRequest {
            mandate: a.mandate,
            max_ticks: a.max_ticks,
            webhook_url: a.webhook_url,
            tools: a.tools,
            max_tokens: a.max_tokens,
            expires_after_seconds: a.expires_after_seconds,
        };
        let task = tasks::prepare(&self.state, user, req, key).await?;
        tracing::info!(correlation_id = %task.id, "mcp run_mandate");
        Ok(self.state.submissions.submit(task).await?)
    }

    /// `run_mandate` in a span of its own that continues the HTTP request's `traceparent`:
    /// the SDK runs tools on tasks of their own, outside the request's `http` span.
    async fn submit_traced(
        &self,
        user: &AuthUser,
        a: RunMandate,
        headers: Option<&axum::http::HeaderMap>,
    ) -> Result<TaskResponse, ApiError> {
        let span = tracing::info_span!("mcp run_mandate", user = %user.0);
        if let Some(h) = headers {
            runtime::telemetry::propagation::continue_from_headers(&span, h);
        }
        self.submit(user, a).instrument(span).await
    }

    async fn list(&self, user: &AuthUser, a: ListArgs) -> Result<Value, ApiError> {
        let limit = a.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::Unprocessable("limit: must be between 1 and 100".into()));
        }
        let cursor = a.cursor.as_deref();
        if cursor.is_some_and(|c| proto::store::parse_cursor(c).is_none()) {
            return Err(ApiError::BadRequest("cursor: not a cursor returned by this API".into()));
        }
        let page = self.state.store.list(&user.0, limit as usize, cursor).await?;
        Ok(json!(TaskList {
            tasks: page.tasks.iter().map(proto::task::TaskRecord::to_response).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Reads the record every [`FOLLOW_POLL`] and notifies each change of tick or status,
    /// holding one of the user's event-stream slots (the bound `GET /tasks/{id}/events` has).
    async fn follow(&self, user: &AuthUser, a: Follow, ctx: &RequestContext<RoleServer>) -> Result<Value, ApiError> {
        let wait = Duration::from_secs(a.wait_seconds.unwrap_or(FOLLOW_DEFAULT_WAIT).clamp(1, FOLLOW_MAX_WAIT));
        let mut rec = tasks::owned(&self.state, user, &a.correlation_id).await?;
        let _slot = self.state.streams.acquire(&user.0).await?;
        let token = ctx.meta.get_progress_token();
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = None;
        loop {
            let now = (rec.status, rec.tick);
            if seen != Some(now) {
                seen = Some(now);
                if let Some(token) = &token {
                    let note = ProgressNotificationParam::new(token.clone(), f64::from(rec.tick.unwrap_or(0)))
                        .with_total(f64::from(rec.max_ticks))
                        .with_message(format!("{} (tick {})", rec.status, rec.tick.unwrap_or(0)));
                    // A host that stopped listening ends the call through `ctx.ct` below.
                    let _ = ctx.peer.notify_progress(note).await;
                }
            }
            if rec.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(json!(rec.to_response()));
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = ctx.ct.cancelled() => return Ok(json!(rec.to_response())),
                () = self.state.shutdown.cancelled() => return Ok(json!(rec.to_response())),
            }
            rec = tasks::owned(&self.state, user, &a.correlation_id).await?;
        }
    }
}

impl ServerHandler for Euglena {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
            .with_server_info(Implementation::new("euglena", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Euglena runs research mandates on a fleet of agents. run_mandate submits one and answers \
                 at once; follow_task waits for it with progress; get_task, list_tasks and cancel_task as \
                 in the REST API.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalogue()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        catalogue().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        // A host that declared the Tasks extension gets the task's handle at once (mcp::tasks).
        if name == "run_mandate" && context.client_capabilities().is_some_and(|c| c.supports_tasks()) {
            let Some(user) = user_of(&context) else { return Ok(tool_error(&ApiError::MissingToken).into()) };
            let a: RunMandate = args(request.arguments)?;
            let headers = context.extensions.get::<axum::http::request::Parts>().map(|p| &p.headers);
            return Ok(match self.submit_traced(&user, a, headers).await {
                Ok(t) => CallToolResponse::Task(CreateTaskResult::new(mcp_tasks::handle(&t, self.ttl()))),
                Err(e) => tool_error(&e).into(),
            });
        }
        let result = match self.run(&name, request.arguments, &context).await? {
            Ok(value) => answer(value),
            Err(e) => tool_error(&e),
        };
        Ok(result.into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let user = user_of(&context).ok_or_else(|| protocol_error(&ApiError::MissingToken))?;
        let rec = tasks::owned(&self.state, &user, &request.task_id).await.map_err(|e| protocol_error(&e))?;
        let result = |t: Value| serde_json::to_value(answer(t)).unwrap_or_default();
        Ok(GetTaskResult::new(mcp_tasks::detailed(&rec, self.ttl(), result)))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let user = user_of(&context).ok_or_else(|| protocol_error(&ApiError::MissingToken))?;
        tasks::cancel_owned(&self.state, &user, &request.task_id).await.map(|_| ()).map_err(|e| protocol_error(&e))
    }
}

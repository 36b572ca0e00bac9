//! `/tasks`: submit, read, list, cancel. A caller only ever sees their own tasks; a task
//! owned by someone else is indistinguishable from one that does not exist.

use std::collections::HashMap;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use proto::store::{CancelOutcome, Idempotency, NewTask};
use proto::task::{TaskRecord, TaskResponse};
use proto::{Mandate, MaxTicks, TaskId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::AuthUser;
use crate::extract::JsonBody;
use crate::problem::ApiError;
use crate::state::AppState;

/// A mandate to run. Limits shown are the defaults (`MAX_MANDATE_CHARS`, `MAX_TICKS_LIMIT`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// What the agent should do; 1 to 8000 characters after trimming.
    #[schema(min_length = 1, max_length = 8000)]
    pub mandate: String,
    /// Tick budget; default `DEFAULT_MAX_TICKS` (50).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 200)]
    pub max_ticks: Option<i64>,
    /// POSTed a signed `task.completed` / `task.failed` / `task.cancelled` (Standard
    /// Webhooks) when the task ends; public http(s) addresses only; needs `WEBHOOK_SECRET`.
    #[serde(default)]
    #[schema(format = "uri", max_length = 2048)]
    pub webhook_url: Option<String>,
    /// MCP tools the agent may call besides its built-ins: `<server>` (all its tools) or
    /// `<server>/<tool>`, from the operator's `MCP_SERVERS`. Absent: built-in tools only.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub tools: Option<Vec<String>>,
    /// Token budget (prompt + completion, every model call, repairs included); default
    /// `DEFAULT_TASK_MAX_TOKENS` (none), at most `MAX_TASK_TOKENS`. A task that reaches it
    /// stops `incomplete`; `POST /tasks/{id}/extend` raises it.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    /// Not started within this many seconds, the task fails "expired in queue" (its quota
    /// refunded).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800)]
    pub expires_after_seconds: Option<i64>,
}

/// The longest `expires_after_seconds` (a week: a task record's default lifetime).
const MAX_EXPIRES_AFTER_SECONDS: i64 = 7 * 86_400;

/// One page of the caller's tasks, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskResponse>,
    pub next_cursor: Option<String>,
}

fn accepted(record: &TaskResponse) -> Response {
    let location = format!("/tasks/{}", record.correlation_id);
    let mut resp = (StatusCode::ACCEPTED, Json(record)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Submit a mandate. `202` only once the task is stored and the broker has confirmed it.
#[utoipa::path(post, path = "/tasks", tag = "tasks", security(("bearer" = [])),
    request_body(content = TaskRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[ -~]{1,255}$", description = "1..255 printable ASCII; makes the submit idempotent per user for IDEMPOTENCY_TTL_SECONDS")),
    responses(
        (status = 202, description = "Accepted (or the replay of an Idempotency-Key)", body = TaskResponse, headers(("location" = String, description = "/tasks/{id}"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same Idempotency-Key is still being processed", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named in detail), the body is not an object, or the Idempotency-Key was used with another request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Daily tick quota, rate limit or active-task cap; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id))]
pub async fn submit(
    State(state): State<AppState>,
    user: AuthUser,
    IdempotencyHeader(key): IdempotencyHeader,
    JsonBody(req): JsonBody<TaskRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = key.map(|v| parse_idempotency_key(v.as_bytes())).transpose()?;
    let task = prepare(&state, &user, req, idempotency_key).await?;
    tracing::Span::current().record("correlation_id", tracing::field::display(task.id));
    Ok(accepted(&state.submissions.submit(task).await?))
}

/// A checked [`NewTask`] from a request: the one place a submission's fields are validated,
/// for `POST /tasks` and the MCP `run_mandate` tool alike.
pub(crate) async fn prepare(
    state: &AppState,
    user: &AuthUser,
    req: TaskRequest,
    idempotency_key: Option<String>,
) -> Result<NewTask, ApiError> {
    let s = &state.settings;
    let mandate =
        Mandate::parse(&req.mandate, s.max_mandate_chars).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let max_ticks = MaxTicks::parse(req.max_ticks.unwrap_or(i64::from(s.default_max_ticks)), s.max_ticks_limit)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let webhook_url = match req.webhook_url.as_deref() {
        None => None,
        Some(raw) => {
            let w = s.webhooks.as_ref().ok_or_else(|| {
                ApiError::Unprocessable(
                    "webhook_url: webhooks are not enabled on this server (no WEBHOOK_SECRET)".into(),
                )
            })?;
            Some(crate::webhooks::check_url(w, state.lookup.as_ref(), raw).await.map_err(ApiError::Unprocessable)?)
        }
    };
    let max_tokens = match req.max_tokens {
        Some(n) if n < 1 || u64::try_from(n).is_ok_and(|n| n > s.max_task_tokens) => {
            return Err(ApiError::Unprocessable(format!(
                "max_tokens: must be between 1 and {} (MAX_TASK_TOKENS)",
                s.max_task_tokens
            )));
        }
        Some(n) => u64::try_from(n).ok(),
        None => (s.default_task_max_tokens > 0).then_some(s.default_task_max_tokens),
    };
    let created_at = chrono::Utc::now();
    let expires_at = match req.expires_after_seconds {
        Some(n) if !(1..=MAX_EXPIRES_AFTER_SECONDS).contains(&n) => {
            return Err(ApiError::Unprocessable(format!(
                "expires_after_seconds: must be between 1 and {MAX_EXPIRES_AFTER_SECONDS}"
            )));
        }
        Some(n) => Some(created_at + chrono::Duration::seconds(n)),
        None => None,
    };
    let tools = match &req.tools {
        Some(raw) => crate::tools::check_choice(&state.mcp, raw).await?,
        None => Vec::new(),
    };
    let asked = Asked {
        max_ticks,
        webhook_url: webhook_url.as_deref(),
        tools: &tools,
        max_tokens,
        expires_after: req.expires_after_seconds,
    };
    let task = NewTask {
        id: TaskId::new(),
        user_id: user.0.clone(),
        mandate: mandate.as_str().to_owned(),
        max_ticks: max_ticks.get(),
        created_at,
        idempotency: idempotency_key.map(|key| Idempotency { key, fingerprint: fingerprint(&mandate, &asked) }),
        webhook_url,
        tools,
        max_tokens,
        expires_at,
        // The submit span's context (itself continuing the client's `traceparent`, when
        // it sent one): the agent's spans for this task hang under it.
        traceparent: runtime::telemetry::propagation::current_traceparent(),
    };
    Ok(task)
}

/// `Idempotency-Key`: 1..=255 printable ASCII characters, when present.
/// The `Idempotency-Key` header as sent (checked by [`parse_idempotency_key`] after the body,
/// as before), without the copy of every header that `HeaderMap` as an extractor makes.
pub struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(IDEMPOTENCY_KEY).cloned()))
    }
}

/// An idempotency key (the header's, or the MCP `run_mandate` argument's) checked.
pub(crate) fn parse_idempotency_key(b: &[u8]) -> Result<String, ApiError> {
    if b.is_empty() || b.len() > 255 || !b.iter().all(|c| (0x20..=0x7e).contains(c)) {
        return Err(ApiError::BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters".into()));
    }
    Ok(String::from_utf8_lossy(b).into_owned())
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What a request asks for besides its mandate, after defaults.
struct Asked<'a> {
    max_ticks: MaxTicks,
    webhook_url: Option<&'a str>,
    tools: &'a [String],
    max_tokens: Option<u64>,
    expires_after: Option<i64>,
}

/// Equal for requests that ask for the same task (after trimming and defaults).
fn fingerprint(mandate: &Mandate, asked: &Asked<'_>) -> String {
    let Asked { max_ticks, webhook_url, tools, max_tokens, expires_after } = *asked;
    let mut h = Sha256::new();
    h.update(max_ticks.get().to_be_bytes());
    // Tagged, and only when set, so keys from before these fields existed match.
    if let Some(n) = max_tokens {
        h.update(b"max_tokens");
        h.update(n.to_be_bytes());
    }
    if let Some(n) = expires_after {
        h.update(b"expires_after");
        h.update(n.to_be_bytes());
    }
    // Each length-prefixed; an empty choice adds nothing, so keys from before tools existed match.
    for t in tools {
        h.update((t.len() as u64).to_be_bytes());
        h.update(t.as_bytes());
    }
    // Length-prefixed, so no mandate/URL split of the same bytes collides.
    let url = webhook_url.unwrap_or("");
    h.update((url.len() as u64).to_be_bytes());
    h.update(url.as_bytes());
    h.update(mandate.as_str().as_bytes());
    hex::encode(h.finalize())
}

pub(crate) async fn owned(state: &AppState, user: &AuthUser, raw_id: &str) -> Result<TaskRecord, ApiError> {
    let id: TaskId = raw_id.parse().map_err(|_| ApiError::NotFound)?;
    match state.store.get(id).await? {
        Some(rec) if rec.user_id == user.0 => Ok(rec),
        _ => Err(ApiError::NotFound),
    }
}

/// One of your tasks. Another user's task is indistinguishable from a missing one.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = uuid::Uuid, Path, description = "The task id (correlation_id)")),
    responses(
        (status = 200, description = "The task", body = TaskResponse),
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TaskResponse>, ApiError> {
    Ok(Json(owned(&state, &user, &id).await?.to_response()))
}

/// Follow a task: its events replayed from the start (or after `Last-Event-ID` / `after`),
/// then live, as Server-Sent Events (`status` and `tick`, JSON data, the stream entry id as
/// `id`), ending after the terminal `status` event.
#[utoipa::path(get, path = "/tasks/{id}/events", tag = "tasks", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task id"),
        ("after" = Option<String>, Query, pattern = "^[0-9]+-[0-9]+$", description = "Resume after this event id"),
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]+-[0-9]+$", description = "Resume after this event id (wins over after)")),
    responses(
        (status = 200, description = "text/event-stream; each event's data is a TaskEvent", body = crate::events::StreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "Not an event id, or an unknown query parameter", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "You already hold SSE_MAX_STREAMS_PER_USER event streams; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis or RabbitMQ is unavailable, this gateway holds SSE_MAX_STREAMS streams, or the request deadline passed; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
    ))]
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    crate::extract::only_params(&q, &["after"])?;
    let rec = owned(&state, &user, &id).await?;
    // The header wins: it is what a reconnecting EventSource sends.
    let after = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().unwrap_or("").to_owned()),
        None => q.get("after").cloned(),
    };
    if after.as_deref().is_some_and(|a| crate::event_hub::parse_id(a).is_none()) {
        return Err(ApiError::BadRequest("Last-Event-ID / after: not an event id from this stream".into()));
    }
    let slot = state.streams.acquire(&user.0).await?;
    let keep_alive = KeepAlive::new().interval(state.settings.sse_keepalive);
    let mut resp = Sse::new(crate::events::follow(state, rec, after, slot)).keep_alive(keep_alive).into_response();
    // Proxies that buffer (nginx) would hold events back.
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Cancel: a queued task at once; a running one stops at its next tick boundary.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", security(("bearer" = [])), params(("id" = uuid::Uuid, Path, description = "The task id (correlation_id)")),
    responses(
        (status = 202, description = "Cancelled, or cancel requested", body = TaskResponse),
        (status = 409, description = "The task already ended", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = cancel_owned(&state, &user, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(now.to_response())).into_response())
}

/// Cancels one of the caller's tasks and returns the record as it now stands (REST and MCP).
pub(crate) async fn cancel_owned(state: &AppState, user: &AuthUser, id: &str) -> Result<TaskRecord, ApiError> {
    let rec = owned(state, user, id).await?;
    match state.store.cancel(&rec).await? {
        CancelOutcome::Missing => Err(ApiError::NotFound),
        CancelOutcome::Terminal(st) => Err(ApiError::Conflict(format!("the task is already {st}"))),
        outcome @ (CancelOutcome::Cancelled | CancelOutcome::Requested) => {
            tracing::info!(correlation_id = %rec.id, ?outcome, "cancel");
            state.store.get(rec.id).await?.ok_or(ApiError::NotFound)
        }
    }
}

/// Your tasks, newest first.
#[utoipa::path(get, path = "/tasks", tag = "tasks", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, pattern = "^-?[0-9]+:[0-9a-f-]{36}$", description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "A page of tasks", body = TaskList),
        (status = 400, description = "Not a cursor from this API, or an unknown query parameter", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TaskList>, ApiError> {
    crate::extract::only_params(&q, &["limit", "cursor"])?;
    // In 1..=100, so the conversion cannot fail.
    let limit = usize::try_from(crate::extract::ranged_param(&q, "limit", 20, 1..=100)?).unwrap_or(20);
    let cursor = q.get("cursor").map(String::as_str);
    if cursor.is_some_and(|c| proto::store::parse_cursor(c).is_none()) {
        return Err(ApiError::BadRequest("cursor: not a cursor returned by this API".into()));
    }
    let page = state.store.list(&user.0, limit, cursor).await?;
    Ok(Json(TaskList {
        tasks: page.tasks.iter().map(TaskRecord::to_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

//! `/tasks`: submit, read, list, cancel. A caller only ever sees their own tasks; a task
//! owned by someone else is indistinguishable from one that does not exist.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::store::{CancelOutcome, NewTask, SubmitOutcome};
use proto::task::{TaskRecord, TaskResponse, TaskStatus};
use proto::{Mandate, MaxTicks, TaskEnvelope, TaskId};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::auth::AuthUser;
use crate::extract::JsonBody;
use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub mandate: String,
    #[serde(default)]
    pub max_ticks: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
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

#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id))]
pub async fn submit(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<TaskRequest>,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    let mandate = Mandate::parse(&req.mandate, s.max_mandate_chars)
        .map_err(|e| ApiError::Unprocessable(format!("mandate: {e}")))?;
    let max_ticks = MaxTicks::parse(req.max_ticks.unwrap_or(i64::from(s.default_max_ticks)), s.max_ticks_limit)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let task = NewTask {
        id: TaskId::new(),
        user_id: user.0,
        mandate: mandate.as_str().to_owned(),
        max_ticks: max_ticks.get(),
        created_at: chrono::Utc::now(),
    };
    tracing::Span::current().record("correlation_id", tracing::field::display(task.id));

    let submitted = match state.store.submit(&task, s.daily_tick_limit).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // The script may have run with only its reply lost: undo it if it did.
            crate::undo::spawn(state.clone(), task.clone());
            return Err(e.into());
        }
    };
    if let SubmitOutcome::OverQuota { remaining } = submitted {
        metrics::counter!("gateway_quota_rejections_total").increment(1);
        return Err(ApiError::TooManyRequests {
            detail: format!(
                "daily tick quota exceeded: {remaining} of {} ticks left today, this task reserves {}",
                s.daily_tick_limit, task.max_ticks
            ),
            retry_after: proto::time::seconds_to_utc_midnight(chrono::Utc::now()),
        });
    }

    let envelope = TaskEnvelope {
        correlation_id: task.id,
        mandate: task.mandate.clone(),
        max_ticks: task.max_ticks,
        user_id: Some(task.user_id.clone()),
        submitted_at: Some(task.created_at),
        v: Some(proto::envelope::ENVELOPE_VERSION),
    };
    // Publish and, on failure, undo on a task of its own: a request dropped mid-way (its
    // deadline, a client that hung up, shutdown) must not strand a record in `in_queue`
    // with no message behind it and its quota reserved.
    let publish = {
        let (state, task) = (state.clone(), task.clone());
        tokio::spawn(async move { crate::undo::publish_or_undo(&state, &envelope, &task).await }.in_current_span())
    };
    if !matches!(publish.await, Ok(true)) {
        return Err(ApiError::Unavailable {
            detail: "the task queue is unavailable; nothing was enqueued and no quota was used, try again".into(),
            retry_after: 5,
        });
    }
    metrics::counter!("gateway_tasks_submitted_total").increment(1);
    tracing::info!(max_ticks = task.max_ticks, "task accepted");

    let now = proto::time::rfc3339(task.created_at);
    let response = TaskResponse {
        correlation_id: task.id,
        status: TaskStatus::InQueue,
        mandate: task.mandate,
        max_ticks: task.max_ticks,
        tick: None,
        result: None,
        error: None,
        attempt: 0,
        created_at: now.clone(),
        updated_at: now,
        started_at: None,
        finished_at: None,
    };
    Ok(accepted(&response))
}

async fn owned(state: &AppState, user: &AuthUser, raw_id: &str) -> Result<TaskRecord, ApiError> {
    let id: TaskId = raw_id.parse().map_err(|_| ApiError::NotFound)?;
    match state.store.get(id).await? {
        Some(rec) if rec.user_id == user.0 => Ok(rec),
        _ => Err(ApiError::NotFound),
    }
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TaskResponse>, ApiError> {
    Ok(Json(owned(&state, &user, &id).await?.to_response()))
}

pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let rec = owned(&state, &user, &id).await?;
    match state.store.cancel(&rec).await? {
        CancelOutcome::Missing => Err(ApiError::NotFound),
        CancelOutcome::Terminal(st) => Err(ApiError::Conflict(format!("the task is already {st}"))),
        outcome @ (CancelOutcome::Cancelled | CancelOutcome::Requested) => {
            tracing::info!(correlation_id = %rec.id, ?outcome, "cancel");
            let now = state.store.get(rec.id).await?.ok_or(ApiError::NotFound)?;
            Ok((StatusCode::ACCEPTED, Json(now.to_response())).into_response())
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TaskList>, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "limit" | "cursor")) {
        return Err(ApiError::BadRequest(format!("unknown query parameter {unknown:?}")));
    }
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::Unprocessable("limit: must be an integer between 1 and 100".into()))?,
    };
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

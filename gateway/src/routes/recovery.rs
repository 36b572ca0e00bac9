//! What an owner does with a task that stopped: extend an `incomplete` one's budget
//! (`POST /tasks/{id}/extend`) or retry a `failed` or `cancelled` one
//! (`POST /tasks/{id}/retry`). Both admit the task again as a submit would (quota, rate
//! limit, active cap) and resume it from its checkpoint with a new attempt.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use proto::store::Readmission;
use proto::task::TaskResponse;
use serde::{Deserialize, Serialize};

use super::tasks::owned;
use crate::auth::AuthUser;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::submission::Readmitted;

/// New, higher budgets for an `incomplete` task; at least one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The task's new token budget (all its runs), above the current one and at most
    /// `MAX_TASK_TOKENS`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    /// The task's new tick budget, above the current one and at most `MAX_TICKS_LIMIT`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 200)]
    pub max_ticks: Option<i64>,
}

/// Where a retry starts.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// `checkpoint` (default): the last recorded tick; `start`: tick 1, checkpoint and
    /// memories dropped.
    #[serde(default)]
    pub from: RetryFrom,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryFrom {
    #[default]
    Checkpoint,
    Start,
}

impl RetryFrom {
    pub fn readmission(self) -> Readmission {
        match self {
            Self::Checkpoint => Readmission::Retry,
            Self::Start => Readmission::Restart,
        }
    }
}

/// Raise the budget of an `incomplete` task: it is admitted again (quota, rate limit,
/// active cap) and resumes from its checkpoint. `422` without a budget, or with one that
/// does not rise above the current.
#[utoipa::path(post, path = "/tasks/{id}/extend", tag = "tasks", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task id")),
    request_body(content = ExtendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued to resume from its checkpoint", body = TaskResponse),
        (status = 409, description = "The task is not incomplete", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Its checkpoint expired", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Quota, rate limit or active-task cap; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::BodyProblems,
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id = %id))]
pub async fn extend(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ExtendRequest>,
) -> Result<Response, ApiError> {
    let s = &state.settings;
    let max_ticks = req
        .max_ticks
        .map(|n| {
            u32::try_from(n).ok().filter(|n| (1..=s.max_ticks_limit).contains(n)).ok_or_else(|| {
                ApiError::Unprocessable(format!("max_ticks: must be between 1 and {}", s.max_ticks_limit))
            })
        })
        .transpose()?;
    let max_tokens = req
        .max_tokens
        .map(|n| {
            u64::try_from(n).ok().filter(|n| (1..=s.max_task_tokens).contains(n)).ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "max_tokens: must be between 1 and {} (MAX_TASK_TOKENS)",
                    s.max_task_tokens
                ))
            })
        })
        .transpose()?;
    if max_ticks.is_none() && max_tokens.is_none() {
        return Err(ApiError::Unprocessable("give max_tokens, max_ticks or both".into()));
    }
    let rec = owned(&state, &user, &id).await?;
    accepted(state.submissions.readmit(&rec, Readmission::Extend { max_ticks, max_tokens }, None).await?)
}

/// Retry a `failed` or `cancelled` task from its last checkpointed tick (or from the start):
/// it is admitted again like a submit and resumes with a new attempt; the record's `history`
/// keeps how the earlier run ended.
#[utoipa::path(post, path = "/tasks/{id}/retry", tag = "tasks", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task id")),
    request_body(content = Option<RetryRequest>, content_type = "application/json", description = "Optional: no body retries from the checkpoint"),
    responses(
        (status = 202, description = "Queued to resume", body = TaskResponse),
        (status = 409, description = "The task is not failed or cancelled", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Its checkpoint expired: retry from the start", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Quota, rate limit or active-task cap; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::BodyProblems,
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id = %id))]
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    OptionalJsonBody(req): OptionalJsonBody<RetryRequest>,
) -> Result<Response, ApiError> {
    let rec = owned(&state, &user, &id).await?;
    accepted(state.submissions.readmit(&rec, req.from.readmission(), None).await?)
}

fn accepted(r: Readmitted) -> Result<Response, ApiError> {
    let (Readmitted::Queued(task) | Readmitted::AlreadyDone(task)) = r;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

//! What an owner does to a task while it runs: answer the tool call it parked on
//! (`POST /tasks/{id}/actions/{call_id}`) and send it a message (`POST /tasks/{id}/messages`).
//! Another user's task is not found, as everywhere.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use proto::store::{DecideOutcome, MessageOutcome};
use proto::task::{ActionDecision, TaskResponse, Verdict};
use serde::{Deserialize, Serialize};

use super::tasks::owned;
use crate::auth::AuthUser;
use crate::extract::JsonBody;
use crate::problem::ApiError;
use crate::state::AppState;

/// Longest message, in characters after trimming.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// Messages one task may receive.
pub const MAX_MESSAGES_PER_TASK: u32 = 20;

/// The owner's answer to a parked tool call.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve` runs the call, `deny` tells the model it was refused.
    pub decision: Choice,
    /// With `approve`: arguments to use instead of the model's, checked against the tool's
    /// input schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Approve,
    Deny,
}

/// Answer the tool call a task waits on. The task goes back to the queue and resumes from
/// its checkpoint; `202` once its envelope is published (or, if the broker did not answer,
/// once the decision is stored: the reconciler publishes it).
#[utoipa::path(post, path = "/tasks/{id}/actions/{call_id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task id"), ("call_id" = String, Path, description = "required_action.call_id")),
    request_body(content = DecisionRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Decided; the task is queued to resume", body = TaskResponse),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "That call was already decided, or the task ended", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The edited arguments do not match the tool's schema, or the body is invalid", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id = %id))]
pub async fn decide(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, call_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    let rec = owned(&state, &user, &id).await?;
    let verdict = match req.decision {
        Choice::Approve => Verdict::Approve,
        Choice::Deny if req.arguments.is_some() => {
            return Err(ApiError::Unprocessable("arguments: only with \"approve\"".into()));
        }
        Choice::Deny => Verdict::Deny,
    };
    if let (Some(args), Some(schema)) = (&req.arguments, &rec.pending_schema)
        && rec.pending_action.as_ref().is_some_and(|p| p.call_id == call_id)
    {
        check_arguments(schema, args)?;
    }
    let decision = ActionDecision { call_id: call_id.clone(), decision: verdict, arguments: req.arguments };
    match state.store.decide(&rec, &decision).await? {
        DecideOutcome::Missing => Err(ApiError::NotFound),
        DecideOutcome::Unknown => Err(ApiError::NotFound),
        DecideOutcome::AlreadyDecided => Err(ApiError::Conflict(format!("the call {call_id:?} was already decided"))),
        DecideOutcome::Terminal(st) => Err(ApiError::Conflict(format!("the task is already {st}"))),
        DecideOutcome::Resumed { seq } => {
            tracing::info!(?verdict, "tool call decided; resuming the task");
            state.submissions.resume(&rec, seq).await;
            let now = state.store.get(rec.id).await?.ok_or(ApiError::NotFound)?;
            Ok((StatusCode::ACCEPTED, Json(now.to_response())).into_response())
        }
    }
}

/// Edited arguments must be an object the tool's input schema accepts; the error names the
/// first place it does not.
fn check_arguments(schema: &serde_json::Value, args: &serde_json::Value) -> Result<(), ApiError> {
    if !args.is_object() {
        return Err(ApiError::Unprocessable("arguments: must be a JSON object".into()));
    }
    let validator = jsonschema::validator_for(schema).map_err(|_| {
        ApiError::Unprocessable("arguments: the tool's input schema cannot be used to check them".into())
    })?;
    match validator.iter_errors(args).next() {
        None => Ok(()),
        Some(e) => Err(ApiError::Unprocessable(format!("arguments{}: {}", e.instance_path(), clip(&e.to_string())))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

/// A message from the owner to a task.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// 1 to 2000 characters after trimming.
    #[schema(min_length = 1, max_length = 2000)]
    pub text: String,
}

/// A message was queued for the task.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageAccepted {
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: proto::TaskId,
    /// Messages the task has received, this one included (at most 20).
    pub messages: u32,
}

/// Send the task a message; its agent reads it at the start of its next tick and puts it in
/// the model's prompt as the owner's words.
#[utoipa::path(post, path = "/tasks/{id}/messages", tag = "tasks", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The task id")),
    request_body(content = MessageRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued for the task's next tick", body = MessageAccepted),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task ended, or already has 20 messages", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or over 2000 characters", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::TaskNotFound,
        crate::openapi::Unavailable,
    ))]
#[tracing::instrument(skip_all, fields(user = %user.0, correlation_id = %id))]
pub async fn message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MessageRequest>,
) -> Result<Response, ApiError> {
    let text = req.text.trim();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::Unprocessable(format!("text: 1 to {MAX_MESSAGE_CHARS} characters")));
    }
    let rec = owned(&state, &user, &id).await?;
    match state.store.send_message(rec.id, text, MAX_MESSAGES_PER_TASK).await? {
        MessageOutcome::Missing => Err(ApiError::NotFound),
        MessageOutcome::Terminal(st) => Err(ApiError::Conflict(format!("the task is already {st}"))),
        MessageOutcome::Full => {
            Err(ApiError::Conflict(format!("the task already has its {MAX_MESSAGES_PER_TASK} messages")))
        }
        MessageOutcome::Sent { count } => {
            Ok((StatusCode::ACCEPTED, Json(MessageAccepted { correlation_id: rec.id, messages: count }))
                .into_response())
        }
    }
}

//! `/admin`: operators' routes (a token whose claims carry `OPERATOR_CLAIM`; anyone else
//! `403`). Listing any user's tasks, the dead letters (from the reconciler's index, without
//! consuming the queue), redriving them, bulk cancel and retry, and the audit stream every
//! change is written to.
//!
//! Bulk calls are bounded (`limit` ≤ [`MAX_BULK`]) and hold one page of records at a time.
//! Each task is changed at most once per operation: the operation id (`operation_id` in the
//! body, else a fresh one) goes with every admission (`readmit.lua` refuses an id it already
//! admitted), and a cancel of a task that already ended changes nothing; so a call cut off
//! half way (its gateway killed) can be sent again with the same `operation_id`.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Query, State};
use proto::TaskId;
use proto::store::{CancelOutcome, Filter};
use proto::task::{TaskRecord, TaskResponse, TaskStatus};
use serde::{Deserialize, Serialize};

use super::recovery::RetryFrom;
use crate::audit::{self, AuditEntry};
use crate::auth::Operator;
use crate::extract::{JsonBody, only_params, ranged_param};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::submission::Readmitted;

/// Tasks one bulk call changes at most.
pub const MAX_BULK: usize = 1000;
/// Records held in memory at once by a bulk call.
const PAGE: usize = 100;

/// A task as an operator sees it: with its owner.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminTask {
    pub user_id: String,
    #[serde(flatten)]
    pub task: TaskResponse,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminTaskList {
    pub tasks: Vec<AdminTask>,
    /// Absent at the end. A page may be short (filters read at most 1000 index entries per
    /// call): go on with the cursor.
    pub next_cursor: Option<String>,
}

fn filter_from(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let status = q
        .get("status")
        .map(|s| s.parse::<TaskStatus>().map_err(|_| ApiError::Unprocessable(format!("status: unknown status {s:?}"))))
        .transpose()?;
    let user = q.get("user").filter(|u| !u.is_empty()).cloned();
    let older_than = ranged_param(q, "older_than", 0, 0..=366 * 86_400)?;
    let created_before_ms = (older_than > 0).then(|| chrono::Utc::now().timestamp_millis() - older_than * 1000);
    Ok(Filter { status, user, created_before_ms })
}

fn cursor_param(q: &HashMap<String, String>) -> Result<Option<&str>, ApiError> {
    match q.get("cursor") {
        Some(c) if proto::store::parse_cursor(c).is_none() => {
            Err(ApiError::BadRequest("cursor: not a cursor from this list".into()))
        }
        c => Ok(c.map(String::as_str)),
    }
}

/// Any user's tasks, newest first, filtered by `status`, `user` and `older_than` (seconds).
#[utoipa::path(get, path = "/admin/tasks", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<TaskStatus>, Query), ("user" = Option<String>, Query),
        ("older_than" = Option<i64>, Query, minimum = 0, maximum = 31_622_400, description = "Only tasks created more than this many seconds ago"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "A page of tasks", body = AdminTaskList),
        (status = 400, description = "Unknown parameter or cursor", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is out of range", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn tasks(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AdminTaskList>, ApiError> {
    only_params(&q, &["status", "user", "older_than", "limit", "cursor"])?;
    let filter = filter_from(&q)?;
    let limit = usize::try_from(ranged_param(&q, "limit", 20, 1..=100)?).unwrap_or(20);
    let page = state.store.list_all(&filter, limit, cursor_param(&q)?).await?;
    let tasks =
        page.tasks.into_iter().map(|r| AdminTask { user_id: r.user_id.clone(), task: r.to_response() }).collect();
    Ok(Json(AdminTaskList { tasks, next_cursor: page.next_cursor }))
}

/// One dead letter: what the broker said, and where its task stands.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: TaskId,
    pub user_id: Option<String>,
    /// `x-first-death-reason`: `rejected` (an agent gave up or the envelope was invalid),
    /// `delivery_limit`, …
    pub reason: Option<String>,
    /// Deliveries before it died, when known.
    pub count: Option<u32>,
    pub first_death_at: String,
    /// The task's status now (absent: its record expired).
    pub status: Option<TaskStatus>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
    pub next_cursor: Option<String>,
}

/// What is in the dead-letter queue, newest first, read without consuming it.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterList),
        (status = 400, description = "Unknown parameter or cursor", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is out of range", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn dead_letters(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeadLetterList>, ApiError> {
    only_params(&q, &["limit", "cursor"])?;
    let limit = usize::try_from(ranged_param(&q, "limit", 20, 1..=100)?).unwrap_or(20);
    let (rows, next_cursor) = state.store.dead_letters(limit, cursor_param(&q)?).await?;
    let mut dead_letters = Vec::with_capacity(rows.len());
    for (id, letter) in rows {
        let rec = state.store.get(id).await?;
        dead_letters.push(DeadLetterView {
            correlation_id: id,
            user_id: rec.as_ref().map(|r| r.user_id.clone()),
            reason: letter.reason,
            count: letter.count,
            first_death_at: letter.first_death_at,
            status: rec.map(|r| r.status),
        });
    }
    Ok(Json(DeadLetterList { dead_letters, next_cursor }))
}

/// Which tasks a bulk call acts on: `ids`, or every task the filter selects, up to `limit`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// These tasks (at most 1000); else the filter's.
    #[serde(default)]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, max_items = 1000)]
    pub ids: Option<Vec<TaskId>>,
    #[serde(default)]
    pub status: Option<TaskStatus>,
    #[serde(default)]
    #[schema(max_length = 255)]
    pub user: Option<String>,
    /// Seconds: only tasks created longer ago.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31_622_400)]
    pub older_than: Option<i64>,
    /// At most this many tasks (1..=1000, default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Report what would be done, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Names the operation: repeating a call with the same id changes no task twice.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub operation_id: Option<String>,
    /// For retries: where they start (default `checkpoint`).
    #[serde(default)]
    pub from: Option<RetryFrom>,
}

/// What a bulk call did (or, dry, would do) to each task.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkReport {
    pub operation_id: String,
    pub dry_run: bool,
    pub results: Vec<BulkResult>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkResult {
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: TaskId,
    /// `cancelled`, `cancel_requested`, `retried`, `redriven`, `already_done` (this operation
    /// did it before), `skipped` (see `detail`), or `would_…` in a dry run.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Runs an operator's change between its two audit entries: `started` before `work` touches
/// anything, `finished` with each task's outcome.
async fn audited(
    state: &AppState,
    entry: &AuditEntry,
    operation_id: String,
    dry_run: bool,
    work: impl Future<Output = Result<Vec<BulkResult>, ApiError>>,
) -> Result<Json<BulkReport>, ApiError> {
    audit::started(state, entry).await?;
    let results = work.await?;
    let outcomes = results.iter().map(|r| (r.correlation_id.to_string(), r.outcome.as_str()));
    audit::finished(state, entry, outcomes).await?;
    Ok(Json(BulkReport { operation_id, dry_run, results }))
}

fn result(id: TaskId, outcome: &str, detail: Option<String>) -> BulkResult {
    BulkResult { correlation_id: id, outcome: outcome.to_owned(), detail }
}

impl BulkRequest {
    fn checked(&self) -> Result<(usize, String), ApiError> {
        let limit = self.limit.unwrap_or(100);
        let limit = usize::try_from(limit)
            .ok()
            .filter(|n| (1..=MAX_BULK).contains(n))
            .ok_or_else(|| ApiError::Unprocessable(format!("limit: must be between 1 and {MAX_BULK}")))?;
        if self.ids.as_ref().is_some_and(|ids| ids.len() > MAX_BULK) {
            return Err(ApiError::Unprocessable(format!("ids: at most {MAX_BULK}")));
        }
        if self.older_than.is_some_and(|n| !(0..=366 * 86_400).contains(&n)) {
            return Err(ApiError::Unprocessable("older_than: must be between 0 and 31622400".into()));
        }
        let op = match &self.operation_id {
            Some(id) if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ApiError::Unprocessable("operation_id: 1 to 64 printable ASCII characters".into()));
            }
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        Ok((limit, op))
    }

    fn filter(&self) -> Filter {
        Filter {
            status: self.status,
            user: self.user.clone().filter(|u| !u.is_empty()),
            created_before_ms: self
                .older_than
                .filter(|n| *n > 0)
                .map(|n| chrono::Utc::now().timestamp_millis() - n * 1000),
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"status": self.status, "user": self.user, "older_than": self.older_than,
            "ids": self.ids.as_ref().map(Vec::len), "from": self.from})
    }
}

/// Runs `each` on the tasks `req` selects, a page at a time, up to `limit`: their results.
async fn for_selected<F, Fut>(
    state: &AppState,
    req: &BulkRequest,
    limit: usize,
    each: F,
) -> Result<Vec<BulkResult>, ApiError>
where
    F: Fn(TaskRecord) -> Fut,
    Fut: Future<Output = Result<BulkResult, ApiError>>,
{
    let mut results = Vec::new();
    if let Some(ids) = &req.ids {
        for id in ids.iter().take(limit) {
            match state.store.get(*id).await? {
                Some(rec) => results.push(each(rec).await?),
                None => results.push(result(*id, "skipped", Some("no such task".into()))),
            }
        }
        return Ok(results);
    }
    let filter = req.filter();
    let mut cursor = None::<String>;
    loop {
        let page = state.store.list_all(&filter, PAGE.min(limit - results.len()), cursor.as_deref()).await?;
        for rec in page.tasks {
            results.push(each(rec).await?);
        }
        match page.next_cursor {
            Some(c) if results.len() < limit => cursor = Some(c),
            _ => return Ok(results),
        }
    }
}

/// Cancel many tasks: queued and parked ones end at once, running ones stop at their next
/// tick. Bounded by `limit`; `dry_run` changes nothing.
#[utoipa::path(post, path = "/admin/tasks/cancel", tag = "admin", security(("bearer" = [])),
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was done to each task", body = BulkReport),
        crate::openapi::BodyProblems,
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn cancel_many(
    State(state): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<Json<BulkReport>, ApiError> {
    let (limit, op) = req.checked()?;
    let entry = AuditEntry::new(&who, "tasks.cancel", &op, req.dry_run, req.describe());
    audited(
        &state,
        &entry,
        op.clone(),
        req.dry_run,
        for_selected(&state, &req, limit, |rec| {
            let (state, dry) = (state.clone(), req.dry_run);
            async move {
                Ok(if rec.status.is_terminal() {
                    result(rec.id, "skipped", Some(format!("already {}", rec.status)))
                } else if dry {
                    result(rec.id, "would_cancel", None)
                } else {
                    match state.store.cancel(&rec).await? {
                        CancelOutcome::Cancelled => result(rec.id, "cancelled", None),
                        CancelOutcome::Requested => result(rec.id, "cancel_requested", None),
                        CancelOutcome::Terminal(st) => result(rec.id, "skipped", Some(format!("already {st}"))),
                        CancelOutcome::Missing => result(rec.id, "skipped", Some("gone".into())),
                    }
                })
            }
        }),
    )
    .await
}

/// Retry many `failed` or `cancelled` tasks from their checkpoints (or from the start), each
/// admitted again like a submit. Bounded by `limit`; `dry_run` changes nothing.
#[utoipa::path(post, path = "/admin/tasks/retry", tag = "admin", security(("bearer" = [])),
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was done to each task", body = BulkReport),
        crate::openapi::BodyProblems,
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn retry_many(
    State(state): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<Json<BulkReport>, ApiError> {
    let (limit, op) = req.checked()?;
    let entry = AuditEntry::new(&who, "tasks.retry", &op, req.dry_run, req.describe());
    let how = req.from.unwrap_or_default().readmission();
    let work = for_selected(&state, &req, limit, |rec| {
        let (state, dry, op) = (state.clone(), req.dry_run, op.clone());
        async move { retry_one(&state, &rec, how, dry, &op, ("retried", "would_retry")).await }
    });
    audited(&state, &entry, op.clone(), req.dry_run, work).await
}

/// One task of a bulk retry or redrive: re-admitted under `op`, or why not.
async fn retry_one(
    state: &AppState,
    rec: &TaskRecord,
    how: proto::store::Readmission,
    dry: bool,
    op: &str,
    (done, would): (&str, &str),
) -> Result<BulkResult, ApiError> {
    if dry {
        if !matches!(rec.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Ok(result(rec.id, "skipped", Some(format!("is {}", rec.status))));
        }
        return Ok(result(rec.id, would, None));
    }
    // The script decides, so a task this operation already admitted says so whatever its
    // status now.
    Ok(match state.submissions.readmit(rec, how, Some(op)).await {
        Ok(Readmitted::Queued(_)) => result(rec.id, done, None),
        Ok(Readmitted::AlreadyDone(_)) => result(rec.id, "already_done", None),
        // A refusal for this task (quota, state, an expired checkpoint) is its result; a store
        // outage stops the whole call.
        Err(e @ ApiError::Unavailable { .. }) => return Err(e),
        Err(e) => result(rec.id, "skipped", Some(e.to_string())),
    })
}

/// Which dead letters to redrive: `ids`, or the newest `limit` in the index.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default)]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, max_items = 1000)]
    pub ids: Option<Vec<TaskId>>,
    /// Without `ids`: this many of the newest dead letters (1..=1000, default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    #[schema(max_length = 64)]
    pub operation_id: Option<String>,
}

/// Redrive dead letters: each task is retried from its checkpoint (admitted again like a
/// submit); its dead letter is removed from the queue once the new envelope is confirmed. A
/// dead letter whose task already moved on is just removed. `dry_run` changes nothing.
#[utoipa::path(post, path = "/admin/dead-letters/redrive", tag = "admin", security(("bearer" = [])),
    request_body(content = RedriveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was done to each dead letter", body = BulkReport),
        crate::openapi::BodyProblems,
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn redrive(
    State(state): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<RedriveRequest>,
) -> Result<Json<BulkReport>, ApiError> {
    let bulk = BulkRequest {
        ids: req.ids.clone(),
        status: None,
        user: None,
        older_than: None,
        limit: req.limit,
        dry_run: req.dry_run,
        operation_id: req.operation_id.clone(),
        from: None,
    };
    let (limit, op) = bulk.checked()?;
    let entry = AuditEntry::new(&who, "dead_letters.redrive", &op, req.dry_run, bulk.describe());
    let work = redrive_letters(&state, &req, limit, &op);
    audited(&state, &entry, op.clone(), req.dry_run, work).await
}

/// Each selected dead letter: its task retried (or the stale letter dropped), then the letters
/// of those settled taken out of the DLQ.
async fn redrive_letters(
    state: &AppState,
    req: &RedriveRequest,
    limit: usize,
    op: &str,
) -> Result<Vec<BulkResult>, ApiError> {
    let ids: Vec<TaskId> = match &req.ids {
        Some(ids) => ids.iter().take(limit).copied().collect(),
        None => state.store.dead_letters(limit, None).await?.0.into_iter().map(|(id, _)| id).collect(),
    };
    let mut results = Vec::with_capacity(ids.len());
    let mut settled = HashSet::new();
    for id in ids {
        if state.store.dead_letter(id).await?.is_none() {
            results.push(result(id, "skipped", Some("no dead letter for this task".into())));
            continue;
        }
        let rec = state.store.get(id).await?;
        let r = match rec {
            Some(rec) if rec.status == TaskStatus::Failed => {
                retry_one(state, &rec, proto::store::Readmission::Retry, req.dry_run, op, ("redriven", "would_redrive"))
                    .await?
            }
            // Already retried (this call, cut off, or another), or gone: the letter is stale.
            other => {
                result(
                    id,
                    if req.dry_run { "would_drop" } else { "dropped" },
                    Some(other.map_or_else(
                        || "the task's record expired".to_owned(),
                        |r| format!("the task is {}", r.status),
                    )),
                )
            }
        };
        if !req.dry_run && matches!(r.outcome.as_str(), "redriven" | "already_done" | "dropped") {
            settled.insert(id);
        }
        results.push(r);
    }
    if !settled.is_empty() {
        // Only after the new envelopes were published: a crash before this leaves the dead
        // letters in the queue and the index, and a repeated call finds their tasks moved on
        // and drops them.
        let removed = state.dead_letters.remove(&settled).await.map_err(|e| {
            tracing::error!(error.cause_chain = %runtime::telemetry::Chain(e.as_ref()), "dead-letter queue pass failed");
            ApiError::Unavailable { detail: "the task queue is unavailable; the tasks were redriven, repeat the call to remove their dead letters".into(), retry_after: 5 }
        })?;
        for id in &settled {
            state.store.forget_dead_letter(*id).await?;
        }
        tracing::info!(redriven = settled.len(), removed, "dead letters redriven");
    }
    Ok(results)
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<audit::AuditRecord>,
    pub next_cursor: Option<String>,
}

/// Every operator action, newest first.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query, pattern = "^[0-9]+-[0-9]+$")),
    responses(
        (status = 200, description = "A page of the audit stream", body = AuditList),
        (status = 400, description = "Unknown parameter or cursor", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is out of range", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::openapi::AuthProblems,
        crate::openapi::Unavailable,
    ))]
pub async fn audit(
    State(state): State<AppState>,
    _op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AuditList>, ApiError> {
    only_params(&q, &["limit", "cursor"])?;
    let limit = usize::try_from(ranged_param(&q, "limit", 20, 1..=100)?).unwrap_or(20);
    let cursor = q.get("cursor").map(String::as_str);
    if cursor.is_some_and(|c| crate::event_hub::parse_id(c).is_none()) {
        return Err(ApiError::BadRequest("cursor: not an audit entry id".into()));
    }
    let (entries, next_cursor) = audit::page(&state, limit, cursor).await?;
    Ok(Json(AuditList { entries, next_cursor }))
}

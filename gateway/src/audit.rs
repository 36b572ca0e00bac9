//! The operators' audit stream (`audit` in Redis, `GET /admin/audit`): each change an
//! operator asks for is written twice, when it starts (who, what, the selection, dry run or
//! not) and when it is done (the tasks it touched and how), so a call cut off half way still
//! left its start behind.

use redis::AsyncCommands;
use redis::streams::{StreamMaxlen, StreamRangeReply};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;
use crate::state::AppState;

/// Entries kept, about (the stream is trimmed approximately).
const KEEP: usize = 100_000;
/// Task ids written per entry at most (a bulk call touches at most 1000).
const MAX_IDS: usize = 1000;

pub struct AuditEntry {
    operator: String,
    action: &'static str,
    operation_id: String,
    dry_run: bool,
    selection: serde_json::Value,
}

/// One entry as `GET /admin/audit` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// The stream entry id (the cursor).
    pub id: String,
    pub at: String,
    pub operator: String,
    /// `tasks.cancel`, `tasks.retry`, `dead_letters.redrive`.
    pub action: String,
    /// `started` or `finished`.
    pub phase: String,
    pub operation_id: String,
    pub dry_run: bool,
    /// The request's selection (filter, or how many ids).
    #[schema(value_type = Object)]
    pub selection: serde_json::Value,
    /// When finished: each task and its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub results: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(
        operator: &str,
        action: &'static str,
        operation_id: &str,
        dry_run: bool,
        selection: serde_json::Value,
    ) -> Self {
        Self { operator: operator.to_owned(), action, operation_id: operation_id.to_owned(), dry_run, selection }
    }

    async fn write(&self, state: &AppState, phase: &str, results: Option<String>) -> Result<(), ApiError> {
        let mut fields = vec![
            ("at", proto::time::rfc3339(chrono::Utc::now())),
            ("operator", self.operator.clone()),
            ("action", self.action.to_owned()),
            ("phase", phase.to_owned()),
            ("operation_id", self.operation_id.clone()),
            ("dry_run", self.dry_run.to_string()),
            ("selection", self.selection.to_string()),
        ];
        if let Some(r) = results {
            fields.push(("results", r));
        }
        let mut conn = state.redis.clone();
        let _: String = conn
            .xadd_maxlen(state.store.keys().audit(), StreamMaxlen::Approx(KEEP), "*", &fields)
            .await
            .map_err(proto::store::StoreError::from)?;
        Ok(())
    }
}

/// Written before the action touches anything: an action that is not recorded is not done.
pub async fn started(state: &AppState, e: &AuditEntry) -> Result<(), ApiError> {
    e.write(state, "started", None).await
}

/// Written when the action is done, with each task (id) and its outcome.
pub async fn finished<'a>(
    state: &AppState,
    e: &AuditEntry,
    results: impl IntoIterator<Item = (String, &'a str)>,
) -> Result<(), ApiError> {
    let listed: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .take(MAX_IDS)
        .map(|(id, outcome)| (id, serde_json::Value::String(outcome.to_owned())))
        .collect();
    e.write(state, "finished", Some(serde_json::Value::Object(listed).to_string())).await
}

/// A page of the stream, newest first, before `cursor` (an entry id) when given.
pub async fn page(
    state: &AppState,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<AuditRecord>, Option<String>), ApiError> {
    let mut conn = state.redis.clone();
    let end = cursor.map_or_else(|| "+".to_owned(), |c| format!("({c}"));
    let reply: StreamRangeReply = conn
        .xrevrange_count(state.store.keys().audit(), end, "-", limit + 1)
        .await
        .map_err(proto::store::StoreError::from)?;
    let mut entries: Vec<AuditRecord> = reply
        .ids
        .into_iter()
        .map(|e| {
            let get = |k: &str| e.get::<String>(k).unwrap_or_default();
            AuditRecord {
                at: get("at"),
                operator: get("operator"),
                action: get("action"),
                phase: get("phase"),
                operation_id: get("operation_id"),
                dry_run: get("dry_run") == "true",
                selection: serde_json::from_str(&get("selection")).unwrap_or_default(),
                results: e.get::<String>("results").and_then(|r| serde_json::from_str(&r).ok()),
                id: e.id,
            }
        })
        .collect();
    let next = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        entries.last().map(|e| e.id.clone())
    });
    Ok((entries, next.flatten()))
}

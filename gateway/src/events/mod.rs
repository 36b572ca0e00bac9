//! Following a task: its `events:{id}` stream as Server-Sent Events.
//!
//! A follower replays the stream after its resume position, then waits on the [`crate::event_hub`] for
//! more, and ends after the terminal `status` event (the last one: the stream of a task that
//! was retried goes on with its next run; an `incomplete` task's stays open for an extend,
//! until its deadline). Every event carries the stream entry id
//! as its SSE `id`, so `Last-Event-ID` (or `?after=`) resumes exactly after it. A stream
//! also ends at its deadline (`SSE_MAX_SECONDS`, the client reconnects with its last id), at
//! gateway shutdown, and when the client goes away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use proto::{TaskId, TaskRecord};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::AppState;
use crate::streams::StreamSlot;

/// Entries read per `XRANGE`.
const PAGE: usize = 200;
/// A follower re-reads on its own this often even without a notification: the hub is an
/// optimisation, not the only way a follower learns of new entries.
const SAFETY_POLL: Duration = Duration::from_secs(5);
/// What a browser's `EventSource` waits before reconnecting.
const RETRY: Duration = Duration::from_secs(1);
/// The id of the first event, `in_queue`, told from the record: below any real entry's, so
/// resuming after it reads the whole stream.
const ADMITTED_ID: &str = "0-1";

/// The JSON `data` of one event: `event: status` for every status change (the terminal one
/// with `result` and `error`), `event: tick` for each recorded tick.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TaskEvent {
    status: proto::TaskStatus,
    /// When it happened, RFC 3339 UTC.
    at: String,
    /// `tick` events: ticks finished so far.
    tick: Option<u64>,
    /// `tick` events: the action of that tick (`search`, `visit`, `think`, `exit`).
    action: Option<String>,
    /// The delivery (attempt) that wrote the event.
    attempt: Option<u64>,
    /// A cancel was requested while the task ran.
    cancel_requested: Option<bool>,
    /// Terminal `status` events: the result.
    #[schema(value_type = Option<proto::TaskResult>)]
    result: Option<Value>,
    /// Terminal `status` events: why it failed.
    error: Option<String>,
}

/// One Server-Sent Event as it is framed on the wire (the item of the `text/event-stream`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// The stream entry id; send it back as `Last-Event-ID` to resume after it.
    id: Option<String>,
    /// `status`, `tick`, or `error` (the stream broke; reconnect to resume).
    event: String,
    /// JSON: a `TaskEvent` (for `error`: `{"detail": …}`).
    data: String,
    /// Reconnect delay hint, ms (on the first event).
    retry: Option<u64>,
}

/// The events of task `rec` after stream id `after` (`None` = from the start).
pub fn follow(
    state: AppState,
    rec: TaskRecord,
    after: Option<String>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel(64);
    let deadline = Instant::now() + state.settings.sse_max;
    tokio::spawn(async move {
        // The stream's place is given back when its producer ends, whichever way it ends.
        let _slot = slot;
        if let Err(e) = produce(&state, &rec, after, &tx, deadline).await {
            tracing::warn!(correlation_id = %rec.id, error = %e, "event stream ended by a store error");
            let data = json!({"detail": "the task's events are unavailable right now; reconnect to resume"});
            let _ = tx.send(Event::default().event("error").data(data.to_string())).await;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}

async fn produce(
    state: &AppState,
    rec: &TaskRecord,
    mut after: Option<String>,
    tx: &mpsc::Sender<Event>,
    deadline: Instant,
) -> Result<(), redis::RedisError> {
    let key = state.store.keys().events(rec.id);
    let mut conn = state.redis.clone();
    let mut changes = None;
    let mut first = true;
    // From the start: the admission wrote no event (submit.lua), so the first one, `in_queue`
    // at the record's creation, comes from the record, as entry `0-1` (before any real entry),
    // unless the stream itself begins with it (a task adopted from the queue, or admitted
    // before streams started lazily).
    let mut from_record = after.is_none();
    loop {
        let start = after.as_ref().map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let page: StreamRangeReply = conn.xrange_count(&key, &start, "+", PAGE).await?;
        let full = page.ids.len() == PAGE;
        if std::mem::take(&mut from_record)
            && page.ids.first().is_none_or(|e| e.get::<String>("status").as_deref() != Some("in_queue"))
        {
            first = false;
            let data = json!({"status": proto::TaskStatus::InQueue, "at": rec.created_at});
            let event = Event::default().id(ADMITTED_ID).event("status").data(data.to_string()).retry(RETRY);
            if tx.send(event).await.is_err() {
                return Ok(());
            }
            after = Some(ADMITTED_ID.to_owned());
        }
        for entry in page.ids {
            let fields = fields(entry.map);
            let terminal = is_terminal(&fields);
            let mut event = to_event(&entry.id, fields, state, rec.id).await?;
            if first {
                event = event.retry(RETRY);
                first = false;
            }
            if tx.send(event).await.is_err() {
                return Ok(());
            }
            // A terminal event ends the stream unless the task was retried since (a later
            // run's events follow it).
            if terminal {
                let later: StreamRangeReply = conn.xrange_count(&key, format!("({}", entry.id), "+", 1).await?;
                if later.ids.is_empty() {
                    return Ok(());
                }
            }
            after = Some(entry.id);
        }
        if full {
            continue;
        }
        let Some(changed) = changes.as_mut() else {
            // Caught up. The record may have ended with its terminal event gone (trimmed or
            // expired): say how it ended instead of waiting for an event that never comes.
            if let Some(now) = state.store.get(rec.id).await.map_err(store_error)?
                && now.status.is_terminal()
            {
                let _ = tx.send(terminal_from_record(&now)).await;
                return Ok(());
            }
            let position = after.clone().unwrap_or_else(|| "0-0".to_owned());
            changes = Some(state.hub.follow(key.clone(), position));
            // One more read: entries written between the last read and registering.
            continue;
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep(SAFETY_POLL) => {}
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = state.shutdown.cancelled() => return Ok(()),
            () = tx.closed() => return Ok(()),
        }
    }
}

fn store_error(e: proto::store::StoreError) -> redis::RedisError {
    match e {
        proto::store::StoreError::Redis(e) => e,
        other => redis::RedisError::from((redis::ErrorKind::Client, "task record", other.to_string())),
    }
}

fn fields(map: HashMap<String, redis::Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        let Ok(s) = redis::from_redis_value::<String>(v) else { continue };
        let value = match k.as_str() {
            "tick" | "attempt" | "index" => s.parse::<u64>().map(Value::from).unwrap_or(Value::String(s)),
            "cancel_requested" => Value::Bool(s == "1"),
            _ => Value::String(s),
        };
        out.insert(k, value);
    }
    out
}

fn is_terminal(fields: &Map<String, Value>) -> bool {
    fields
        .get("status")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<proto::TaskStatus>().ok())
        .is_some_and(|s| s.is_terminal())
}

/// `tick` for a recorded tick (with its action), `status` for every status change; the
/// terminal `status` event also carries the result and error.
async fn to_event(
    id: &str,
    mut fields: Map<String, Value>,
    state: &AppState,
    task: TaskId,
) -> Result<Event, redis::RedisError> {
    let name = if fields.contains_key("tick") {
        "tick"
    } else if fields.contains_key("message") {
        "message"
    } else {
        "status"
    };
    let stopped = fields.get("status").and_then(Value::as_str) == Some(proto::TaskStatus::Incomplete.as_str());
    if (is_terminal(&fields) || stopped)
        && let Some(rec) = state.store.get(task).await.map_err(store_error)?
    {
        fields.insert("result".into(), rec.result.clone().unwrap_or(Value::Null));
        fields.insert("error".into(), rec.error.clone().map_or(Value::Null, Value::String));
    }
    Ok(Event::default().id(id).event(name).data(Value::Object(fields).to_string()))
}

fn terminal_from_record(rec: &TaskRecord) -> Event {
    let data = json!({
        "status": rec.status,
        "at": rec.finished_at.clone().unwrap_or_else(|| rec.updated_at.clone()),
        "result": rec.result,
        "error": rec.error,
    });
    Event::default().event("status").data(data.to_string())
}

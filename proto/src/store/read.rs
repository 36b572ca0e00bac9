//! Reads: one record, a user's tasks a page at a time, and any user's for the operators.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{StoreError, TaskStore};
use crate::domain::TaskId;
use crate::task::TaskRecord;

/// One page of a user's tasks, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub tasks: Vec<TaskRecord>,
    pub next_cursor: Option<String>,
}

impl TaskStore {
    pub async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let h: HashMap<String, String> = self.conn.clone().hgetall(self.keys.task(id)).await?;
        Ok(TaskRecord::from_hash(id, h)?)
    }

    /// The caller's tasks, newest first. The cursor is `{score}:{id}` of the last item
    /// returned; ties on the millisecond are resolved by id, the set's own order.
    pub async fn list(&self, user_id: &str, limit: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        self.list_filtered(&self.keys.user_tasks(user_id), &Filter::default(), limit, cursor).await
    }

    /// Any user's tasks, newest first, for the operators: from one user's list when
    /// `filter.user` is set, else from every task's. At most [`SCAN_LIMIT`] index entries
    /// are read per call, so a page may come back short with a `next_cursor` to go on from.
    pub async fn list_all(&self, filter: &Filter, limit: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        let key = match &filter.user {
            Some(user) => self.keys.user_tasks(user),
            None => self.keys.all_tasks(),
        };
        self.list_filtered(&key, filter, limit, cursor).await
    }

    async fn list_filtered(
        &self,
        key: &str,
        filter: &Filter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let mut conn = self.conn.clone();
        let mut after = cursor.and_then(parse_cursor);
        if let Some(before) = filter.created_before_ms
            && after.as_ref().is_none_or(|(s, _)| *s >= before)
        {
            // Start below `before` (no id sorts before "", so the score itself is skipped).
            after = Some((before, String::new()));
        }
        let mut tasks = Vec::with_capacity(limit);
        let mut scanned = 0;
        let mut last = None;
        let mut stale = Vec::new();
        loop {
            let want = (limit - tasks.len()).max(1);
            let (ids, more) = ids_after(&mut conn, key, want, after.as_ref()).await?;
            scanned += ids.len();
            // One round trip for the whole batch, not one per task.
            let mut pipe = redis::pipe();
            for (task_id, _, _) in &ids {
                pipe.hgetall(self.keys.task(*task_id));
            }
            let hashes: Vec<HashMap<String, String>> =
                if ids.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
            for ((task_id, id, score), hash) in ids.into_iter().zip(hashes) {
                after = Some((score, id.clone()));
                last = Some(format!("{score}:{id}"));
                match TaskRecord::from_hash(task_id, hash)? {
                    Some(rec) if filter.status.is_none_or(|s| s == rec.status) => tasks.push(rec),
                    Some(_) => {}
                    None => stale.push(id),
                }
            }
            if !more {
                last = None;
                break;
            }
            if tasks.len() >= limit || scanned >= SCAN_LIMIT {
                break;
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.zrem(key, stale).await?;
        }
        Ok(Page { tasks, next_cursor: last })
    }

    pub async fn checkpoint(&self, id: TaskId) -> Result<Option<String>, StoreError> {
        Ok(self.conn.clone().get(self.keys.checkpoint(id)).await?)
    }
}

/// The index entries read per operators' listing call at most.
pub const SCAN_LIMIT: usize = 1000;

/// What the operators' listing selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<crate::task::TaskStatus>,
    pub user: Option<String>,
    /// Only tasks created before this (unix ms).
    pub created_before_ms: Option<i64>,
}

/// Up to `limit` members of sorted set `key` after `after` (`(score, id)`, exclusive),
/// highest score first, as `(id, member, score)`; members that are not task ids are
/// dropped from the set. `true` when there are more.
pub(super) async fn ids_after(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    limit: usize,
    after: Option<&(i64, String)>,
) -> Result<(Vec<(TaskId, String, i64)>, bool), StoreError> {
    let max = after.map_or_else(|| "+inf".to_owned(), |(s, _)| s.to_string());
    let ties: usize = match after {
        Some((score, _)) => conn.zcount(key, *score, *score).await?,
        None => 0,
    };
    let fetched: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg(&max)
        .arg("-inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(limit + ties + 1)
        .query_async(conn)
        .await?;
    let mut junk = Vec::new();
    let mut out = Vec::with_capacity(limit + 1);
    // The set orders equal scores by member, descending; skip up to the cursor.
    for (id, score) in fetched.into_iter().filter(|(id, score)| match after {
        Some((s, last)) => *score < *s || (*score == *s && id.as_str() < last.as_str()),
        None => true,
    }) {
        match id.parse::<TaskId>() {
            Ok(task_id) => out.push((task_id, id, score)),
            Err(_) => junk.push(id),
        }
    }
    if !junk.is_empty() {
        let _: i64 = conn.zrem(key, junk).await?;
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

pub fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (score, id) = c.split_once(':')?;
    id.parse::<TaskId>().ok()?;
    Some((score.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parsing_rejects_garbage() {
        assert!(parse_cursor("12:6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11").is_some());
        assert!(parse_cursor("x:6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11").is_none());
        assert!(parse_cursor("12:nope").is_none());
        assert!(parse_cursor("").is_none());
    }
}

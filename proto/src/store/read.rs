//! Reads: one record, and a user's tasks a page at a time.

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
        let key = self.keys.user_tasks(user_id);
        let mut conn = self.conn.clone();
        let (max, after) = match cursor.and_then(parse_cursor) {
            Some((score, id)) => (score.to_string(), Some((score, id))),
            None => ("+inf".to_owned(), None),
        };
        let ties: usize = match &after {
            Some((score, _)) => conn.zcount(&key, *score, *score).await?,
            None => 0,
        };
        let fetched: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&key)
            .arg(&max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + ties + 1)
            .query_async(&mut conn)
            .await?;
        let candidates = fetched.into_iter().filter(|(id, score)| match &after {
            // The set orders equal scores by member, descending; skip up to the cursor.
            Some((s, last)) => *score < *s || (*score == *s && id.as_str() < last.as_str()),
            None => true,
        });
        let mut stale = Vec::new();
        let mut page = Vec::new();
        for (id, score) in candidates {
            match id.parse::<TaskId>() {
                Ok(task_id) => page.push((task_id, id, score)),
                Err(_) => stale.push(id),
            }
        }
        // One round trip for the whole page, not one per task.
        let mut pipe = redis::pipe();
        for (task_id, _, _) in &page {
            pipe.hgetall(self.keys.task(*task_id));
        }
        let hashes: Vec<HashMap<String, String>> =
            if page.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
        let mut tasks = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for ((task_id, id, score), hash) in page.into_iter().zip(hashes) {
            if tasks.len() == limit {
                more = true;
                break;
            }
            match TaskRecord::from_hash(task_id, hash)? {
                Some(rec) => {
                    last = Some(format!("{score}:{id}"));
                    tasks.push(rec);
                }
                None => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.zrem(&key, stale).await?;
        }
        Ok(Page { tasks, next_cursor: if more { last } else { None } })
    }

    pub async fn checkpoint(&self, id: TaskId) -> Result<Option<String>, StoreError> {
        Ok(self.conn.clone().get(self.keys.checkpoint(id)).await?)
    }
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

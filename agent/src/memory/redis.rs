//! The Redis memory store: one list per task (`memory:{id}`), searched exactly inside the
//! agent. A task makes a few hundred memories at most, so reading them all and scoring
//! every one costs less than a round trip to a vector database, the answer is exact, and
//! a task resumed on another agent finds its memories where it left them. Every memory is
//! ranked twice, by cosine and by BM25 over the task's own memories (its IDF is this task's,
//! not a global corpus's), and the ranks fused ([`lexical::rrf`]).
//!
//! The list carries the task record's TTL, refreshed on each write, so memories of a task
//! that ends without the agent (the reconciler fails it) still expire with the task. When
//! the agent ends it, its terminal write (claim or finish script) deletes the list, or
//! sets its retention, in the same step: no separate `DEL`, no window where a crash after
//! the terminal write leaves it behind.

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proto::{Keys, TaskId};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::{Kind, MemoryError, NewMemory, RecallQuery, Recalled, Scope, VectorStore, lexical};
use crate::embedding::cosine;

/// The newest entries kept per task; older ones are trimmed on write.
pub const MAX_ENTRIES: isize = 1000;

/// One stored memory. The vector is base64 of little-endian `f32`s: a quarter the size of
/// a JSON array of floats.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    text: String,
    kind: Kind,
    tick: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    correlation_id: String,
    user_id: String,
    vector: String,
}

fn encode(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

fn decode(s: &str) -> Result<Vec<f32>, MemoryError> {
    let bytes = STANDARD.decode(s).map_err(|e| MemoryError::Corrupt(e.to_string()))?;
    if bytes.len() % 4 != 0 {
        return Err(MemoryError::Corrupt("vector length is not a multiple of 4 bytes".into()));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    ttl: Duration,
}

impl RedisStore {
    /// `ttl` is the task record's (`TASK_RECORD_TTL_SECONDS`).
    pub fn new(conn: ConnectionManager, keys: Keys, ttl: Duration) -> Self {
        Self { conn, keys, ttl }
    }
}

/// The `k` best of `scored` (index, score) by score, ties broken by insertion order.
pub fn top_k(mut scored: Vec<(usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    scored.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[async_trait]
impl VectorStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn add(&self, scope: &Scope, items: Vec<(NewMemory, Vec<f32>)>) -> Result<(), MemoryError> {
        if items.is_empty() {
            return Ok(());
        }
        let key = self.keys.memory(scope.task);
        let entries: Vec<String> = items
            .into_iter()
            .map(|(m, v)| {
                serde_json::to_string(&Entry {
                    text: m.text,
                    kind: m.kind,
                    tick: m.tick,
                    url: m.url,
                    correlation_id: scope.task.to_string(),
                    user_id: scope.user.clone(),
                    vector: encode(&v),
                })
                .map_err(|e| MemoryError::Corrupt(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let _: () = redis::pipe()
            .atomic()
            .rpush(&key, entries)
            .ignore()
            .ltrim(&key, -MAX_ENTRIES, -1)
            .ignore()
            .expire(&key, ttl)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn search(&self, scope: &Scope, query: RecallQuery<'_>, k: usize) -> Result<Vec<Recalled>, MemoryError> {
        let raw: Vec<String> = self.conn.clone().lrange(self.keys.memory(scope.task), 0, -1).await?;
        let task = scope.task.to_string();
        let mut entries = Vec::with_capacity(raw.len());
        for r in raw {
            let e: Entry = match serde_json::from_str(&r) {
                Ok(e) => e,
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an unreadable memory entry");
                    continue;
                }
            };
            // The key is per task already; checking both fields again means a bug elsewhere
            // can never hand one user's memories to another.
            if e.correlation_id == task && e.user_id == scope.user {
                entries.push(e);
            }
        }
        let mut similar = Vec::with_capacity(entries.len());
        for e in &entries {
            similar.push(Some(cosine(query.vector, &decode(&e.vector)?)));
        }
        let docs: Vec<Vec<String>> = entries.iter().map(|e| lexical::tokens(&e.text)).collect();
        // The lexical side retrieves only memories that share a word with the query, as a
        // keyword search would; the others keep their vector rank alone. A query sharing no
        // word with any memory therefore ranks exactly as the vector does.
        let matched = lexical::bm25(&docs, &lexical::tokens(query.text)).into_iter().map(|s| (s > 0.0).then_some(s));
        let fused = lexical::rrf(&[similar, matched.collect()], entries.len());
        Ok(top_k(fused.into_iter().enumerate().collect(), k)
            .into_iter()
            .map(|(i, score)| {
                let e = &entries[i];
                Recalled { text: e.text.clone(), kind: e.kind, tick: e.tick, url: e.url.clone(), score }
            })
            .collect())
    }

    fn beside_the_task(&self) -> bool {
        true
    }

    async fn forget(&self, task: TaskId, retain: Option<Duration>) -> Result<(), MemoryError> {
        let key = self.keys.memory(task);
        let mut conn = self.conn.clone();
        match retain {
            None => {
                let _: i64 = conn.del(&key).await?;
            }
            Some(d) => {
                let _: bool = conn.expire(&key, i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_top_k_orders() {
        let v = vec![0.25f32, -1.5, 3.0e-7, f32::MAX];
        assert_eq!(decode(&encode(&v)).expect("decode"), v);
        assert!(decode("AAA=").is_err());
        let got = top_k(vec![(0, 0.1), (1, 0.9), (2, 0.9), (3, -0.2)], 3);
        assert_eq!(got, vec![(1, 0.9), (2, 0.9), (0, 0.1)]);
    }
}

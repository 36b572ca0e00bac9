//! The fleet's history for the console: every metrics-sidecar sample appended to the Redis
//! stream `metrics:samples` (bounded to about a day), read back by the gateway's
//! `GET /ops/samples`. A reading the sidecar could not make is left out of its sample, never
//! written as zero.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::keys::Keys;

/// One sample: the queue and the fleet at `at` (unix ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    /// Unix ms.
    pub at: i64,
    /// Messages ready in the input queue.
    pub ready: Option<u64>,
    /// Tasks running in agents.
    pub in_flight: Option<u64>,
    /// Live agents.
    pub workers: Option<u64>,
    /// Agents running at least one task.
    pub busy: Option<u64>,
    /// Messages in the dead-letter queue.
    pub dead_letter: Option<u64>,
}

const FIELDS: [&str; 5] = ["ready", "in_flight", "workers", "busy", "dead_letter"];

impl Sample {
    fn values(&self) -> [Option<u64>; 5] {
        [self.ready, self.in_flight, self.workers, self.busy, self.dead_letter]
    }
}

/// Appends `s`, keeping about `keep` samples.
pub async fn append(conn: &mut ConnectionManager, keys: &Keys, s: &Sample, keep: usize) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys.metrics_samples()).arg("MAXLEN").arg("~").arg(keep).arg(format!("{}-*", s.at.max(0)));
    cmd.arg("at").arg(s.at);
    for (name, v) in FIELDS.iter().zip(s.values()) {
        if let Some(v) = v {
            cmd.arg(*name).arg(v);
        }
    }
    cmd.query_async::<String>(conn).await.map(|_| ())
}

/// The samples taken at or after `since_ms`, oldest first, at most `max`.
pub async fn since(
    conn: &mut ConnectionManager,
    keys: &Keys,
    since_ms: i64,
    max: usize,
) -> redis::RedisResult<Vec<Sample>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.metrics_samples())
        .arg(since_ms.max(0))
        .arg("+")
        .arg("COUNT")
        .arg(max)
        .query_async(conn)
        .await?;
    Ok(reply.ids.into_iter().map(|e| parse(&e.map)).collect())
}

fn parse(map: &HashMap<String, redis::Value>) -> Sample {
    let num = |k: &str| {
        map.get(k).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok()).and_then(|s| s.parse::<i64>().ok())
    };
    let count = |k: &str| num(k).and_then(|n| u64::try_from(n).ok());
    Sample {
        at: num("at").unwrap_or(0),
        ready: count("ready"),
        in_flight: count("in_flight"),
        workers: count("workers"),
        busy: count("busy"),
        dead_letter: count("dead_letter"),
    }
}

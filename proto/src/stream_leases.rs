//! Per-user leases on open event streams (`streams:{sub}`), so one user's limit holds across
//! every gateway replica. A stream takes a lease when it opens, renews it while it runs and
//! gives it back when it ends; a gateway killed with streams open leaves leases that expire
//! after [`LEASE`], so a crash costs the user at most that long of a smaller allowance.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::keys::Keys;
use crate::lua::Lua;

static OPEN: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/stream_lease.lua")));
static RENEW: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/stream_renew.lua")));

/// How long a lease lives without renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// Renewed this often, well inside [`LEASE`], so a slow Redis call does not lose it.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct StreamLeases {
    conn: ConnectionManager,
    keys: Keys,
}

impl StreamLeases {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// Takes a lease for stream `id` of `sub` if they hold fewer than `limit`; `false` if not.
    pub async fn open(&self, sub: &str, id: &str, limit: usize) -> redis::RedisResult<bool> {
        let opened: i64 = OPEN
            .key(self.keys.streams(sub))
            .arg(id)
            .arg(limit)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(opened == 1)
    }

    /// Extends the lease; `false` if it had already expired.
    pub async fn renew(&self, sub: &str, id: &str) -> redis::RedisResult<bool> {
        let renewed: i64 = RENEW
            .key(self.keys.streams(sub))
            .arg(id)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(renewed == 1)
    }

    pub async fn close(&self, sub: &str, id: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM").arg(self.keys.streams(sub)).arg(id).query_async(&mut self.conn.clone()).await
    }
}

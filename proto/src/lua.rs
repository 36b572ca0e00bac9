//! Lua scripts run by hash, with a NOSCRIPT fallback that costs one round trip.
//!
//! `redis::Script` answers NOSCRIPT with `SCRIPT LOAD` and a second `EVALSHA`: three round
//! trips on the first call after a Redis restart or failover (whose script cache is empty),
//! which under a slow Redis turned a short undo into a timeout. Here NOSCRIPT is answered
//! with one `EVAL` of the source, which also caches the script for the next `EVALSHA`.
//! [`load_all`] fills the cache when a process connects.

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

#[derive(Debug)]
pub struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    pub fn new(code: &str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_owned();
        Self { code: code.to_owned(), hash }
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation { lua: self, keys: Vec::new(), args: Vec::new() }
    }

    pub fn key<T: ToRedisArgs>(&self, key: T) -> Invocation<'_> {
        let mut inv = self.prepare_invoke();
        inv.key(key);
        inv
    }
}

/// Keys and arguments of one call; the same builder shape as `redis::ScriptInvocation`.
pub struct Invocation<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn command(&self, verb: &str, body: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(self.keys.len()).arg(&*self.keys).arg(&*self.args);
        cmd
    }

    pub async fn invoke_async<T: FromRedisValue>(&self, con: &mut impl ConnectionLike) -> RedisResult<T> {
        match self.command("EVALSHA", self.lua.hash.as_bytes()).query_async(con).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                metrics::counter!("redis_script_cache_misses_total").increment(1);
                self.command("EVAL", self.lua.code.as_bytes()).query_async(con).await
            }
            other => other,
        }
    }
}

/// Loads every script into Redis's cache, in one pipelined round trip.
pub async fn load_all(scripts: &[&Lua], con: &mut impl ConnectionLike) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    for s in scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(s.code.as_bytes()).ignore();
    }
    pipe.query_async::<()>(con).await
}

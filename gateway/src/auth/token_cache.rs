//! Tokens that passed verification, so a client that sends the same token on every request
//! pays for its signature once: an ES256 or RS256 verification costs tens of microseconds,
//! HS256 a few (about 4 % of the gateway's CPU per `POST /tasks` under load, `perf`), a
//! lookup well under one.
//!
//! A hit must answer exactly what verifying again would. Besides the signature, every check
//! in [`super::Verifier`] is a pure function of the token and settings fixed at start, except
//! two: time (`exp`; `nbf` only ever turns from refused to accepted) and the signing keys (a
//! JWKS refresh can drop a key). So an entry answers only while its `exp` still passes, with
//! the verifier's leeway (given at construction, so this module needs nothing of the
//! verifier's), and only under the key-set generation it was verified against.
//! Refusals are not kept: a bad token costs its full verification every time.
//!
//! Keyed by the token's SHA-256, so the cache holds no credential, and bounded; entries
//! also leave on their own once the token has expired.

use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::verifier::Identity;

/// Distinct live tokens kept: a few MB at most, far more users than one gateway serves at once.
pub const MAX_ENTRIES: u64 = 10_000;

type Key = [u8; 32];

#[derive(Clone)]
struct Verified {
    who: Identity,
    /// The token's `exp` (Unix seconds).
    exp: i64,
    /// The key-set generation the signature was checked against.
    generation: u64,
}

pub struct TokenCache {
    entries: Cache<Key, Verified>,
    /// The verifier's leeway on `exp`, in seconds.
    leeway: i64,
}

/// Removes an entry once its token is past `exp` + leeway, when no lookup can use it.
struct UntilExpired {
    leeway: i64,
}

impl Expiry<Key, Verified> for UntilExpired {
    fn expire_after_create(&self, _: &Key, v: &Verified, _: Instant) -> Option<Duration> {
        let left = v.exp.saturating_add(self.leeway).saturating_sub(chrono::Utc::now().timestamp());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

impl TokenCache {
    /// At most `max_entries` tokens, each answered while its `exp` + `leeway_seconds` passes.
    pub fn new(max_entries: u64, leeway_seconds: u64) -> Self {
        let leeway = i64::try_from(leeway_seconds).unwrap_or(i64::MAX);
        let entries = Cache::builder().max_capacity(max_entries).expire_after(UntilExpired { leeway }).build();
        Self { entries, leeway }
    }

    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The user of a token verified under `generation` that has not expired at `now` (Unix seconds).
    pub fn get(&self, key: &Key, generation: u64, now: i64) -> Option<Identity> {
        let v = self.entries.get(key)?;
        // The same test as jsonwebtoken's: expired when exp < now - leeway.
        if v.generation != generation || v.exp < now - self.leeway {
            self.entries.invalidate(key);
            return None;
        }
        Some(v.who)
    }

    pub fn insert(&self, key: Key, who: &Identity, exp: i64, generation: u64) {
        self.entries.insert(key, Verified { who: who.clone(), exp, generation });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEEWAY_SECONDS: u64 = 30;

    fn who(sub: &str) -> Identity {
        Identity { sub: sub.to_owned(), operator: false }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_hit_answers_until_the_token_expires_with_the_leeway() {
        let cache = TokenCache::new(10, LEEWAY_SECONDS);
        let k = TokenCache::key("a.b.c");
        let t = now();
        cache.insert(k, &who("alice"), t + 60, 0);
        assert_eq!(cache.get(&k, 0, t).map(|w| w.sub), Some("alice".to_owned()));
        assert_eq!(
            cache.get(&k, 0, t + 60 + LEEWAY_SECONDS as i64).map(|w| w.sub),
            Some("alice".to_owned()),
            "last second"
        );
        assert_eq!(cache.get(&k, 0, t + 61 + LEEWAY_SECONDS as i64), None, "expired");
        assert_eq!(cache.get(&k, 0, t), None, "an expired entry is gone, not kept for an earlier clock");
    }

    #[test]
    fn a_new_key_set_generation_misses() {
        let cache = TokenCache::new(10, LEEWAY_SECONDS);
        let k = TokenCache::key("a.b.c");
        cache.insert(k, &who("alice"), now() + 60, 3);
        assert_eq!(cache.get(&k, 4, now()), None);
        assert_eq!(cache.get(&k, 3, now()), None, "and the stale entry is dropped");
    }

    #[test]
    fn tokens_are_told_apart_by_their_whole_text() {
        let cache = TokenCache::new(10, LEEWAY_SECONDS);
        cache.insert(TokenCache::key("a.b.c"), &who("alice"), now() + 60, 0);
        assert_eq!(cache.get(&TokenCache::key("a.b.d"), 0, now()), None);
        assert_eq!(cache.get(&TokenCache::key("a.b.c "), 0, now()), None);
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = TokenCache::new(100, LEEWAY_SECONDS);
        for i in 0..1_000 {
            cache.insert(TokenCache::key(&format!("token-{i}")), &who("u"), now() + 60, 0);
        }
        cache.entries.run_pending_tasks();
        assert!(cache.entries.entry_count() <= 100, "{} entries", cache.entries.entry_count());
    }
}

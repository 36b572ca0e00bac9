//! Asymmetric signing keys: a JWKS fetched from `SUPABASE_JWKS_URL` (or one static JWK).
//!
//! Guarantees:
//! - a request never waits on the JWKS server except to look up a `kid` it does not know,
//!   and then at most [`FETCH_TIMEOUT`] (well inside the request deadline);
//! - an unknown `kid` refetches the set at most once per [`MISS_REFETCH_INTERVAL`];
//!   concurrent misses share that one fetch;
//! - the set is refreshed every `JWKS_CACHE_SECONDS` (≤ 10 min) in the background; a failed
//!   refresh keeps the last good set, is logged and counted
//!   (`gateway_jwks_refresh_failures_total`), and is retried with backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use runtime::lifecycle::Stage;

/// Bound on one JWKS fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Unknown `kid`s refetch the set at most this often, so a flood of forged kids cannot
/// turn into a flood of requests to the key server.
pub const MISS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// JWKS documents are a few keys; anything larger is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the JWKS failed: {0}")]
    Fetch(#[from] reqwest::Error),
    #[error("the JWKS server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the JWKS is too large")]
    TooLarge,
    #[error("the JWKS is not a valid key set: {0}")]
    Parse(#[from] serde_json::Error),
}

/// Why a token's key could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    UnknownKid,
    /// The key exists but is not for this algorithm (e.g. an RSA key named by an ES256 token).
    WrongKeyType,
}

struct Key {
    decoding: DecodingKey,
    params: AlgorithmParameters,
    alg: Option<KeyAlgorithm>,
}

type KeyMap = HashMap<String, Arc<Key>>;

pub struct Jwks {
    url: Option<String>,
    http: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    /// Bumped on every replacement of `keys`, so a waiting miss can tell a fetch happened.
    generation: AtomicU64,
    /// Held while a miss refetches; the time of the last miss-triggered fetch.
    last_miss_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// A set fetched from `url`; empty until the first fetch ([`Jwks::refresh`]).
    pub fn remote(url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self::with(Some(url), http, KeyMap::new())
    }

    /// One static key (`SUPABASE_JWT_PUBLIC_JWK`).
    pub fn fixed(jwk: &Jwk) -> Result<Self, jsonwebtoken::errors::Error> {
        let set = JwkSet { keys: vec![jwk.clone()] };
        let keys = key_map(&set);
        if keys.is_empty() {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
        }
        Ok(Self::with(None, reqwest::Client::new(), keys))
    }

    fn with(url: Option<String>, http: reqwest::Client, keys: KeyMap) -> Self {
        Self {
            url,
            http,
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            last_miss_fetch: tokio::sync::Mutex::new(None),
        }
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Option<Result<DecodingKey, KeyMiss>> {
        let keys = self.snapshot();
        let key = keys.get(kid)?;
        Some(if fits(key, alg) { Ok(key.decoding.clone()) } else { Err(KeyMiss::WrongKeyType) })
    }

    /// Bumped each time a fetched set replaces the one in use.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The key named `kid`, fit for `alg`; refetches the set once on a miss (rate-limited).
    pub async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, KeyMiss> {
        let seen = self.generation.load(Ordering::Acquire);
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        if self.url.is_none() {
            return Err(KeyMiss::UnknownKid);
        }
        let mut last = self.last_miss_fetch.lock().await;
        // Another miss (or the refresher) replaced the set while we waited: use that.
        if self.generation.load(Ordering::Acquire) != seen {
            return self.lookup(kid, alg).unwrap_or(Err(KeyMiss::UnknownKid));
        }
        if last.is_some_and(|t| t.elapsed() < MISS_REFETCH_INTERVAL) {
            return Err(KeyMiss::UnknownKid);
        }
        *last = Some(Instant::now());
        metrics::counter!("gateway_jwks_fetches_total", "reason" => "unknown_kid").increment(1);
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; keeping the last good set");
        }
        drop(last);
        self.lookup(kid, alg).unwrap_or(Err(KeyMiss::UnknownKid))
    }

    /// Fetches the set and replaces the cached one; on failure the cached set stays.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let Some(url) = &self.url else { return Ok(self.snapshot().len()) };
        let fetched = self.fetch(url).await;
        match fetched {
            Ok(set) => {
                let keys = key_map(&set);
                let n = keys.len();
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Arc::new(keys);
                }
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::debug!(keys = n, "JWKS loaded");
                Ok(n)
            }
            Err(e) => {
                metrics::counter!("gateway_jwks_refresh_failures_total").increment(1);
                Err(e)
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, JwksError> {
        let resp = self.http.get(url).header("accept", "application/json").send().await?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(JwksError::TooLarge);
        }
        let body = resp.bytes().await?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Refreshes every `every` until `stage` stops (the first time after `every`, or after 1 s when
    /// the set is not `loaded` yet); after a failure retries sooner (1 s doubling, capped at
    /// `every`), so a key server that was down is picked up quickly.
    pub fn spawn_refresher(self: Arc<Self>, every: Duration, loaded: bool, stage: &Stage) {
        if self.url.is_none() {
            return;
        }
        let stop = stage.token();
        stage.spawn(async move {
            let mut retry = Duration::from_secs(1);
            let first = if loaded { every } else { retry };
            tokio::select! {
                () = tokio::time::sleep(first) => {}
                () = stop.cancelled() => return,
            }
            loop {
                let wait = match self.refresh().await {
                    Ok(n) => {
                        retry = Duration::from_secs(1);
                        tracing::debug!(keys = n, "JWKS refreshed");
                        every
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_s = retry.as_secs(), "JWKS refresh failed; keeping the last good set");
                        let w = retry.min(every);
                        retry = (retry * 2).min(every);
                        w
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

/// The usable verification keys of a set, by `kid`. Keys without a `kid`, encryption keys
/// and keys `jsonwebtoken` cannot load are skipped (and logged): they can verify nothing.
fn key_map(set: &JwkSet) -> KeyMap {
    let mut map = KeyMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
            tracing::warn!("JWKS key without a kid skipped");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            // A shared secret has no business in a public key set.
            tracing::warn!(kid, "symmetric key in the JWKS skipped");
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(decoding) => {
                map.insert(
                    kid,
                    Arc::new(Key { decoding, params: jwk.algorithm.clone(), alg: jwk.common.key_algorithm }),
                );
            }
            Err(e) => tracing::warn!(kid, error = %e, "unusable JWKS key skipped"),
        }
    }
    map
}

/// The algorithm must match the key type (and the key's own `alg`, when it names one).
fn fits(key: &Key, alg: Algorithm) -> bool {
    let type_ok = match (&key.params, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => okp.curve == EllipticCurve::Ed25519,
        _ => false,
    };
    let alg_ok = match key.alg {
        None => true,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
        Some(_) => false,
    };
    type_ok && alg_ok
}

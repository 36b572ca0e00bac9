//! Gateway settings, parsed in full from the environment before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use proto::store::Limits;
use runtime::config::{ConfigError, Env};
use runtime::serve::EdgeSettings;
use runtime::settings::CommonSettings;
use secrecy::{ExposeSecret, SecretString};

use crate::webhooks::WebhookSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub common: CommonSettings,
    pub auth: AuthSettings,
    /// Per-user admission limits, as the store's submit script takes them (all enforced in one
    /// Redis script, so they hold across replicas): `DAILY_TICK_LIMIT`,
    /// `SUBMIT_RATE_PER_MINUTE`, `SUBMIT_BURST`, `MAX_ACTIVE_TASKS_PER_USER`,
    /// `IDEMPOTENCY_TTL_SECONDS`.
    pub admission: Limits,
    pub max_mandate_chars: usize,
    pub max_ticks_limit: u32,
    pub default_max_ticks: u32,
    /// The most tokens a task may ask for (`MAX_TASK_TOKENS`).
    pub max_task_tokens: u64,
    /// The budget of a task that asks for none (`DEFAULT_TASK_MAX_TOKENS`); 0 = no budget.
    pub default_task_max_tokens: u64,
    pub max_body_bytes: usize,
    pub publish_timeout: Duration,
    pub request_timeout: Duration,
    pub reconciler: ReconcilerSettings,
    pub edge: EdgeSettings,
    /// `SSE_KEEPALIVE_SECONDS`: a comment on idle event streams this often (load balancers
    /// drop streams idle for 60 s).
    pub sse_keepalive: Duration,
    /// `SSE_MAX_SECONDS`: an event stream ends after this long; the client resumes with
    /// `Last-Event-ID`.
    pub sse_max: Duration,
    /// Event streams (`GET /tasks/{id}/events`) one user may hold at once, across replicas.
    pub sse_max_streams_per_user: usize,
    /// Event streams this gateway serves at once, for everyone: a share of the connection cap,
    /// so streams never take every connection.
    pub sse_max_streams: usize,
    /// Connections served past `GATEWAY_MAX_CONNECTIONS` for health checks only.
    pub probe_reserve: usize,
    /// `OPS_SAMPLES_CACHE_SECONDS`: how long one read of the fleet samples answers
    /// `GET /ops/samples` (the sidecar writes one sample per interval).
    pub samples_cache: Duration,
    /// Task-end webhooks; `None` without `WEBHOOK_SECRET` (then `webhook_url` is refused).
    pub webhooks: Option<WebhookSettings>,
    /// `CONSOLE_DEV_TOKENS`: `POST /dev/token` mints HS256 tokens for anyone. Local use only.
    pub console_dev_tokens: bool,
    /// `MCP_SERVERS` / `MCP_SERVERS_FILE`: the tool servers a task may choose from.
    pub mcp: runtime::mcp::McpServers,
}

/// Where signing keys come from and which claims a token must carry.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `SUPABASE_JWKS_URL`, or derived from `SUPABASE_URL`.
    pub jwks_url: Option<String>,
    /// `SUPABASE_JWT_PUBLIC_JWK`: one static key instead of a URL.
    pub public_jwk: Option<Jwk>,
    /// `SUPABASE_JWT_SECRET` then `SUPABASE_JWT_SECRET_PREVIOUS` (HS256, legacy).
    pub hs256_secrets: Vec<SecretString>,
    pub audience: String,
    pub issuer: Option<String>,
    pub allow_anonymous: bool,
    /// How long a fetched key set is used before it is fetched again (≤ 10 min).
    pub jwks_cache: Duration,
    /// `OPERATOR_CLAIM` (`path.to.claim=value`, default `app_metadata.euglena_role=operator`;
    /// `none`: nobody is an operator).
    pub operator_claim: Option<OperatorClaim>,
}

/// HS256 secrets shorter than this are guessable; Supabase's are 40+ characters.
pub const MIN_SECRET_BYTES: usize = 32;
/// Supabase caches its JWKS for 10 minutes at the edge; we never use a set for longer.
pub const MAX_JWKS_CACHE_SECONDS: u64 = 600;

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_ticks_limit = env.ranged("MAX_TICKS_LIMIT", 200, 1..=proto::envelope::MAX_ENVELOPE_TICKS)?;
        let default_max_ticks = env.ranged("DEFAULT_MAX_TICKS", 50u32.min(max_ticks_limit), 1..=max_ticks_limit)?;
        let publish_timeout = env.millis("PUBLISH_TIMEOUT_MS", 5000)?;
        let max_task_tokens = env.ranged("MAX_TASK_TOKENS", 2_000_000, 1..=1_000_000_000_000)?;
        let request_timeout = env.seconds("REQUEST_TIMEOUT_SECONDS", 10)?;
        if request_timeout <= publish_timeout {
            return Err(ConfigError::new("REQUEST_TIMEOUT_SECONDS", "must be longer than PUBLISH_TIMEOUT_MS"));
        }
        let common = CommonSettings::from_env(env)?;
        let max_connections = env.ranged("GATEWAY_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?;
        let edge = EdgeSettings {
            header_timeout: common.http_header_timeout,
            max_connections,
            max_connections_per_peer: env.ranged("GATEWAY_MAX_CONNECTIONS_PER_PEER", 256, 0..=1_000_000)?,
            trusted_proxies: trusted_proxies(env)?,
        };
        let sse_max_streams = env.ranged("SSE_MAX_STREAMS", (max_connections / 2).max(1), 1..=max_connections)?;
        Ok(Self {
            addr: env.parse("GATEWAY_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            common,
            auth: AuthSettings::from_env(env)?,
            admission: Limits {
                daily_ticks: env.parse("DAILY_TICK_LIMIT", 256)?,
                rate_per_minute: env.ranged("SUBMIT_RATE_PER_MINUTE", 60, 0..=60_000)?,
                burst: env.ranged("SUBMIT_BURST", 10, 1..=10_000)?,
                max_active: env.ranged("MAX_ACTIVE_TASKS_PER_USER", 20, 0..=100_000)?,
                idempotency_ttl: env.seconds("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)?,
                daily_tokens: env.parse("DAILY_TOKEN_LIMIT", 0)?,
                token_estimate: env.ranged("TASK_TOKEN_ESTIMATE", 50_000, 0..=1_000_000_000)?,
                checkpoint_retention: env.seconds("CHECKPOINT_RETENTION_SECONDS", 7 * 24 * 3600)?,
            },
            max_task_tokens,
            default_task_max_tokens: env.ranged("DEFAULT_TASK_MAX_TOKENS", 0, 0..=max_task_tokens)?,
            max_mandate_chars: env.ranged(
                "MAX_MANDATE_CHARS",
                8000,
                1..=proto::envelope::MAX_ENVELOPE_MANDATE_CHARS,
            )?,
            max_ticks_limit,
            default_max_ticks,
            max_body_bytes: env.ranged("MAX_BODY_BYTES", 64 * 1024, 1024..=16 * 1024 * 1024)?,
            publish_timeout,
            request_timeout,
            reconciler: ReconcilerSettings::from_env(env)?,
            edge,
            sse_keepalive: Duration::from_secs(env.ranged("SSE_KEEPALIVE_SECONDS", 15, 1..=15)?),
            sse_max: Duration::from_secs(env.ranged("SSE_MAX_SECONDS", 600, 1..=86_400)?),
            sse_max_streams_per_user: env.ranged("SSE_MAX_STREAMS_PER_USER", 8, 1..=10_000)?,
            sse_max_streams,
            probe_reserve: env.ranged("GATEWAY_PROBE_RESERVE", 32, 1..=10_000)?,
            samples_cache: Duration::from_secs(env.ranged("OPS_SAMPLES_CACHE_SECONDS", 10, 1..=300)?),
            webhooks: WebhookSettings::from_env(env)?,
            console_dev_tokens: env.bool("CONSOLE_DEV_TOKENS", false)?,
            mcp: runtime::mcp::McpServers::from_env(env)?,
        })
    }
}

/// The claim that makes a token an operator's: the value at a dotted path of the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorClaim {
    pub path: Vec<String>,
    pub value: String,
}

impl OperatorClaim {
    /// `path.to.claim=value` (e.g. `app_metadata.euglena_role=operator`).
    pub fn parse(raw: &str) -> Option<Self> {
        let (path, value) = raw.split_once('=')?;
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        (!value.is_empty() && path.iter().all(|p| !p.is_empty())).then(|| Self { path, value: value.to_owned() })
    }

    pub fn holds(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        let Some((first, rest)) = self.path.split_first() else { return false };
        let mut v = claims.get(first);
        for p in rest {
            v = v.and_then(|x| x.get(p));
        }
        v.and_then(serde_json::Value::as_str) == Some(self.value.as_str())
    }
}

fn operator_claim(env: &Env) -> Result<Option<OperatorClaim>, ConfigError> {
    match env.opt_string("OPERATOR_CLAIM") {
        None => Ok(OperatorClaim::parse("app_metadata.euglena_role=operator")),
        Some(raw) if raw == "none" => Ok(None),
        Some(raw) => OperatorClaim::parse(raw.trim()).map(Some).ok_or_else(|| {
            ConfigError::new("OPERATOR_CLAIM", "must be path.to.claim=value, e.g. app_metadata.euglena_role=operator")
        }),
    }
}

impl AuthSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let supabase_url = env.opt_string("SUPABASE_URL").map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &supabase_url {
            check_http_url("SUPABASE_URL", u)?;
        }
        let jwks_url = match env.opt_string("SUPABASE_JWKS_URL") {
            Some(u) => Some(check_http_url("SUPABASE_JWKS_URL", &u)?),
            None => supabase_url.as_ref().map(|u| format!("{u}/auth/v1/.well-known/jwks.json")),
        };
        let public_jwk = env
            .opt_string("SUPABASE_JWT_PUBLIC_JWK")
            .map(|raw| {
                let jwk: Jwk = serde_json::from_str(&raw)
                    .map_err(|e| ConfigError::new("SUPABASE_JWT_PUBLIC_JWK", format!("not a JWK: {e}")))?;
                if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::new(
                        "SUPABASE_JWT_PUBLIC_JWK",
                        "the key needs a \"kid\" (tokens name it)",
                    ));
                }
                Ok(jwk)
            })
            .transpose()?;
        if jwks_url.is_some() && public_jwk.is_some() {
            return Err(ConfigError::new(
                "SUPABASE_JWT_PUBLIC_JWK",
                "set either a JWKS URL or one static JWK, not both",
            ));
        }
        let mut hs256_secrets = Vec::new();
        for var in ["SUPABASE_JWT_SECRET", "SUPABASE_JWT_SECRET_PREVIOUS"] {
            if let Some(secret) = env.opt_string(var) {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(ConfigError::new(var, format!("must be at least {MIN_SECRET_BYTES} bytes")));
                }
                hs256_secrets.push(SecretString::from(secret));
            }
        }
        if env.opt_string("SUPABASE_JWT_SECRET_PREVIOUS").is_some() && env.opt_string("SUPABASE_JWT_SECRET").is_none() {
            return Err(ConfigError::new(
                "SUPABASE_JWT_SECRET_PREVIOUS",
                "needs SUPABASE_JWT_SECRET (the current secret)",
            ));
        }
        if hs256_secrets.is_empty() && jwks_url.is_none() && public_jwk.is_none() {
            return Err(ConfigError::new(
                "SUPABASE_JWT_SECRET",
                "required when no signing keys are configured (SUPABASE_URL, SUPABASE_JWKS_URL or SUPABASE_JWT_PUBLIC_JWK)",
            ));
        }
        let issuer = env.opt_string("AUTH_ISSUER").or_else(|| supabase_url.as_ref().map(|u| format!("{u}/auth/v1")));
        Ok(Self {
            jwks_url,
            public_jwk,
            hs256_secrets,
            audience: env.string("AUTH_AUDIENCE", "authenticated"),
            issuer,
            allow_anonymous: env.bool("AUTH_ALLOW_ANONYMOUS", false)?,
            operator_claim: operator_claim(env)?,
            jwks_cache: Duration::from_secs(env.ranged(
                "JWKS_CACHE_SECONDS",
                MAX_JWKS_CACHE_SECONDS,
                1..=MAX_JWKS_CACHE_SECONDS,
            )?),
        })
    }

    /// The current HS256 secret, for `gateway token`.
    pub fn hs256_secret(&self) -> Option<&[u8]> {
        self.hs256_secrets.first().map(|s| s.expose_secret().as_bytes())
    }
}

/// `TRUSTED_PROXIES`: comma-separated addresses or CIDR blocks of the load balancers and
/// proxies in front of the gateway.
fn trusted_proxies(env: &Env) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let Some(raw) = env.opt_string("TRUSTED_PROXIES") else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::new("TRUSTED_PROXIES", format!("{s:?} is not an address or CIDR block")))
        })
        .collect()
}

fn check_http_url(var: &str, raw: &str) -> Result<String, ConfigError> {
    let ok = url::Url::parse(raw).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok { Ok(raw.to_owned()) } else { Err(ConfigError::new(var, format!("{raw:?} is not an http(s) URL"))) }
}

pub const HELP: &str = "\
The Euglena HTTP gateway: accepts mandates, stores task records in Redis and publishes
task envelopes to RabbitMQ.

USAGE:
    gateway                      serve the HTTP API
    gateway token --sub <user>   print a development JWT for <user>, valid --ttl <seconds>
                                 (default 3600): HS256 with SUPABASE_JWT_SECRET, or with
                                 --key <private key PEM> --kid <kid> ES256/RS256/EdDSA
                                 (the algorithm follows the key) for a JWKS you serve;
                                 --operator (HS256) adds the OPERATOR_CLAIM role
    gateway healthcheck          GET /health on GATEWAY_ADDR (loopback if 0.0.0.0/::);
                                 exit 0 on 200, else 1 (the container health check)

Configuration is read from the environment; see the README's configuration table.
Signing keys (one of): SUPABASE_URL, SUPABASE_JWKS_URL, SUPABASE_JWT_PUBLIC_JWK,
SUPABASE_JWT_SECRET (+ SUPABASE_JWT_SECRET_PREVIOUS). Claims: AUTH_AUDIENCE, AUTH_ISSUER,
AUTH_ALLOW_ANONYMOUS, JWKS_CACHE_SECONDS, OPERATOR_CLAIM. Admission: DAILY_TICK_LIMIT,
DAILY_TOKEN_LIMIT, TASK_TOKEN_ESTIMATE, SUBMIT_RATE_PER_MINUTE, SUBMIT_BURST,
MAX_ACTIVE_TASKS_PER_USER, IDEMPOTENCY_TTL_SECONDS. Recovery: CHECKPOINT_RETENTION_SECONDS.
HTTP: GATEWAY_ADDR (0.0.0.0:8080), GATEWAY_MAX_CONNECTIONS, GATEWAY_MAX_CONNECTIONS_PER_PEER,
GATEWAY_PROBE_RESERVE, TRUSTED_PROXIES, HTTP_HEADER_TIMEOUT_SECONDS, MAX_BODY_BYTES,
REQUEST_TIMEOUT_SECONDS, PUBLISH_TIMEOUT_MS, SSE_KEEPALIVE_SECONDS, SSE_MAX_SECONDS,
SSE_MAX_STREAMS_PER_USER, SSE_MAX_STREAMS, OPS_SAMPLES_CACHE_SECONDS. Webhooks: WEBHOOK_SECRET
(whsec_...), WEBHOOK_SECRET_PREVIOUS, WEBHOOK_ALLOW_PRIVATE, WEBHOOK_PROXY, WEBHOOK_TIMEOUT_SECONDS, WEBHOOK_RETRY_BASE_MS,
WEBHOOK_RETRY_FOR_SECONDS. Console: CONSOLE_DEV_TOKENS (local only). Tasks: MAX_MANDATE_CHARS,
MAX_TICKS_LIMIT, DEFAULT_MAX_TICKS, MAX_TASK_TOKENS, DEFAULT_TASK_MAX_TOKENS. Common: REDIS_URL, RABBITMQ_URL (rediss:// / amqps://
for TLS), REDIS_CA_FILE, RABBITMQ_CA_FILE, REDIS_KEY_PREFIX,
AGENT_INPUT_QUEUE, AGENT_HEARTBEAT_TTL_SECONDS, LOG_FORMAT, RUST_LOG.
Reconciler: RECONCILE_INTERVAL_MS (10000), RECONCILE_GRACE_MS (20000), RECONCILE_BATCH (100).";

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([("SUPABASE_JWT_SECRET", "x".repeat(40))])
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = Settings::from_env(&base()).expect("valid");
        assert_eq!(s.addr.port(), 8080);
        assert_eq!((s.max_mandate_chars, s.max_ticks_limit, s.default_max_ticks), (8000, 200, 50));
        assert_eq!(s.max_body_bytes, 65536);
        assert_eq!(s.admission.daily_ticks, 256);
        assert_eq!((s.admission.rate_per_minute, s.admission.burst), (60, 10));
        assert_eq!(s.admission.max_active, 20);
        assert_eq!(s.admission.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(s.publish_timeout, Duration::from_secs(5));
        assert_eq!(s.common.input_queue, "agent.mandates");
        assert_eq!(
            s.edge,
            EdgeSettings {
                header_timeout: Duration::from_secs(10),
                max_connections: 10_000,
                max_connections_per_peer: 256,
                trusted_proxies: Vec::new(),
            }
        );
        assert_eq!((s.sse_max_streams_per_user, s.sse_max_streams, s.probe_reserve), (8, 5_000, 32));
        let e = base().with("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7");
        let s = Settings::from_env(&e).expect("valid");
        assert!(s.edge.trusts("10.3.4.5".parse().expect("ip")) && s.edge.trusts("192.0.2.7".parse().expect("ip")));
        assert!(!s.edge.trusts("192.0.2.8".parse().expect("ip")));
        assert_eq!((s.auth.jwks_url.as_deref(), s.auth.issuer.as_deref()), (None, None));
        assert_eq!(s.auth.jwks_cache, Duration::from_secs(600));
        assert!(!s.auth.allow_anonymous);
    }

    #[test]
    fn supabase_url_derives_the_jwks_url_and_the_issuer() {
        let env = Env::from_pairs([("SUPABASE_URL", "https://abc.supabase.co/")]);
        let a = AuthSettings::from_env(&env).expect("no secret needed with signing keys");
        assert_eq!(a.jwks_url.as_deref(), Some("https://abc.supabase.co/auth/v1/.well-known/jwks.json"));
        assert_eq!(a.issuer.as_deref(), Some("https://abc.supabase.co/auth/v1"));
        assert!(a.hs256_secrets.is_empty());
        let explicit = env.with("SUPABASE_JWKS_URL", "http://127.0.0.1:9/jwks").with("AUTH_ISSUER", "me");
        let a = AuthSettings::from_env(&explicit).expect("valid");
        assert_eq!((a.jwks_url.as_deref(), a.issuer.as_deref()), (Some("http://127.0.0.1:9/jwks"), Some("me")));
    }

    #[test]
    fn the_operator_claim_is_a_path_and_a_value_or_none() {
        let with = |v: &str| {
            AuthSettings::from_env(&Env::from_pairs([
                ("SUPABASE_JWT_SECRET", "s".repeat(40).as_str()),
                ("OPERATOR_CLAIM", v),
            ]))
        };
        let default = AuthSettings::from_env(&Env::from_pairs([("SUPABASE_JWT_SECRET", "s".repeat(40).as_str())]))
            .expect("valid")
            .operator_claim
            .expect("default");
        assert_eq!(
            (default.path.join("."), default.value.as_str()),
            ("app_metadata.euglena_role".to_owned(), "operator")
        );
        assert_eq!(with("none").expect("valid").operator_claim, None);
        let custom = with("app_metadata.roles.euglena=admin").expect("valid").operator_claim.expect("set");
        assert_eq!(
            (custom.path, custom.value.as_str()),
            (vec!["app_metadata".to_owned(), "roles".into(), "euglena".into()], "admin")
        );
        for bad in ["operator", "a.b=", "=x", "a..b=x"] {
            assert_eq!(with(bad).unwrap_err().var, "OPERATOR_CLAIM", "{bad}");
        }
    }

    #[test]
    fn a_static_jwk_needs_a_kid() {
        let jwk = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let e = AuthSettings::from_env(&Env::from_pairs([("SUPABASE_JWT_PUBLIC_JWK", jwk)])).unwrap_err();
        assert_eq!(e.var, "SUPABASE_JWT_PUBLIC_JWK");
        let with_kid = jwk.replace("{", r#"{"kid":"k1","#);
        assert!(AuthSettings::from_env(&Env::from_pairs([("SUPABASE_JWT_PUBLIC_JWK", with_kid)])).is_ok());
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(Settings::from_env(&Env::default()).unwrap_err().var, "SUPABASE_JWT_SECRET");
        assert_eq!(
            Settings::from_env(&Env::from_pairs([("SUPABASE_JWT_SECRET", "short")])).unwrap_err().var,
            "SUPABASE_JWT_SECRET"
        );
        assert_eq!(Settings::from_env(&base().with("GATEWAY_ADDR", "nope")).unwrap_err().var, "GATEWAY_ADDR");
        assert_eq!(Settings::from_env(&base().with("DEFAULT_MAX_TICKS", "300")).unwrap_err().var, "DEFAULT_MAX_TICKS");
        assert_eq!(
            Settings::from_env(&base().with("PUBLISH_TIMEOUT_MS", "20000")).unwrap_err().var,
            "REQUEST_TIMEOUT_SECONDS"
        );
        for (var, value) in [
            ("SUPABASE_JWKS_URL", "ftp://x"),
            ("SUPABASE_JWT_SECRET_PREVIOUS", "short"),
            ("JWKS_CACHE_SECONDS", "601"),
            ("AUTH_ALLOW_ANONYMOUS", "perhaps"),
            ("SUBMIT_BURST", "0"),
            ("GATEWAY_MAX_CONNECTIONS", "0"),
            ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("SSE_MAX_STREAMS_PER_USER", "0"),
            ("SSE_MAX_STREAMS", "20000"),
        ] {
            assert_eq!(Settings::from_env(&base().with(var, value)).unwrap_err().var, var, "{var}={value}");
        }
        let prev_only =
            Env::from_pairs([("SUPABASE_URL", "https://a.test"), ("SUPABASE_JWT_SECRET_PREVIOUS", &"y".repeat(40))]);
        assert_eq!(AuthSettings::from_env(&prev_only).unwrap_err().var, "SUPABASE_JWT_SECRET_PREVIOUS");
    }
}

/// The reconciler's pacing (see [`crate::reconciler`]).
#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    pub interval: Duration,
    /// How long past `PUBLISH_TIMEOUT_MS` an unconfirmed submission is left to its gateway.
    pub grace: Duration,
    pub batch: usize,
}

impl ReconcilerSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            interval: env.millis("RECONCILE_INTERVAL_MS", 10_000)?,
            grace: env.millis("RECONCILE_GRACE_MS", 20_000)?,
            batch: env.ranged("RECONCILE_BATCH", 100, 1..=10_000)?,
        })
    }
}

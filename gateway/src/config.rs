//! Gateway settings, parsed in full from the environment before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

use proto::config::{CommonSettings, ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};

use crate::reconciler::ReconcilerSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub common: CommonSettings,
    pub jwt_secret: SecretString,
    pub audience: String,
    pub issuer: Option<String>,
    pub max_mandate_chars: usize,
    pub max_ticks_limit: u32,
    pub default_max_ticks: u32,
    pub max_body_bytes: usize,
    pub daily_tick_limit: i64,
    pub publish_timeout: Duration,
    pub request_timeout: Duration,
    pub reconciler: ReconcilerSettings,
}

/// HS256 secrets shorter than this are guessable; Supabase's are 40+ characters.
pub const MIN_SECRET_BYTES: usize = 32;

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let jwt_secret = env.opt_string("SUPABASE_JWT_SECRET").ok_or_else(|| {
            ConfigError::new("SUPABASE_JWT_SECRET", "required: the HS256 secret that signs user tokens")
        })?;
        if jwt_secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::new("SUPABASE_JWT_SECRET", format!("must be at least {MIN_SECRET_BYTES} bytes")));
        }
        let max_ticks_limit = env.ranged("MAX_TICKS_LIMIT", 200, 1..=proto::envelope::MAX_ENVELOPE_TICKS)?;
        let default_max_ticks = env.ranged("DEFAULT_MAX_TICKS", 50u32.min(max_ticks_limit), 1..=max_ticks_limit)?;
        let publish_timeout = env.millis("PUBLISH_TIMEOUT_MS", 5000)?;
        let request_timeout = env.seconds("REQUEST_TIMEOUT_SECONDS", 10)?;
        if request_timeout <= publish_timeout {
            return Err(ConfigError::new("REQUEST_TIMEOUT_SECONDS", "must be longer than PUBLISH_TIMEOUT_MS"));
        }
        Ok(Self {
            addr: env.parse("GATEWAY_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            common: CommonSettings::from_env(env)?,
            jwt_secret: SecretString::from(jwt_secret),
            audience: env.string("AUTH_AUDIENCE", "authenticated"),
            issuer: env.opt_string("AUTH_ISSUER"),
            max_mandate_chars: env.ranged(
                "MAX_MANDATE_CHARS",
                8000,
                1..=proto::envelope::MAX_ENVELOPE_MANDATE_CHARS,
            )?,
            max_ticks_limit,
            default_max_ticks,
            max_body_bytes: env.ranged("MAX_BODY_BYTES", 64 * 1024, 1024..=16 * 1024 * 1024)?,
            daily_tick_limit: env.parse("DAILY_TICK_LIMIT", 256)?,
            publish_timeout,
            request_timeout,
            reconciler: ReconcilerSettings::from_env(env)?,
        })
    }

    pub fn jwt_secret_bytes(&self) -> &[u8] {
        self.jwt_secret.expose_secret().as_bytes()
    }
}

pub const HELP: &str = "\
The Euglena HTTP gateway: accepts mandates, stores task records in Redis and publishes
task envelopes to RabbitMQ.

USAGE:
    gateway                      serve the HTTP API
    gateway token --sub <user>   print a development JWT signed with SUPABASE_JWT_SECRET
                                 [--ttl <seconds>] (default 3600)

Configuration is read from the environment; see the README's configuration table.
Required: SUPABASE_JWT_SECRET. Common: GATEWAY_ADDR (0.0.0.0:8080), REDIS_URL,
RABBITMQ_URL, REDIS_KEY_PREFIX, AGENT_INPUT_QUEUE, AUTH_AUDIENCE, AUTH_ISSUER,
MAX_MANDATE_CHARS, MAX_TICKS_LIMIT, DEFAULT_MAX_TICKS, MAX_BODY_BYTES, DAILY_TICK_LIMIT,
PUBLISH_TIMEOUT_MS, REQUEST_TIMEOUT_SECONDS, AGENT_HEARTBEAT_TTL_SECONDS, LOG_FORMAT, RUST_LOG.
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
        assert_eq!(s.daily_tick_limit, 256);
        assert_eq!(s.publish_timeout, Duration::from_secs(5));
        assert_eq!(s.common.input_queue, "agent.mandates");
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
    }
}

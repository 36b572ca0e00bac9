//! Webhook settings from the environment (`WEBHOOK_*`).

use std::time::Duration;

use runtime::config::{ConfigError, Env};

use super::sign::parse_secret;

#[derive(Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_SECRET` then `WEBHOOK_SECRET_PREVIOUS`, decoded; every key signs.
    pub keys: Vec<Vec<u8>>,
    /// `WEBHOOK_ALLOW_PRIVATE`: for tests and local receivers only.
    pub allow_private: bool,
    /// `WEBHOOK_PROXY`: send webhooks through this HTTP proxy. Never taken from `HTTP_PROXY`
    /// and friends: a proxy connects on our behalf, so the policy must know it is there.
    pub proxy: Option<url::Url>,
    pub timeout: Duration,
    /// The first retry's delay; it doubles per attempt up to an hour.
    pub retry_base: Duration,
    /// Retries stop this long after the task ended (at least a day by default).
    pub retry_for: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("allow_private", &self.allow_private)
            .field("proxy", &self.proxy.as_ref().map(|u| u.host_str().unwrap_or("").to_owned()))
            .field("timeout", &self.timeout)
            .field("retry_base", &self.retry_base)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

impl WebhookSettings {
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(current) = env.opt_string("WEBHOOK_SECRET") else {
            if env.opt_string("WEBHOOK_SECRET_PREVIOUS").is_some() {
                return Err(ConfigError::new("WEBHOOK_SECRET_PREVIOUS", "needs WEBHOOK_SECRET (the current secret)"));
            }
            return Ok(None);
        };
        let mut keys = vec![parse_secret(&current).map_err(|m| ConfigError::new("WEBHOOK_SECRET", m))?];
        if let Some(previous) = env.opt_string("WEBHOOK_SECRET_PREVIOUS") {
            keys.push(parse_secret(&previous).map_err(|m| ConfigError::new("WEBHOOK_SECRET_PREVIOUS", m))?);
        }
        Ok(Some(Self {
            keys,
            allow_private: env.bool("WEBHOOK_ALLOW_PRIVATE", false)?,
            proxy: env
                .opt_string("WEBHOOK_PROXY")
                .map(|raw| match url::Url::parse(&raw) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
                    _ => Err(ConfigError::new("WEBHOOK_PROXY", "must be an http(s) proxy URL")),
                })
                .transpose()?,
            timeout: Duration::from_secs(env.ranged("WEBHOOK_TIMEOUT_SECONDS", 10, 1..=60)?),
            retry_base: Duration::from_millis(env.ranged("WEBHOOK_RETRY_BASE_MS", 5000, 100..=600_000)?),
            retry_for: Duration::from_secs(env.ranged("WEBHOOK_RETRY_FOR_SECONDS", 90_000, 60..=30 * 86_400)?),
        }))
    }
}

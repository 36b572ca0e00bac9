//! Autoscaler settings, parsed in full from the environment before anything connects. The
//! policy settings are shared by all three modes; each mode adds its own.

use std::path::PathBuf;
use std::time::Duration;

use runtime::config::{ConfigError, Env};
use runtime::settings::CommonSettings;

use crate::policy::Bounds;

/// `AGENT_CONCURRENCY` when unset: the agent's own default (agent/src/config.rs).
pub const DEFAULT_AGENT_CONCURRENCY: u32 = 64;

#[derive(Debug, Clone, Copy)]
pub struct PolicySettings {
    pub bounds: Bounds,
    pub window: Duration,
}

impl PolicySettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let min = env.ranged("MIN_WORKERS", 1, 0..=1000)?;
        let max = env.ranged("MAX_WORKERS", 11, 1..=1000)?;
        if min > max {
            return Err(ConfigError::new("MIN_WORKERS", format!("{min} is above MAX_WORKERS ({max})")));
        }
        // The same variable and default the agents read: the policy must count the slots the
        // agents really have.
        let slots_per_agent = env.ranged("AGENT_CONCURRENCY", DEFAULT_AGENT_CONCURRENCY, 1..=256)?;
        let utilisation: f64 = env.ranged("TARGET_SLOT_UTILISATION", 0.8, 0.05..=1.0)?;
        Ok(Self {
            bounds: Bounds { min, max, slots_per_agent, utilisation_permille: (utilisation * 1000.0).round() as u32 },
            window: Duration::from_secs(env.ranged("SCALE_IN_WINDOW_SECONDS", 300, 1..=86_400)?),
        })
    }

    /// Samples of `period` that cover the scale-in window (at least one).
    pub fn slots(&self, period: Duration) -> usize {
        let period = period.as_secs().max(1);
        usize::try_from(self.window.as_secs().div_ceil(period)).unwrap_or(usize::MAX).max(1)
    }
}

/// The Lambda: CloudWatch in, ECS out.
#[derive(Debug, Clone)]
pub struct LambdaSettings {
    pub policy: PolicySettings,
    pub cluster: String,
    pub service: String,
    pub dry_run: bool,
    pub namespace: String,
    pub queue: String,
}

impl LambdaSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let required = |var: &str| env.opt_string(var).ok_or_else(|| ConfigError::new(var, "is required"));
        Ok(Self {
            policy: PolicySettings::from_env(env)?,
            cluster: required("ECS_CLUSTER")?,
            service: required("ECS_SERVICE")?,
            dry_run: env.bool("DRY_RUN", false)?,
            namespace: env.string("CLOUDWATCH_NAMESPACE", proto::metric_names::DEFAULT_NAMESPACE),
            queue: env.string("AGENT_INPUT_QUEUE", "agent.mandates"),
        })
    }
}

/// The local loop: RabbitMQ and Redis in, agent child processes out.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub policy: PolicySettings,
    pub common: CommonSettings,
    pub interval: Duration,
    pub agent_bin: PathBuf,
    /// How long a stopping agent may drain before SIGKILL: its own drain plus a margin.
    pub stop_grace: Duration,
    /// Added to the inherited environment of every child (tests pass their namespace here).
    pub child_env: Vec<(String, String)>,
    /// Where each child's stderr goes (`{dir}/{agent id}.log`); `None` = inherit ours.
    pub child_log_dir: Option<PathBuf>,
}

impl LocalSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let drain = env.ranged("AGENT_DRAIN_SECONDS", 90u64, 0..=3600)?;
        Ok(Self {
            policy: PolicySettings::from_env(env)?,
            common: CommonSettings::from_env(env)?,
            interval: Duration::from_secs(env.ranged("AUTOSCALER_INTERVAL_SECONDS", 10, 1..=3600)?),
            agent_bin: agent_bin(env.opt_string("AGENT_BIN"))?,
            stop_grace: Duration::from_secs(drain + 15),
            child_env: Vec::new(),
            child_log_dir: None,
        })
    }
}

/// `AGENT_BIN`, else `agent` beside this executable, else `agent` on `PATH`.
fn agent_bin(configured: Option<String>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = configured {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(ConfigError::new("AGENT_BIN", "is not a file")) };
    }
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("agent")));
    let on_path = || {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("agent")).find(|c| c.is_file()))
    };
    beside
        .filter(|p| p.is_file())
        .or_else(on_path)
        .ok_or_else(|| ConfigError::new("AGENT_BIN", "unset, and no `agent` binary beside autoscaler or on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_and_errors() {
        let p = PolicySettings::from_env(&Env::default()).expect("defaults");
        assert_eq!(
            p.bounds,
            Bounds { min: 1, max: 11, slots_per_agent: DEFAULT_AGENT_CONCURRENCY, utilisation_permille: 800 }
        );
        let env = Env::default().with("AGENT_CONCURRENCY", "1").with("TARGET_SLOT_UTILISATION", "1");
        let p = PolicySettings::from_env(&env).expect("the Python design");
        assert_eq!((p.bounds.slots_per_agent, p.bounds.utilisation_permille), (1, 1000));
        assert_eq!(p.window, Duration::from_secs(300));
        assert_eq!(p.slots(Duration::from_secs(60)), 5);
        assert_eq!(p.slots(Duration::from_secs(7)), 43);
        let bad = Env::default().with("MIN_WORKERS", "5").with("MAX_WORKERS", "2");
        assert_eq!(PolicySettings::from_env(&bad).unwrap_err().var, "MIN_WORKERS");
        let bad = Env::default().with("AGENT_CONCURRENCY", "0");
        assert_eq!(PolicySettings::from_env(&bad).unwrap_err().var, "AGENT_CONCURRENCY");
        for bad in ["0", "1.5", "eighty"] {
            let env = Env::default().with("TARGET_SLOT_UTILISATION", bad);
            assert_eq!(PolicySettings::from_env(&env).unwrap_err().var, "TARGET_SLOT_UTILISATION", "{bad}");
        }
    }

    #[test]
    fn lambda_needs_the_service() {
        assert_eq!(LambdaSettings::from_env(&Env::default()).unwrap_err().var, "ECS_CLUSTER");
        let env = Env::default().with("ECS_CLUSTER", "c").with("ECS_SERVICE", "s").with("DRY_RUN", "true");
        let s = LambdaSettings::from_env(&env).expect("settings");
        assert!(s.dry_run);
        assert_eq!((s.namespace.as_str(), s.queue.as_str()), ("Euglena/RabbitMQ", "agent.mandates"));
    }

    #[test]
    fn agent_bin_must_exist() {
        let env = Env::default().with("AGENT_BIN", "/nonexistent/agent");
        assert_eq!(LocalSettings::from_env(&env).unwrap_err().var, "AGENT_BIN");
    }
}

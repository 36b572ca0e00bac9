//! Typed configuration from environment variables.
//!
//! Services read configuration through an [`Env`] built from a map, so tests pass their
//! own map instead of mutating the process environment. Every error names the variable.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &str, message: impl Into<String>) -> Self {
        Self { var: var.to_owned(), message: message.into() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.insert(key.to_owned(), value.into());
        self
    }

    /// The raw value; an empty string counts as unset, as it does in compose files.
    pub fn raw(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    pub fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or(default).to_owned()
    }

    pub fn opt_string(&self, var: &str) -> Option<String> {
        self.raw(var).map(str::to_owned)
    }

    pub fn parse<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError::new(var, format!("{v:?}: {e}"))),
        }
    }

    /// A number that must lie in `range`.
    pub fn ranged<T>(&self, var: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let v = self.parse(var, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(var, format!("{v} is outside {}..={}", range.start(), range.end())))
        }
    }

    pub fn seconds(&self, var: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.ranged(var, default, 1..=u64::from(u32::MAX))?))
    }

    pub fn millis(&self, var: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.ranged(var, default, 1..=u64::from(u32::MAX))?))
    }

    pub fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(var, format!("{other:?} is not a boolean (true/false)"))),
        }
    }
}

/// Handles `--help`/`-h` and rejects unknown arguments, before anything else runs.
/// Returns the remaining positional arguments (subcommands).
pub fn cli_args(binary: &str, help: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        #[allow(clippy::print_stdout)]
        {
            println!("{binary} {}\n\n{help}", env!("CARGO_PKG_VERSION"));
        }
        std::process::exit(0);
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        #[allow(clippy::print_stdout)]
        {
            println!("{binary} {}", env!("CARGO_PKG_VERSION"));
        }
        std::process::exit(0);
    }
    args
}

/// Exits with status 2 and a message naming the variable; used by every `main`.
pub fn exit_on_config_error(binary: &str, e: &ConfigError) -> ! {
    eprintln!("{binary}: {e}");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs([("X", "abc"), ("B", "maybe"), ("R", "500")]);
        assert_eq!(env.parse::<u32>("X", 1).unwrap_err().var, "X");
        assert_eq!(env.bool("B", false).unwrap_err().var, "B");
        let e = env.ranged::<u32>("R", 1, 1..=200).unwrap_err();
        assert!(e.to_string().contains("R: 500 is outside 1..=200"), "{e}");
    }

    #[test]
    fn defaults_and_empty_values() {
        let env = Env::from_pairs([("EMPTY", "  ")]);
        assert_eq!(env.parse::<u32>("EMPTY", 7).expect("default"), 7);
        assert_eq!(env.string("MISSING", "d"), "d");
        assert!(env.bool("MISSING", true).expect("default"));
    }
}

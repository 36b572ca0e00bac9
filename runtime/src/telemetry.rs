//! Logging: JSON lines by default, human-readable with `LOG_FORMAT=pretty`, filtered by
//! `RUST_LOG` (default `info`). Errors are logged once, where they are handled, with
//! their causes: `error.cause_chain = %Chain(&e)`.

use std::fmt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,amq_protocol=warn"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE).with_writer(std::io::stderr);
    // A second init (tests starting several services in one process) keeps the first.
    let _ = if pretty {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    };
}

/// An error and its sources on one line, `outer: cause: root cause`, the same in JSON and
/// pretty logs (the JSON formatter records only an error's own message). A cause whose
/// text equals the previous one (a transparent wrapper) is shown once.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            if text != last {
                write!(f, ": {text}")?;
            }
            last = text;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading metrics failed")]
        Read(#[source] Inner),
        #[error(transparent)]
        Same(Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("service unavailable")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out after 2s");
        let e = Outer::Read(Inner(io()));
        assert_eq!(Chain(&e).to_string(), "reading metrics failed: service unavailable: timed out after 2s");
        let e = Outer::Same(Inner(io()));
        assert_eq!(Chain(&e).to_string(), "service unavailable: timed out after 2s");
    }
}

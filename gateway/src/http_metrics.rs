//! Request metrics by route template (never the raw path, which holds task ids). Every
//! label comes from a closed set: a client can send any
//! method and any path, and each distinct label value would be a series kept forever.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use axum::http::Method;
use metrics::{Counter, Histogram};

/// One request's series: its counter and its duration histogram.
type Series = (Counter, Histogram);
/// Series by (method, status), then by route.
type Known = HashMap<(&'static str, u16), HashMap<Box<str>, Series>>;

/// The handles of every series seen so far, by (method, status) then route. A lookup in the
/// recorder builds a key and hashes every label on each call; this is one read lock and a
/// string hash. Bounded: its keys are the same closed sets as the labels.
static SERIES: LazyLock<RwLock<Known>> = LazyLock::new(Default::default);

/// Counts a finished request and records its duration (called by `edge::guard`).
pub fn record(method: &'static str, route: &str, status: u16, elapsed: Duration) {
    let (count, duration) = series(method, route, status);
    count.increment(1);
    duration.record(elapsed.as_secs_f64());
}

fn series(method: &'static str, route: &str, status: u16) -> Series {
    if let Ok(known) = SERIES.read()
        && let Some(s) = known.get(&(method, status)).and_then(|routes| routes.get(route))
    {
        return s.clone();
    }
    let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
    let s = (
        metrics::counter!("http_requests_total", &labels),
        metrics::histogram!("http_request_duration_seconds", &labels),
    );
    if let Ok(mut known) = SERIES.write() {
        known.entry((method, status)).or_default().insert(route.into(), s.clone());
    }
    s
}

/// The method as a label: the standard ones by name, anything a client made up as `other`.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN: [&str; 10] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other"];

    proptest! {
        #[test]
        fn any_method_maps_into_the_closed_set(name in "[A-Za-z!#$%&'*+.^_`|~0-9-]{1,64}") {
            if let Ok(m) = Method::from_bytes(name.as_bytes()) {
                prop_assert!(KNOWN.contains(&method_label(&m)));
            }
        }
    }

    #[test]
    fn standard_methods_keep_their_names() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("method")), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").expect("method")), "other");
    }
}

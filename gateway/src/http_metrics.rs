//! Request metrics by route template (never the raw path, which holds task ids). Every
//! label comes from a closed set: a client can send any
//! method and any path, and each distinct label value would be a series kept forever.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    let labels = [("method", method), ("route", route), ("status", resp.status().as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    resp
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

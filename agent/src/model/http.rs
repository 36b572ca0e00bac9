//! The model API's transport: a tower service installed into the `async-openai` client
//! in place of its built-in retry layer, because ours must
//! - honour `Retry-After` (seconds or an HTTP date) and `retry-after-ms`, capped so a
//!   misbehaving server cannot park a task for an hour;
//! - back off exponentially with jitter otherwise ([`runtime::backoff::Backoff`]);
//! - retry 408, 429 and 5xx replies, timeouts and connection failures, and nothing else,
//!   so a 401 ends the task after one request instead of retrying forever.
//!
//! Every request has the client's timeout (`LLM_TIMEOUT_SECONDS`); the total time spent
//! here is bounded by the retry count and the caps. A timeout is logged as one, with the
//! time it took and the limit.
//!
//! Every request sent is counted for the task that sent it ([`crate::meter::counted`]),
//! whether it succeeded or not, so a task's `usage.model_calls` is what the API saw.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use reqwest::Response;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use runtime::backoff::Backoff;
use tower::ServiceExt;

/// The longest wait a `Retry-After` header can ask for; past it we wait this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first request.
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self { max_retries, base: Duration::from_millis(500), cap: Duration::from_secs(20) }
    }
}

#[derive(Clone)]
pub struct RetryingTransport {
    inner: ReqwestService,
    policy: RetryPolicy,
    /// The client's per-request timeout, for the log.
    timeout: Duration,
}

impl RetryingTransport {
    pub fn new(client: reqwest::Client, policy: RetryPolicy, timeout: Duration) -> Self {
        Self { inner: ReqwestService::new(client), policy, timeout }
    }
}

/// What went wrong with one request, as a short closed-set word for logs and metrics.
fn failure(result: &Result<Response, OpenAIError>) -> Option<String> {
    match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(OpenAIError::Reqwest(e)) if e.is_timeout() => Some("timeout".into()),
        Err(OpenAIError::Reqwest(e)) if e.is_connect() => Some("connection failed".into()),
        Err(_) => Some("request failed".into()),
    }
}

/// Whether a reply or failure is worth another request.
pub fn retryable(result: &Result<Response, OpenAIError>) -> bool {
    match result {
        Ok(r) => {
            let s = r.status().as_u16();
            s == 408 || s == 429 || (r.status().is_server_error() && s != 501)
        }
        Err(OpenAIError::Reqwest(e)) => e.is_timeout() || e.is_connect() || e.is_request(),
        Err(_) => false,
    }
}

/// The wait a server asked for, if any: `retry-after-ms`, then `Retry-After` as seconds
/// or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0).min(MAX_RETRY_AFTER));
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(secs) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

impl tower::Service<HttpRequestFactory> for RetryingTransport {
    type Response = Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let inner = self.inner.clone();
        let policy = self.policy;
        let limit = self.timeout;
        Box::pin(async move {
            let mut backoff = Backoff::new(policy.base, policy.cap);
            let mut retries = 0;
            loop {
                let started = Instant::now();
                crate::meter::count_sent();
                let result = inner.clone().oneshot(request.clone()).await;
                let failed = failure(&result);
                if failed.is_some() {
                    crate::meter::count_failed();
                }
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if failed.as_deref() == Some("timeout") {
                    tracing::warn!(
                        elapsed_ms,
                        limit_s = limit.as_secs(),
                        "model API call timed out (LLM_TIMEOUT_SECONDS)"
                    );
                }
                if retries >= policy.max_retries || !retryable(&result) {
                    return result;
                }
                let asked = result.as_ref().ok().and_then(|r| retry_after(r.headers()));
                let delay = asked.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(
                    failure = failed.as_deref().unwrap_or("unknown"),
                    elapsed_ms,
                    retry = retries + 1,
                    of = policy.max_retries,
                    delay_ms = delay.as_millis() as u64,
                    honoured_retry_after = asked.is_some(),
                    "model API call failed; retrying"
                );
                metrics::counter!("agent_model_retries_total").increment(1);
                tokio::time::sleep(delay).await;
                retries += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.5")])), Some(Duration::from_millis(500)));
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "86400")])), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])), Some(Duration::ZERO));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = retry_after(&headers(&[("retry-after", &soon)])).expect("date");
        assert!(d > Duration::from_secs(20) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}

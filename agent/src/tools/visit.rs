//! The `visit` tool: fetch one web page under the SSRF rules of ARCHITECTURE §5 and return its
//! readable text.
//!
//! - http and https only; every hop's host is checked ([`runtime::address_policy`]) and the connection
//!   goes to the checked address;
//! - redirects are followed by hand (the client's own policy is off) so each `Location`
//!   is checked like the first URL, at most [`MAX_REDIRECTS`] times;
//! - `VISIT_TIMEOUT_SECONDS` bounds the whole visit (lookups, hops, body), and the body is
//!   cut at `VISIT_MAX_BYTES`;
//! - only text types are read (HTML is turned into text); binary content is refused;
//! - no proxy from the environment: a proxy would connect on our behalf to addresses we
//!   never checked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, USER_AGENT};
use runtime::config::{ConfigError, Env};
use url::Url;

use super::html;
use runtime::address_policy::{Blocked, Lookup, Policy, blocked_in, check_literal_host};

pub const MAX_REDIRECTS: usize = 5;
const AGENT: &str = concat!("EuglenaAgent/", env!("CARGO_PKG_VERSION"), " (research agent)");

#[derive(Debug, Clone)]
pub struct VisitSettings {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub allow_private: bool,
}

impl VisitSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_bytes: env.ranged("VISIT_MAX_BYTES", 2 * 1024 * 1024, 1024..=64 * 1024 * 1024)?,
            timeout: env.seconds("VISIT_TIMEOUT_SECONDS", 15)?,
            allow_private: env.bool("VISIT_ALLOW_PRIVATE", false)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The URL the text came from, after redirects.
    pub url: String,
    pub title: Option<String>,
    pub first_paragraph: Option<String>,
    pub text: String,
    /// The body was longer than `VISIT_MAX_BYTES` and was cut.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VisitError {
    #[error("not a valid URL: {0}")]
    BadUrl(String),
    #[error("only http and https URLs can be visited, not {0}:")]
    Scheme(String),
    #[error(transparent)]
    Blocked(#[from] Blocked),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("a redirect without a usable Location header")]
    BadRedirect,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the content type is {0}, not text")]
    NotText(String),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("could not fetch the page: {0}")]
    Fetch(String),
}

pub struct Visitor {
    client: reqwest::Client,
    settings: VisitSettings,
    policy: Policy,
}

enum Kind {
    Html,
    Text,
}

/// How to read a body with this `Content-Type`, or why not to.
fn kind_of(content_type: Option<&str>, head: &[u8]) -> Result<Kind, VisitError> {
    let Some(ct) = content_type else {
        // No type: read it only if it looks like text.
        let sniff = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
        return if sniff.contains("<html") || sniff.contains("<!doctype html") {
            Ok(Kind::Html)
        } else if !head.contains(&0) && std::str::from_utf8(&head[..head.len().min(512)]).is_ok() {
            Ok(Kind::Text)
        } else {
            Err(VisitError::NotText("missing and the body is binary".into()))
        };
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/html" | "application/xhtml+xml" => Ok(Kind::Html),
        "application/json" | "application/xml" | "application/rss+xml" | "application/atom+xml" => Ok(Kind::Text),
        e if e.starts_with("text/") || e.ends_with("+json") || e.ends_with("+xml") => Ok(Kind::Text),
        _ => Err(VisitError::NotText(essence)),
    }
}

impl Visitor {
    /// `exempt`: addresses treated as public (tests only; see [`Policy::exempt`]).
    pub fn new(settings: VisitSettings, lookup: Arc<dyn Lookup>, exempt: Vec<IpAddr>) -> anyhow::Result<Self> {
        let policy = Policy { allow_private: settings.allow_private, exempt };
        let client = runtime::address_policy::guarded_client(lookup, policy.clone(), None)?
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .build()?;
        Ok(Self { client, settings, policy })
    }

    /// Reads `url`. A bare host or `www.` address (no scheme) is tried as `https://` first
    /// and, if that cannot be fetched at all, as `http://`, within the one time budget.
    pub async fn visit(&self, url: &str) -> Result<Page, VisitError> {
        let url = url.trim();
        let attempt = async {
            if url.contains("://") {
                return self.fetch(url).await;
            }
            match self.fetch(&format!("https://{url}")).await {
                Err(VisitError::Fetch(_)) => self.fetch(&format!("http://{url}")).await,
                other => other,
            }
        };
        match tokio::time::timeout(self.settings.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(VisitError::Timeout(self.settings.timeout)),
        }
    }

    /// Refuses what must not be requested at all: other schemes, and IP-literal hosts
    /// outside the policy (names are checked by the resolver when the connection is made).
    fn precheck(&self, url: &Url) -> Result<(), VisitError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VisitError::Scheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(VisitError::BadUrl("no host".into()));
        }
        Ok(check_literal_host(&self.policy, url)?)
    }

    async fn fetch(&self, url: &str) -> Result<Page, VisitError> {
        let mut url = Url::parse(url.trim()).map_err(|e| VisitError::BadUrl(e.to_string()))?;
        for hop in 0..=MAX_REDIRECTS {
            self.precheck(&url)?;
            let mut resp = self
                .client
                .get(url.clone())
                .header(USER_AGENT, AGENT)
                .header(ACCEPT, "text/html, application/xhtml+xml, text/plain;q=0.9, */*;q=0.1")
                .send()
                .await
                .map_err(|e| fetch_error(&e, self.settings.timeout))?;
            let status = resp.status();
            if status.is_redirection() && status.as_u16() != 304 {
                if hop == MAX_REDIRECTS {
                    return Err(VisitError::TooManyRedirects);
                }
                let location =
                    resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or(VisitError::BadRedirect)?;
                url = url.join(location).map_err(|_| VisitError::BadRedirect)?;
                continue;
            }
            if !status.is_success() {
                return Err(VisitError::Status(status.as_u16()));
            }
            let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(ct) = &content_type {
                // Refuse binary before reading a byte of it.
                kind_of(Some(ct), b"")?;
            }
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_error(&e, self.settings.timeout))? {
                let room = self.settings.max_bytes - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let kind = kind_of(content_type.as_deref(), &body)?;
            let text = String::from_utf8_lossy(&body).into_owned();
            let page = match kind {
                Kind::Html => {
                    // Parsing a couple of MiB is CPU work; keep it off the async workers.
                    let r = tokio::task::spawn_blocking(move || html::readable(&text))
                        .await
                        .map_err(|e| VisitError::Fetch(format!("HTML parsing failed: {e}")))?;
                    Page {
                        url: url.to_string(),
                        title: r.title,
                        first_paragraph: r.first_paragraph,
                        text: r.text,
                        truncated,
                    }
                }
                Kind::Text => {
                    let first = text.split("\n\n").map(str::trim).find(|p| !p.is_empty()).map(str::to_owned);
                    Page { url: url.to_string(), title: None, first_paragraph: first, text, truncated }
                }
            };
            return Ok(page);
        }
        Err(VisitError::TooManyRedirects)
    }
}

fn fetch_error(e: &reqwest::Error, timeout: Duration) -> VisitError {
    if let Some(b) = blocked_in(e) {
        tracing::warn!(host = %b.host, ip = %b.ip, class = b.class, "visit refused by the address policy");
        return VisitError::Blocked(b.clone());
    }
    if e.is_timeout() {
        return VisitError::Timeout(timeout);
    }
    // Without the URL: it is the caller's to show, and may carry credentials.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    VisitError::Fetch(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in ["text/html; charset=utf-8", "TEXT/PLAIN", "application/json", "application/ld+json", "text/markdown"]
        {
            assert!(kind_of(Some(ok), b"").is_ok(), "{ok}");
        }
        for bad in ["application/octet-stream", "image/png", "application/pdf", "video/mp4", "application/zip"] {
            assert!(matches!(kind_of(Some(bad), b""), Err(VisitError::NotText(_))), "{bad}");
        }
        assert!(matches!(kind_of(None, b"<!DOCTYPE html><p>x"), Ok(Kind::Html)));
        assert!(matches!(kind_of(None, b"plain words"), Ok(Kind::Text)));
        assert!(kind_of(None, b"\x89PNG\r\n\x1a\n\0\0").is_err());
    }
}

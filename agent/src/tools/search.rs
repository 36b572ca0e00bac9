//! The `search` tool: one web search through the provider named by `SEARCH_PROVIDER`
//! (`brave`, `tavily`, `searxng`, or `none`), results as title, URL and snippet.
//!
//! `SEARCH_BASE_URL` points a provider at another endpoint (a self-hosted SearXNG, a
//! proxy, a test server). The search API is the operator's choice, so it is not subject
//! to the visit tool's address rules; the URLs it returns are, when visited.

use std::time::Duration;

use runtime::config::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    None,
    Brave,
    Tavily,
    Searxng,
}

#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub provider: Provider,
    pub api_key: Option<SecretString>,
    pub base_url: String,
    pub max_results: usize,
    pub timeout: Duration,
}

impl SearchSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = match env.string("SEARCH_PROVIDER", "none").to_ascii_lowercase().as_str() {
            "none" => Provider::None,
            "brave" => Provider::Brave,
            "tavily" => Provider::Tavily,
            "searxng" => Provider::Searxng,
            other => {
                return Err(ConfigError::new(
                    "SEARCH_PROVIDER",
                    format!("{other:?} is not brave, tavily, searxng or none"),
                ));
            }
        };
        let api_key = env.opt_string("SEARCH_API_KEY").map(SecretString::from);
        if matches!(provider, Provider::Brave | Provider::Tavily) && api_key.is_none() {
            return Err(ConfigError::new("SEARCH_API_KEY", "is required by the brave and tavily search providers"));
        }
        let default_base = match provider {
            Provider::Brave => "https://api.search.brave.com",
            Provider::Tavily => "https://api.tavily.com",
            Provider::None | Provider::Searxng => "",
        };
        let base_url = env.string("SEARCH_BASE_URL", default_base).trim_end_matches('/').to_owned();
        if provider == Provider::Searxng && base_url.is_empty() {
            return Err(ConfigError::new(
                "SEARCH_BASE_URL",
                "is required by the searxng provider (your instance's URL)",
            ));
        }
        if !base_url.is_empty() {
            url::Url::parse(&base_url)
                .map_err(|e| ConfigError::new("SEARCH_BASE_URL", format!("{base_url:?}: {e}")))?;
        }
        Ok(Self {
            provider,
            api_key,
            base_url,
            max_results: env.ranged("SEARCH_MAX_RESULTS", 5, 1..=20)?,
            timeout: env.seconds("SEARCH_TIMEOUT_SECONDS", 15)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search is not configured (SEARCH_PROVIDER=none)")]
    NotConfigured,
    #[error("the search API answered HTTP {0}")]
    Status(u16),
    #[error("the search API timed out")]
    Timeout,
    #[error("the search API failed: {0}")]
    Failed(String),
}

/// Every provider's result, read loosely: the fields differ by name only.
#[derive(Deserialize)]
struct RawHit {
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    #[serde(default, alias = "description", alias = "content")]
    snippet: String,
}

#[derive(Deserialize)]
struct BraveReply {
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<RawHit>,
}

#[derive(Deserialize)]
struct ListReply {
    #[serde(default)]
    results: Vec<RawHit>,
}

pub struct Searcher {
    client: reqwest::Client,
    settings: SearchSettings,
}

impl Searcher {
    pub fn new(settings: SearchSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(settings.timeout).connect_timeout(settings.timeout).build()?;
        Ok(Self { client, settings })
    }

    pub fn provider(&self) -> Provider {
        self.settings.provider
    }

    pub async fn search(&self, query: &str) -> Result<Vec<Hit>, SearchError> {
        let s = &self.settings;
        let key = || s.api_key.as_ref().map(|k| k.expose_secret().to_owned()).unwrap_or_default();
        let request = match s.provider {
            Provider::None => return Err(SearchError::NotConfigured),
            Provider::Brave => self
                .client
                .get(format!("{}/res/v1/web/search", s.base_url))
                .query(&[("q", query), ("count", &s.max_results.to_string())])
                .header("X-Subscription-Token", key())
                .header("Accept", "application/json"),
            Provider::Tavily => self
                .client
                .post(format!("{}/search", s.base_url))
                .bearer_auth(key())
                .json(&json!({"query": query, "max_results": s.max_results})),
            Provider::Searxng => {
                let mut r =
                    self.client.get(format!("{}/search", s.base_url)).query(&[("q", query), ("format", "json")]);
                if s.api_key.is_some() {
                    // For instances behind an authenticating proxy.
                    r = r.bearer_auth(key());
                }
                r
            }
        };
        let resp = request.send().await.map_err(|e| classify(&e))?;
        if !resp.status().is_success() {
            return Err(SearchError::Status(resp.status().as_u16()));
        }
        let raw = match s.provider {
            Provider::Brave => {
                resp.json::<BraveReply>().await.map_err(|e| classify(&e))?.web.map(|w| w.results).unwrap_or_default()
            }
            _ => resp.json::<ListReply>().await.map_err(|e| classify(&e))?.results,
        };
        Ok(raw
            .into_iter()
            .filter(|h| h.url.starts_with("http://") || h.url.starts_with("https://"))
            .take(s.max_results)
            .map(|h| Hit { title: h.title.trim().to_owned(), url: h.url, snippet: strip_tags(&h.snippet) })
            .collect())
    }
}

fn classify(e: &reqwest::Error) -> SearchError {
    if e.is_timeout() { SearchError::Timeout } else { SearchError::Failed(e.without_url_string()) }
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The message without the request URL, which may carry the query or a key.
    fn without_url_string(&self) -> String {
        let mut msg = self.to_string();
        if let Some(url) = self.url() {
            msg = msg.replace(&format!(" for url ({url})"), "").replace(url.as_str(), "<url>");
        }
        msg
    }
}

/// Brave marks matches with `<strong>`; snippets are text.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_missing_variable() {
        let s = SearchSettings::from_env(&Env::default()).expect("none by default");
        assert_eq!(s.provider, Provider::None);
        let e = SearchSettings::from_env(&Env::default().with("SEARCH_PROVIDER", "brave")).expect_err("key");
        assert_eq!(e.var, "SEARCH_API_KEY");
        let e = SearchSettings::from_env(&Env::default().with("SEARCH_PROVIDER", "searxng")).expect_err("base");
        assert_eq!(e.var, "SEARCH_BASE_URL");
        let e = SearchSettings::from_env(&Env::default().with("SEARCH_PROVIDER", "bing")).expect_err("unknown");
        assert_eq!(e.var, "SEARCH_PROVIDER");
        let s = SearchSettings::from_env(&Env::default().with("SEARCH_PROVIDER", "tavily").with("SEARCH_API_KEY", "k"))
            .expect("tavily");
        assert_eq!(s.base_url, "https://api.tavily.com");
        assert_eq!(strip_tags("a <strong>bold</strong>  move"), "a bold move");
    }
}

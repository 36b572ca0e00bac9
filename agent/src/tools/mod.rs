//! The tools behind the model's actions: [`search`], [`visit`] (with
//! [`runtime::address_policy`] and [`html`]); `think` and `exit` need none. [`Tools::run`] turns an action into what the
//! model reads next tick (the observation, bounded) and what memory keeps (passages).
//! Tool failures are observations, not errors: the model reads "visit failed: …" and
//! chooses something else.

pub mod html;
pub mod mcp;
pub mod search;
pub mod visit;

use std::sync::Arc;

use runtime::address_policy::SystemLookup;
use runtime::mcp::McpClients;

use crate::checkpoint::PageNote;
use crate::memory::{Kind, NewMemory};
use crate::model::Action;
use crate::text::clip;
use search::{Hit, SearchSettings, Searcher};
use visit::{Page, VisitSettings, Visitor};

/// Characters of a page's text in the observation the model reads next tick.
pub const OBSERVATION_CHARS: usize = 6000;
/// Page passages stored as memories: up to this many, of about this many characters.
const PAGE_CHUNKS: usize = 8;
const CHUNK_CHARS: usize = 1000;

#[derive(Debug, Default)]
pub struct Outcome {
    pub observation: String,
    pub memories: Vec<NewMemory>,
    pub page: Option<PageNote>,
    /// URLs a search showed.
    pub shown: Vec<String>,
}

pub struct Tools {
    pub searcher: Searcher,
    pub visitor: Visitor,
    /// The operator's MCP servers (none configured: no `tool` action).
    pub mcp: Arc<McpClients>,
}

impl Tools {
    /// The search provider, the visitor (system DNS, the address policy) and the MCP
    /// servers as configured.
    pub fn new(search: SearchSettings, visit: VisitSettings, mcp: McpClients) -> anyhow::Result<Self> {
        Ok(Self {
            searcher: Searcher::new(search)?,
            visitor: Visitor::new(visit, Arc::new(SystemLookup), Vec::new())?,
            mcp: Arc::new(mcp),
        })
    }

    /// Whether `search` can run: the model is offered only the actions that can.
    pub fn can_search(&self) -> bool {
        self.searcher.provider() != search::Provider::None
    }

    pub async fn run(&self, action: &Action, tick: u32) -> Outcome {
        match action {
            // MCP calls need the task and the process's clients: the tick loop makes them.
            Action::Think | Action::Exit | Action::Tool { .. } => Outcome::default(),
            // The outcome goes on the tick's `tool.call` span (the query and the URL never do).
            Action::Search { query } => match self.searcher.search(query).await {
                Ok(hits) => {
                    tracing::Span::current().record("outcome", "ok");
                    searched(query, &hits, tick)
                }
                Err(e) => {
                    tracing::Span::current().record("outcome", "failed");
                    tracing::warn!(error = %e, "search failed");
                    Outcome { observation: format!("search failed: {e}"), ..Outcome::default() }
                }
            },
            Action::Visit { url } => match self.visitor.visit(url).await {
                Ok(page) => {
                    tracing::Span::current().record("outcome", "ok");
                    visited(page, tick)
                }
                Err(e) => {
                    tracing::Span::current().record("outcome", "failed");
                    // The host, never the query string: it may carry a user's data.
                    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
                    tracing::warn!(host = host.as_deref().unwrap_or(url.split('/').next().unwrap_or("")), error = %e, "visit failed");
                    Outcome { observation: format!("visit failed: {e}"), ..Outcome::default() }
                }
            },
        }
    }
}

fn searched(query: &str, hits: &[Hit], tick: u32) -> Outcome {
    if hits.is_empty() {
        return Outcome { observation: format!("no results for {query:?}"), ..Outcome::default() };
    }
    let lines: Vec<String> =
        hits.iter().enumerate().map(|(i, h)| format!("{}. {} — {}\n   {}", i + 1, h.title, h.url, h.snippet)).collect();
    let memories = hits
        .iter()
        .map(|h| NewMemory {
            text: format!("{}: {}", h.title, h.snippet),
            kind: Kind::Search,
            tick,
            url: Some(h.url.clone()),
        })
        .collect();
    Outcome {
        observation: format!("results for {query:?}:\n{}", lines.join("\n")),
        memories,
        page: None,
        shown: hits.iter().map(|h| h.url.clone()).collect(),
    }
}

/// Splits text into passages of about `CHUNK_CHARS` at line boundaries.
fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if !cur.is_empty() && cur.chars().count() + line.chars().count() > CHUNK_CHARS {
            out.push(std::mem::take(&mut cur));
            if out.len() == PAGE_CHUNKS {
                return out;
            }
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(&clip(line, CHUNK_CHARS));
    }
    if !cur.is_empty() && out.len() < PAGE_CHUNKS {
        out.push(cur);
    }
    out
}

fn visited(page: Page, tick: u32) -> Outcome {
    let title = page.title.clone().unwrap_or_else(|| page.url.clone());
    let memories = chunks(&page.text)
        .into_iter()
        .map(|c| NewMemory { text: format!("{title}: {c}"), kind: Kind::Page, tick, url: Some(page.url.clone()) })
        .collect();
    let cut = if page.truncated { " (cut at the size limit)" } else { "" };
    let observation = format!("page {} — {title}{cut}:\n{}", page.url, clip(&page.text, OBSERVATION_CHARS));
    Outcome {
        observation,
        memories,
        page: Some(PageNote { url: page.url, title, first_paragraph: page.first_paragraph }),
        shown: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_become_bounded_passages() {
        let text = (0..100).map(|i| format!("line {i} {}", "x".repeat(90))).collect::<Vec<_>>().join("\n");
        let page = Page {
            url: "https://a.example/".into(),
            title: Some("A".into()),
            first_paragraph: None,
            text,
            truncated: true,
        };
        let o = visited(page, 4);
        assert_eq!(o.memories.len(), PAGE_CHUNKS);
        assert!(o.memories.iter().all(|m| m.text.chars().count() <= CHUNK_CHARS + 10 && m.tick == 4));
        assert!(o.observation.starts_with("page https://a.example/ — A (cut at the size limit):"));
        assert!(o.observation.chars().count() < OBSERVATION_CHARS + 100);
        assert_eq!(o.page.expect("page").title, "A");
    }

    #[test]
    fn search_results_are_listed_and_remembered() {
        let hits = vec![Hit { title: "T".into(), url: "https://t.example/".into(), snippet: "s".into() }];
        let o = searched("q", &hits, 1);
        assert!(o.observation.contains("1. T — https://t.example/\n   s"));
        assert_eq!(o.memories[0].url.as_deref(), Some("https://t.example/"));
        assert!(searched("q", &[], 1).memories.is_empty());
    }
}

//! The OFFLINE DEMO MODEL: a deterministic planner with no LLM behind it, so the whole
//! pipeline (queue, ticks, tools, memory, checkpoints, cancel, results) runs without an
//! API key. Its plan depends only on the mandate and the tick:
//! 1. visit each http(s) URL found in the mandate (up to [`MAX_URLS`]), through the same
//!    SSRF-safe visit tool a real model uses;
//! 2. think for `OFFLINE_THINK_TICKS` ticks, each `OFFLINE_TICK_DELAY_MS` long;
//! 3. exit, with each visited page's title and first paragraph as deliverables.
//!
//! A mandate with lines `tool: <server>/<tool> <json-arguments>` instead calls those tools,
//! once per line, in order, then exits with their results as deliverables.
//!
//! It does not search, read pages beyond their first paragraph, or judge anything, and
//! its result says so.

use std::time::Duration;

use async_trait::async_trait;
use proto::TaskResult;
use runtime::config::{ConfigError, Env};

use super::{Action, Decision, Model, ModelError, View};
use crate::text::clip;

/// URLs taken from one mandate.
pub const MAX_URLS: usize = 5;
const PARAGRAPH_CHARS: usize = 400;

/// Pacing of the offline model: `OFFLINE_THINK_TICKS`, `OFFLINE_TICK_DELAY_MS`.
#[derive(Debug, Clone)]
pub struct OfflineSettings {
    pub think_ticks: u32,
    pub tick_delay: Duration,
}

impl OfflineSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            think_ticks: env.ranged("OFFLINE_THINK_TICKS", 3, 0..=10_000)?,
            tick_delay: Duration::from_millis(env.ranged("OFFLINE_TICK_DELAY_MS", 1000, 0..=600_000)?),
        })
    }
}

pub struct OfflineModel {
    settings: OfflineSettings,
}

/// The http(s) URLs in `text`, in order, without duplicates or trailing punctuation.
pub fn mandate_urls(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
        let Some(start) = word.find("http://").or_else(|| word.find("https://")) else { continue };
        let candidate = word[start..].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\'', '}']);
        if let Ok(url) = url::Url::parse(candidate) {
            let url = url.to_string();
            if url.starts_with("http") && !out.contains(&url) {
                out.push(url);
            }
        }
        if out.len() == MAX_URLS {
            break;
        }
    }
    out
}

/// The mandate's `tool: <server>/<tool> <json-arguments>` lines, in order; arguments that
/// are not a JSON object are passed as `{}`.
pub fn mandate_tool_calls(text: &str) -> Vec<(String, serde_json::Value)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("tool:"))
        .filter_map(|rest| {
            let rest = rest.trim();
            let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
            let args = serde_json::from_str::<serde_json::Value>(args.trim())
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            (!name.is_empty()).then(|| (name.to_owned(), args))
        })
        .collect()
}

impl OfflineModel {
    pub fn new(settings: OfflineSettings) -> Self {
        Self { settings }
    }

    /// (visit ticks, thinking ticks) for a task, leaving the last tick for exit.
    fn plan(&self, mandate: &str, max_ticks: u32) -> (Vec<String>, u32) {
        let budget = max_ticks.saturating_sub(1);
        let mut urls = mandate_urls(mandate);
        urls.truncate(budget as usize);
        let thinks = self.settings.think_ticks.min(budget - urls.len() as u32);
        (urls, thinks)
    }
}

#[async_trait]
impl Model for OfflineModel {
    fn name(&self) -> &str {
        "offline-demo"
    }

    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError> {
        // The demo planner's every reply is whole, as a model's that stopped on its own.
        tracing::Span::current().record("finish_reason", "stop");
        tokio::time::sleep(self.settings.tick_delay).await;
        let tick = view.state.tick;
        let calls = mandate_tool_calls(view.mandate);
        if !calls.is_empty() {
            let d = |thought: String, action: Action| Decision {
                thought,
                action,
                notes: None,
                deliverable: None,
                remember: Vec::new(),
            };
            return Ok(match calls.into_iter().nth(tick as usize) {
                Some((tool, arguments)) => d(
                    format!("offline step {}: call {tool} as the mandate says", tick + 1),
                    Action::Tool { tool, arguments },
                ),
                None => d("offline planner is done".into(), Action::Exit),
            });
        }
        let (urls, thinks) = self.plan(view.mandate, view.max_ticks);
        let visits = urls.len() as u32;
        let decision = |thought: String, action: Action, notes: Option<String>| Decision {
            thought,
            action,
            notes,
            deliverable: None,
            remember: Vec::new(),
        };
        Ok(if let Some(url) = urls.get(tick as usize) {
            decision(
                format!("offline step {}: read {url} from the mandate", tick + 1),
                Action::Visit { url: url.clone() },
                None,
            )
        } else if tick < visits + thinks {
            let words = view.mandate.split_whitespace().count();
            decision(
                format!("offline step {}: reviewing the {words}-word mandate", tick + 1),
                Action::Think,
                Some(format!("step {} considered the mandate", tick + 1)),
            )
        } else {
            decision("offline planner is done".into(), Action::Exit, None)
        })
    }

    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError> {
        tracing::Span::current().record("finish_reason", "stop");
        let state = view.state;
        if !mandate_tool_calls(view.mandate).is_empty() {
            let results: Vec<&crate::checkpoint::Step> = state.history.iter().filter(|s| s.action == "tool").collect();
            let ok = results.iter().filter(|s| s.observation.contains(" returned")).count();
            return Ok(TaskResult {
                success: ok > 0,
                deliverables: results.iter().map(|s| s.observation.clone()).collect(),
                notes: format!(
                    "Produced by the OFFLINE DEMO MODEL (no LLM configured): made the {} tool calls the mandate lists, {ok} returned a result.",
                    results.len()
                ),
                sources: Vec::new(),
                usage: None,
            });
        }
        let (urls, _) = self.plan(view.mandate, view.max_ticks);
        let thought = state.history.iter().filter(|s| s.action == "think").count();
        let failures: Vec<String> = state
            .history
            .iter()
            .filter(|s| s.action == "visit" && s.observation.starts_with("visit failed"))
            .map(|s| s.observation.clone())
            .collect();
        let mut deliverables: Vec<String> = state
            .pages
            .iter()
            .map(|p| {
                let para =
                    p.first_paragraph.as_deref().map_or("(no paragraph found)".into(), |t| clip(t, PARAGRAPH_CHARS));
                format!("{}: {para}", p.title)
            })
            .collect();
        if urls.is_empty() {
            deliverables.push(format!("Offline demo summary of the mandate: {}", clip(view.mandate, 200)));
        }
        let mut notes = format!(
            "Produced by the OFFLINE DEMO MODEL (no LLM configured): visited {} of {} URLs from the mandate, \
             {thought} thinking ticks, no search; page titles and first paragraphs only, not judged or summarised.",
            state.pages.len(),
            urls.len(),
        );
        if !failures.is_empty() {
            notes.push_str(&format!(" Failed: {}", failures.join("; ")));
        }
        Ok(TaskResult {
            success: urls.is_empty() || !state.pages.is_empty(),
            deliverables,
            notes,
            sources: state.pages.iter().map(|p| p.url.clone()).collect(),
            usage: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{LoopState, PageNote};
    use crate::meter::Meter;
    use crate::model::ToolOffer;

    fn model(think_ticks: u32) -> OfflineModel {
        OfflineModel::new(OfflineSettings { think_ticks, tick_delay: Duration::ZERO })
    }

    async fn actions(m: &OfflineModel, mandate: &str, max_ticks: u32) -> Vec<Action> {
        let meter = Meter::default();
        let mut state = LoopState::default();
        let mut out = Vec::new();
        loop {
            let view = View {
                mandate,
                max_ticks,
                state: &state,
                memories: &[],
                meter: &meter,
                search: false,
                tools: ToolOffer::none(),
            };
            let d = m.decide(&view).await.expect("offline");
            out.push(d.action.clone());
            if d.action == Action::Exit {
                return out;
            }
            state.tick += 1;
        }
    }

    #[tokio::test]
    async fn calls_the_mandates_tools_in_order_then_exits() {
        let mandate = "Add numbers.\ntool: calc/add {\"a\": 1, \"b\": 2}\n  tool: calc/echo not-json\ntool:";
        assert_eq!(
            mandate_tool_calls(mandate),
            vec![
                ("calc/add".to_owned(), serde_json::json!({"a": 1, "b": 2})),
                ("calc/echo".to_owned(), serde_json::json!({}))
            ]
        );
        let a = actions(&model(3), mandate, 10).await;
        assert_eq!(a.len(), 3);
        assert!(matches!(&a[0], Action::Tool { tool, .. } if tool == "calc/add"));
        assert_eq!(a[2], Action::Exit);
    }

    #[tokio::test]
    async fn thinks_then_exits_within_budget() {
        let m = model(3);
        for (max_ticks, expect_thinks) in [(10, 3), (2, 1), (1, 0)] {
            let a = actions(&m, "find things", max_ticks).await;
            assert_eq!(a.len() as u32 - 1, expect_thinks, "max_ticks {max_ticks}");
        }
        let meter = Meter::default();
        let view = View {
            mandate: "find things",
            max_ticks: 3,
            state: &LoopState::default(),
            memories: &[],
            meter: &meter,
            search: false,
            tools: ToolOffer::none(),
        };
        let r = m.synthesize(&view).await.expect("ok");
        assert!(r.success && r.notes.contains("OFFLINE DEMO MODEL"));
    }

    #[tokio::test]
    async fn visits_mandate_urls_first_and_reports_their_pages() {
        let mandate = "Compare https://a.example/x, (https://b.example/) and https://a.example/x again.";
        assert_eq!(mandate_urls(mandate), vec!["https://a.example/x", "https://b.example/"]);
        let a = actions(&model(1), mandate, 10).await;
        assert_eq!(
            a,
            vec![
                Action::Visit { url: "https://a.example/x".into() },
                Action::Visit { url: "https://b.example/".into() },
                Action::Think,
                Action::Exit
            ]
        );
        assert_eq!(actions(&model(1), mandate, 2).await.len(), 2, "budget caps the visits");
        let mut state = LoopState { tick: 3, ..LoopState::default() };
        state.pages.push(PageNote {
            url: "https://a.example/x".into(),
            title: "A".into(),
            first_paragraph: Some("First paragraph.".into()),
        });
        let meter = Meter::default();
        let view = View {
            mandate,
            max_ticks: 10,
            state: &state,
            memories: &[],
            meter: &meter,
            search: false,
            tools: ToolOffer::none(),
        };
        let r = model(1).synthesize(&view).await.expect("ok");
        assert_eq!(r.deliverables, vec!["A: First paragraph.".to_owned()]);
        assert_eq!(r.sources, vec!["https://a.example/x".to_owned()]);
        assert!(r.success && r.notes.contains("visited 1 of 2 URLs"));
    }
}

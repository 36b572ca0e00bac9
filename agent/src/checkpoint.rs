//! The checkpoint: the loop state of one task, saved as JSON in `checkpoint:{id}` with
//! every recorded tick (fenced by the delivery's attempt, see [`crate::tick`]) and read
//! back when a redelivered task resumes. This file owns that stored format: a checkpoint
//! written by one agent version must be readable by the next, so fields are only ever
//! added, each with `#[serde(default)]`; the tests pin records written by earlier code
//! (`agent/tests/fixtures/checkpoint-*.json`).
//!
//! The state is bounded whatever the task does: [`HISTORY_LIMIT`] steps, older
//! observations cut to [`OLD_OBSERVATION_CHARS`].

use proto::{TaskResult, Usage};
use serde::{Deserialize, Serialize};

use crate::text::clip;

/// History entries kept in the checkpoint (the prompt shows fewer).
pub const HISTORY_LIMIT: usize = 50;
/// Observation characters kept for steps older than the latest.
pub const OLD_OBSERVATION_CHARS: usize = 600;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Ticks finished so far.
    pub tick: u32,
    pub notes: Vec<String>,
    pub history: Vec<Step>,
    pub deliverables: Vec<String>,
    pub sources: Vec<String>,
    /// Pages read successfully, in order.
    #[serde(default)]
    pub pages: Vec<PageNote>,
    /// Memories stored so far (recall is skipped while there are none).
    #[serde(default)]
    pub memories: u32,
    /// Tokens used so far, so a resumed task's meter starts where the last one stopped.
    #[serde(default)]
    pub usage: Usage,
    /// URLs search results showed the model (a result may cite them beside the pages read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<String>,
    /// The tool call this task is parked on (set when it parks, cleared by the tick the
    /// decision completes), with the rest of that tick's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingCall>,
    /// The owner's messages read so far, in order (the prompt shows each once); the n-th
    /// message sent is the n-th here, so a resumed run reads only those after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_messages: Vec<String>,
}

/// A tool call waiting for the owner, and what else the model decided on that tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub call_id: String,
    /// The tick the call belongs to (1-based): it completes when the decision comes.
    pub tick: u32,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub thought: String,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub deliverable: Option<String>,
    #[serde(default)]
    pub remember: Vec<String>,
}

/// Search-result URLs kept for checking sources; a long task keeps its latest.
const SHOWN_LIMIT: usize = 200;

/// One finished tick as the model will see it in later prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub tick: u32,
    /// `search`, `visit`, `think`, `exit`, or `invalid` for a reply that was not an action.
    pub action: String,
    pub thought: String,
    pub observation: String,
}

/// A page the task read, for the prompt and the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageNote {
    pub url: String,
    pub title: String,
    #[serde(default)]
    pub first_paragraph: Option<String>,
}

impl LoopState {
    /// The stored form (compact JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("the loop state has only string keys and plain values")
    }

    /// Reads a stored checkpoint, including those written by earlier versions.
    pub fn decode(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// What a task that stops early (timeout, cancel, failure) hands back: the
    /// deliverables and sources so far, `success: false`.
    pub fn partial_result(&self, notes: &str) -> TaskResult {
        TaskResult {
            success: false,
            deliverables: self.deliverables.clone(),
            notes: notes.to_owned(),
            sources: self.sources.clone(),
            usage: None,
        }
    }

    /// Appends a step, cutting the previous step's observation and dropping the oldest
    /// steps past [`HISTORY_LIMIT`].
    pub fn push_step(&mut self, step: Step) {
        if let Some(last) = self.history.last_mut() {
            last.observation = clip(&last.observation, OLD_OBSERVATION_CHARS);
        }
        self.history.push(step);
        if self.history.len() > HISTORY_LIMIT {
            self.history.drain(..self.history.len() - HISTORY_LIMIT);
        }
    }

    /// Remembers URLs a search showed, once each.
    pub fn add_shown(&mut self, urls: impl IntoIterator<Item = String>) {
        for url in urls {
            if !self.shown.contains(&url) {
                self.shown.push(url);
            }
        }
        if self.shown.len() > SHOWN_LIMIT {
            self.shown.drain(..self.shown.len() - SHOWN_LIMIT);
        }
    }

    /// Records a page once (by URL) in the sources and the pages read.
    pub fn add_page(&mut self, page: PageNote) {
        if !self.sources.contains(&page.url) {
            self.sources.push(page.url.clone());
            self.pages.push(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by the agent before this module existed (the loop state then lived in
    /// `tick.rs`, `PageNote` in `tools/mod.rs`): every field set.
    const TODAY: &str = include_str!("../tests/fixtures/checkpoint-full.json");
    /// The default state as that code wrote it.
    const EMPTY: &str = include_str!("../tests/fixtures/checkpoint-empty.json");
    /// A checkpoint from before `pages`, `memories` and `usage` existed.
    const LEGACY: &str = include_str!("../tests/fixtures/checkpoint-legacy.json");

    #[test]
    fn reads_what_earlier_agents_wrote_and_writes_the_same_bytes() {
        for fixture in [TODAY, EMPTY] {
            let raw = fixture.trim_end();
            let state = LoopState::decode(raw).expect("decodes");
            assert_eq!(state.encode(), raw, "re-encoding changes nothing");
        }
        let s = LoopState::decode(TODAY.trim_end()).expect("decodes");
        assert_eq!(s.tick, 3);
        assert_eq!(s.history.len(), 3);
        assert_eq!(s.history[2].action, "invalid");
        assert_eq!(s.pages[0].first_paragraph.as_deref(), Some("Zebra stripes deter biting flies."));
        assert_eq!(s.pages[1].first_paragraph, None);
        assert_eq!(s.memories, 7);
        assert_eq!(
            s.usage,
            Usage { prompt_tokens: 1234, completion_tokens: 56, total_tokens: 1290, model_calls: 4, failed_calls: 0 }
        );
        assert_eq!(LoopState::decode(EMPTY.trim_end()).expect("decodes"), LoopState::default());
    }

    #[test]
    fn reads_checkpoints_from_before_pages_memories_and_usage() {
        let s = LoopState::decode(LEGACY.trim_end()).expect("decodes");
        assert_eq!(s.tick, 2);
        assert_eq!(s.sources, vec!["https://zebra.example/facts".to_owned()]);
        assert!(s.pages.is_empty() && s.memories == 0 && s.usage == Usage::default());
        let value: serde_json::Value = serde_json::from_str(&s.encode()).expect("json");
        assert_eq!(value["usage"]["total_tokens"], 0, "written back in the current shape");
    }

    #[test]
    fn history_stays_bounded() {
        let mut s = LoopState::default();
        for tick in 1..=(HISTORY_LIMIT as u32 + 5) {
            s.push_step(Step { tick, action: "think".into(), thought: String::new(), observation: "x".repeat(2000) });
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].tick, 6);
        assert_eq!(s.history.last().expect("last").observation.len(), 2000, "the latest is kept whole");
        assert!(
            s.history[..HISTORY_LIMIT - 1].iter().all(|st| st.observation.chars().count() <= OLD_OBSERVATION_CHARS + 4)
        );
    }

    #[test]
    fn pages_are_recorded_once_and_partial_results_keep_what_was_found() {
        let mut s = LoopState::default();
        let page = PageNote { url: "https://a.example/".into(), title: "A".into(), first_paragraph: None };
        s.add_page(page.clone());
        s.add_page(page);
        s.deliverables.push("d".into());
        assert_eq!((s.sources.len(), s.pages.len()), (1, 1));
        let r = s.partial_result("timed out");
        assert!(!r.success);
        assert_eq!(
            (r.deliverables, r.sources, r.notes.as_str()),
            (vec!["d".to_owned()], vec!["https://a.example/".to_owned()], "timed out")
        );
    }
}

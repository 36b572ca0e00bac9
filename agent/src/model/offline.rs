//! The OFFLINE DEMO MODEL: a deterministic planner with no LLM behind it, so the whole
//! pipeline (queue, ticks, checkpoints, cancel, results) runs without an API key. It thinks
//! for `OFFLINE_THINK_TICKS` ticks, each `OFFLINE_TICK_DELAY_MS` long, then exits with a
//! summary that says plainly it was produced offline.

use async_trait::async_trait;
use proto::TaskResult;

use super::{Action, Decision, Model, ModelError, View};
use crate::config::OfflineSettings;

pub struct OfflineModel {
    settings: OfflineSettings,
}

impl OfflineModel {
    pub fn new(settings: OfflineSettings) -> Self {
        Self { settings }
    }

    /// Thinking ticks for a task: the configured count, leaving the last tick for exit.
    fn think_ticks(&self, max_ticks: u32) -> u32 {
        self.settings.think_ticks.min(max_ticks.saturating_sub(1))
    }
}

fn excerpt(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        out.push('…');
    }
    out
}

#[async_trait]
impl Model for OfflineModel {
    fn name(&self) -> &str {
        "offline-demo"
    }

    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError> {
        tokio::time::sleep(self.settings.tick_delay).await;
        let tick = view.state.tick;
        let words = view.mandate.split_whitespace().count();
        if tick < self.think_ticks(view.max_ticks) {
            Ok(Decision {
                thought: format!("offline step {}: reviewing the {words}-word mandate", tick + 1),
                action: Action::Think,
                notes: Some(format!("step {} considered the mandate", tick + 1)),
                deliverable: None,
            })
        } else {
            Ok(Decision {
                thought: "offline planner is done".into(),
                action: Action::Exit,
                notes: None,
                deliverable: None,
            })
        }
    }

    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError> {
        let thought = view.state.history.iter().filter(|s| s.action == "think").count();
        Ok(TaskResult {
            success: true,
            deliverables: vec![format!("Offline demo summary of the mandate: {}", excerpt(view.mandate, 200))],
            notes: format!(
                "Produced by the offline demo model (no LLM configured): {thought} thinking ticks, no search, no web visits."
            ),
            sources: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::LoopState;
    use std::time::Duration;

    #[tokio::test]
    async fn thinks_then_exits_within_budget() {
        let m = OfflineModel::new(OfflineSettings { think_ticks: 3, tick_delay: Duration::ZERO });
        for (max_ticks, expect_thinks) in [(10, 3), (2, 1), (1, 0)] {
            let mut state = LoopState::default();
            let mut thinks = 0;
            loop {
                let d = m.decide(&View { mandate: "find things", max_ticks, state: &state }).await.expect("offline");
                if d.action == Action::Exit {
                    break;
                }
                thinks += 1;
                state.tick += 1;
            }
            assert_eq!(thinks, expect_thinks, "max_ticks {max_ticks}");
        }
        let r = m
            .synthesize(&View { mandate: "find things", max_ticks: 3, state: &LoopState::default() })
            .await
            .expect("ok");
        assert!(r.success && r.notes.contains("offline demo"));
    }
}

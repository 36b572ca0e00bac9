//! What a result may claim. A model's final answer is taken apart before it is stored:
//! - a source must be a page the run read (a successful `visit`) or a URL a search showed
//!   it; anything else (an invented URL, `"https://..."`, `"https:"`) is dropped;
//! - deliverables are de-duplicated, and the prompt's own placeholder text never passes;
//! - `success` is false when no deliverable survives, whatever the model said.

use proto::TaskResult;

use crate::checkpoint::LoopState;

/// Text that only echoes the prompt's format: `...`, `<text>`, punctuation.
fn placeholder(text: &str) -> bool {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    t.chars().all(|c| !c.is_alphanumeric())
        || ["<text>", "<url>", "text", "deliverable", "n/a", "none", "null"].contains(&lower.as_str())
        || lower.trim_matches(|c: char| !c.is_alphanumeric()).is_empty()
}

/// One spelling of a text for comparing: case and runs of white space do not count.
fn key(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The same URL for checking against what was read: a trailing `/` or `#fragment` aside.
fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.split('#').next().unwrap_or("").trim_end_matches('/').to_owned();
    norm(a) == norm(b)
}

/// Whether a deliverable the loop collects adds something: not a placeholder, not one it has.
pub fn new_deliverable(have: &[String], candidate: &str) -> bool {
    !placeholder(candidate) && !have.iter().any(|d| key(d) == key(candidate))
}

pub fn result(mut r: TaskResult, state: &LoopState) -> TaskResult {
    let mut seen = Vec::new();
    r.deliverables.retain(|d| {
        let k = key(d);
        let keep = !placeholder(d) && !seen.contains(&k);
        seen.push(k);
        keep
    });
    let known = |u: &String| state.sources.iter().chain(&state.shown).any(|k| same_url(u, k));
    let before = r.sources.len();
    let mut sources: Vec<String> = Vec::new();
    for s in r.sources.drain(..) {
        if known(&s) && !sources.iter().any(|x| same_url(x, &s)) {
            sources.push(s);
        }
    }
    if sources.len() < before {
        tracing::info!(dropped = before - sources.len(), "sources the run never read or saw dropped from the result");
    }
    r.sources = sources;
    if r.deliverables.is_empty() {
        r.success = false;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> LoopState {
        LoopState {
            sources: vec!["https://read.example/page".into()],
            shown: vec!["https://shown.example/".into()],
            ..LoopState::default()
        }
    }

    fn answer(deliverables: &[&str], sources: &[&str]) -> TaskResult {
        TaskResult {
            success: true,
            deliverables: deliverables.iter().map(|s| (*s).to_owned()).collect(),
            notes: String::new(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            usage: None,
        }
    }

    #[test]
    fn only_read_or_shown_sources_pass() {
        let r = result(
            answer(
                &["Stripes deter flies."],
                &[
                    "https://...",
                    "https:",
                    "https:https://",
                    "https://read.example/page/",
                    "https://shown.example",
                    "https://invented.example/",
                ],
            ),
            &state(),
        );
        assert_eq!(r.sources, vec!["https://read.example/page/".to_owned(), "https://shown.example".to_owned()]);
        assert!(r.success);
    }

    #[test]
    fn placeholders_and_duplicates_go_and_success_follows() {
        let r = result(answer(&["...", "…", "<text>", "A fact.", "a  FACT.", " "], &[]), &state());
        assert_eq!(r.deliverables, vec!["A fact.".to_owned()]);
        let r = result(answer(&["...", "<text>"], &["https://read.example/page"]), &state());
        assert!(r.deliverables.is_empty() && !r.success, "nothing left is no success");
    }

    proptest! {
        #[test]
        fn a_vetted_result_claims_nothing_unread(
            deliverables in proptest::collection::vec("[ a-zA-Z.…<>]{0,12}", 0..8),
            sources in proptest::collection::vec("(https?://[a-z]{1,8}\\.example/?)|(https:)|([a-z]{0,5})", 0..8),
        ) {
            let st = state();
            let ds: Vec<&str> = deliverables.iter().map(String::as_str).collect();
            let ss: Vec<&str> = sources.iter().map(String::as_str).collect();
            let r = result(answer(&ds, &ss), &st);
            for s in &r.sources {
                prop_assert!(st.sources.iter().chain(&st.shown).any(|k| same_url(s, k)));
            }
            prop_assert!(r.deliverables.iter().all(|d| !placeholder(d)));
            prop_assert!(!r.success || !r.deliverables.is_empty());
            let keys: Vec<String> = r.deliverables.iter().map(|d| key(d)).collect();
            let mut uniq = keys.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(keys.len(), uniq.len());
        }
    }
}

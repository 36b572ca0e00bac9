//! Turning a model's reply into a [`Decision`] or a [`TaskResult`].
//!
//! Models served without structured output wrap JSON in code fences or prose, use `null`
//! for absent fields, or forget a field. Parsing goes through loose shapes and then
//! validates, so every rejection has a specific reason the repair prompt can quote back.

use proto::TaskResult;
use serde::Deserialize;

use super::{Action, Decision};
use crate::text::clip;

/// Longest text kept from one field of a reply; a runaway model cannot bloat the checkpoint.
const FIELD_CHARS: usize = 4000;
/// Most `remember` items and deliverables taken from one reply.
const LIST_ITEMS: usize = 20;

#[derive(Deserialize)]
struct LooseDecision {
    thought: Option<String>,
    action: Option<LooseAction>,
    notes: Option<String>,
    deliverable: Option<String>,
    remember: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct LooseAction {
    #[serde(rename = "type")]
    kind: Option<String>,
    query: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct LooseResult {
    success: Option<bool>,
    deliverables: Option<Vec<String>>,
    notes: Option<String>,
    sources: Option<Vec<String>>,
}

/// The JSON object in `text`: the whole reply, or the outermost `{…}` inside fences or prose.
fn json_object(text: &str) -> Result<serde_json::Value, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the reply was empty".into());
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed) {
        return Ok(v);
    }
    let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}')) else {
        return Err("the reply contained no JSON object".into());
    };
    if end <= start {
        return Err("the reply contained no JSON object".into());
    }
    serde_json::from_str(&trimmed[start..=end]).map_err(|e| format!("the JSON did not parse: {e}"))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).map(|s| clip(&s, FIELD_CHARS))
}

fn list(items: Option<Vec<String>>) -> Vec<String> {
    items.unwrap_or_default().into_iter().filter_map(|s| non_empty(Some(s))).take(LIST_ITEMS).collect()
}

pub fn decision(text: &str) -> Result<Decision, String> {
    let value = json_object(text)?;
    let loose: LooseDecision =
        serde_json::from_value(value).map_err(|e| format!("the JSON did not match the action schema: {e}"))?;
    let action = loose.action.ok_or("the field \"action\" is missing")?;
    let kind = non_empty(action.kind).ok_or("the field \"action.type\" is missing")?;
    let action = match kind.to_ascii_lowercase().as_str() {
        "search" => {
            Action::Search { query: non_empty(action.query).ok_or("action \"search\" needs a non-empty \"query\"")? }
        }
        "visit" => {
            let url = non_empty(action.url).ok_or("action \"visit\" needs a non-empty \"url\"")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("action \"visit\" needs an http(s) URL, got {url:?}"));
            }
            Action::Visit { url }
        }
        "think" => Action::Think,
        "exit" => Action::Exit,
        other => return Err(format!("unknown action type {other:?}; use search, visit, think or exit")),
    };
    Ok(Decision {
        thought: non_empty(loose.thought).unwrap_or_default(),
        action,
        notes: non_empty(loose.notes),
        deliverable: non_empty(loose.deliverable),
        remember: list(loose.remember),
    })
}

pub fn result(text: &str) -> Result<TaskResult, String> {
    let value = json_object(text)?;
    let loose: LooseResult =
        serde_json::from_value(value).map_err(|e| format!("the JSON did not match the result schema: {e}"))?;
    let deliverables = list(loose.deliverables);
    Ok(TaskResult {
        success: loose.success.unwrap_or(!deliverables.is_empty()),
        deliverables,
        notes: non_empty(loose.notes).unwrap_or_default(),
        sources: list(loose.sources).into_iter().filter(|s| s.starts_with("http")).collect(),
        usage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_from_fenced_and_nullable_replies() {
        let d =
            decision("```json\n{\"thought\":\"t\",\"action\":{\"type\":\"search\",\"query\":\"q\",\"url\":null}}\n```")
                .expect("fenced");
        assert_eq!(d.action, Action::Search { query: "q".into() });
        let d = decision(r#"{"thought":"t","action":{"type":"think","query":null,"url":null},"remember":["a",""]}"#)
            .expect("nullable");
        assert_eq!(d.action, Action::Think);
        assert_eq!(d.remember, vec!["a".to_owned()]);
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        for (text, reason) in [
            ("", "empty"),
            ("I think I should search", "no JSON object"),
            (r#"{"thought":"t"}"#, "\"action\" is missing"),
            (r#"{"action":{"type":"search"}}"#, "needs a non-empty \"query\""),
            (r#"{"action":{"type":"visit","url":"file:///etc/passwd"}}"#, "http(s) URL"),
            (r#"{"action":{"type":"dance"}}"#, "unknown action type"),
            (r#"{"action":{"type":"exit"}"#, "did not parse"),
        ] {
            let e = decision(text).expect_err(text);
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }

    #[test]
    fn results_keep_only_web_sources() {
        let r = result(r#"{"success":true,"deliverables":["x"],"notes":"n","sources":["https://a.example/","nope"]}"#)
            .expect("result");
        assert!(r.success);
        assert_eq!(r.sources, vec!["https://a.example/".to_owned()]);
        assert!(result("[1,2]").is_err());
    }
}

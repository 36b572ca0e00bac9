//! Turning a model's reply into a [`Decision`] or a [`TaskResult`].
//!
//! Models served without structured output wrap JSON in code fences or prose, use `null`
//! for absent fields, or forget a field. Parsing goes through loose shapes and then
//! validates, so every rejection has a specific reason the repair prompt can quote back.

use proto::TaskResult;
use serde::Deserialize;

use super::{Action, Decision, ToolOffer};
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
    tool: Option<String>,
    arguments: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LooseResult {
    success: Option<bool>,
    deliverables: Option<Vec<String>>,
    notes: Option<String>,
    sources: Option<Vec<String>>,
}

/// Whether `text` is JSON that stops before it ends: a reply cut off at the length limit
/// by a server that did not say so.
pub fn cut_off(text: &str) -> bool {
    let trimmed = text.trim();
    let Some(start) = trimmed.find('{') else { return false };
    matches!(
        serde_json::from_str::<serde_json::Value>(&trimmed[start..]),
        Err(e) if e.classify() == serde_json::error::Category::Eof
    )
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
    if cut_off(trimmed) {
        return Err("the reply was cut off in the middle of its JSON".into());
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

/// A `visit` target: an http(s) URL, or a bare host or `www.` address (`example.com/page`),
/// which the visit tool tries as `https://` first.
fn visit_target(raw: String) -> Result<String, String> {
    if raw.starts_with("http://") || raw.starts_with("https://") {
        return Ok(raw);
    }
    let bare = !raw.contains("://") && !raw.contains(char::is_whitespace);
    let host = url::Url::parse(&format!("https://{raw}")).ok().and_then(|u| u.host_str().map(str::to_owned));
    match host {
        Some(h) if bare && h.contains('.') => Ok(raw),
        _ => Err(format!("action \"visit\" needs an http(s) URL, got {raw:?}")),
    }
}

/// The first way `args` breaks `schema`, if any.
pub fn check_arguments(schema: &serde_json::Value, args: &serde_json::Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("the tool's schema is unusable: {e}"))?;
    match validator.iter_errors(args).next() {
        None => Ok(()),
        Some(e) => {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { String::new() } else { format!(" at {at}") };
            Err(clip(&format!("{e}{at}"), 300))
        }
    }
}

/// A `tool` action: a tool on offer, and arguments (an object, or a JSON string of one) its
/// input schema accepts. A failure is a reason the repair turn quotes, never a call.
fn tool_call(tools: &ToolOffer, name: Option<String>, arguments: Option<serde_json::Value>) -> Result<Action, String> {
    let name = non_empty(name).ok_or("action \"tool\" needs \"tool\", the name of a listed tool")?;
    let Some(info) = tools.get(&name) else {
        let names: Vec<&str> = tools.tools.iter().map(|t| t.full_name.as_str()).collect();
        return Err(format!("there is no tool {name:?}; the tools are: {}", names.join(", ")));
    };
    let arguments = match arguments {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(serde_json::Value::String(s)) => {
            serde_json::from_str(&s).map_err(|e| format!("\"arguments\" is not a JSON object: {e}"))?
        }
        Some(v) => v,
    };
    if !arguments.is_object() {
        return Err("\"arguments\" must be a JSON object".into());
    }
    check_arguments(&info.input_schema, &arguments)
        .map_err(|e| format!("the arguments for {name} do not match its input schema: {e}"))?;
    Ok(Action::Tool { tool: name, arguments })
}

/// A tick's decision; `search` is whether the search action is on offer, `tools` the MCP
/// tools that are.
pub fn decision(text: &str, search: bool, tools: &ToolOffer) -> Result<Decision, String> {
    let value = json_object(text)?;
    let loose: LooseDecision =
        serde_json::from_value(value).map_err(|e| format!("the JSON did not match the action schema: {e}"))?;
    let action = loose.action.ok_or("the field \"action\" is missing")?;
    let kind = non_empty(action.kind).ok_or("the field \"action.type\" is missing")?;
    let action = match kind.to_ascii_lowercase().as_str() {
        "search" if !search => return Err("search is not available here; use visit, think or exit".into()),
        "search" => {
            Action::Search { query: non_empty(action.query).ok_or("action \"search\" needs a non-empty \"query\"")? }
        }
        "visit" => {
            let url = non_empty(action.url).ok_or("action \"visit\" needs a non-empty \"url\"")?;
            Action::Visit { url: visit_target(url)? }
        }
        "tool" if tools.tools.is_empty() => return Err("no tools are available here; use visit, think or exit".into()),
        "tool" => tool_call(tools, action.tool, action.arguments)?,
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
        // Checked against what the run read and was shown by `vet`; here only the shape.
        sources: list(loose.sources),
        usage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_from_fenced_and_nullable_replies() {
        let d = decision_with_search(
            "```json\n{\"thought\":\"t\",\"action\":{\"type\":\"search\",\"query\":\"q\",\"url\":null}}\n```",
        )
        .expect("fenced");
        assert_eq!(d.action, Action::Search { query: "q".into() });
        let d = decision(
            r#"{"thought":"t","action":{"type":"think","query":null,"url":null},"remember":["a",""]}"#,
            true,
            ToolOffer::none(),
        )
        .expect("nullable");
        assert_eq!(d.action, Action::Think);
        assert_eq!(d.remember, vec!["a".to_owned()]);
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        for (text, reason) in [
            ("", "empty"),
            ("I think I should search", "no JSON object"),
            (r#"{"thought":"a very long thought that never"#, "cut off"),
            (r#"{"action":{"type":"visit","url":"not a host"}}"#, "http(s) URL"),
            (r#"{"thought":"t"}"#, "\"action\" is missing"),
            (r#"{"action":{"type":"search"}}"#, "needs a non-empty \"query\""),
            (r#"{"action":{"type":"visit","url":"file:///etc/passwd"}}"#, "http(s) URL"),
            (r#"{"action":{"type":"dance"}}"#, "unknown action type"),
            (r#"{"action":{"type":"exit"}"#, "cut off"),
            (r#"{"action": nope}"#, "did not parse"),
        ] {
            let e = decision(text, true, ToolOffer::none()).expect_err(text);
            assert!(e.contains(reason), "{text:?}: {e}");
        }
    }

    fn decision_with_search(text: &str) -> Result<Decision, String> {
        decision(text, true, ToolOffer::none())
    }

    #[test]
    fn search_is_refused_when_it_is_off_and_bare_hosts_are_visits() {
        let search = r#"{"thought":"t","action":{"type":"search","query":"q","url":null}}"#;
        assert!(decision(search, false, ToolOffer::none()).expect_err("off").contains("not available"));
        for (url, ok) in [
            ("www.example.com", true),
            ("example.org/page?x=1", true),
            ("localhost", false),
            ("ftp://x.example", false),
        ] {
            let text = format!(r#"{{"action":{{"type":"visit","url":"{url}"}}}}"#);
            assert_eq!(decision(&text, false, ToolOffer::none()).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn tool_calls_name_a_listed_tool_with_arguments_its_schema_accepts() {
        let offer = ToolOffer {
            tools: vec![runtime::mcp::ToolInfo {
                full_name: "calc/add".into(),
                description: "adds".into(),
                input_schema: serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
                needs_approval: false,
            }],
            unavailable: vec![],
        };
        let call = |tool: &str, args: &str| {
            decision(&format!(r#"{{"action":{{"type":"tool","tool":"{tool}","arguments":{args}}}}}"#), false, &offer)
        };
        assert_eq!(
            call("calc/add", r#"{"a": 2}"#).expect("ok").action,
            Action::Tool { tool: "calc/add".into(), arguments: serde_json::json!({"a": 2}) }
        );
        assert!(call("calc/add", r#""{\"a\": 3}""#).is_ok(), "a JSON string of the object (strict mode)");
        assert!(call("calc/add", r#"{"a": "two"}"#).expect_err("type").contains("do not match its input schema"));
        assert!(call("calc/add", "{}").expect_err("required").contains("input schema"));
        assert!(call("calc/sub", "{}").expect_err("unknown").contains("the tools are: calc/add"));
        assert!(call("calc/add", "[1]").is_err());
        let none = decision(r#"{"action":{"type":"tool","tool":"calc/add"}}"#, false, ToolOffer::none());
        assert!(none.expect_err("none offered").contains("no tools"));
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]});
        assert!(check_arguments(&schema, &serde_json::json!({"n": 2})).is_ok());
        let e = check_arguments(&schema, &serde_json::json!({"n": 0})).expect_err("minimum");
        assert!(e.contains("/n"), "{e}");
        assert!(check_arguments(&schema, &serde_json::json!({})).is_err());
    }

    #[test]
    fn cut_off_json_is_told_apart_from_prose() {
        assert!(cut_off(r#"{"thought": "and then"#));
        assert!(cut_off(
            r#"```json
{"a": [1, 2"#
        ));
        assert!(!cut_off(r#"{"a": 1}"#));
        assert!(!cut_off("no json here"));
        assert!(!cut_off(r#"{"a": 1}} trailing"#));
    }

    #[test]
    fn results_parse_loosely() {
        let r = result(r#"{"success":true,"deliverables":["x"],"notes":"n","sources":["https://a.example/"]}"#)
            .expect("result");
        assert!(r.success);
        assert_eq!(r.sources, vec!["https://a.example/".to_owned()]);
        assert!(result("[1,2]").is_err());
    }
}

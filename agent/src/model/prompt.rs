//! Prompts: the texts live in `agent/prompts/` and are compiled in; this module fills
//! their `{{placeholders}}` from the loop state, bounding every part so a long task's
//! prompt stays the same size as a short one's.

use std::sync::LazyLock;

use super::{ToolOffer, View};
use crate::memory::Recalled;
use crate::text::clip;

const SYSTEM: &str = include_str!("../../prompts/system.md");
const TICK: &str = include_str!("../../prompts/tick.md");
const SYNTHESIS: &str = include_str!("../../prompts/synthesis.md");
const REPAIR: &str = include_str!("../../prompts/repair.md");

/// JSON schemas for structured output (strict mode: every field required, absent = null),
/// with length bounds: constrained decoding forces a reply's shape but not its length.
static ACTION_SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../prompts/action.schema.json")).expect("action.schema.json is valid JSON")
});
static RESULT_SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../prompts/result.schema.json")).expect("result.schema.json is valid JSON")
});

/// Which JSON Schema keywords the server's structured output accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Every bound (llama.cpp, vLLM, Ollama turn `maxLength` and `maxItems` into grammar).
    Full,
    /// OpenAI's strict mode, which refuses a schema with `maxLength`; `maxItems` stays.
    OpenAi,
}

/// The action schema: only the actions this agent can run, with the dialect's bounds. With
/// MCP tools on offer, `tool` (one of their names) and `arguments` (an object; a JSON string
/// in OpenAI's strict mode, which refuses an object without declared properties).
pub fn action_schema(search: bool, tools: &ToolOffer, dialect: Dialect) -> serde_json::Value {
    let mut schema = ACTION_SCHEMA.clone();
    let action = &mut schema["properties"]["action"];
    action["properties"]["type"]["enum"] = serde_json::json!(action_types(search, !tools.tools.is_empty()));
    if !tools.tools.is_empty() {
        let mut names: Vec<serde_json::Value> = tools.tools.iter().map(|t| t.full_name.clone().into()).collect();
        names.push(serde_json::Value::Null);
        action["properties"]["tool"] = serde_json::json!({"type": ["string", "null"], "enum": names});
        action["properties"]["arguments"] = match dialect {
            // One of the tools' own schemas, bounded: a free-form object lets a small model
            // write keys until the token limit cuts it off.
            Dialect::Full => {
                let mut choices: Vec<serde_json::Value> =
                    tools.tools.iter().map(|t| bounded(t.input_schema.clone())).collect();
                choices.push(serde_json::json!({"type": "null"}));
                serde_json::json!({"anyOf": choices})
            }
            Dialect::OpenAi => serde_json::json!({"type": ["string", "null"], "description": "a JSON object"}),
        };
        if let Some(req) = action["required"].as_array_mut() {
            req.extend(["tool".into(), "arguments".into()]);
        }
    }
    for_dialect(schema, dialect)
}

/// Characters of a tool argument string the grammar allows when its schema sets no bound.
const ARGUMENT_CHARS: u64 = 500;

/// A tool's input schema with every object closed (`additionalProperties: false` unless
/// it says otherwise) and every string bounded, so constrained decoding cannot run on.
fn bounded(mut schema: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        let serde_json::Value::Object(map) = v else { return };
        let is = |map: &serde_json::Map<String, serde_json::Value>, t: &str| match map.get("type") {
            Some(serde_json::Value::String(s)) => s == t,
            Some(serde_json::Value::Array(a)) => a.iter().any(|x| x == t),
            _ => false,
        };
        if (is(map, "object") || map.contains_key("properties")) && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".into(), false.into());
        }
        if is(map, "string") && !map.contains_key("maxLength") && !map.contains_key("enum") {
            map.insert("maxLength".into(), ARGUMENT_CHARS.into());
        }
        for key in ["properties", "$defs", "definitions"] {
            if let Some(serde_json::Value::Object(props)) = map.get_mut(key) {
                props.values_mut().for_each(walk);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(inner) = map.get_mut(key) {
                walk(inner);
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(serde_json::Value::Array(items)) = map.get_mut(key) {
                items.iter_mut().for_each(walk);
            }
        }
    }
    walk(&mut schema);
    schema
}

pub fn result_schema(dialect: Dialect) -> serde_json::Value {
    for_dialect(RESULT_SCHEMA.clone(), dialect)
}

fn for_dialect(mut schema: serde_json::Value, dialect: Dialect) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value, keyword: &str) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove(keyword);
                map.values_mut().for_each(|v| strip(v, keyword));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip(v, keyword)),
            _ => {}
        }
    }
    if dialect == Dialect::OpenAi {
        strip(&mut schema, "maxLength");
    }
    schema
}

fn action_types(search: bool, tools: bool) -> Vec<&'static str> {
    let all = ["search", "visit", "tool", "think", "exit"];
    all.into_iter().filter(|a| (search || *a != "search") && (tools || *a != "tool")).collect()
}

/// The system prompt, naming only the actions this agent can run.
pub fn system(search: bool, tools: bool) -> String {
    let mut actions = Vec::new();
    if search {
        actions.push("- `search`: query a web search engine. Give `query`. You get titles, URLs and snippets.");
    }
    actions.push("- `visit`: read one web page. Give `url` (http or https). You get its title and text.");
    if tools {
        actions.push(
            "- `tool`: call one of the tools listed under \"Tools you can call\". Give `tool` (its name) and \
             `arguments` (a JSON object its input schema accepts). You get its result.",
        );
    }
    actions.extend([
        "- `think`: reason without a tool, to plan or to combine what you have found.",
        "- `exit`: stop; you have enough to answer the mandate, or more work will not help.",
    ]);
    let types: Vec<String> = action_types(search, tools).iter().map(|a| format!("\"{a}\"")).collect();
    let fields =
        if tools { ", \"tool\": <tool name> or null, \"arguments\": {<name>: <value>, ...} or null" } else { "" };
    Template::new(SYSTEM)
        .with("{{actions}}", actions.join("\n"))
        .with("{{action_types}}", types.join(" | "))
        .with("{{action_fields}}", fields.to_owned())
        .render()
}

/// Characters of one tool's input schema in the prompt.
const SCHEMA_CHARS: usize = 1500;

/// The tools section of a tick's prompt (empty without tools).
fn tools_section(offer: &ToolOffer) -> String {
    if offer.tools.is_empty() && offer.unavailable.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n\n## Tools you can call\n");
    for t in &offer.tools {
        let approval = if t.needs_approval { " (needs the owner's approval: the task waits for it)" } else { "" };
        out.push_str(&format!(
            "- `{}`{approval}: {}\n  input schema: {}\n",
            t.full_name,
            clip(&t.description, 500),
            clip(&t.input_schema.to_string(), SCHEMA_CHARS)
        ));
    }
    for u in &offer.unavailable {
        out.push_str(&format!("- {u}\n"));
    }
    out.trim_end().to_owned()
}

/// The owner's messages (empty when there are none), each once, oldest first.
fn owner_section(messages: &[String]) -> String {
    if messages.is_empty() {
        return String::new();
    }
    format!("\n\n# Messages from the task's owner (follow them)\n{}", bullets(messages.iter().cloned()))
}

/// Steps shown in the prompt, newest last.
const HISTORY_IN_PROMPT: usize = 8;
/// Characters of an older step's observation; the latest step shows its checkpointed text.
const OLD_OBSERVATION_CHARS: usize = 600;
const NOTES_IN_PROMPT: usize = 10;
const MEMORY_CHARS: usize = 700;
const MANDATE_CHARS: usize = 8000;

fn bullets(items: impl IntoIterator<Item = String>) -> String {
    let lines: Vec<String> = items.into_iter().map(|i| format!("- {i}")).collect();
    if lines.is_empty() { "(none)".to_owned() } else { lines.join("\n") }
}

pub fn memories(recalled: &[Recalled]) -> String {
    bullets(recalled.iter().map(|m| {
        let source = m.url.as_deref().map(|u| format!(" (source: {u})")).unwrap_or_default();
        format!("[{} from tick {}] {}{source}", m.kind.as_str(), m.tick, clip(&m.text, MEMORY_CHARS))
    }))
}

fn history(view: &View<'_>) -> String {
    let steps = &view.state.history;
    let shown = &steps[steps.len().saturating_sub(HISTORY_IN_PROMPT)..];
    let last = shown.len().saturating_sub(1);
    let text: Vec<String> = shown
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let observation =
                if i == last { s.observation.clone() } else { clip(&s.observation, OLD_OBSERVATION_CHARS) };
            let observation = if observation.is_empty() { String::new() } else { format!("\n  result: {observation}") };
            format!("- tick {} `{}`: {}{observation}", s.tick, s.action, s.thought)
        })
        .collect();
    if text.is_empty() { "(none yet)".to_owned() } else { text.join("\n") }
}

fn fill(template: &str, view: &View<'_>, tick: u32) -> String {
    let state = view.state;
    let notes = &state.notes[state.notes.len().saturating_sub(NOTES_IN_PROMPT)..];
    let pages = state.pages.iter().map(|p| format!("{} — {}", p.url, p.title));
    [
        ("{{mandate}}", clip(view.mandate, MANDATE_CHARS)),
        ("{{tick}}", tick.to_string()),
        ("{{max_ticks}}", view.max_ticks.to_string()),
        ("{{remaining}}", view.max_ticks.saturating_sub(tick).to_string()),
        ("{{notes}}", bullets(notes.iter().cloned())),
        ("{{deliverables}}", bullets(state.deliverables.iter().cloned())),
        ("{{sources}}", bullets(pages)),
        ("{{memories}}", memories(view.memories)),
        ("{{history}}", history(view)),
        ("{{owner}}", owner_section(&state.owner_messages)),
        ("{{tools}}", tools_section(view.tools)),
    ]
    .into_iter()
    // Placeholders are replaced in one pass over the template, so text that came from a
    // web page and happens to contain `{{history}}` is never expanded.
    .fold(Template::new(template), |t, (k, v)| t.with(k, v))
    .render()
}

/// The user message of a tick.
pub fn tick(view: &View<'_>) -> String {
    fill(TICK, view, view.state.tick + 1)
}

/// The user message of the final synthesis call.
pub fn synthesis(view: &View<'_>) -> String {
    fill(SYNTHESIS, view, view.state.tick)
}

pub fn repair(reason: &str) -> String {
    REPAIR.replace("{{reason}}", &clip(reason, 500))
}

/// The note a retry after a cut-off reply carries.
pub fn shorter(max_tokens: u32) -> String {
    format!(
        "Your previous reply was cut off at the length limit ({max_tokens} tokens) and was lost. \
         Reply again with the same kind of JSON object, much shorter: a sentence or two per field."
    )
}

struct Template<'a> {
    text: &'a str,
    values: Vec<(&'static str, String)>,
}

impl<'a> Template<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, values: Vec::new() }
    }

    fn with(mut self, key: &'static str, value: String) -> Self {
        self.values.push((key, value));
        self
    }

    fn render(self) -> String {
        let mut out = String::with_capacity(self.text.len() * 2);
        let mut rest = self.text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            match self.values.iter().find(|(k, _)| tail.starts_with(k)) {
                Some((k, v)) => {
                    out.push_str(v);
                    rest = &tail[k.len()..];
                }
                None => {
                    out.push_str("{{");
                    rest = &tail[2..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{LoopState, Step};
    use crate::memory::{Kind, Recalled};
    use crate::meter::Meter;
    use crate::model::ToolOffer;

    #[test]
    fn tick_prompt_carries_state_and_does_not_expand_page_text() {
        let mut state = LoopState { tick: 2, ..LoopState::default() };
        state.notes.push("note one".into());
        state.history.push(Step {
            tick: 2,
            action: "visit".into(),
            thought: "read it".into(),
            observation: "page says {{history}} and {{mandate}}".into(),
        });
        let recalled = [Recalled {
            text: "the sky is blue".into(),
            kind: Kind::Fact,
            tick: 1,
            url: Some("https://sky.example/".into()),
            score: 0.9,
        }];
        let meter = Meter::default();
        let view = View {
            mandate: "find colours",
            max_ticks: 5,
            state: &state,
            memories: &recalled,
            meter: &meter,
            search: true,
            tools: ToolOffer::none(),
        };
        let p = tick(&view);
        assert!(p.contains("find colours") && p.contains("Tick 3 of 5 (2 left"), "{p}");
        assert!(p.contains("- note one"));
        assert!(p.contains("[fact from tick 1] the sky is blue (source: https://sky.example/)"));
        assert!(p.contains("page says {{history}} and {{mandate}}"), "page text kept verbatim: {p}");
        assert!(!p.contains("{{notes}}"));
        assert!(synthesis(&view).contains("after 2 of 5 ticks"));
        assert!(repair("no JSON").contains("could not be used: no JSON"));
        assert_eq!(ACTION_SCHEMA["required"][1], "action");
        assert_eq!(RESULT_SCHEMA["required"][0], "success");
    }

    #[test]
    fn the_action_set_follows_the_tools() {
        let with = action_schema(true, ToolOffer::none(), Dialect::Full);
        let without = action_schema(false, ToolOffer::none(), Dialect::Full);
        let types = |s: &serde_json::Value| s["properties"]["action"]["properties"]["type"]["enum"].clone();
        assert_eq!(types(&with), serde_json::json!(["search", "visit", "think", "exit"]));
        assert_eq!(types(&without), serde_json::json!(["visit", "think", "exit"]));
        assert!(system(true, false).contains("`search`") && system(true, false).contains("\"search\" | \"visit\""));
        assert!(!system(false, false).contains("`search`") && !system(false, false).contains("\"search\""));
        assert!(!system(false, false).contains("{{"), "every placeholder filled");
        assert!(!system(false, false).contains("`tool`") && system(false, true).contains("`tool`"));
        let offer = ToolOffer {
            tools: vec![runtime::mcp::ToolInfo {
                full_name: "calc/add".into(),
                description: "adds".into(),
                input_schema: serde_json::json!({"type": "object"}),
                needs_approval: false,
            }],
            unavailable: vec![],
        };
        let schema = action_schema(false, &offer, Dialect::Full);
        assert_eq!(types(&schema), serde_json::json!(["visit", "tool", "think", "exit"]));
        assert_eq!(schema["properties"]["action"]["properties"]["tool"]["enum"], serde_json::json!(["calc/add", null]));
        let args = &schema["properties"]["action"]["properties"]["arguments"]["anyOf"];
        assert_eq!(args[0]["additionalProperties"], false, "the tool's object is closed: {args}");
        assert_eq!(args[1], serde_json::json!({"type": "null"}));
        let strict = action_schema(false, &offer, Dialect::OpenAi);
        assert_eq!(
            strict["properties"]["action"]["properties"]["arguments"]["type"],
            serde_json::json!(["string", "null"])
        );
    }

    #[test]
    fn tool_schemas_are_closed_and_bounded_for_the_grammar() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 9}},
            "opts": {"type": "object", "additionalProperties": true}
        }});
        let b = bounded(schema);
        assert_eq!(b["additionalProperties"], false);
        assert_eq!(b["properties"]["name"]["maxLength"], ARGUMENT_CHARS);
        assert!(b["properties"]["mode"].get("maxLength").is_none(), "an enum is bounded already");
        assert_eq!(b["properties"]["tags"]["items"]["maxLength"], 9, "its own bound stays");
        assert_eq!(b["properties"]["opts"]["additionalProperties"], true, "what it says is kept");
    }

    #[test]
    fn each_dialect_gets_the_bounds_it_accepts() {
        let full = action_schema(true, ToolOffer::none(), Dialect::Full).to_string();
        assert!(full.contains("maxLength") && full.contains("maxItems"));
        for schema in [action_schema(true, ToolOffer::none(), Dialect::OpenAi), result_schema(Dialect::OpenAi)] {
            let text = schema.to_string();
            assert!(!text.contains("maxLength"), "OpenAI strict mode refuses maxLength: {text}");
            assert!(text.contains("maxItems"));
        }
        assert!(result_schema(Dialect::Full).to_string().contains("maxLength"));
    }
}

//! HTML to readable text, with a real HTML parser (`scraper`, i.e. html5ever): the title,
//! the first real paragraph, and the visible text with block structure kept as lines.
//! Scripts, styles, navigation and other chrome are dropped; everything else is text.

use scraper::{Html, Node, Selector};

/// Elements whose content is never readable text, or is page chrome rather than content.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas", "nav", "aside", "footer",
    "form", "button", "select", "textarea",
];
/// Elements that start a new line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "br",
    "blockquote",
    "pre",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "hr",
    "body",
    "td",
    "th",
];
/// Elements that never nest (void) or are closed implicitly by their next sibling.
const FLAT: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "p", "li",
    "dt", "dd", "option", "tr", "td", "th", "!doctype",
];
/// Nesting deeper than this is cut off before parsing: html5ever's scope checks walk the
/// stack of open elements on every tag, so a page of 100 000 nested `<div>`s takes
/// minutes of CPU. No readable page nests this deep.
pub const MAX_DEPTH: usize = 512;
/// A paragraph shorter than this is a caption or a button, not "the first paragraph".
const MIN_PARAGRAPH_CHARS: usize = 40;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readable {
    pub title: Option<String>,
    pub first_paragraph: Option<String>,
    pub text: String,
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

enum Step<N> {
    Enter(N),
    Leave,
}

/// The length of the prefix of `html` whose (estimated) element nesting stays within
/// `max`. The estimate counts start and end tags and ignores void and implicitly closed
/// elements; it errs towards deeper, which only ever cuts a hostile page short.
pub fn nesting_cut(html: &str, max: usize) -> usize {
    let b = html.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|c| *c == b'<') {
        i += off;
        match b.get(i + 1) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(c) if c.is_ascii_alphabetic() => {
                let name_end =
                    b[i + 1..].iter().position(|c| !c.is_ascii_alphanumeric()).map_or(b.len(), |p| i + 1 + p);
                let name = html[i + 1..name_end].to_ascii_lowercase();
                let tag_end = b[name_end..].iter().position(|c| *c == b'>').map_or(b.len(), |p| name_end + p);
                let self_closing = tag_end > 0 && b.get(tag_end - 1) == Some(&b'/');
                if !self_closing && !FLAT.contains(&name.as_str()) {
                    depth += 1;
                    if depth > max {
                        return i;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    html.len()
}

/// Parses `html` (CPU work: call it off the async runtime for large pages).
pub fn readable(html: &str) -> Readable {
    let html = &html[..nesting_cut(html, MAX_DEPTH)];
    let doc = Html::parse_document(html);
    let first = |sel: &str| -> Option<String> {
        let sel = Selector::parse(sel).ok()?;
        doc.select(&sel).map(|e| collapse(&e.text().collect::<String>())).find(|t| !t.is_empty())
    };
    let title = first("title").or_else(|| first("h1"));
    let first_paragraph = Selector::parse("p").ok().and_then(|sel| {
        doc.select(&sel)
            .map(|e| collapse(&e.text().collect::<String>()))
            .find(|t| t.chars().count() >= MIN_PARAGRAPH_CHARS)
    });

    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let flush = |line: &mut String, lines: &mut Vec<String>| {
        let t = collapse(line);
        if !t.is_empty() {
            lines.push(t);
        }
        line.clear();
    };
    // An explicit stack instead of recursion: hostile pages nest elements deeply enough
    // to overflow a thread's stack.
    let mut stack = vec![Step::Enter(doc.tree.root())];
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Leave => {
                flush(&mut line, &mut lines);
                continue;
            }
            Step::Enter(node) => node,
        };
        match node.value() {
            Node::Text(t) => {
                line.push_str(t);
                line.push(' ');
            }
            Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    continue;
                }
                if BLOCKS.contains(&name) {
                    flush(&mut line, &mut lines);
                    match name {
                        "li" => line.push_str("- "),
                        "h1" | "h2" | "h3" => line.push_str("# "),
                        _ => {}
                    }
                    stack.push(Step::Leave);
                }
                let children: Vec<_> = node.children().collect();
                stack.extend(children.into_iter().rev().map(Step::Enter));
            }
            Node::Document | Node::Fragment => {
                let children: Vec<_> = node.children().collect();
                stack.extend(children.into_iter().rev().map(Step::Enter));
            }
            _ => {}
        }
    }
    flush(&mut line, &mut lines);
    // A lone bullet marker or heading marker is not content.
    lines.retain(|l| l != "-" && l != "#");
    Readable { title, first_paragraph, text: lines.join("\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_title_paragraph_and_text_without_chrome() {
        let html = r#"<!doctype html><html><head><title> The  Page </title><style>p{color:red}</style>
            <script>var secret = "do not show";</script></head><body>
            <nav><a href="/">Home</a> | <a href="/about">About</a></nav>
            <h1>Heading</h1><p>Short.</p>
            <p>This is the first real paragraph of the page, long enough to count.</p>
            <ul><li>one</li><li>two <b>bold</b></li></ul>
            <footer>copyright</footer></body></html>"#;
        let r = readable(html);
        assert_eq!(r.title.as_deref(), Some("The Page"));
        assert_eq!(
            r.first_paragraph.as_deref(),
            Some("This is the first real paragraph of the page, long enough to count.")
        );
        assert_eq!(
            r.text,
            "# Heading\nShort.\nThis is the first real paragraph of the page, long enough to count.\n- one\n- two bold"
        );
        assert!(!r.text.contains("secret") && !r.text.contains("Home") && !r.text.contains("copyright"));
    }

    #[test]
    fn survives_broken_and_deeply_nested_markup() {
        let deep = "<div>x ".repeat(100_000) + "deep text";
        let r = readable(&deep);
        assert!(r.text.starts_with("x\nx") && !r.text.contains("deep text"), "cut at MAX_DEPTH");
        assert_eq!(r.text.lines().count(), MAX_DEPTH);
        let flat = "<p>para <br> <img src=x> <li>item".repeat(10_000) + "end";
        assert_eq!(nesting_cut(&flat, MAX_DEPTH), flat.len(), "implicitly closed elements do not nest");
        let balanced = "<div><span>a</span></div>".repeat(10_000);
        assert_eq!(nesting_cut(&balanced, 4), balanced.len());
        let r = readable("<p>unclosed <b>bold <i>both</p> after");
        assert!(r.text.contains("unclosed bold both"), "{:?}", r.text);
        assert_eq!(readable("").title, None);
    }
}

//! Bounding text: every piece of outside text (pages, model replies, mandates, errors)
//! that reaches a prompt, a checkpoint or a task's result is cut with [`clip`], so a
//! runaway page or model cannot grow them.

/// `text` cut to `chars` characters, marked with ` […]` when cut.
pub fn clip(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().nth(chars).is_some() {
        out.push_str(" […]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_marks_cuts() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcdef", 3), "abc […]");
        assert_eq!(clip("żółw", 2), "żó […]", "counts characters, not bytes");
    }
}

//! `--message-format json`: one event per line on stdout.

use std::borrow::Cow;
use std::io::Write;

use super::Event;

pub(super) fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let line = escape_controls(&line);
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) is not worth a panic.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A JSON line with DEL and the C1 control characters (U+007F..U+009F) written as `\u` escapes
/// (issue #16): serde_json escapes only U+0000..U+001F, and a terminal or log viewer showing
/// the raw line would act on the others (U+009B is CSI). Outside strings JSON holds none of
/// them, so the line stays valid and decodes to the same values.
pub(crate) fn escape_controls(line: &str) -> Cow<'_, str> {
    let raw = |c: char| ('\u{7f}'..='\u{9f}').contains(&c);
    if !line.chars().any(raw) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if raw(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #16: DEL and C1 characters from a host reach JSON output escaped, and decode back.
    #[test]
    fn issue_16_json_escapes_del_and_c1() {
        let value = "a\u{7f}b\u{80}c\u{9b}2Jd\u{9f}e\u{a0}f\u{1b}";
        let line = serde_json::to_string(&serde_json::json!({ "message": value })).unwrap();
        let escaped = escape_controls(&line);
        assert_eq!(
            escaped,
            "{\"message\":\"a\\u007fb\\u0080c\\u009b2Jd\\u009fe\u{a0}f\\u001b\"}"
        );
        assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["message"], value);
    }
}

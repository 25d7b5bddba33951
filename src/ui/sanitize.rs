//! Text from hosts and services (stderr, journal lines, revisions.log, probe bodies, release
//! names) is shown on a terminal: its control characters are made visible (`\x1b`, `\r`...)
//! so an escape sequence cannot recolour, move the cursor, retitle the window or hide lines.
//! Line feeds and tabs stay. Applied once, to every event the human renderer prints; JSON
//! output escapes control characters by itself.

use std::borrow::Cow;

use super::{Event, HostRow};

/// `s` with every control character except `\n` and `\t` written as an escape (`\x1b`, `\r`,
/// `\u{9b}`).
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn own(s: &str) -> String {
    text(s).into_owned()
}

fn opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(own)
}

/// The event with every text field passed through [`text`].
pub fn event(e: &Event) -> Event {
    match e {
        Event::Status {
            verb,
            message,
            tone,
            host,
            package,
        } => Event::Status {
            verb: own(verb),
            message: own(message),
            tone: *tone,
            host: opt(host),
            package: opt(package),
        },
        Event::Artifact {
            path,
            size,
            sha256,
            reused,
        } => Event::Artifact {
            path: own(path),
            size: *size,
            sha256: own(sha256),
            reused: *reused,
        },
        Event::Script {
            host,
            purpose,
            script,
        } => Event::Script {
            host: own(host),
            purpose: own(purpose),
            script: own(script),
        },
        Event::Summary { operation, hosts } => Event::Summary {
            operation: own(operation),
            hosts: hosts
                .iter()
                .map(|h| HostRow {
                    host: own(&h.host),
                    outcome: own(&h.outcome),
                    release: opt(&h.release),
                    version: opt(&h.version),
                    detail: opt(&h.detail),
                    ..h.clone()
                })
                .collect(),
        },
        Event::Output {
            kind,
            text: t,
            data,
        } => Event::Output {
            kind: own(kind),
            text: own(t),
            data: data.clone(),
        },
        Event::Error {
            message,
            help,
            exit_code,
        } => Event::Error {
            message: own(message),
            help: opt(help),
            exit_code: *exit_code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert_eq!(text("plain\ttab\nline"), "plain\ttab\nline");
        assert_eq!(
            text("\x1b[2J\x1b]0;owned\x07ok\rX\u{9b}31m"),
            "\\x1b[2J\\x1b]0;owned\\x07ok\\rX\\u{9b}31m"
        );
    }
}

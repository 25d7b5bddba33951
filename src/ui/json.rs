//! `--message-format json`: one event per line on stdout.

use std::io::Write;

use super::Event;

pub(super) fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) is not worth a panic.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

//! `cargo ship logs <env> [-f] [-n N] [--since T] [--host H]`: the unit's journal on every
//! host at once, over the one connection per host, each line prefixed with its host (one
//! colour per host when colour is on), merged in arrival order.
//!
//! With `-f` the journal is followed until Ctrl-C (which ends it with exit 0, every channel
//! and connection closed). A host whose connection drops is reported, reconnected, and
//! followed again from the last line seen (`--after-cursor`), so no line is shown twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::config::Config;
use crate::fleet;
use crate::host;
use crate::remote::script::Script;
use crate::remote::session::Connection;
use crate::systemd;
use crate::ui::{Event, Tone, Ui};
use crate::{Error, Result};

/// Options of `cargo ship logs`.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Lines per host shown first.
    pub lines: u32,
    /// Keep following until Ctrl-C.
    pub follow: bool,
    /// Only lines since this time (journalctl's `--since` syntax: `1h ago`, `2026-11-28 03:00`).
    pub since: Option<String>,
    /// Only these hosts.
    pub hosts: Vec<String>,
    /// A scheduled job's journal instead of the service's (#21).
    pub job: Option<String>,
}

/// One journal entry, as `journalctl -o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The journal cursor (to resume after a reconnect).
    pub cursor: Option<String>,
    /// UTC time, RFC 3339 with microseconds.
    pub timestamp: String,
    /// The unit that logged it (`app.service`, `app@blue.service`).
    pub unit: String,
    /// `SYSLOG_IDENTIFIER[_PID]`.
    pub ident: String,
    /// The message (lossy UTF-8 when the journal stored bytes).
    pub message: String,
}

impl Entry {
    /// Parses one line of `journalctl -o json`; `None` for anything else.
    pub fn parse(line: &str) -> Option<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let message = match v.get("MESSAGE") {
            Some(serde_json::Value::String(m)) => m.clone(),
            Some(serde_json::Value::Array(bytes)) => String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => String::new(),
        };
        let micros: i64 = s("__REALTIME_TIMESTAMP")?.parse().ok()?;
        let timestamp = chrono::DateTime::from_timestamp_micros(micros)?
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let ident = match (s("SYSLOG_IDENTIFIER"), s("_PID")) {
            (Some(i), Some(p)) => format!("{i}[{p}]"),
            (Some(i), None) => i,
            (None, Some(p)) => format!("[{p}]"),
            (None, None) => String::new(),
        };
        Some(Entry {
            cursor: s("__CURSOR"),
            timestamp,
            unit: s("_SYSTEMD_UNIT").or_else(|| s("UNIT")).unwrap_or_default(),
            ident,
            message: message.trim_end_matches('\n').to_string(),
        })
    }
}

/// The script that prints the unit's journal as JSON lines (following with `follow`), from
/// `after` (a cursor) when resuming.
pub fn journal_script(
    config: &Config,
    opts: &LogsOptions,
    follow: bool,
    after: Option<&str>,
) -> Script {
    let unit = match &opts.job {
        Some(job) => crate::jobs::service(config, job),
        None => systemd::unit_name(config),
    };
    let mut s = Script::new(format!(
        "{} the journal of {unit}",
        if follow { "follow" } else { "read" }
    ));
    systemd::sudo_prelude(&mut s, config);
    s.line("set -- -u {} -o json --no-pager", &[&unit]);
    if follow {
        s.lines("set -- \"$@\" --follow");
    }
    match after {
        Some(cursor) => {
            s.line("set -- \"$@\" --after-cursor {} -n all", &[cursor]);
        }
        None => {
            s.line("set -- \"$@\" -n {}", &[&opts.lines.to_string()]);
            if let Some(since) = &opts.since {
                s.line("set -- \"$@\" --since {}", &[since]);
            }
        }
    }
    s.lines("exec $SUDO journalctl \"$@\"");
    s
}

/// Emits one entry: `host: <time> <ident>: <message>` (the human renderer colours the host by
/// `host_index`), or in JSON one `{"event":"output","kind":"log",...}` line with host and
/// timestamp.
fn emit(ui: &Ui, host: &str, colour: usize, e: &Entry) {
    ui.emit(Event::Output {
        kind: "log".into(),
        text: format!(
            "{host}: {} {}: {}",
            &e.timestamp[..19.min(e.timestamp.len())],
            e.ident,
            e.message
        ),
        data: json!({
            "host": host,
            "host_index": colour,
            "timestamp": e.timestamp,
            "unit": e.unit,
            "ident": e.ident,
            "message": e.message,
        }),
    });
}

/// A host's colour: its place in the environment's `hosts`, so it keeps its colour whatever
/// `--host` selects.
fn colour_of(config: &Config, host: &str) -> usize {
    config
        .environment
        .as_ref()
        .and_then(|e| e.hosts.iter().position(|h| h.to_string() == host))
        .unwrap_or(0)
}

/// `cargo ship logs`.
pub async fn logs(config: &Config, opts: &LogsOptions, ui: &Ui) -> Result<()> {
    if let Some(job) = &opts.job {
        if !config.jobs.contains_key(job) {
            return Err(crate::jobs::unknown_job(config, job));
        }
    }
    if !opts.follow {
        let results = fleet::on_each_host(config, &opts.hosts, ui, |conn| async move {
            let script = journal_script(config.for_host(conn.host()), opts, false, None);
            let out = conn.run(&script).await?;
            if out.status != 0 {
                return Err(conn.remote_error(&script, &out));
            }
            let colour = colour_of(config, conn.host());
            for line in out.stdout.lines() {
                if let Some(e) = Entry::parse(line) {
                    emit(ui, conn.host(), colour, &e);
                }
            }
            Ok(fleet::row(&conn))
        })
        .await;
        let total = results.len();
        let failed: Vec<_> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
        return fleet::fail_if_any("logs", total, failed);
    }
    let env = config.env()?;
    let hosts = fleet::select_hosts(env, &opts.hosts)?;
    let conns = host::connect_all(config, &hosts, ui).await?;
    ui.status(
        "Following",
        format!(
            "the journal of {} on {} host(s); Ctrl-C to stop",
            systemd::unit_name(config),
            conns.len()
        ),
    );
    let result = {
        let all = futures_util::future::join_all(
            conns
                .iter()
                .map(|c| follow_host(config, opts, c.clone(), colour_of(config, c.host()), ui)),
        );
        tokio::select! {
            errors = all => {
                // Every host's journal ended by itself (not a dropped connection).
                let errors: Vec<Error> = errors.into_iter().collect();
                fleet::fail_if_any("logs", conns.len(), errors)
            }
            _ = fleet::interrupted() => Ok(()),
        }
    };
    for c in conns {
        host::close(c).await;
    }
    result
}

/// Follows one host's journal until its journal command fails while the connection is fine
/// (returned as the error); a dropped connection is reported and reconnected.
async fn follow_host(
    config: &Config,
    opts: &LogsOptions,
    conn: Arc<Connection>,
    colour: usize,
    ui: &Ui,
) -> Error {
    let host = conn.host().to_string();
    let config = config.for_host(&host);
    let mut cursor: Option<String> = None;
    loop {
        let script = journal_script(config, opts, true, cursor.as_deref());
        let problem = match conn.spawn(&script).await {
            Ok(mut child) => {
                if let Some(out) = child.stdout().take() {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(e) = Entry::parse(&line) {
                            if e.cursor.is_some() {
                                cursor = e.cursor.clone();
                            }
                            emit(ui, &host, colour, &e);
                        }
                    }
                }
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr().take() {
                    let _ = err.read_to_string(&mut stderr).await;
                }
                let status = child.wait().await;
                match status {
                    Ok(st) if conn.alive().await => {
                        // The journal command ended on its own: no reconnect will help.
                        return Error::Remote {
                            host: host.clone(),
                            purpose: script.purpose().to_string(),
                            status: st.code().unwrap_or(-1),
                            stderr_tail: stderr.trim().to_string(),
                        };
                    }
                    Ok(_) => "the connection dropped".to_string(),
                    Err(e) => format!("the connection dropped ({e})"),
                }
            }
            Err(e) => format!("the journal could not be followed ({e})"),
        };
        ui.step(
            Some(&host),
            "Lost",
            format!("{problem}; reconnecting"),
            Tone::Warning,
        );
        let mut wait = Duration::from_millis(500);
        loop {
            tokio::time::sleep(wait).await;
            match conn.reconnect().await {
                Ok(()) => break,
                Err(e) => {
                    ui.step(
                        Some(&host),
                        "Lost",
                        format!(
                            "cannot reconnect yet: {}; trying again",
                            fleet::first_line(&e.to_string())
                        ),
                        Tone::Warning,
                    );
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        ui.host(
            &host,
            "Reconnected",
            match &cursor {
                Some(_) => "following the journal from the last line shown",
                None => "following the journal again",
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_journal_json() {
        let e = Entry::parse(r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764300001123456","MESSAGE":"listening on 127.0.0.1:8080","_SYSTEMD_UNIT":"app@blue.service","SYSLOG_IDENTIFIER":"app","_PID":"42"}"#).unwrap();
        assert_eq!(e.cursor.as_deref(), Some("s=1;i=2"));
        assert_eq!(e.timestamp, "2025-11-28T03:20:01.123456Z");
        assert_eq!(e.unit, "app@blue.service");
        assert_eq!(e.ident, "app[42]");
        assert_eq!(e.message, "listening on 127.0.0.1:8080");
        // Non-UTF-8 messages come as byte arrays.
        let e = Entry::parse(r#"{"__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105,255]}"#).unwrap();
        assert_eq!(e.message, "hi\u{fffd}");
        assert_eq!(Entry::parse("-- No entries --"), None);
    }

    #[test]
    fn resumes_after_the_cursor() {
        let config = crate::config::tests_support::config_with("unit = \"app\"");
        let opts = LogsOptions {
            lines: 5,
            follow: true,
            since: Some("1h ago".into()),
            hosts: vec![],
            job: None,
        };
        let first = journal_script(&config, &opts, true, None).render().unwrap();
        assert!(first.contains("-n 5"), "{first}");
        assert!(first.contains("--since '1h ago'"), "{first}");
        let again = journal_script(&config, &opts, true, Some("s=1;i=2"))
            .render()
            .unwrap();
        assert!(again.contains("--after-cursor 's=1;i=2' -n all"), "{again}");
        assert!(!again.contains("--since"), "{again}");
    }
}

//! GitHub Actions output, on when `GITHUB_ACTIONS=true` (the runner sets it).
//!
//! On top of the usual human or JSON output, cargo-ship then:
//! - folds each host's lines into a `::group::<host>: <outcome>` block (human mode; hosts run
//!   side by side, so their lines are held until the host's outcome is known);
//! - appends a Markdown table, one row per host, to `$GITHUB_STEP_SUMMARY`;
//! - turns each failed host into an `::error title=cargo-ship: <host>::<reason>` annotation
//!   (warnings into `::warning`), and any other failure into one `::error`;
//! - writes the step outputs `result`, `exit-code` and `release` to `$GITHUB_OUTPUT`.
//!
//! Workflow commands go to stderr, in order with the human output (the runner reads both
//! streams), so `--message-format json` keeps stdout pure JSON. The JSON events themselves do
//! not change.
//!
//! Text from hosts and services (hook output, journal and stderr tails) must not issue
//! workflow commands of its own (issue #16): a line `::add-mask::...`, `::error::...` or
//! `##[error]...`, or one behind a bare CR. So the run starts with `::stop-commands::<token>`
//! (a random token), after which the runner takes no line as a command; each of cargo-ship's
//! own commands is written between `::<token>::` and a new `::stop-commands::<token>`, and the
//! end of the run resumes commands. Held lines are shown with their control characters
//! escaped, and the job summary escapes Markdown and HTML in host text.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::HostRow;
use crate::error::exit;
use crate::Error;

/// The one word the `result` output gives for an exit code (README "Exit codes").
pub fn result_word(code: i32) -> &'static str {
    match code {
        exit::OK => "success",
        exit::USAGE => "usage",
        exit::CONFIG => "config",
        exit::BUILD => "build",
        exit::CONNECT => "unreachable",
        exit::PREFLIGHT => "preflight",
        exit::LOCKED => "locked",
        exit::ROLLED_BACK => "unhealthy",
        exit::REMOTE => "failed",
        exit::NOT_HEALTHY => "not-healthy",
        exit::PARTIAL => "partial",
        exit::CANARY_WORSE => "canary-worse",
        exit::CANARY_INCONCLUSIVE => "canary-inconclusive",
        exit::INTERRUPTED => "interrupted",
        _ => "error",
    }
}

/// Marks the start of a line that is one of cargo-ship's own workflow commands (inside this
/// module only; host text never holds it: it is a control character, escaped in every held
/// line).
const OURS: char = '\u{1}';

/// A random token for `::stop-commands::`: 16 bytes of the system's randomness, in hex.
fn stop_token() -> String {
    crate::random::hex16()
}

/// Every line of `text` marked as one of cargo-ship's own workflow commands.
fn ours(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| format!("{OURS}{l}"))
        .collect()
}

/// Escapes the message part of a workflow command.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`title=...`) of a workflow command.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A Markdown table cell: no line breaks, `|` escaped, and no Markdown or HTML of the text's
/// own (a host's text cannot add links, images or tags to the job summary).
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.replace('\r', "").replace('\n', " ").trim().chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '[' | ']' | '`' | '*' | '_' | '!' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Outcomes that count as success in the summary (as in the human table).
pub fn good_outcome(operation: &str, outcome: &str) -> bool {
    matches!(
        outcome,
        "deployed" | "unchanged" | "pruned" | "unlocked" | "active"
    ) || (operation == "rollback" && outcome == "rolled back")
}

/// Where the GitHub output goes; [`Github::from_env`] reads the runner's variables.
pub struct Github {
    group_hosts: bool,
    summary_file: Option<PathBuf>,
    output_file: Option<PathBuf>,
    err: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
    /// The `::stop-commands::` token, when commands are stopped between cargo-ship's own.
    token: Option<String>,
}

#[derive(Default)]
struct State {
    /// Lines held per host, in the order hosts first spoke.
    held: Vec<(String, Vec<String>)>,
    /// Annotations (`::warning ...`) to print with the host's group.
    held_annotations: Vec<(String, String)>,
    /// Lines about no host that came while host lines were held (`Finished ...`): printed
    /// after the groups, so the log reads in order.
    trailer: Vec<String>,
    /// `(operation, rows)` of every summary event.
    summaries: Vec<(String, Vec<HostRow>)>,
    /// The data of every canary verdict (#20), for the job summary.
    canaries: Vec<serde_json::Value>,
    finished: bool,
}

impl Github {
    /// The GitHub reporter, when running under GitHub Actions (`GITHUB_ACTIONS=true`).
    /// `group_hosts` is true in human mode.
    pub fn from_env(group_hosts: bool) -> Option<Github> {
        if std::env::var("GITHUB_ACTIONS").ok().as_deref() != Some("true") {
            return None;
        }
        let file = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Some(
            Github::new(
                group_hosts,
                file("GITHUB_STEP_SUMMARY"),
                file("GITHUB_OUTPUT"),
                Box::new(std::io::stderr()),
            )
            .stopping_commands(stop_token()),
        )
    }

    /// From now on, the runner takes no line as a workflow command but cargo-ship's own
    /// (see the module docs): prints `::stop-commands::<token>`.
    pub fn stopping_commands(mut self, token: String) -> Github {
        self.token = Some(token);
        let t = self.token.clone().unwrap_or_default();
        self.write_raw(&format!("::stop-commands::{t}\n"));
        self
    }

    /// A reporter writing workflow commands to `err` and the files given.
    pub fn new(
        group_hosts: bool,
        summary_file: Option<PathBuf>,
        output_file: Option<PathBuf>,
        err: Box<dyn Write + Send>,
    ) -> Github {
        Github {
            group_hosts,
            summary_file,
            output_file,
            err: Mutex::new(err),
            state: Mutex::new(State::default()),
            token: None,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_raw(&self, text: &str) {
        let mut err = self.err.lock().unwrap_or_else(|e| e.into_inner());
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }

    /// Writes `text`: its lines marked [`OURS`] are cargo-ship's commands (each run of them
    /// between `::<token>::` and `::stop-commands::<token>` when commands are stopped), the
    /// others are text.
    fn write(&self, text: &str) {
        let mut out = String::with_capacity(text.len());
        let mut live = false;
        for line in text.split_inclusive('\n') {
            let (cmd, line) = match line.strip_prefix(OURS) {
                Some(l) => (true, l),
                None => (false, line),
            };
            if let Some(t) = &self.token {
                if cmd && !live {
                    out.push_str(&format!("::{t}::\n"));
                } else if !cmd && live {
                    out.push_str(&format!("::stop-commands::{t}\n"));
                }
            }
            live = cmd;
            out.push_str(line);
        }
        if let (Some(t), true) = (&self.token, live) {
            out.push_str(&format!("::stop-commands::{t}\n"));
        }
        self.write_raw(&out);
    }

    /// Holds a rendered line about `host` for its group. Returns false when lines are not
    /// grouped (JSON mode): the caller prints it as usual.
    pub fn hold(&self, host: &str, line: String) -> bool {
        if !self.group_hosts {
            return false;
        }
        let line = super::sanitize::text(&line).into_owned();
        let mut st = self.state();
        match st.held.iter_mut().find(|(h, _)| h == host) {
            Some((_, lines)) => lines.push(line),
            None => st.held.push((host.to_string(), vec![line])),
        }
        true
    }

    /// Holds a line about no host while some host's lines are held (see [`Github::hold`]).
    pub fn hold_trailer(&self, line: String) -> bool {
        let mut st = self.state();
        if !self.group_hosts || st.held.is_empty() {
            return false;
        }
        st.trailer.push(super::sanitize::text(&line).into_owned());
        true
    }

    /// A warning about `host` (or none): an annotation, printed with the host's group.
    pub fn warning(&self, host: Option<&str>, message: &str) {
        let title = match host {
            Some(h) => format!("cargo-ship: {h}"),
            None => "cargo-ship".into(),
        };
        let line = format!(
            "{OURS}::warning title={}::{}\n",
            escape_property(&title),
            escape_data(message)
        );
        match host {
            Some(h) if self.group_hosts => self.state().held_annotations.push((h.into(), line)),
            _ => self.write(&line),
        }
    }

    /// A summary table: prints the held groups of its hosts, and keeps the rows for the job
    /// summary and the `release` output.
    pub fn summary(&self, operation: &str, rows: &[HostRow]) {
        let text = {
            let mut st = self.state();
            st.summaries.push((operation.to_string(), rows.to_vec()));
            let mut text = String::new();
            for row in rows {
                let outcome = match &row.detail {
                    Some(d) if !good_outcome(operation, &row.outcome) => {
                        format!("{} ({})", row.outcome, crate::fleet::first_line(d))
                    }
                    _ => row.outcome.clone(),
                };
                take_group(&mut st, &row.host, &outcome, &mut text);
            }
            take_trailer(&mut st, &mut text);
            text
        };
        self.write(&text);
    }

    /// A canary verdict (the `data` of an `output` event of kind `canary`): kept for the job
    /// summary.
    pub fn canary(&self, data: &serde_json::Value) {
        self.state().canaries.push(data.clone());
    }

    /// Prints any group still held (hosts no summary named, e.g. after an early failure).
    pub fn flush(&self) {
        let text = {
            let mut st = self.state();
            let hosts: Vec<String> = st.held.iter().map(|(h, _)| h.clone()).collect();
            let mut text = String::new();
            for h in hosts {
                take_group(&mut st, &h, "details", &mut text);
            }
            let rest: Vec<String> = st.held_annotations.drain(..).map(|(_, l)| l).collect();
            text.push_str(&rest.concat());
            take_trailer(&mut st, &mut text);
            text
        };
        self.write(&text);
    }

    /// The end of the run: held groups, `::error` annotations for `error`, the job summary
    /// and the step outputs. `command` is the command line shown as the summary's heading.
    /// Runs once; later calls do nothing.
    pub fn finish(&self, command: &str, error: Option<&Error>) {
        self.flush();
        let code = error.map_or(exit::OK, Error::exit_code);
        let (summaries, canaries) = {
            let mut st = self.state();
            if st.finished {
                return;
            }
            st.finished = true;
            (st.summaries.clone(), st.canaries.clone())
        };
        if let Some(e) = error {
            self.write(&ours(&annotations(e)));
        }
        if let Some(path) = &self.summary_file {
            if !summaries.is_empty() || !canaries.is_empty() || error.is_some() {
                let mut md = job_summary(command, &summaries, error);
                md.extend(canaries.iter().map(canary_summary));
                append(path, &md);
            }
        }
        if let Some(path) = &self.output_file {
            append(path, &outputs(code, &summaries));
        }
    }

    /// Workflow commands work again (the last thing cargo-ship prints, after the error).
    pub fn resume(&self) {
        if let Some(t) = &self.token {
            self.write_raw(&format!("::{t}::\n"));
        }
    }
}

fn take_trailer(st: &mut State, text: &mut String) {
    if st.held.is_empty() {
        for l in st.trailer.drain(..) {
            text.push_str(&l);
            text.push('\n');
        }
    }
}

fn take_group(st: &mut State, host: &str, outcome: &str, text: &mut String) {
    let lines = match st.held.iter().position(|(h, _)| h == host) {
        Some(i) => st.held.remove(i).1,
        None => Vec::new(),
    };
    let notes: Vec<String> = {
        let (mine, rest): (Vec<_>, Vec<_>) =
            st.held_annotations.drain(..).partition(|(h, _)| h == host);
        st.held_annotations = rest;
        mine.into_iter().map(|(_, l)| l).collect()
    };
    if lines.is_empty() && notes.is_empty() {
        return;
    }
    text.push_str(&format!(
        "{OURS}::group::{}\n",
        escape_data(&format!("{host}: {outcome}"))
    ));
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    text.push_str(&format!("{OURS}::endgroup::\n"));
    for n in notes {
        text.push_str(&n);
    }
}

fn append(path: &std::path::Path, text: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The host an error is about, when it is about one host.
fn error_host(e: &Error) -> Option<&str> {
    match e {
        Error::Connect { host, .. }
        | Error::Preflight { host, .. }
        | Error::Locked { host, .. }
        | Error::Remote { host, .. }
        | Error::Unhealthy { host, .. } => Some(host),
        _ => None,
    }
}

/// One `::error` line per failed host (per error for a fleet), else one for the whole run.
pub fn annotations(e: &Error) -> String {
    let errors: Vec<&Error> = match e {
        Error::Fleet { errors, .. } if !errors.is_empty() => errors.iter().collect(),
        other => vec![other],
    };
    let mut text = String::new();
    for e in errors {
        let title = match error_host(e) {
            Some(h) => format!("cargo-ship: {h} ({})", result_word(e.exit_code())),
            None => format!("cargo-ship ({})", result_word(e.exit_code())),
        };
        // ssh ends its lines with \r\n; one line break each is enough.
        let mut message = e.to_string().replace("\r\n", "\n");
        if let Some(help) = e.help() {
            message.push_str(&format!("\nhelp: {help}"));
        }
        text.push_str(&format!(
            "::error title={}::{}\n",
            escape_property(&title),
            escape_data(&message)
        ));
    }
    text
}

/// The release every host now runs: the one id when they agree, else the distinct ids
/// joined by `,` (empty when no host reported one). The last summary counts.
pub fn live_release(summaries: &[(String, Vec<HostRow>)]) -> String {
    let Some((_, rows)) = summaries.last() else {
        return String::new();
    };
    let mut ids: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(rel) = r.release.as_deref() {
            if !ids.contains(&rel) {
                ids.push(rel);
            }
        }
    }
    ids.join(",")
}

/// The `$GITHUB_OUTPUT` lines (values never hold a line break).
pub fn outputs(code: i32, summaries: &[(String, Vec<HostRow>)]) -> String {
    let release: String = live_release(summaries)
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .collect();
    format!(
        "result={}\nexit-code={code}\nrelease={release}\n",
        result_word(code)
    )
}

/// The Markdown appended to `$GITHUB_STEP_SUMMARY`.
pub fn job_summary(
    command: &str,
    summaries: &[(String, Vec<HostRow>)],
    error: Option<&Error>,
) -> String {
    let code = error.map_or(exit::OK, Error::exit_code);
    let mut md = format!(
        "### `{}`: {}\n\n",
        command.replace('`', "'"),
        match code {
            exit::OK => "success".to_string(),
            c => format!("{} (exit code {c})", result_word(c)),
        }
    );
    for (operation, rows) in summaries {
        if rows.is_empty() {
            continue;
        }
        if summaries.len() > 1 {
            md.push_str(&format!("**{}**\n\n", cell(operation)));
        }
        md.push_str("| Host | Outcome | Release | Version | Detail |\n");
        md.push_str("| --- | --- | --- | --- | --- |\n");
        for r in rows {
            let mark = if good_outcome(operation, &r.outcome) {
                "✅"
            } else {
                "❌"
            };
            md.push_str(&format!(
                "| {} | {mark} {} | {} | {} | {} |\n",
                // A workspace deploy's row names its service: `web1 (api)`.
                match &r.package {
                    Some(p) => format!("{} ({})", cell(&r.host), cell(p)),
                    None => cell(&r.host),
                },
                cell(&r.outcome),
                r.release.as_deref().map(cell).unwrap_or_else(|| "-".into()),
                r.version.as_deref().map(cell).unwrap_or_else(|| "-".into()),
                r.detail.as_deref().map(cell).unwrap_or_default(),
            ));
        }
        md.push('\n');
    }
    if let Some(e) = error {
        md.push_str("```text\n");
        // Host text stays inside the fence: no closing fence of its own, no raw control
        // characters.
        md.push_str(&super::sanitize::text(&e.to_string()).replace("```", "'''"));
        if let Error::Fleet { errors, .. } = e {
            for x in errors {
                md.push_str(&format!("\n  - {x}"));
            }
        }
        md.push_str("\n```\n");
        if let Some(h) = e.help() {
            md.push_str(&format!("\n{}\n", cell(&h)));
        }
        md.push('\n');
    }
    md
}

/// The Markdown of one canary verdict: the verdict, why, and the numbers of both sides.
pub fn canary_summary(data: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map(cell).unwrap_or_default();
    let verdict = text(&data["verdict"]);
    let mark = if verdict == "promote" { "✅" } else { "❌" };
    let mut md = format!(
        "**Canary: {mark} {verdict}** ({} window, max_error_ratio {}, min_requests {}): {}\n\n",
        text(&data["window"]),
        data["max_error_ratio"],
        data["min_requests"],
        text(&data["reason"])
    );
    md.push_str("| | Hosts | Requests | Errors | Error ratio |\n| --- | --- | --- | --- | --- |\n");
    for (name, side) in [("Canary", &data["canary"]), ("Baseline", &data["baseline"])] {
        if side.is_null() {
            continue;
        }
        let hosts: Vec<String> = side["hosts"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let n = |k: &str| side[k].as_u64().map_or("-".to_string(), |v| v.to_string());
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            hosts.join(", "),
            n("requests"),
            n("errors"),
            side["ratio"]
                .as_f64()
                .map_or("-".to_string(), crate::metrics::pct)
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, outcome: &str, release: Option<&str>, detail: Option<&str>) -> HostRow {
        HostRow {
            host: host.into(),
            package: None,
            outcome: outcome.into(),
            release: release.map(Into::into),
            version: release.map(|_| "0.2.0".into()),
            target: None,
            commands: 4,
            connections: 1,
            bytes_sent: 0,
            millis: 1200,
            detail: detail.map(Into::into),
        }
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn every_documented_exit_code_has_its_word() {
        let words: Vec<(i32, &str)> = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 130]
            .into_iter()
            .map(|c| (c, result_word(c)))
            .collect();
        assert_eq!(
            words,
            [
                (0, "success"),
                (1, "error"),
                (2, "usage"),
                (3, "config"),
                (4, "build"),
                (5, "unreachable"),
                (6, "preflight"),
                (7, "locked"),
                (8, "unhealthy"),
                (9, "failed"),
                (10, "not-healthy"),
                (11, "partial"),
                (12, "canary-worse"),
                (13, "canary-inconclusive"),
                (130, "interrupted")
            ]
        );
    }

    /// Issue #20: the canary's verdict and numbers in the job summary.
    #[test]
    fn canary_verdict_in_the_job_summary() {
        let data = serde_json::json!({
            "verdict": "worse", "reason": "the canary's error ratio 5.00% exceeds the baseline's 0.00% by more than max_error_ratio = 0.01",
            "early": false, "window": "12s", "max_error_ratio": 0.01, "min_requests": 50,
            "canary": { "hosts": ["host0"], "requests": 200, "errors": 10, "ratio": 0.05 },
            "baseline": { "hosts": ["host1", "host2"], "requests": 400, "errors": 0, "ratio": 0.0 },
        });
        assert_eq!(
            canary_summary(&data),
            "**Canary: ❌ worse** (12s window, max_error_ratio 0.01, min_requests 50): the canary's error ratio 5.00% exceeds the baseline's 0.00% by more than max\\_error\\_ratio = 0.01\n\n\
             | | Hosts | Requests | Errors | Error ratio |\n| --- | --- | --- | --- | --- |\n\
             | Canary | host0 | 200 | 10 | 5.00% |\n\
             | Baseline | host1, host2 | 400 | 0 | 0.00% |\n\n"
        );
        let buf = Buf::default();
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        let gh = Github::new(false, Some(summary.clone()), None, Box::new(buf.clone()));
        gh.canary(&data);
        gh.finish("cargo ship deploy prod", None);
        let md = std::fs::read_to_string(&summary).unwrap();
        assert!(md.contains("| Canary | host0 | 200 | 10 | 5.00% |"), "{md}");
    }

    /// Issue #16: host text cannot issue workflow commands (`::`, `##[`, a bare CR) nor
    /// break out of the summary; cargo-ship's own commands still work.
    #[test]
    fn issue_16_host_text_issues_no_workflow_command() {
        let err = Buf::default();
        let gh =
            Github::new(true, None, None, Box::new(err.clone())).stopping_commands("t0k3n".into());
        let hostile = "ok\n::add-mask::x\n##[error]boom\rx\n\u{1}::error::y";
        assert!(gh.hold("web1", format!("   Running web1: {hostile}")));
        gh.warning(Some("web1"), "slow\n::error::z");
        gh.summary(
            "deploy",
            &[row("web1", "deployed", Some("20260101000000"), None)],
        );
        gh.finish("cargo ship deploy prod", None);
        gh.resume();
        assert_eq!(
            err.text(),
            "::stop-commands::t0k3n\n\
             ::t0k3n::\n::group::web1: deployed\n::stop-commands::t0k3n\n   \
             Running web1: ok\n::add-mask::x\n##[error]boom\\rx\n\\x01::error::y\n\
             ::t0k3n::\n::endgroup::\n::warning title=cargo-ship%3A web1::slow%0A::error::z\n::stop-commands::t0k3n\n\
             ::t0k3n::\n"
        );
        // Between stop and resume every host line is inert: the only resumes are cargo-ship's.
        let text = err.text();
        let mut stopped = false;
        for l in text.lines() {
            match l {
                "::stop-commands::t0k3n" => stopped = true,
                "::t0k3n::" => stopped = false,
                l if l.starts_with("::") || l.starts_with("##[") => {
                    assert!(
                        stopped
                            || l.starts_with("::group::")
                            || l.starts_with("::endgroup::")
                            || l.starts_with("::warning title=cargo-ship"),
                        "live command from host text: {l}"
                    )
                }
                _ => {}
            }
        }
        let md = job_summary(
            "cargo ship deploy prod",
            &[(
                "deploy".into(),
                vec![row(
                    "web1",
                    "failed",
                    None,
                    Some("<img src=x> [a](http://e) | `x`"),
                )],
            )],
            None,
        );
        assert!(
            md.contains(
                "| web1 | ❌ failed | - | - | &lt;img src=x&gt; \\[a\\](http://e) \\| \\`x\\` |"
            ),
            "{md}"
        );
        assert!(!stop_token().is_empty() && stop_token() != stop_token());
    }

    #[test]
    fn escapes_workflow_commands() {
        assert_eq!(escape_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(escape_property("a: b, c"), "a%3A b%2C c");
    }

    #[test]
    fn groups_hosts_then_annotates_and_writes_summary_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        let output = dir.path().join("output");
        let err = Buf::default();
        let gh = Github::new(
            true,
            Some(summary.clone()),
            Some(output.clone()),
            Box::new(err.clone()),
        );
        assert!(gh.hold("web1", "   Uploading web1: 1.0 MiB".into()));
        assert!(gh.hold("web2", "   Uploading web2: 1.0 MiB".into()));
        gh.warning(Some("web2"), "clock skew: 3s");
        assert!(gh.hold("web2", "   Unhealthy web2: /healthz answered 500".into()));
        assert!(gh.hold_trailer("  Rolled back web1, web2".into()));
        let rows = vec![
            row(
                "web1",
                "rolled back",
                Some("20261128050000"),
                Some("batch failed"),
            ),
            row(
                "web2",
                "rolled back",
                Some("20261128050000"),
                Some("release 20261128060000 is unhealthy: 500\nmore"),
            ),
        ];
        gh.summary("deploy", &rows);
        let error = Error::Unhealthy {
            host: "web2".into(),
            release: "20261128060000".into(),
            reason: "GET /healthz answered 500".into(),
            restored: "20261128050000".into(),
            journal: String::new(),
        };
        gh.finish("cargo ship deploy prod", Some(&error));
        gh.finish("cargo ship deploy prod", Some(&error));

        let log = err.text();
        assert_eq!(
            log,
            "::group::web1: rolled back (batch failed)\n   Uploading web1: 1.0 MiB\n::endgroup::\n\
             ::group::web2: rolled back (release 20261128060000 is unhealthy: 500)\n   Uploading web2: 1.0 MiB\n   Unhealthy web2: /healthz answered 500\n::endgroup::\n\
             ::warning title=cargo-ship%3A web2::clock skew: 3s\n  Rolled back web1, web2\n\
             ::error title=cargo-ship%3A web2 (unhealthy)::web2: release 20261128060000 is unhealthy: GET /healthz answered 500; rolled back to 20261128050000%0Ahelp: the failed release is marked and will not be deployed again without `--force`; check the journal lines above, fix, bump the version and deploy again\n"
        );
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "result=unhealthy\nexit-code=8\nrelease=20261128050000\n"
        );
        let md = std::fs::read_to_string(&summary).unwrap();
        assert!(
            md.starts_with("### `cargo ship deploy prod`: unhealthy (exit code 8)\n\n| Host | Outcome | Release | Version | Detail |\n| --- | --- | --- | --- | --- |\n| web1 | ❌ rolled back | 20261128050000 | 0.2.0 | batch failed |\n| web2 | ❌ rolled back | 20261128050000 | 0.2.0 | release 20261128060000 is unhealthy: 500 more |\n"),
            "{md}"
        );
        assert!(
            md.contains("```text\nweb2: release 20261128060000 is unhealthy"),
            "{md}"
        );
    }

    #[test]
    fn a_fleet_error_annotates_each_host_and_success_writes_outputs_only() {
        let fleet = Error::Fleet {
            summary: "deploy failed on 2 of 3 hosts".into(),
            errors: vec![
                Error::Locked {
                    host: "web1".into(),
                    holder: "ci@runner pid 4".into(),
                },
                Error::Connect {
                    host: "web3".into(),
                    detail: "Host key verification failed.".into(),
                    help: None,
                },
            ],
        };
        let a = annotations(&fleet);
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), 2, "{a}");
        assert!(lines[0].starts_with("::error title=cargo-ship%3A web1 (locked)::web1: deploy locked by ci@runner pid 4%0Ahelp: "), "{a}");
        assert_eq!(
            lines[1],
            "::error title=cargo-ship%3A web3 (unreachable)::web3: cannot connect: Host key verification failed."
        );

        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        let output = dir.path().join("output");
        let err = Buf::default();
        let gh = Github::new(
            false,
            Some(summary.clone()),
            Some(output.clone()),
            Box::new(err.clone()),
        );
        assert!(!gh.hold("web1", "line".into()), "JSON mode does not group");
        assert!(!gh.hold_trailer("line".into()));
        gh.finish("cargo ship build", None);
        assert_eq!(err.text(), "");
        assert!(!summary.exists(), "no table, no failure: no job summary");
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "result=success\nexit-code=0\nrelease=\n"
        );
    }

    #[test]
    fn release_lists_distinct_ids_of_the_last_summary() {
        let s = vec![
            (
                "deploy".to_string(),
                vec![row("a", "deployed", Some("1"), None)],
            ),
            (
                "rollback".to_string(),
                vec![
                    row("a", "rolled back", Some("2"), None),
                    row("b", "rolled back", Some("3"), None),
                    row("c", "failed", None, Some("x")),
                    row("d", "rolled back", Some("2"), None),
                ],
            ),
        ];
        assert_eq!(live_release(&s), "2,3");
        assert_eq!(live_release(&[]), "");
    }
}

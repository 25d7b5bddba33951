//! Human output in cargo's look: bold verb right-aligned to 12 columns, on stderr.

use console::{Style, Term};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ColorChoice, Event, Tone, Verbosity};

/// One colour per host (by its place in the environment's `hosts`), for `logs`.
fn host_style(index: u64) -> Style {
    const PALETTE: [fn(Style) -> Style; 6] = [
        Style::cyan,
        Style::magenta,
        Style::yellow,
        Style::blue,
        Style::green,
        Style::red,
    ];
    PALETTE[(index % PALETTE.len() as u64) as usize](Style::new().bold()).force_styling(true)
}

pub(super) struct Human {
    color: bool,
    bars: MultiProgress,
    term: Term,
}

impl Human {
    pub(super) fn new(choice: ColorChoice) -> Self {
        let term = Term::stderr();
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                term.is_term() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        // No progress bars in CI logs: GitHub Actions (and act, which gives steps a pty)
        // read workflow commands only at the start of a line.
        let ci = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
        let draw = if term.is_term() && !ci {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Human {
            color,
            bars: MultiProgress::with_draw_target(draw),
            term,
        }
    }

    fn style(&self, tone: Tone) -> Style {
        let s = Style::new().bold();
        let s = match tone {
            Tone::Progress => s.green(),
            Tone::Warning => s.yellow(),
            Tone::Error => s.red(),
            Tone::Detail => s.cyan(),
        };
        s.force_styling(self.color)
    }

    fn line(&self, text: &str) {
        // Printing through MultiProgress keeps bars intact; it is a plain write when none show.
        if self.bars.is_hidden() {
            let _ = self.term.write_line(text);
        } else {
            let _ = self.bars.println(text);
        }
    }

    /// A status line as printed, or `None` when `verbosity` hides it.
    pub(super) fn status_line(
        &self,
        verb: &str,
        message: &str,
        tone: Tone,
        host: Option<&str>,
        package: Option<&str>,
        verbosity: Verbosity,
    ) -> Option<String> {
        let shown = match tone {
            Tone::Error | Tone::Warning => true,
            Tone::Progress => verbosity >= Verbosity::Normal,
            Tone::Detail => verbosity >= Verbosity::Verbose,
        };
        if !shown {
            return None;
        }
        let msg = match (host, package) {
            (Some(h), Some(p)) => format!("{h} ({p}): {message}"),
            (Some(h), None) => format!("{h}: {message}"),
            (None, Some(p)) => format!("{p}: {message}"),
            (None, None) => message.to_string(),
        };
        let style = self.style(tone);
        if matches!(tone, Tone::Warning | Tone::Error) && (verb == "warning" || verb == "error") {
            Some(format!("{}: {msg}", style.apply_to(verb)))
        } else {
            Some(format!("{:>12} {msg}", style.apply_to(verb)))
        }
    }

    pub(super) fn emit(&self, event: &Event, verbosity: Verbosity) {
        match event {
            Event::Status {
                verb,
                message,
                tone,
                host,
                package,
            } => {
                if let Some(line) = self.status_line(
                    verb,
                    message,
                    *tone,
                    host.as_deref(),
                    package.as_deref(),
                    verbosity,
                ) {
                    self.line(&line);
                }
            }
            Event::Artifact {
                path,
                size,
                sha256,
                reused,
            } => {
                if verbosity >= Verbosity::Normal {
                    let verb = if *reused { "Fresh" } else { "Packed" };
                    let v = self.style(Tone::Progress).apply_to(format!("{verb:>12}"));
                    self.line(&format!(
                        "{v} {path} ({}, sha256 {sha256})",
                        human_bytes(*size)
                    ));
                }
            }
            Event::Script {
                host,
                purpose,
                script,
            } => {
                let v = self
                    .style(Tone::Detail)
                    .apply_to(format!("{:>12}", "Running"));
                self.line(&format!("{v} {host}: {purpose}"));
                for l in script.lines() {
                    self.line(&format!("{:>12} {l}", "|"));
                }
            }
            Event::Summary { operation, hosts } => {
                if hosts.is_empty() {
                    return;
                }
                let w = hosts.iter().map(|h| h.host.len()).max().unwrap_or(4).max(4);
                // A TARGET column when the hosts run builds of different targets (an
                // environment whose hosts differ in architecture).
                let mut targets: Vec<&str> =
                    hosts.iter().filter_map(|h| h.target.as_deref()).collect();
                targets.sort_unstable();
                targets.dedup();
                let tw = match targets.len() {
                    0 | 1 => 0,
                    _ => targets.iter().map(|t| t.len()).max().unwrap_or(6).max(6),
                };
                let target_cell = |t: &str| match tw {
                    0 => String::new(),
                    _ => format!("  {t:<tw$}"),
                };
                // A SERVICE column when the rows are about several packages of a workspace.
                let pw = match hosts.iter().any(|h| h.package.is_some()) {
                    false => 0,
                    true => hosts
                        .iter()
                        .filter_map(|h| h.package.as_deref().map(str::len))
                        .max()
                        .unwrap_or(7)
                        .max(7),
                };
                let package_cell = |p: &str| match pw {
                    0 => String::new(),
                    _ => format!("  {p:<pw$}"),
                };
                self.line(&format!("\n{operation} summary:"));
                self.line(&format!(
                    "  {:<w$}{}  {:<14}  {:<15}  {:<10}{}  {:>6}  {:>10}  {:>7}",
                    "HOST",
                    package_cell("SERVICE"),
                    "OUTCOME",
                    "RELEASE",
                    "VERSION",
                    target_cell("TARGET"),
                    "CMDS",
                    "SENT",
                    "TIME"
                ));
                for h in hosts {
                    // "rolled back" is the goal of `rollback` but a failure of `deploy`.
                    let good = matches!(
                        h.outcome.as_str(),
                        "deployed" | "unchanged" | "pruned" | "unlocked" | "active"
                    ) || (operation == "rollback" && h.outcome == "rolled back");
                    let tone = if good { Tone::Progress } else { Tone::Error };
                    let outcome = self.style(tone).apply_to(format!("{:<14}", h.outcome));
                    self.line(&format!(
                        "  {:<w$}{}  {outcome}  {:<15}  {:<10}{}  {:>6}  {:>10}  {:>6.1}s",
                        h.host,
                        package_cell(h.package.as_deref().unwrap_or("-")),
                        h.release.as_deref().unwrap_or("-"),
                        h.version.as_deref().unwrap_or("-"),
                        target_cell(h.target.as_deref().unwrap_or("-")),
                        h.commands,
                        human_bytes(h.bytes_sent),
                        h.millis as f64 / 1000.0
                    ));
                    if let Some(d) = &h.detail {
                        self.line(&format!("  {:<w$}  {d}", ""));
                    }
                }
            }
            // A canary's numbers (#20) belong with the deploy's progress, on stderr.
            Event::Output { kind, text, .. } if kind == "canary" => {
                for l in text.lines() {
                    self.line(l);
                }
            }
            Event::Output { kind, text, data } => {
                // Requested output goes to stdout, like `cargo metadata`. A journal line's
                // host prefix gets the host's own colour (`host_index`, #11).
                let host = data.get("host").and_then(|h| h.as_str());
                let index = data.get("host_index").and_then(|i| i.as_u64());
                let coloured = match (kind.as_str(), host, index) {
                    ("log", Some(h), Some(i)) if self.color => text
                        .strip_prefix(h)
                        .map(|rest| format!("{}{rest}", host_style(i).apply_to(h))),
                    _ => None,
                };
                let text = coloured.as_deref().unwrap_or(text);
                let _ = Term::stdout().write_line(text.trim_end_matches('\n'));
            }
            Event::Error { message, help, .. } => {
                self.line(&format!(
                    "{}: {message}",
                    self.style(Tone::Error).apply_to("error")
                ));
                if let Some(h) = help {
                    self.line(&format!(
                        "  {}: {h}",
                        self.style(Tone::Detail).apply_to("help")
                    ));
                }
            }
        }
    }

    pub(super) fn progress(&self, host: &str, what: &str, total: u64) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(total));
        let template = format!(
            "{{prefix:>12.{}.bold}} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}}",
            if self.color { "cyan" } else { "" }
        )
        .replace(".}", "}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_string());
        bar.set_message(host.to_string());
        bar
    }
}

/// `1.2 MiB`-style sizes, as cargo prints them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

//! How cargo-ship talks to people and to machines.
//!
//! The library never prints: it sends [`Event`]s to a [`Ui`]. In human mode they are rendered
//! with cargo's look (a bold verb right-aligned to 12 columns, on stderr; see `human.rs`),
//! honouring `NO_COLOR`, `CARGO_TERM_COLOR` and `--color`. In JSON mode (`--message-format
//! json`) every event is one JSON object on its own line on stdout (see `json.rs`). Under
//! GitHub Actions (`GITHUB_ACTIONS=true`), `github.rs` adds host groups, annotations, the job
//! summary and step outputs on top of either.

pub mod github;
mod human;
mod json;
pub mod sanitize;

use std::sync::Arc;

use serde::Serialize;

/// `--message-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Coloured text on stderr.
    Human,
    /// One JSON object per line on stdout.
    Json,
}

/// `--color` / `CARGO_TERM_COLOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors and the final result only.
    Quiet,
    /// The default.
    Normal,
    /// `-v`: also every remote script and local command.
    Verbose,
}

/// How a step's message is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// Progress (green).
    Progress,
    /// Something to notice (yellow).
    Warning,
    /// A failure (red).
    Error,
    /// Extra detail, shown only with `-v` (cyan).
    Detail,
}

/// Per-host result shown in the final summary table.
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    /// The host as configured.
    pub host: String,
    /// The workspace package (service) of this row, in an operation on several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// `deployed`, `rolled back`, `failed`, `unchanged`, `skipped`...
    pub outcome: String,
    /// The release now current on the host.
    pub release: Option<String>,
    /// The version now current on the host.
    pub version: Option<String>,
    /// The target the host's current release was built for (deploy, status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Remote commands run on this host: scripts (with the artifact, when sent; each about one
    /// network round trip on the connection's worker shell), the channels of `hold`, `spawn`,
    /// port forwards.
    pub commands: u32,
    /// SSH connections opened to this host (one master connection is the goal).
    pub connections: u32,
    /// Artifact bytes sent to this host.
    pub bytes_sent: u64,
    /// Wall time for this host, in milliseconds.
    pub millis: u64,
    /// Short reason when it did not succeed.
    pub detail: Option<String>,
}

/// Everything the library reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A step, `   Compiling hello v0.1.0`.
    Status {
        /// The verb, e.g. `Compiling`.
        verb: String,
        /// The rest of the line.
        message: String,
        /// Colour/importance.
        tone: Tone,
        /// The host this is about, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The workspace package (service) this is about, in a deploy of several.
        #[serde(skip_serializing_if = "Option::is_none")]
        package: Option<String>,
    },
    /// A finished artifact.
    Artifact {
        /// Path of the `.tar.zst`.
        path: String,
        /// Size in bytes.
        size: u64,
        /// Hex sha256.
        sha256: String,
        /// True when an identical artifact was already in the store.
        reused: bool,
    },
    /// A remote script, shown with `-v` and by `--dry-run`.
    Script {
        /// The host.
        host: String,
        /// What the script does.
        purpose: String,
        /// Its text (secrets redacted).
        script: String,
    },
    /// The final per-host table of a fleet operation.
    Summary {
        /// `deploy`, `rollback`, `prune`...
        operation: String,
        /// One row per host.
        hosts: Vec<HostRow>,
    },
    /// A free-form block of output (status tables, config show, journal lines).
    Output {
        /// What kind of output (`config`, `status`, `journal`...).
        kind: String,
        /// The text, for human mode.
        text: String,
        /// The same content as structured data, for JSON mode.
        data: serde_json::Value,
    },
    /// The command failed.
    Error {
        /// The message.
        message: String,
        /// What to do next.
        #[serde(skip_serializing_if = "Option::is_none")]
        help: Option<String>,
        /// The process exit code.
        exit_code: i32,
    },
}

/// The reporter handed to every flow. Cheap to clone; safe to use from many tasks.
#[derive(Clone)]
pub struct Ui {
    inner: Arc<Inner>,
    /// The workspace package every status line of this reporter is about (see
    /// [`Ui::for_package`]).
    package: Option<Arc<str>>,
    /// Where summary rows go instead of being printed (see [`Ui::collecting_summaries`]).
    summaries: Option<Arc<std::sync::Mutex<Vec<HostRow>>>>,
}

struct Inner {
    format: Format,
    verbosity: Verbosity,
    human: human::Human,
    github: Option<github::Github>,
}

impl Ui {
    /// A reporter with the given format, colour choice and verbosity.
    /// Under GitHub Actions it also writes GitHub's workflow commands and files (`github.rs`).
    pub fn new(format: Format, color: ColorChoice, verbosity: Verbosity) -> Self {
        Self::with_github(
            format,
            color,
            verbosity,
            github::Github::from_env(format == Format::Human),
        )
    }

    /// A reporter with an explicit GitHub output (or none).
    pub fn with_github(
        format: Format,
        color: ColorChoice,
        verbosity: Verbosity,
        github: Option<github::Github>,
    ) -> Self {
        Ui {
            inner: Arc::new(Inner {
                format,
                verbosity,
                human: human::Human::new(color),
                github,
            }),
            package: None,
            summaries: None,
        }
    }

    /// The same reporter, keeping the rows of every summary table for [`Ui::take_summaries`]
    /// instead of printing them: an operation on several services prints one table.
    pub fn collecting_summaries(&self) -> Ui {
        Ui {
            summaries: Some(Default::default()),
            ..self.clone()
        }
    }

    /// The rows kept since [`Ui::collecting_summaries`].
    pub fn take_summaries(&self) -> Vec<HostRow> {
        self.summaries
            .as_ref()
            .map(|s| std::mem::take(&mut *s.lock().expect("summaries")))
            .unwrap_or_default()
    }

    /// The same reporter, tagging every status line with `package` (a service of a
    /// workspace deploy): JSON events get a `package` field, human lines name it after the host.
    pub fn for_package(&self, package: &str) -> Ui {
        Ui {
            package: Some(package.into()),
            ..self.clone()
        }
    }

    /// The package set by [`Ui::for_package`].
    pub fn package(&self) -> Option<&str> {
        self.package.as_deref()
    }

    /// A reporter that prints nothing (for tests and library users).
    pub fn silent() -> Self {
        Self::with_github(Format::Human, ColorChoice::Never, Verbosity::Quiet, None)
    }

    /// The end of the run (called once by the binary): under GitHub Actions, prints held host
    /// groups and error annotations, and writes the job summary and the step outputs.
    /// `command` is the command line, shown as the job summary's heading.
    pub fn finish(&self, command: &str, error: Option<&crate::Error>) {
        if let Some(gh) = &self.inner.github {
            gh.finish(command, error);
        }
    }

    /// The very end of the run, after the last line (the error) was printed: under GitHub
    /// Actions, workflow commands work again for the rest of the step (they were stopped
    /// around host text, see `github.rs`).
    pub fn resume_commands(&self) {
        if let Some(gh) = &self.inner.github {
            gh.resume();
        }
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// The verbosity.
    pub fn verbosity(&self) -> Verbosity {
        self.inner.verbosity
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        // A reporter for one package names it in every summary row and every output block.
        let event = match (event, self.package.as_deref()) {
            (Event::Summary { operation, hosts }, Some(p)) => Event::Summary {
                operation,
                hosts: hosts
                    .into_iter()
                    .map(|mut h| {
                        h.package.get_or_insert_with(|| p.to_string());
                        h
                    })
                    .collect(),
            },
            (Event::Output { kind, text, data }, Some(p)) => {
                let text = match data.get("host").and_then(|h| h.as_str()) {
                    // A journal line: `host0 (api) ...`, as status lines name them.
                    Some(h) if kind == "log" && text.starts_with(h) => {
                        format!("{h} ({p}){}", &text[h.len()..])
                    }
                    _ if kind == "log" => text,
                    _ => format!("{p}:\n{text}"),
                };
                let data = match data {
                    serde_json::Value::Object(mut m) => {
                        m.insert("package".into(), p.into());
                        serde_json::Value::Object(m)
                    }
                    other => serde_json::json!({ "package": p, "data": other }),
                };
                Event::Output { kind, text, data }
            }
            (e, _) => e,
        };
        if let (Event::Summary { hosts, .. }, Some(keep)) = (&event, &self.summaries) {
            keep.lock()
                .expect("summaries")
                .extend(hosts.iter().cloned());
            return;
        }
        if let Some(gh) = &self.inner.github {
            if self.github(gh, &event) {
                return;
            }
        }
        match self.inner.format {
            Format::Json => json::emit(&event),
            Format::Human => self
                .inner
                .human
                .emit(&sanitize::event(&event), self.inner.verbosity),
        }
    }

    /// The GitHub side of an event; true when it was fully handled (a line held for its host's
    /// group, or one hidden at this verbosity).
    fn github(&self, gh: &github::Github, event: &Event) -> bool {
        match event {
            Event::Status {
                verb,
                message,
                tone,
                host,
                package,
            } => {
                if *tone == Tone::Warning {
                    gh.warning(host.as_deref(), message);
                }
                if self.inner.format != Format::Human {
                    return false;
                }
                let line = self.inner.human.status_line(
                    verb,
                    message,
                    *tone,
                    host.as_deref(),
                    package.as_deref(),
                    self.inner.verbosity,
                );
                match (host, line) {
                    (_, None) => true,
                    (Some(h), Some(line)) => gh.hold(h, line),
                    (None, Some(line)) => gh.hold_trailer(line),
                }
            }
            Event::Summary { operation, hosts } => {
                gh.summary(operation, hosts);
                false
            }
            Event::Output { kind, data, .. } if kind == "canary" => {
                gh.canary(data);
                false
            }
            _ => false,
        }
    }

    /// `   {verb} {message}` in green.
    pub fn status(&self, verb: &str, message: impl Into<String>) {
        self.step(None, verb, message, Tone::Progress);
    }

    /// A step on one host: `   {verb} {host}: {message}`.
    pub fn host(&self, host: &str, verb: &str, message: impl Into<String>) {
        self.step(Some(host), verb, message, Tone::Progress);
    }

    /// `warning: {message}` in yellow.
    pub fn warn(&self, message: impl Into<String>) {
        self.step(None, "warning", message, Tone::Warning);
    }

    /// A detail shown only with `-v`.
    pub fn detail(&self, verb: &str, message: impl Into<String>) {
        self.step(None, verb, message, Tone::Detail);
    }

    /// A step with an explicit host and tone.
    pub fn step(&self, host: Option<&str>, verb: &str, message: impl Into<String>, tone: Tone) {
        self.emit(Event::Status {
            verb: verb.into(),
            message: message.into(),
            tone,
            host: host.map(Into::into),
            package: self.package.as_deref().map(Into::into),
        });
    }

    /// Asks a yes/no question on the terminal (stderr), reading the answer from stdin; only
    /// `y` or `yes` is a yes. Callers ask only when stdin is a terminal.
    pub fn confirm(&self, question: &str) -> bool {
        let term = console::Term::stderr();
        let _ = term.write_str(&format!("{question} [y/N] "));
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    }

    /// A progress bar for a long step (upload, build). Hidden in JSON mode, with `-q`, and
    /// when stderr is not a terminal.
    pub fn progress(&self, host: &str, what: &str, total: u64) -> indicatif::ProgressBar {
        if self.inner.format == Format::Json || self.inner.verbosity == Verbosity::Quiet {
            return indicatif::ProgressBar::hidden();
        }
        self.inner.human.progress(host, what, total)
    }
}

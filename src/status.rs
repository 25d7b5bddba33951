//! `cargo ship status|releases|logs <env>`: read-only views of each host, one script (one round
//! trip) per host.

use serde_json::json;

use crate::config::Config;
use crate::fleet;
use crate::journal::{self, HostState};
use crate::layout::Layout;
use crate::package::{Manifest, MANIFEST_FILE};
use crate::remote::script::{parse_kv, Script};
use crate::systemd;
use crate::ui::{Event, HostRow, Ui};
use crate::Result;

/// Which view to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One block per host: current release, version, git, since, unit state, lock.
    Status,
    /// Every release on each host with its version and marks.
    Releases,
}

/// The read-only script behind both views.
pub fn status_script(config: &Config) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!("read the state of {}", layout.root()));
    s.idempotent();
    journal::state_lines(&mut s, &layout);
    s.line(
        "if [ -f {} ]; then printf 'lock=%s\\n' \"$(cat {})\"; fi",
        &[&layout.lock_holder(), &layout.lock_holder()],
    );
    s.line(
        "_cm=$(stat -c %Y {} 2>/dev/null || true); printf 'current_since=%s\\n' \"$_cm\"",
        &[&layout.current()],
    );
    systemd::strategy::serving(&mut s, config);
    systemd::show_state(&mut s, Some("unit"));
    s.lines("echo unit_name=$_svc; echo strategy=$_strategy");
    // An unconfirmed switch: the dead-man's switch reverts it at `deadline` unless confirmed.
    s.line(
        "if [ -f {} ]; then sed -n 's/^\\(release\\|previous\\|deadline\\)=/pending_\\1=/p' {}; fi",
        &[&layout.pending(), &layout.pending()],
    );
    s.line(
        "for _d in {}/*; do [ -f \"$_d\"/{} ] || continue",
        &[&layout.releases(), MANIFEST_FILE],
    );
    s.line(
        "  printf 'manifest=%s ' \"${{_d##*/}}\"; tr -d '\\n' < \"$_d\"/{}; echo",
        &[MANIFEST_FILE],
    );
    s.lines("done");
    s.line("for _f in {}/*; do [ -f \"$_f\" ] && printf 'failed_reason=%s %s\\n' \"${{_f##*/}}\" \"$(head -n 1 \"$_f\")\"; done; true", &[&layout.failed_dir()]);
    s.line(
        "tail -n 3 {} 2>/dev/null | sed 's/^/revision=/' || true",
        &[&layout.revisions_log()],
    );
    s
}

/// What one host reported.
#[derive(Debug, Clone, Default)]
pub struct HostStatus {
    /// Release state.
    pub state: HostState,
    /// Manifests by release id.
    pub manifests: Vec<(String, Manifest)>,
    /// Failure reasons by release id.
    pub failed_reasons: Vec<(String, String)>,
    /// `key=value` facts (unit_*, current_since...).
    pub facts: std::collections::BTreeMap<String, String>,
    /// Last revisions.log lines.
    pub revisions: Vec<String>,
}

impl HostStatus {
    /// Parses [`status_script`]'s output.
    pub fn parse(stdout: &str) -> HostStatus {
        let mut h = HostStatus {
            state: HostState::parse(stdout),
            facts: parse_kv(stdout),
            ..Default::default()
        };
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("manifest=") {
                if let Some((id, json)) = rest.split_once(' ') {
                    if let Ok(m) = serde_json::from_str::<Manifest>(json) {
                        h.manifests.push((id.to_string(), m));
                    }
                }
            } else if let Some(rest) = line.strip_prefix("failed_reason=") {
                let (id, why) = rest.split_once(' ').unwrap_or((rest, ""));
                h.failed_reasons.push((id.to_string(), why.to_string()));
            } else if let Some(rest) = line.strip_prefix("revision=") {
                h.revisions.push(rest.to_string());
            }
        }
        h
    }

    fn manifest(&self, id: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|(r, _)| r == id).map(|(_, m)| m)
    }

    fn fact(&self, k: &str) -> &str {
        self.facts.get(k).map(String::as_str).unwrap_or("")
    }

    /// The unconfirmed switch, if one is pending: what it switched and when the host reverts.
    fn pending(&self) -> Option<String> {
        let release = self.facts.get("pending_release")?;
        let at = self
            .fact("pending_deadline")
            .parse::<i64>()
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into());
        let previous = self.fact("pending_previous");
        Some(format!(
            "release {release} was switched but not confirmed; the host puts {} back by itself at {at} unless the deploy confirms it",
            if previous.is_empty() { "nothing" } else { previous }
        ))
    }

    /// The human block for one host.
    pub fn render(&self, host: &str, view: View) -> String {
        let mut out = format!("{host}\n");
        let current = self.state.current.clone();
        match view {
            View::Status => {
                match &current {
                    Some(c) => {
                        let m = self.manifest(c);
                        let since = self
                            .fact("current_since")
                            .parse::<i64>()
                            .ok()
                            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
                        out.push_str(&format!(
                            "  current:   {c}  v{}  {}  git {}{}  since {}\n",
                            m.map(|m| m.version.as_str()).unwrap_or("?"),
                            m.map(|m| m.target.as_str()).unwrap_or("?"),
                            m.and_then(|m| m.git_commit.as_deref())
                                .map(|g| &g[..g.len().min(12)])
                                .unwrap_or("-"),
                            if m.is_some_and(|m| m.git_dirty) {
                                " (dirty)"
                            } else {
                                ""
                            },
                            since.unwrap_or_else(|| "?".into())
                        ));
                    }
                    None => out.push_str("  current:   nothing deployed\n"),
                }
                out.push_str(&format!(
                    "  unit:      {} ({}, pid {}, {} restarts, since {}; {} strategy)\n",
                    self.fact("unit_active"),
                    self.fact("unit_name"),
                    self.fact("unit_pid"),
                    self.fact("unit_restarts"),
                    self.fact("unit_since"),
                    self.fact("strategy")
                ));
                if let Some(p) = self.pending() {
                    out.push_str(&format!("  UNCONFIRMED: {p}\n"));
                }
                out.push_str(&format!(
                    "  releases:  {} on disk, rollback target {}\n",
                    self.state.releases.len(),
                    self.state
                        .rollback_target()
                        .unwrap_or_else(|| "none".into())
                ));
                if let Some(l) = &self.state.lock_holder {
                    out.push_str(&format!("  LOCKED:    by {l}\n"));
                }
                if let Some(sw) = &self.state.switching {
                    out.push_str(&format!(
                        "  WARNING:   a switch from {} was never verified\n",
                        if sw.is_empty() { "nothing" } else { sw }
                    ));
                }
                for r in &self.revisions {
                    out.push_str(&format!("  log:       {r}\n"));
                }
            }
            View::Releases => {
                let target = self.state.rollback_target();
                for id in self.state.releases.iter().rev() {
                    let m = self.manifest(id);
                    let mut marks = Vec::new();
                    if current.as_deref() == Some(id) {
                        marks.push("current".to_string());
                    }
                    if target.as_deref() == Some(id) {
                        marks.push("rollback target".to_string());
                    }
                    if self.state.unfinished.contains(id) {
                        marks.push("unfinished".to_string());
                    }
                    if let Some((_, why)) = self.failed_reasons.iter().find(|(r, _)| r == id) {
                        marks.push(format!("failed: {why}"));
                    }
                    out.push_str(&format!(
                        "  {id}  v{:<10} {:<30} {:<12}  {}\n",
                        m.map(|m| m.version.as_str()).unwrap_or("?"),
                        m.map(|m| m.target.as_str()).unwrap_or("?"),
                        m.and_then(|m| m.git_commit.as_deref())
                            .map(|g| &g[..g.len().min(12)])
                            .unwrap_or("-"),
                        marks.join(", ")
                    ));
                }
                if self.state.releases.is_empty() {
                    out.push_str("  no releases\n");
                }
            }
        }
        out
    }

    /// The same content as JSON.
    pub fn to_json(&self, host: &str) -> serde_json::Value {
        json!({
            "host": host,
            "current": self.state.current,
            "rollback_target": self.state.rollback_target(),
            "lock": self.state.lock_holder,
            "unverified_switch_from": self.state.switching,
            "unconfirmed": self.facts.get("pending_release").map(|r| json!({
                "release": r,
                "previous": self.fact("pending_previous"),
                "reverts_at": self.fact("pending_deadline").parse::<i64>().ok(),
            })),
            "strategy": self.fact("strategy"),
            "unit": {
                "name": self.fact("unit_name"),
                "active": self.fact("unit_active"),
                "pid": self.fact("unit_pid"),
                "restarts": self.fact("unit_restarts"),
                "since": self.fact("unit_since"),
            },
            "releases": self.state.releases.iter().map(|id| {
                let m = self.manifest(id);
                json!({
                    "id": id,
                    "version": m.map(|m| m.version.clone()),
                    "target": m.map(|m| m.target.clone()),
                    "git_commit": m.and_then(|m| m.git_commit.clone()),
                    "current": self.state.current.as_deref() == Some(id),
                    "unfinished": self.state.unfinished.contains(id),
                    "failed": self.failed_reasons.iter().find(|(r, _)| r == id).map(|(_, w)| w.clone()),
                })
            }).collect::<Vec<_>>(),
            "revisions": self.revisions,
        })
    }
}

/// `cargo ship status` / `cargo ship releases`.
pub async fn status(config: &Config, hosts: &[String], view: View, ui: &Ui) -> Result<()> {
    let script = status_script(config);
    let results = fleet::on_each_host(config, hosts, ui, |conn| {
        let script = &script;
        async move {
            let out = conn.run_ok(script).await?;
            let st = HostStatus::parse(&out);
            ui.emit(Event::Output {
                kind: if view == View::Status {
                    "status".into()
                } else {
                    "releases".into()
                },
                text: st.render(conn.host(), view),
                data: st.to_json(conn.host()),
            });
            let current = st.state.current.as_deref().and_then(|c| st.manifest(c));
            Ok(HostRow {
                outcome: st.fact("unit_active").to_string(),
                release: st.state.current.clone(),
                version: current.map(|m| m.version.clone()),
                target: current.map(|m| m.target.clone()),
                ..fleet::row(&conn)
            })
        }
    })
    .await;
    let total = results.len();
    let failed: Vec<_> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    fleet::fail_if_any("status", total, failed)
}

/// `cargo ship logs`: the last `lines` journal lines of the unit on each host.
pub async fn logs(config: &Config, hosts: &[String], lines: u32, ui: &Ui) -> Result<()> {
    let results = fleet::on_each_host(config, hosts, ui, |conn| async move {
        let mut s = Script::new(format!(
            "read the journal of {}",
            systemd::unit_name(config)
        ));
        systemd::sudo_prelude(&mut s, config);
        systemd::journal_tail(&mut s, config, lines);
        let out = conn.run_ok(&s).await?;
        let (_, journal) = systemd::split_journal(&out);
        let text: String = journal
            .lines()
            .map(|l| format!("{}: {l}\n", conn.host()))
            .collect();
        ui.emit(Event::Output {
            kind: "journal".into(),
            text,
            data: json!({ "host": conn.host(), "lines": journal.lines().collect::<Vec<_>>() }),
        });
        Ok(fleet::row(&conn))
    })
    .await;
    let total = results.len();
    let failed: Vec<_> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    fleet::fail_if_any("logs", total, failed)
}

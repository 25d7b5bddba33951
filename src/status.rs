//! `cargo ship status|releases <env>`: read-only views of the environment, one script (one
//! round trip) per host, then a verdict about the whole environment (status) or one table of
//! every release with who deployed it, when, and where it is (releases).

use serde_json::json;

use crate::config::Config;
use crate::fleet;
use crate::journal::{self, HostState};
use crate::layout::Layout;
use crate::package::{Manifest, MANIFEST_FILE};
use crate::remote::script::{parse_kv, Script};
use crate::systemd;
use crate::ui::{Event, Ui};
use crate::{Error, Result};

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
    // How long the lock has been held, by the host's own clock.
    s.line(
        "if [ -d {} ]; then printf 'lock_age=%s\\n' \"$(( $(date +%s) - $(stat -c %Y {}) ))\"; fi",
        &[&layout.lock(), &layout.lock()],
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
    // #17: whether the deploy that switched still runs (it holds the lock's lease).
    s.line(
        "if [ -f {} ]; then if [ -f {} ] && ! flock -n {} true; then echo pending_running=1; fi; fi",
        &[&layout.pending(), &layout.lease(), &layout.lease()],
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
        "tail -n 500 {} 2>/dev/null | sed 's/^/revision=/' || true",
        &[&layout.revisions_log()],
    );
    crate::jobs::state_lines(&mut s, config);
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
    /// The scheduled jobs installed here (#21).
    pub jobs: Vec<crate::jobs::JobState>,
}

impl HostStatus {
    /// Parses [`status_script`]'s output.
    pub fn parse(stdout: &str) -> HostStatus {
        let mut h = HostStatus {
            state: HostState::parse(stdout),
            facts: parse_kv(stdout),
            jobs: crate::jobs::parse(stdout),
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

    /// The version of the current release.
    fn version(&self) -> Option<&str> {
        let c = self.state.current.as_deref()?;
        self.manifest(c)
            .map(|m| m.version.as_str())
            .or(self.state.current_version.as_deref())
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
        let previous = if previous.is_empty() {
            "nothing"
        } else {
            previous
        };
        let next = match self.fact("pending_running") {
            "1" => "the deploy that switched still runs".to_string(),
            _ => format!("the deploy that switched is gone: `cargo ship rollback <env>` puts {previous} back now"),
        };
        Some(format!(
            "release {release} was switched but not confirmed; the host puts {previous} back by itself at {at} unless the deploy confirms it ({next})"
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
                for r in &self.revisions[self.revisions.len().saturating_sub(3)..] {
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
            "lock_age_secs": self.fact("lock_age").parse::<u64>().ok(),
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
    let env = config.env()?;
    let results = crate::host::each(config, hosts, ui, |conn| {
        let script = status_script(config.for_host(conn.host()));
        async move {
            let out = conn.run_ok(&script).await?;
            Ok((conn.host().to_string(), HostStatus::parse(&out)))
        }
    })
    .await;
    let mut reports: Vec<(String, std::result::Result<HostStatus, String>)> = Vec::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok((_, st)) => reports.push((host, Ok(st))),
            Err(e) if host.is_empty() => return Err(e),
            Err(e) => {
                reports.push((host, Err(fleet::first_line(&e.to_string()))));
                errors.push(e);
            }
        }
    }
    match view {
        View::Releases => {
            let table = releases_table(&reports);
            ui.emit(Event::Output {
                kind: "releases".into(),
                text: table.0,
                data: table.1,
            });
        }
        View::Status => {
            for (host, r) in &reports {
                if let Ok(st) = r {
                    if ui.verbosity() >= crate::ui::Verbosity::Verbose
                        || ui.format() == crate::ui::Format::Json
                    {
                        ui.emit(Event::Output {
                            kind: "status".into(),
                            text: st.render(host, View::Status),
                            data: st.to_json(host),
                        });
                    }
                }
            }
            let v = verdict(&reports);
            ui.emit(Event::Output {
                kind: "verdict".into(),
                text: v.render(&reports),
                data: v.to_json(),
            });
            if errors.is_empty() && !v.ok() {
                return Err(Error::NotHealthy {
                    env: env.name.clone(),
                    problems: v.problems,
                });
            }
        }
    }
    let total = reports.len();
    fleet::fail_if_any(
        if view == View::Status {
            "status"
        } else {
            "releases"
        },
        total,
        errors,
    )
}

/// What `status` concludes about the environment as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// What keeps the environment from running one healthy release everywhere (exit 10).
    pub problems: Vec<String>,
    /// What is worth knowing but does not change the verdict (a held lock).
    pub notes: Vec<String>,
    /// The release and version every host runs, when they agree.
    pub release: Option<(String, String)>,
}

impl Verdict {
    /// Every host runs the same healthy release.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line per host, then the problems, the notes and the verdict.
    pub fn render(&self, reports: &[(String, std::result::Result<HostStatus, String>)]) -> String {
        let width = reports.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (host, r) in reports {
            out.push_str(&format!("{host:<width$}  {}\n", host_line(r)));
        }
        for p in &self.problems {
            out.push_str(&format!("problem: {p}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        match (&self.release, self.ok()) {
            (Some((r, v)), true) => out.push_str(&format!(
                "verdict: ok, {} host(s) run release {r} (v{v}), active\n",
                reports.len()
            )),
            _ => out.push_str(&format!(
                "verdict: NOT OK, {} problem(s)\n",
                self.problems.len()
            )),
        }
        out
    }

    /// The verdict as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "ok": self.ok(),
            "problems": self.problems,
            "notes": self.notes,
            "release": self.release.as_ref().map(|r| r.0.clone()),
            "version": self.release.as_ref().map(|r| r.1.clone()),
            "exit_code": if self.ok() { 0 } else { crate::error::exit::NOT_HEALTHY },
        })
    }
}

fn host_line(r: &std::result::Result<HostStatus, String>) -> String {
    let st = match r {
        Ok(st) => st,
        Err(e) => return format!("unreachable: {e}"),
    };
    let Some(current) = st.state.current.as_deref() else {
        return format!("nothing deployed  unit {}", st.fact("unit_active"));
    };
    let mut l = format!(
        "{current}  v{}  {}  {} ({}, {} restarts)",
        st.version().unwrap_or("?"),
        st.manifest(current)
            .map(|m| m.target.as_str())
            .unwrap_or("?"),
        st.fact("unit_active"),
        st.fact("unit_name"),
        st.fact("unit_restarts"),
    );
    if st.pending().is_some() {
        l.push_str("  UNCONFIRMED");
    }
    if st.state.switching.is_some() {
        l.push_str("  UNVERIFIED");
    }
    if st.state.lock_holder.is_some() {
        l.push_str("  LOCKED");
    }
    l
}

/// An age in seconds as `3m 20s`.
fn age(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Looks at every host's report: drift (different releases or versions), a unit that is not
/// active or was restarted by systemd, an unconfirmed or unverified switch, nothing deployed,
/// an unreachable host. A held lock is a note.
pub fn verdict(reports: &[(String, std::result::Result<HostStatus, String>)]) -> Verdict {
    let mut v = Verdict::default();
    let mut running: Vec<(String, String, String)> = Vec::new();
    for (host, r) in reports {
        let st = match r {
            Ok(st) => st,
            Err(e) => {
                v.problems.push(format!("{host}: unreachable: {e}"));
                continue;
            }
        };
        match st.state.current.as_deref() {
            None => v.problems.push(format!("{host}: nothing deployed")),
            Some(c) => running.push((
                host.clone(),
                c.to_string(),
                st.version().unwrap_or("?").to_string(),
            )),
        }
        let active = st.fact("unit_active");
        if st.state.current.is_some() && active != "active" {
            v.problems.push(format!(
                "{host}: unit {} is {}",
                st.fact("unit_name"),
                if active.is_empty() { "unknown" } else { active }
            ));
        }
        let restarts = st.fact("unit_restarts").parse::<u64>().unwrap_or(0);
        if restarts > 0 {
            v.problems.push(format!(
                "{host}: unit {} was restarted {restarts} time(s) by systemd (it crashed)",
                st.fact("unit_name")
            ));
        }
        if let Some(p) = st.pending() {
            v.problems.push(format!("{host}: {p}"));
        }
        for j in st.jobs.iter().filter(|j| j.failed) {
            v.problems.push(format!(
                "{host}: job {} {} in its last run (started {})",
                j.name,
                j.result,
                j.last_start.as_deref().unwrap_or("?")
            ));
        }
        if let Some(sw) = &st.state.switching {
            v.problems.push(format!(
                "{host}: a switch from release {} was never verified",
                if sw.is_empty() { "(none)" } else { sw }
            ));
        }
        if let Some(l) = &st.state.lock_holder {
            let held = st
                .fact("lock_age")
                .parse::<u64>()
                .map(|s| format!(" (held for {})", age(s)))
                .unwrap_or_default();
            v.notes.push(format!("{host}: locked by {l}{held}"));
        }
    }
    let mut distinct: Vec<(&str, &str)> = running
        .iter()
        .map(|(_, r, ver)| (r.as_str(), ver.as_str()))
        .collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() > 1 {
        let groups: Vec<String> = distinct
            .iter()
            .map(|(r, ver)| {
                let hosts: Vec<&str> = running
                    .iter()
                    .filter(|(_, hr, hv)| hr == r && hv == ver)
                    .map(|(h, _, _)| h.as_str())
                    .collect();
                format!("{} on release {r} (v{ver})", hosts.join(", "))
            })
            .collect();
        v.problems.push(format!("drift: {}", groups.join("; ")));
    } else if let Some((r, ver)) = distinct.first() {
        v.release = Some((r.to_string(), ver.to_string()));
    }
    v
}

/// Who and when, from a revisions.log line about `release`: the last successful `deploy`
/// line, else the first line naming it.
fn deployed_by<'a>(revisions: &'a [String], release: &str) -> Option<(&'a str, &'a str)> {
    let field = format!("release={release}");
    let about: Vec<&String> = revisions
        .iter()
        .filter(|l| l.split(' ').any(|w| w == field))
        .collect();
    let line = about
        .iter()
        .rev()
        .find(|l| l.split(' ').nth(1) == Some("deploy") && l.ends_with(" result=ok"))
        .or(about.first())?;
    let when = line.split(' ').next()?;
    let who = line.split(' ').find_map(|w| w.strip_prefix("by="))?;
    Some((when, who))
}

/// `cargo ship releases`: every release on any host, oldest first, with its version, who
/// deployed it and when (from revisions.log), and on which hosts it is (current or on disk).
pub fn releases_table(
    reports: &[(String, std::result::Result<HostStatus, String>)],
) -> (String, serde_json::Value) {
    let mut ids: Vec<String> = reports
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|st| st.state.releases.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    let mut text = String::new();
    let mut rows = Vec::new();
    for id in &ids {
        let (mut version, mut git, mut who) = (None, None, None);
        // A mixed fleet runs one release id built for several targets: by target, its hosts.
        let mut targets: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let (mut current_on, mut on, mut failed, mut unfinished) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (host, r) in reports {
            let Ok(st) = r else { continue };
            if !st.state.releases.contains(id) {
                continue;
            }
            if let Some(m) = st.manifest(id) {
                version.get_or_insert(m.version.clone());
                targets
                    .entry(m.target.clone())
                    .or_default()
                    .push(host.clone());
                if let Some(g) = &m.git_commit {
                    git.get_or_insert(g[..g.len().min(12)].to_string());
                }
            }
            if who.is_none() {
                who = deployed_by(&st.revisions, id).map(|(a, b)| (a.to_string(), b.to_string()));
            }
            if st.state.current.as_deref() == Some(id) {
                current_on.push(host.clone());
            } else {
                on.push(host.clone());
            }
            if let Some((_, why)) = st.failed_reasons.iter().find(|(r, _)| r == id) {
                failed.push(format!("{host}: {why}"));
            }
            if st.state.unfinished.contains(id) {
                unfinished.push(host.clone());
            }
        }
        let mut where_ = Vec::new();
        let target = match targets.len() {
            0 => None,
            1 => targets.keys().next().cloned(),
            _ => {
                for (t, hosts) in &targets {
                    where_.push(format!("{t} on {}", hosts.join(", ")));
                }
                Some("mixed".to_string())
            }
        };
        if !current_on.is_empty() {
            where_.push(format!("current on {}", current_on.join(", ")));
        }
        if !on.is_empty() {
            where_.push(format!("on disk on {}", on.join(", ")));
        }
        if !unfinished.is_empty() {
            where_.push(format!("unfinished on {}", unfinished.join(", ")));
        }
        for f in &failed {
            where_.push(format!("failed on {f}"));
        }
        text.push_str(&format!(
            "{id}  v{:<10} {:<30} {:<12}  {}  {}\n",
            version.as_deref().unwrap_or("?"),
            target.as_deref().unwrap_or("?"),
            git.as_deref().unwrap_or("-"),
            who.as_ref()
                .map(|(when, by)| format!("{when} by {by}"))
                .unwrap_or_else(|| "(not in revisions.log)".into()),
            where_.join("; ")
        ));
        rows.push(json!({
            "id": id,
            "version": version,
            "target": target,
            "targets": targets,
            "git_commit": git,
            "deployed_at": who.as_ref().map(|w| w.0.clone()),
            "deployed_by": who.as_ref().map(|w| w.1.clone()),
            "current": !current_on.is_empty(),
            "current_on": current_on,
            "on": on,
            "unfinished_on": unfinished,
            "failed": failed,
        }));
    }
    for (host, r) in reports {
        if let Err(e) = r {
            text.push_str(&format!("{host}: unreachable: {e}\n"));
        }
    }
    if ids.is_empty() {
        text.push_str("no releases\n");
    }
    (text, json!({ "releases": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(current: &str, version: &str, active: &str, extra: &str) -> HostStatus {
        HostStatus::parse(&format!(
            "current={current}\nrelease={current}\ncurrent_version={version}\nunit_active={active}\nunit_name=app.service\nunit_restarts=0\n{extra}"
        ))
    }

    #[test]
    fn verdict_is_ok_only_for_one_healthy_release_everywhere() {
        let same = vec![
            (
                "a".to_string(),
                Ok(host("20261128000001", "0.2.0", "active", "")),
            ),
            (
                "b".to_string(),
                Ok(host("20261128000001", "0.2.0", "active", "")),
            ),
        ];
        let v = verdict(&same);
        assert!(v.ok(), "{v:?}");
        assert_eq!(
            v.release,
            Some(("20261128000001".to_string(), "0.2.0".to_string()))
        );
        assert!(v
            .render(&same)
            .ends_with("verdict: ok, 2 host(s) run release 20261128000001 (v0.2.0), active\n"));

        let drift = vec![
            ("a".to_string(), Ok(host("20261128000002", "0.2.0", "active", "lock=alice@x since 2026-11-28T00:00:00Z: cargo ship lock test: incident 42\nlock_age=300\n"))),
            ("b".to_string(), Ok(host("20261128000001", "0.1.0", "failed", "unit_restarts=3\n"))),
            ("c".to_string(), Err("cannot connect: refused".to_string())),
        ];
        let v = verdict(&drift);
        assert_eq!(
            v.problems,
            [
                "b: unit app.service is failed",
                "b: unit app.service was restarted 3 time(s) by systemd (it crashed)",
                "c: unreachable: cannot connect: refused",
                "drift: b on release 20261128000001 (v0.1.0); a on release 20261128000002 (v0.2.0)",
            ]
        );
        assert_eq!(
            v.notes,
            ["a: locked by alice@x since 2026-11-28T00:00:00Z: cargo ship lock test: incident 42 (held for 5m)"]
        );
        assert!(v
            .render(&drift)
            .ends_with("verdict: NOT OK, 4 problem(s)\n"));
        assert_eq!(v.to_json()["exit_code"], 10);
    }

    #[test]
    fn releases_say_who_when_and_where() {
        let a = HostStatus::parse("current=20261128000002\nrelease=20261128000001\nrelease=20261128000002\nrevision=2026-11-28T00:00:01Z deploy release=20261128000001 version=0.1.0 by=alice@x result=ok\nrevision=2026-11-28T00:00:02Z deploy release=20261128000002 version=0.2.0 by=bob@y result=ok\n");
        let b = HostStatus::parse("current=20261128000001\nrelease=20261128000001\nrevision=2026-11-28T00:00:01Z deploy release=20261128000001 version=0.1.0 by=alice@x result=ok\n");
        let (text, data) = releases_table(&[("a".into(), Ok(a)), ("b".into(), Ok(b))]);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "20261128000001  v?          ?                              -             2026-11-28T00:00:01Z by alice@x  current on b; on disk on a",
                "20261128000002  v?          ?                              -             2026-11-28T00:00:02Z by bob@y  current on a",
            ]
        );
        assert_eq!(data["releases"][0]["current_on"], json!(["b"]));
        assert_eq!(data["releases"][1]["deployed_by"], "bob@y");
    }
}

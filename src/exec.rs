//! `cargo ship exec <env> [--host H] -- CMD ARGS...`: runs a command on every host, in the
//! current release directory, as the service's user and with the service's environment (read
//! from the running process, so it holds whatever the unit gives it; the configured
//! `systemd.environment` when the service is not running). Output is prefixed with the host
//! as it arrives; a summary gives each host's exit code.
//!
//! `cargo ship ssh <env> --host H` opens an interactive shell in the release directory.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::Config;
use crate::fleet;
use crate::layout::Layout;
use crate::remote::script::{quote, Script, EXIT_MISSING};
use crate::remote::session::Connection;
use crate::systemd;
use crate::ui::{Event, HostRow, Ui};
use crate::{Error, Result};

/// Options of `cargo ship exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The command and its arguments (each passed as one word, never re-split).
    pub command: Vec<String>,
    /// Only these hosts.
    pub hosts: Vec<String>,
}

/// The script that runs `command` in `current`, as the service's user, with the service's
/// environment. The environment travels from `/proc/<pid>/environ` to the command through a
/// pipe (never a command line), each variable re-quoted by `sed`.
pub fn exec_script(config: &Config, command: &[String]) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "run `{}` in {}",
        command.join(" "),
        layout.current()
    ));
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "if [ ! -d {}/ ]; then echo 'cargo-ship: nothing is deployed in' {} >&2; exit {}; fi",
        &[
            &layout.current(),
            &config.deploy_to,
            &EXIT_MISSING.to_string(),
        ],
    );
    s.line("cd -- {}/", &[&layout.current()]);
    systemd::strategy::serving(&mut s, config);
    s.lines("_pid=$(systemctl show -p MainPID --value -- \"$_svc\" 2>/dev/null || echo 0)");
    s.lines("set --");
    for a in command {
        s.line("set -- \"$@\" {}", &[a]);
    }
    // The environment as `export K='V'` lines, on the pipe into the command's shell.
    let fallback: String = config
        .systemd
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            ("SHIP_DEPLOY_TO".to_string(), config.deploy_to.clone()),
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
        ])
        .filter_map(|(k, v)| Some(format!("export {k}={}\n", quote(&v).ok()?)))
        .collect();
    s.lines("_env() {");
    s.lines("  if [ \"${_pid:-0}\" -gt 0 ] && $SUDO test -r /proc/$_pid/environ; then");
    s.lines(r#"    $SUDO sed -z -e '/^[A-Za-z_][A-Za-z0-9_]*=/!d' -e "s/'/'\\\\''/g" -e "s/=/='/" -e "s/\$/'/" -e 's/^/export /' /proc/$_pid/environ | tr '\0' '\n'"#);
    s.lines("  else");
    s.lines("    echo 'cargo-ship: the service is not running here: the command gets the configured systemd.environment' >&2");
    s.line("    printf '%s' {}", &[&fallback]);
    s.lines("  fi");
    s.lines("}");
    match &config.systemd.user {
        Some(user) => {
            s.line("if [ \"$(id -un)\" = {} ]; then", &[user]);
            s.lines(r#"  _env | env -i sh -c 'eval "$(cat)"; exec "$@"' sh "$@""#);
            // After `cargo ship setup`: the unit's helper reads the environment as root and
            // runs the command as the service's user (it refuses anything else).
            s.lines("elif case $SUDO in *ship-root*) true ;; *) false ;; esac; then");
            s.lines(r#"  if [ "${_pid:-0}" -le 0 ]; then echo 'cargo-ship: the service is not running here: the command gets the configured systemd.environment' >&2; fi"#);
            s.line(
                r#"  printf '%s' {} | $SUDO exec-as-service "${{_pid:-0}}" -- "$@""#,
                &[&fallback],
            );
            s.lines("else");
            s.line(
                r#"  _env | $SUDO runuser -u {} -- env -i sh -c 'eval "$(cat)"; exec "$@"' sh "$@""#,
                &[user],
            );
            s.lines("fi");
        }
        None => {
            s.lines(r#"_env | $SUDO env -i sh -c 'eval "$(cat)"; exec "$@"' sh "$@""#);
        }
    }
    s
}

/// `cargo ship exec`.
pub async fn exec(config: &Config, opts: &ExecOptions, ui: &Ui) -> Result<()> {
    if opts.command.is_empty() {
        return Err(Error::usage(
            "`cargo ship exec` needs a command: `cargo ship exec <env> -- <command> [args...]`",
            None,
        ));
    }
    let mask = Arc::new(Mask::new(config));
    let results = crate::host::each(config, &opts.hosts, ui, |conn| {
        let script = exec_script(config.for_host(conn.host()), &opts.command);
        let mask = mask.clone();
        async move { run_on(&conn, &script, &mask, ui).await }
    })
    .await;
    fleet::command_summary("exec", results, ui)
}

/// Hides the values of `systemd.secrets` in what `exec` shows (issue #16: `exec -- env`
/// printed them): the values this machine knows (see [`crate::secrets::known_values`]), and
/// any value a line shows as `NAME=value` for a secret's NAME (learned there, hidden in every
/// later line of every host too). Each becomes `[redacted]`. After such a line, the lines of
/// the same stream up to the next `VAR=` line are taken as the rest of a multi-line value
/// (as `env` prints one) and hidden whole.
pub struct Mask {
    names: Vec<String>,
    values: std::sync::Mutex<Vec<String>>,
}

impl Mask {
    /// A mask for `config`'s secrets.
    pub fn new(config: &Config) -> Mask {
        Mask::with(
            config.systemd.secrets.clone(),
            crate::secrets::known_values(config),
        )
    }

    /// A mask for these names and known values.
    pub fn with(names: Vec<String>, known: Vec<String>) -> Mask {
        // A value spanning lines is hidden line by line (output arrives in lines).
        let values = known
            .iter()
            .flat_map(|v| v.split('\n'))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        Mask {
            names,
            values: std::sync::Mutex::new(values),
        }
    }

    /// `line` of one stream with every secret value it shows replaced by `[redacted]`;
    /// `within` is that stream's state: true while the lines continue a secret's value.
    pub fn line(&self, line: &str, within: &mut bool) -> String {
        let starts_var = {
            let name = line.split('=').next().unwrap_or("");
            line.contains('=')
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        };
        if *within && !starts_var {
            return "[redacted]".into();
        }
        *within = false;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = line.to_string();
        for name in &self.names {
            if let Some(v) = line
                .strip_prefix(name.as_str())
                .and_then(|r| r.strip_prefix('='))
            {
                if !v.is_empty() && !values.iter().any(|k| k == v) {
                    values.push(v.to_string());
                }
                out = format!("{name}=[redacted]");
                *within = true;
            }
        }
        // Longest first, so a value holding another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "[redacted]");
            }
        }
        out
    }
}

async fn run_on(
    conn: &Arc<Connection>,
    script: &Script,
    mask: &Mask,
    ui: &Ui,
) -> Result<(HostRow, i32)> {
    let host = conn.host().to_string();
    let mut child = conn.spawn(script).await?;
    let out = child.stdout().take();
    let err = child.stderr().take();
    let pump = |stream: &'static str, r: Option<openssh::ChildStdout>| {
        let host = host.clone();
        async move {
            let Some(r) = r else { return };
            let mut lines = BufReader::new(r).lines();
            let mut within = false;
            while let Ok(Some(line)) = lines.next_line().await {
                emit_line(ui, &host, stream, &mask.line(&line, &mut within));
            }
        }
    };
    let pump_err = |r: Option<openssh::ChildStderr>| {
        let host = host.clone();
        async move {
            let Some(r) = r else { return };
            let mut lines = BufReader::new(r).lines();
            let mut within = false;
            while let Ok(Some(line)) = lines.next_line().await {
                emit_line(ui, &host, "stderr", &mask.line(&line, &mut within));
            }
        }
    };
    tokio::join!(pump("stdout", out), pump_err(err));
    let code = match child.wait().await {
        Ok(st) => st.code().unwrap_or(-1),
        Err(_) => -1,
    };
    let row = HostRow {
        outcome: format!("exit {code}"),
        detail: (code != 0).then(|| format!("the command exited {code}")),
        ..fleet::row(conn)
    };
    Ok((row, code))
}

fn emit_line(ui: &Ui, host: &str, stream: &str, line: &str) {
    ui.emit(Event::Output {
        kind: "exec".into(),
        text: format!("{host}: {line}"),
        data: json!({ "host": host, "stream": stream, "line": line }),
    });
}

/// `cargo ship ssh <env> --host H`: an interactive login shell in the current release
/// directory (or `deploy_to` when nothing is deployed), through the system `ssh` with a
/// terminal, the environment's ssh_config and strict host-key checking.
pub fn ssh(config: &Config, hosts: &[String]) -> Result<i32> {
    let env = config.env()?;
    if hosts.len() != 1 {
        return Err(Error::usage(
            "`cargo ship ssh` opens one shell: name its host with `--host <host>`",
            Some(format!(
                "the hosts of `{}` are: {}",
                env.name,
                env.hosts
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ));
    }
    let spec = fleet::select_hosts(env, hosts)?.remove(0);
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!("open a shell in {}", layout.current()));
    s.line(
        "cd -- {}/ 2>/dev/null || cd -- {}",
        &[&layout.current(), &config.deploy_to],
    );
    s.lines("exec \"${SHELL:-/bin/sh}\" -l");
    crate::remote::interactive::run(&spec, env, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #16: `exec -- env` showed the secrets' values.
    #[test]
    fn issue_16_exec_output_hides_secret_values() {
        let m = Mask::with(
            vec!["API_TOKEN".into(), "DB_PASS".into()],
            vec!["known-secret".into(), "two\nlines".into()],
        );
        let mut w = false;
        let mut line = |l: &str| m.line(l, &mut w);
        assert_eq!(line("API_TOKEN=s3cr3t-value"), "API_TOKEN=[redacted]");
        // The rest of a multi-line value, up to the next variable.
        assert_eq!(line("its second line"), "[redacted]");
        assert_eq!(line("PATH=/usr/bin"), "PATH=/usr/bin");
        // Learned from the line above: hidden wherever it shows later.
        assert_eq!(line("token is s3cr3t-value!"), "token is [redacted]!");
        assert_eq!(line("DB_PASS=known-secret"), "DB_PASS=[redacted]");
        assert_eq!(line("HOME=/x"), "HOME=/x");
        assert_eq!(line("x known-secret y"), "x [redacted] y");
        assert_eq!(line("lines"), "[redacted]");
        assert_eq!(line("API_TOKEN_X=visible"), "API_TOKEN_X=visible");
    }
}

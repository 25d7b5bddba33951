//! Secrets: the values of `systemd.secrets`, which never live in Cargo.toml.
//!
//! A value comes from the deploying process's environment (how CI passes secrets), else from
//! the environment's `secrets_file` (a dotenv file on the deploying machine). A missing one
//! refuses the deploy before any connection. On each host the values live in one root-only
//! file per unit, [`host_path`] (`/etc/cargo-ship/<unit>.env`, mode 0600, written atomically by
//! the switch script, whose text travels on ssh's standard input, never on a command line),
//! and the unit reads it with `EnvironmentFile=`: systemd reads it as root before starting the
//! service, so the service gets the values as environment variables while the unit file,
//! `systemctl show` and every process's argv hold only names.
//!
//! [`Secrets`] never prints its values (`Debug` shows names only).

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Config;
use crate::layout::Layout;
use crate::remote::script::Script;
use crate::ui::Ui;
use crate::{Error, Result};

/// The directory of the per-unit secret files on a host (root-only, 0700).
pub const HOST_DIR: &str = "/etc/cargo-ship";

/// `/etc/cargo-ship/<unit>.env`.
pub fn host_path(config: &Config) -> String {
    format!("{HOST_DIR}/{}.env", config.systemd.unit)
}

/// Script lines (after `$SUDO` is set and `units.prev` exists) that write the unit's secret
/// file when its content changed: root-only, atomically (a temp file in the same directory,
/// then `mv`), the replaced one kept as `<file>.prev` for a revert (see [`restore`]). The
/// content is a value of the script (redacted in every rendering shown to people), and the
/// script travels on ssh's standard input: no command line on the host ever holds it. With no
/// secrets configured, a file left by an earlier deploy is removed the same way.
pub fn install(s: &mut Script, config: &Config, secrets: &Secrets) {
    let path = host_path(config);
    let (tmp, prev) = (format!("{path}.tmp"), format!("{path}.prev"));
    let mark = format!(
        "{}/secrets.changed",
        Layout::new(&config.deploy_to).units_prev()
    );
    if secrets.is_empty() {
        s.line(
            "if $SUDO test -f {}; then $SUDO mv -f -- {} {}; : > {}; echo secrets_changed=1; fi",
            &[&path, &path, &prev, &mark],
        );
        return;
    }
    let text = secrets.env_file_text();
    s.redact(&text);
    s.line("$SUDO mkdir -p -m 700 -- {}", &[HOST_DIR]);
    s.line("_sec={}", &[&text]);
    s.line(
        "if ! printf '%s' \"$_sec\" | $SUDO cmp -s - {} 2>/dev/null; then",
        &[&path],
    );
    s.line(
        "  if $SUDO test -f {}; then $SUDO cp -p -- {} {}; else $SUDO rm -f -- {}; fi; : > {}",
        &[&path, &path, &prev, &prev, &mark],
    );
    s.line(
        "  printf '%s' \"$_sec\" | (umask 077; $SUDO tee {} >/dev/null)",
        &[&tmp],
    );
    s.line(
        "  $SUDO chmod 600 -- {}; $SUDO mv -f -- {} {}; echo secrets_changed=1",
        &[&tmp, &tmp, &path],
    );
    s.lines("fi; _sec=");
}

/// Script lines that put back the secret file a switch replaced (part of undoing a switch:
/// the previous release gets the values it ran with). Needs `$SUDO`.
pub fn restore(s: &mut Script, config: &Config) {
    let path = host_path(config);
    let prev = format!("{path}.prev");
    let mark = format!(
        "{}/secrets.changed",
        Layout::new(&config.deploy_to).units_prev()
    );
    s.line("if [ -f {} ]; then", &[&mark]);
    s.line(
        "  if $SUDO test -f {}; then $SUDO mv -f -- {} {}; else $SUDO rm -f -- {}; fi",
        &[&prev, &prev, &path, &path],
    );
    s.lines("fi");
}

/// Script lines that drop the kept copy once a switch is confirmed (before `units.prev` goes).
/// Needs `$SUDO`.
pub fn forget_previous(s: &mut Script, config: &Config) {
    let mark = format!(
        "{}/secrets.changed",
        Layout::new(&config.deploy_to).units_prev()
    );
    s.line(
        "if [ -f {} ]; then $SUDO rm -f -- {}; fi",
        &[&mark, &format!("{}.prev", host_path(config))],
    );
}

/// Resolved secret values, by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Secrets from name/value pairs (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Secrets {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// True when the config names no secrets.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).collect()
    }

    /// The file the host's `EnvironmentFile=` reads: `NAME="value"` lines, with `\`, `"` and
    /// `$` escaped and line breaks kept inside the quotes, so systemd gives the service each
    /// value exactly.
    pub fn env_file_text(&self) -> String {
        let mut out =
            String::from("# Written by cargo-ship from the deploying machine; do not edit.\n");
        for (k, v) in &self.values {
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '$' => out.push_str("\\$"),
                    '`' => out.push_str("\\`"),
                    // Inside double quotes systemd keeps a line break as it is (issue #16:
                    // `\n` reached the service as a backslash and an `n`).
                    c => out.push(c),
                }
            }
            out.push_str("\"\n");
        }
        out
    }

    /// Every value, so output paths can refuse to show any of them.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }
}

/// The values of `systemd.secrets` this machine can see (this process's environment, the
/// environment's `secrets_file`), skipping those it cannot: what `cargo ship exec` hides in
/// the output it shows.
pub fn known_values(config: &Config) -> Vec<String> {
    let file = config
        .environment
        .as_ref()
        .and_then(|e| e.secrets_file.as_deref())
        .and_then(|p| read_dotenv(p).ok())
        .unwrap_or_default();
    config
        .systemd
        .secrets
        .iter()
        .filter_map(|n| std::env::var(n).ok().or_else(|| file.get(n).cloned()))
        .filter(|v| !v.is_empty())
        .collect()
}

/// Looks up every name of `systemd.secrets`: this process's environment first, then the
/// environment's `secrets_file`. Refuses (before anything connects) when one has no value,
/// naming it and where it looked; warns when the secrets file is readable by other accounts.
pub fn resolve(config: &Config, ui: &Ui) -> Result<Secrets> {
    let names = &config.systemd.secrets;
    if names.is_empty() {
        return Ok(Secrets::default());
    }
    let file = config
        .environment
        .as_ref()
        .and_then(|e| e.secrets_file.as_deref());
    let from_file = match file {
        Some(path) => {
            warn_if_readable_by_others(path, ui);
            read_dotenv(path)?
        }
        None => BTreeMap::new(),
    };
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for name in names {
        match std::env::var(name).ok().or_else(|| from_file.get(name).cloned()) {
            Some(v) if v.contains('\0') => {
                return Err(Error::usage(
                    format!("the secret `{name}` contains a NUL byte, which no environment variable can hold"),
                    None,
                ))
            }
            // The host's secret file takes tab and newline (the helper refuses the rest).
            Some(v) if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
                return Err(Error::usage(
                    format!("the secret `{name}` contains a control character other than tab and newline (a carriage return?), which cargo-ship does not ship"),
                    Some("remove it from the value (a file edited on Windows ends its lines with CR LF)".into()),
                ))
            }
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        let env = config
            .environment
            .as_ref()
            .map(|e| e.name.as_str())
            .unwrap_or("?");
        let looked = match file {
            Some(p) => format!(
                "in the environment of this process and in {} (the `secrets_file` of environment `{env}`)",
                p.display()
            ),
            None => format!(
                "in the environment of this process (environment `{env}` has no `secrets_file`)"
            ),
        };
        return Err(Error::Usage {
            message: format!(
                "no value for the secret{} {}: looked {looked}; nothing was changed on any host",
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            help: Some(format!(
                "export {}=... before running cargo ship (in CI: from the CI's secret store), or add it to the environment's `secrets_file`",
                missing[0]
            )),
        });
    }
    Ok(Secrets { values })
}

fn warn_if_readable_by_others(path: &Path, ui: &Ui) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            ui.warn(format!(
                "the secrets file {} can be read by other local accounts (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
}

/// Parses a dotenv file: `NAME=value` lines, `export ` allowed, `#` comments and blank lines
/// skipped; a value may be "double-quoted" (with `\n`, `\"`, `\\` escapes) or 'single-quoted'
/// (literal). Errors name the file and line, never the value.
pub fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("read the secrets file", path, e))?;
    parse_dotenv(&text).map_err(|(line, problem)| {
        Error::usage(
            format!("{}:{line}: {problem}", path.display()),
            Some("lines look like NAME=value, NAME=\"value\" or NAME='value'".into()),
        )
    })
}

fn parse_dotenv(text: &str) -> std::result::Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, rest)) = line.split_once('=') else {
            return Err((n, "expected NAME=value, found a line without `=`".into()));
        };
        let name = name.trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err((n, format!("`{name}` is not a variable name")));
        }
        let rest = rest.trim();
        let value = if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some(other) => v.push(other),
                        None => break,
                    },
                    c => v.push(c),
                }
            }
            if !closed {
                return Err((n, format!("the value of `{name}` has no closing \"")));
            }
            v
        } else if let Some(q) = rest.strip_prefix('\'') {
            match q.find('\'') {
                Some(end) => q[..end].to_string(),
                None => return Err((n, format!("the value of `{name}` has no closing '"))),
            }
        } else {
            rest.to_string()
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv() {
        let m = parse_dotenv(
            "# comment\n\nexport A=1\nB = \"two words \\\"q\\\" \\n end\"\nC='lit $X \\n'\nD=plain value\n",
        )
        .unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words \"q\" \n end");
        assert_eq!(m["C"], "lit $X \\n");
        assert_eq!(m["D"], "plain value");
        assert_eq!(parse_dotenv("A\n").unwrap_err().0, 1);
        assert_eq!(
            parse_dotenv("\nX=\"open\n").unwrap_err(),
            (2, "the value of `X` has no closing \"".to_string())
        );
    }

    #[test]
    fn env_file_escapes_and_debug_hides_values() {
        let s = Secrets {
            values: [
                ("A".to_string(), "p$w\"d\\x`y`\nz".to_string()),
                ("B".to_string(), "plain".to_string()),
            ]
            .into(),
        };
        assert_eq!(
            s.env_file_text(),
            "# Written by cargo-ship from the deploying machine; do not edit.\nA=\"p\\$w\\\"d\\\\x\\`y\\`\nz\"\nB=\"plain\"\n"
        );
        let dbg = format!("{s:?}");
        assert!(dbg.contains("\"A\"") && !dbg.contains("plain"), "{dbg}");
    }
}

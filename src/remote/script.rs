//! THE shell builder: the only producer of shell text that runs on a host.
//!
//! A [`Script`] is a list of lines. Each line is a `&'static str` template written in our own
//! source (so programs, operators and control flow are always literals we wrote), and every
//! runtime value (paths, names, config values, user commands) enters only through a `{}`
//! placeholder, replaced by its POSIX-shell-quoted form. `{{` and `}}` stand for literal braces.
//! A whole phase (preflight + lock, stage, switch...) is one script, sent as one `sh -c`
//! argument: one round trip per phase.
//!
//! Expected outcomes a caller must tell apart (lock held, checksum mismatch...) leave the
//! script with the reserved exit codes below, which `remote::session` maps to typed errors;
//! no caller ever matches stderr text.

use crate::{Error, Result};

/// The lock is held by someone else; stdout carries the holder.
pub const EXIT_LOCKED: i32 = 75;
/// The uploaded artifact's sha256 does not match.
pub const EXIT_CHECKSUM: i32 = 76;
/// A before/after-switch hook failed.
pub const EXIT_HOOK: i32 = 77;
/// The unit did not reach `active` with a new process in time.
pub const EXIT_NOT_ACTIVE: i32 = 78;
/// The unit restarted or stopped during the settle period.
pub const EXIT_UNSTABLE: i32 = 79;
/// Nothing to do / no such release (rollback target missing, not locked...).
pub const EXIT_MISSING: i32 = 80;
/// The dead-man's switch put the previous release back before the deploy confirmed (81 is
/// `preflight::EXIT_PREFLIGHT`).
pub const EXIT_REVERTED: i32 = 82;

/// The whole remote command line of every script: a fixed reader, no value in it. The script
/// follows on standard input as `<length>\n<script>`; `read` takes the length line byte by
/// byte and `head -c` exactly the script, so whatever follows (an artifact, see
/// [`Script::framed`]) is left on standard input for the script itself. Nothing a script holds
/// (unit texts, secrets) ever appears in the host's process list.
pub const BOOTSTRAP: &str = "IFS= read -r _n && _s=$(head -c \"$_n\") && eval \"$_s\"";

/// The whole remote command line of a worker shell (issue #18, `remote::worker`): a fixed
/// program, no value in it, that runs every script of a connection one after the other. Its
/// standard input carries first a random token's line, then per script a header line (the
/// payload's length in bytes and the body's), the body, and the payload. A body of length 0
/// means the script's lines up to the token's line, read with `read` (one byte per system
/// call on a pipe, but no process: for small scripts); else the body is exactly that many bytes,
/// the script and the token's line, read with one `head -c` (which reads at most the bytes
/// asked for from a pipe) and checked to end with the token's line. Either way a script cut
/// short never runs. Each script runs in a subshell (nothing it sets or opens leaks into the
/// next) whose standard input is exactly its payload (`head -c`, the rest it leaves unread
/// drained by `cat`) or `/dev/null`; then `\n<token> <status>\n` goes to stdout and to
/// stderr. End of input ends the worker.
pub const WORKER: &str = "IFS= read -r __t || exit 0
while read -r __n __b; do
  if [ \"$__b\" -gt 0 ]; then
    __s=$(head -c \"$__b\")
    __l=${__s%\"
$__t\"}
    [ \"$__l\" != \"$__s\" ] || exit 0
    __s=\"$__l
\"
  else
    __s= __ok=
    while IFS= read -r __l; do
      if [ \"$__l\" = \"$__t\" ]; then __ok=1; break; fi
      __s=\"$__s$__l
\"
    done
    [ -n \"$__ok\" ] || exit 0
  fi
  if [ \"$__n\" -gt 0 ]; then
    head -c \"$__n\" | { ( eval \"$__s\" ); __st=$?; cat > /dev/null; exit \"$__st\"; }
  else
    ( eval \"$__s\" ) < /dev/null
  fi
  __st=$?
  printf '\\n%s %s\\n' \"$__t\" \"$__st\"
  printf '\\n%s %s\\n' \"$__t\" \"$__st\" >&2
done
";

/// A shell script for one phase on one host.
#[derive(Debug, Clone)]
pub struct Script {
    purpose: String,
    /// Each line as its template and the values of its placeholders, filled at render time
    /// (so the redacted rendering can decide per placeholder, see [`Script::redact`]).
    lines: Vec<(&'static str, Vec<String>)>,
    redact: Vec<String>,
    error: Option<String>,
    idempotent: bool,
}

impl Script {
    /// A new script that stops at the first failing command (`set -eu`). `purpose` is what the
    /// script does, in words that fit "failed to {purpose}".
    pub fn new(purpose: impl Into<String>) -> Self {
        Script {
            purpose: purpose.into(),
            lines: vec![("set -eu", Vec::new())],
            redact: Vec::new(),
            error: None,
            idempotent: false,
        }
    }

    /// Appends one line: `template` with each `{}` replaced by the quoted value of the next arg.
    ///
    /// A wrong number of args, or a value that cannot be quoted (a NUL byte), is remembered and
    /// reported by [`Script::render`], so building never panics on user input.
    pub fn line(&mut self, template: &'static str, args: &[&str]) -> &mut Self {
        match fill(template, args, &|_| false) {
            Ok(_) => self
                .lines
                .push((template, args.iter().map(|a| a.to_string()).collect())),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Appends several lines of a template without values (control flow, fixed commands).
    pub fn lines(&mut self, template: &'static str) -> &mut Self {
        self.line(template, &[])
    }

    /// Marks a value as secret: every placeholder filled with exactly this value (before or
    /// after this call) is shown as `'[redacted]'` by [`Script::render_redacted`]. The decision
    /// is made per placeholder where the text is built, never by searching the rendered text,
    /// so a short or unquoted secret cannot garble other values or unmask another secret.
    pub fn redact(&mut self, value: &str) -> &mut Self {
        if !value.is_empty() {
            self.redact.push(value.to_string());
        }
        self
    }

    /// Declares that running the script twice leaves the host as running it once does, so
    /// `remote::session` may reconnect and run it again when the connection drops mid-way.
    pub fn idempotent(&mut self) -> &mut Self {
        self.idempotent = true;
        self
    }

    /// See [`Script::idempotent`].
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Says what the script does, once lines were added that change it.
    pub fn set_purpose(&mut self, purpose: impl Into<String>) -> &mut Self {
        self.purpose = purpose.into();
        self
    }

    /// What the script does ("take the deploy lock on ...").
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The shell text to run.
    pub fn render(&self) -> Result<String> {
        if let Some(e) = &self.error {
            return Err(Error::usage(
                format!("cannot build the script to {}: {e}", self.purpose),
                None,
            ));
        }
        self.fill_all(&|_| false)
    }

    /// What goes to [`BOOTSTRAP`]'s standard input: the length of the script, a newline and
    /// the script (a payload, if any, follows it).
    pub fn framed(&self) -> Result<Vec<u8>> {
        let text = self.render()?;
        let mut out = format!("{}\n", text.len()).into_bytes();
        out.extend_from_slice(text.as_bytes());
        Ok(out)
    }

    /// The shell text for `--dry-run` and logs, with each placeholder whose value was marked
    /// by [`Script::redact`] shown as `'[redacted]'`.
    pub fn render_redacted(&self) -> Result<String> {
        if let Some(e) = &self.error {
            return Err(Error::usage(
                format!("cannot build the script to {}: {e}", self.purpose),
                None,
            ));
        }
        self.fill_all(&|v| self.redact.iter().any(|r| r == v))
    }

    fn fill_all(&self, secret: &dyn Fn(&str) -> bool) -> Result<String> {
        let mut s = String::new();
        for (template, args) in &self.lines {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let line = fill(template, &args, secret).map_err(|e| {
                Error::usage(
                    format!("cannot build the script to {}: {e}", self.purpose),
                    None,
                )
            })?;
            s.push_str(&line);
            s.push('\n');
        }
        Ok(s)
    }
}

/// Quotes one value for POSIX sh. Safe values pass bare; others are single-quoted.
pub fn quote(value: &str) -> std::result::Result<String, String> {
    if value.is_empty() {
        return Ok("''".into());
    }
    shlex::try_quote(value)
        .map(|c| c.into_owned())
        .map_err(|_| {
            format!("the value {value:?} contains a NUL byte, which no shell argument can hold")
        })
}

/// Fills `template`; a value for which `secret` is true is shown as `'[redacted]'`.
fn fill(
    template: &'static str,
    args: &[&str],
    secret: &dyn Fn(&str) -> bool,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16 * args.len());
    let mut it = args.iter();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' if chars.peek() == Some(&'}') => {
                chars.next();
                let v = it
                    .next()
                    .ok_or_else(|| format!("template `{template}` has more `{{}}` than values"))?;
                let q = quote(v)?;
                if secret(v) {
                    out.push_str("'[redacted]'");
                } else {
                    out.push_str(&q);
                }
            }
            c => out.push(c),
        }
    }
    if it.next().is_some() {
        return Err(format!(
            "template `{template}` has fewer `{{}}` than values"
        ));
    }
    Ok(out)
}

/// Parses `key=value` lines printed by a script (the convention every phase script uses to
/// report facts back). Later keys win; lines without `=` are ignored.
pub fn parse_kv(stdout: &str) -> std::collections::BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

/// Every value of a key a script printed several times (`cached=...`, `cleared=...`).
pub fn parse_kv_all(stdout: &str, key: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Runs the rendered script with the local `/bin/sh` (POSIX, dash on Debian as on the hosts)
/// and returns its output: for the tests of the modules that write scripts.
#[cfg(test)]
impl Script {
    pub(crate) fn run_local(&self) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(self.render().expect("the script renders"))
            .output()
            .expect("run /bin/sh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "plain",
        "with space",
        "it's",
        "a\"b",
        "; rm -rf /tmp/x",
        "$(touch /tmp/pwned)",
        "`id`",
        "$HOME",
        "back\\slash",
        "new\nline",
        "*",
        "-n",
        "",
        "tab\there",
        "ümlaut",
    ];

    #[test]
    fn fills_and_quotes() {
        let mut s = Script::new("test");
        s.line("mkdir -p -- {} && echo {{ok}}", &["/opt/my app"]);
        assert_eq!(
            s.render().unwrap(),
            "set -eu\nmkdir -p -- '/opt/my app' && echo {ok}\n"
        );
    }

    #[test]
    fn arity_and_nul_errors_surface_at_render() {
        let mut s = Script::new("count");
        s.line("echo {} {}", &["one"]);
        assert!(s
            .render()
            .unwrap_err()
            .to_string()
            .contains("more `{}` than values"));
        let mut s = Script::new("nul");
        s.line("echo {}", &["a\0b"]);
        assert!(s.render().unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn redacts_secrets() {
        let mut s = Script::new("secret");
        s.line("printf %s {}", &["DATABASE_URL=postgres://u:pw@db"])
            .redact("DATABASE_URL=postgres://u:pw@db");
        let r = s.render_redacted().unwrap();
        assert!(!r.contains("pw@db"), "{r}");
        assert!(r.contains("[redacted]"));
    }

    /// Issue #9: a secret that needs no quoting (`info`) used to be replaced inside the quoted
    /// unit text, which then no longer matched and was shown in clear; a short one (`1`)
    /// garbled every number. Redaction is per placeholder now.
    #[test]
    fn redaction_is_structural() {
        let unit = "[Service]\nEnvironment=\"RUST_LOG=info\"\nEnvironment=\"DATABASE_URL=postgres://u:pw@db/x y\"\n";
        let mut s = Script::new("install");
        s.redact("info").redact("1");
        s.line("unit_text={}", &[unit]).redact(unit);
        s.line("sleep {}; echo {} {}", &["1.0", "1", "info"]);
        s.line("printf '%s\\n' {}", &["release 20250101T000001Z is fine"]);
        assert_eq!(
            s.render_redacted().unwrap(),
            "set -eu\nunit_text='[redacted]'\nsleep 1.0; echo '[redacted]' '[redacted]'\nprintf '%s\\n' 'release 20250101T000001Z is fine'\n"
        );
        // The script that runs is unchanged.
        assert!(s.render().unwrap().contains("pw@db/x y"));
        assert!(s.render().unwrap().contains("echo 1 info\n"));
    }

    /// Every hostile value survives a round trip through the real /bin/sh unchanged, and
    /// nothing in it executes.
    #[test]
    fn hostile_values_round_trip_through_sh() {
        let dir = tempfile::tempdir().unwrap();
        for v in HOSTILE {
            let mut s = Script::new("echo");
            s.line("cd {}", &[dir.path().to_str().unwrap()]);
            s.line("printf '%s' {}", &[v]);
            let out = s.run_local();
            assert!(
                out.status.success(),
                "{v:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8(out.stdout).unwrap(), *v);
        }
        assert!(!std::path::Path::new("/tmp/pwned").exists());
    }

    /// The framed script runs under the real /bin/sh through BOOTSTRAP, and a payload after
    /// it reaches the script's standard input byte for byte.
    #[test]
    fn framed_script_and_payload_through_bootstrap() {
        use std::io::Write;
        let mut s = Script::new("frame");
        s.line("printf '%s|' {}", &["it's $HOME"]);
        s.lines("cat");
        let mut input = s.framed().unwrap();
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        input.extend_from_slice(&payload);
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(BOOTSTRAP)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        let (head, rest) = out.stdout.split_at("it's $HOME|".len());
        assert_eq!(head, b"it's $HOME|");
        assert_eq!(rest, &payload[..]);
    }

    #[test]
    fn kv() {
        let m = parse_kv("a=1\nnoise\nb=x=y\n");
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x=y");
        assert_eq!(parse_kv_all("c=1\nd=2\nc=3\n", "c"), ["1", "3"]);
    }
}

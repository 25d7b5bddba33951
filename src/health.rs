//! Is the new release healthy? Two kinds of evidence, both required when configured:
//!
//! * the HTTP check: `health.http` is probed from this machine through a port forward on the
//!   host's SSH connection (no curl needed on the host) until it answers 2xx, within `timeout`;
//! * the command check: `health.command` runs on the host in the release dir until it exits 0.
//!
//! Proof that the NEW process is the one answering comes from systemd (see `deploy`): the unit's
//! InvocationID changed at the restart and is still the same, and active, after `settle`.

use std::time::{Duration, Instant};

use crate::remote::script::Script;
use crate::remote::session::Connection;
use crate::{Error, Result};

/// `http://host:port/path` split into what the probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host as seen from the server (usually 127.0.0.1).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpTarget {
    /// Parses an `http://` URL (validated by config already).
    pub fn parse(url: &str) -> Option<HttpTarget> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(HttpTarget {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// The outcome of one probe attempt.
#[derive(Debug, Clone)]
pub enum Probe {
    /// A 2xx answer, with the answering process's `Ship-Invocation` header if it sent one.
    Healthy(u16, Option<String>),
    /// A non-2xx answer.
    Status(u16, String),
    /// No answer (connection refused, reset, timeout).
    NoAnswer(String),
}

/// Probes `target` on the host through `conn` until it answers 2xx or `timeout` passes.
/// Returns the last failed probe's description on timeout.
pub async fn wait_http(
    conn: &Connection,
    target: &HttpTarget,
    timeout: Duration,
) -> std::result::Result<u16, String> {
    wait_http_from(conn, target, timeout, None).await
}

/// [`wait_http`], counting only answers of the process started with `invocation`: a service
/// that echoes systemd's `$INVOCATION_ID` in a `Ship-Invocation` header tells which process
/// answered, so under blue-green (two processes on one socket) an answer of the old one is not
/// taken for the new one's. Answers without the header count as the new process's.
pub async fn wait_http_from(
    conn: &Connection,
    target: &HttpTarget,
    timeout: Duration,
    invocation: Option<&str>,
) -> std::result::Result<u16, String> {
    let forward = match conn.forward(&target.host, target.port).await {
        Ok(f) => f,
        Err(e) => return Err(e.to_string()),
    };
    let url = format!("http://{}{}", forward.local, target.path);
    let host_header = format!("{}:{}", target.host, target.port);
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let (u, h) = (url.clone(), host_header.clone());
        let probe = tokio::task::spawn_blocking(move || probe_once(&u, &h))
            .await
            .unwrap_or_else(|e| Probe::NoAnswer(e.to_string()));
        let last = match probe {
            Probe::Healthy(_, Some(from)) if invocation.is_some_and(|i| i != from) => {
                format!(
                    "GET {} was only answered by the old process (Ship-Invocation {from})",
                    target.path
                )
            }
            Probe::Healthy(code, _) => break Ok(code),
            Probe::Status(code, body) => {
                format!("GET {} answered {code}: {}", target.path, body.trim())
            }
            Probe::NoAnswer(e) => format!("GET {} got no answer: {e}", target.path),
        };
        if Instant::now() >= deadline {
            break Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    conn.close_forward(forward).await;
    outcome
}

/// The HTTP check run on the host itself, by bash (`/dev/tcp`, no curl needed), right after
/// the switch's restart: `bash -c PROBE probe <host> <port> <path> <Host header> <timeout s>
/// <invocation>`. GET until a 2xx answer within the timeout (each attempt 3 s at most, 0.25 s
/// apart), counting only answers of the new process when the service names itself in a
/// `Ship-Invocation` header, as [`wait_http_from`] does from the client. Prints the status code
/// and exits 0, or prints why not and exits 1.
const HOST_PROBE: &str = r#"h=$1 p=$2 path=$3 hh=$4 limit=$5 inv=$6 last=
while :; do
  if { exec 3<>"/dev/tcp/$h/$p"; } 2>/dev/null; then
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: cargo-ship health check\r\nConnection: close\r\n\r\n' "$path" "$hh" >&3
    st= code= from= body=
    IFS= read -r -t 3 st <&3 || true
    code=${st#* }; code=${code%% *}
    while IFS= read -r -t 3 l <&3; do
      l=${l%$'\r'}; [ -n "$l" ] || break
      case ${l,,} in ship-invocation:*) from=${l#*:}; from=${from//[[:space:]]/} ;; esac
    done
    IFS= read -r -t 1 -N 200 body <&3 || true
    exec 3<&-
    if [[ $code =~ ^2[0-9][0-9]$ ]]; then
      if [ -n "$inv" ] && [ -n "$from" ] && [ "$from" != "$inv" ]; then
        last="GET $path was only answered by the old process (Ship-Invocation $from)"
      else echo "$code"; exit 0; fi
    elif [ -n "$code" ]; then last="GET $path answered $code: ${body//[$'\r\n']/ }"
    else last="GET $path got no answer: the connection closed without a status line"; fi
  else last="GET $path got no answer: connection refused"; fi
  if [ "$SECONDS" -ge "$limit" ]; then echo "$last"; exit 1; fi
  sleep 0.25
done"#;

/// Appends the HTTP check of `health.http` on the host ([`HOST_PROBE`]) after the switch's
/// restart (`$_inv`: the new process's invocation), when the host has bash: prints
/// `probed=<code>` (and sets `$_probe_ok` to 1) or `probe_failed=<why>`, and the client skips
/// its own probe through the SSH connection (no port forward, no extra round trips). Without
/// bash, prints nothing.
pub fn probe_on_host(s: &mut crate::remote::script::Script, config: &crate::config::Config) {
    let Ok(Some(t)) = http_target(config) else {
        return;
    };
    let host = t.host.trim_start_matches('[').trim_end_matches(']');
    let timeout = config.health.timeout.as_secs_f64().ceil().max(1.0) as u64;
    s.lines("if command -v bash >/dev/null 2>&1; then");
    s.line(
        "  if _pr=$(bash -c {} probe {} {} {} {} {} \"$_inv\" 2>/dev/null); then echo \"probed=$_pr\"; _probe_ok=1; else echo \"probe_failed=$_pr\"; fi",
        &[
            HOST_PROBE,
            host,
            &t.port.to_string(),
            &t.path,
            &format!("{}:{}", t.host, t.port),
            &timeout.to_string(),
        ],
    );
    s.lines("fi");
}

/// One GET with short timeouts.
pub fn probe_once(url: &str, host_header: &str) -> Probe {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .get(url)
        .header("Host", host_header)
        .header("User-Agent", "cargo-ship health check")
        .call()
    {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            if (200..300).contains(&code) {
                let from = resp
                    .headers()
                    .get("ship-invocation")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string());
                Probe::Healthy(code, from)
            } else {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                Probe::Status(code, body.chars().take(200).collect())
            }
        }
        Err(e) => Probe::NoAnswer(e.to_string()),
    }
}

/// Script lines that run `health.command` in the release dir every 500 ms until it exits 0,
/// for up to `timeout`; exit [`crate::remote::script::EXIT_NOT_ACTIVE`] when it never does.
/// Its output goes to a private file made by `mktemp` (0600, a fresh unpredictable name), never
/// to a fixed path in /tmp where another local user could plant a symlink.
pub fn command_check(script: &mut Script, release_dir: &str, command: &str, timeout: Duration) {
    let tries = (timeout.as_millis() / 500).max(1).to_string();
    script.lines("_h=0; _hf=$(mktemp)");
    script.line(
        "until (cd {} && ${{_ship_as:-}} sh -c {} 9>&-) >\"$_hf\" 2>&1; do",
        &[release_dir, command],
    );
    script.line("  _h=$((_h + 1)); if [ \"$_h\" -ge {} ]; then", &[&tries]);
    script.line("    echo 'health command failed:' {} >&2; tail -n 5 -- \"$_hf\" >&2; rm -f -- \"$_hf\"; exit 78", &[command]);
    script.lines("  fi; sleep 0.5");
    script.lines("done; rm -f -- \"$_hf\"");
}

/// Shorthand used by flows: the configured HTTP target, if any.
pub fn http_target(config: &crate::config::Config) -> Result<Option<HttpTarget>> {
    match &config.health.http {
        None => Ok(None),
        Some(url) => HttpTarget::parse(url)
            .map(Some)
            .ok_or_else(|| Error::Config {
                location: config.manifest_path.display().to_string(),
                key: "package.metadata.ship.health.http".into(),
                problem: format!("expected an http:// URL with a host, found `{url}`"),
                help: None,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/healthz")
        );
        let t = HttpTarget::parse("http://localhost").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 80, "/")
        );
        let t = HttpTarget::parse("http://[::1]:9000/x?y=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9000, "/x?y=1")
        );
        assert!(HttpTarget::parse("https://x").is_none());
        assert!(HttpTarget::parse("http://:80/").is_none());
    }

    #[test]
    fn probes_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let status = if i == 0 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
                );
            }
        });
        let url = format!("http://{addr}/healthz");
        assert!(matches!(probe_once(&url, "x"), Probe::Healthy(200, None)));
        assert!(matches!(probe_once(&url, "x"), Probe::Status(503, _)));
    }
}

//! The worker shell (issue #18): one long-lived `sh` on one SSH channel runs every script of a
//! connection, one after the other, so a script costs one round trip instead of a channel open,
//! an exec and a close each.
//!
//! The channel's command line is [`WORKER`], a fixed program with no value in it; everything
//! arrives on its standard input:
//!
//! ```text
//! <token>\n                                  once, when the worker starts
//! <payload length> <body length>\n<script><token>\n<payload>   per script
//! ```
//!
//! The worker reads a small script with the shell's `read` builtin up to the line holding its
//! random token (body length 0), a large one ([`HEAD_MIN`]) with one `head -c` of the body's
//! length, checked to end with the token's line: either way a script cut short by a dropped
//! connection never runs. It runs the script
//! in a subshell (nothing it sets, traps, `cd`s or opens leaks into the next one) whose
//! standard input is exactly its payload and then end of input (or `/dev/null`); whatever the
//! script leaves unread is drained. Then it writes `\n<token> <status>\n` on stdout and on
//! stderr: [`Worker::run`] reads both streams up to that line, strips exactly it, and gives
//! back the rest byte for byte.
//!
//! Transport-agnostic: the streams are any `AsyncWrite`/`AsyncRead` (an SSH channel in
//! `session.rs`, a local `/bin/sh` in the tests).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use super::script::WORKER;

/// Why a worker can no longer be used; its script's outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// Writing the script or its payload failed.
    #[error("sending the script failed: {0}")]
    Write(#[source] std::io::Error),
    /// Reading the script's output failed.
    #[error("reading the script's output failed: {0}")]
    Read(#[source] std::io::Error),
    /// A stream ended before the script's end line (the channel or the shell is gone).
    #[error("the remote shell's {0} ended before the script finished")]
    Ended(&'static str),
}

/// What one script printed, and its exit status, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The script's exit status (128 + N when a signal N ended it).
    pub status: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// A fresh random token for one worker: 128 bits from the system, never a value of any script.
pub fn token() -> String {
    format!("cargo-ship-end-{}", crate::random::hex16())
}

/// Scripts of at least this many bytes are read by the worker with one `head -c` (one process,
/// a few system calls); smaller ones with `read` (no process, one system call per byte). Host
/// CPU per script, measured with dash on a pipe (scripts of `if` lines, 50 in a row): 600 bytes
/// 0.9 ms with `read` against 1.8 ms with `head`, 1.6 KB 1.2 against 2.4, 2.5 KB 1.9 against
/// 1.7, 4 KB 2.7 against 2.0, 13 KB 10.2 against 3.6.
pub const HEAD_MIN: usize = 3 * 1024;

/// The frame of one script: a header line (the payload's length, and the body's or 0), the
/// script (ending in a newline), the token's line. The payload follows it. The body's length
/// counts the script and the token's line, so that `head -c` reads both (see [`WORKER`]); 0
/// tells the worker to read lines up to the token's line instead.
pub fn frame(token: &str, script: &str, payload_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(script.len() + token.len() + 2);
    body.extend_from_slice(script.as_bytes());
    if !script.ends_with('\n') {
        body.push(b'\n');
    }
    body.extend_from_slice(token.as_bytes());
    body.push(b'\n');
    let body_len = if script.len() >= HEAD_MIN {
        body.len()
    } else {
        0
    };
    let mut out = format!("{payload_len} {body_len}\n").into_bytes();
    out.extend_from_slice(&body);
    out
}

/// One stream of a worker: bytes read but not yet given to a script.
#[derive(Default)]
struct Stream {
    buf: Vec<u8>,
}

impl Stream {
    /// Reads `r` up to the end line `\n<token> <status>\n`: returns what came before it and the
    /// status, keeping whatever follows it for the next script.
    async fn until_marker<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        token: &str,
        name: &'static str,
    ) -> Result<(Vec<u8>, i32), Lost> {
        let start = format!("\n{token} ").into_bytes();
        let mut searched = 0;
        loop {
            let mut pending = false;
            while let Some(at) = find(&self.buf[searched..], &start).map(|i| i + searched) {
                let rest = at + start.len();
                let Some(nl) = self.buf[rest..].iter().position(|&b| b == b'\n') else {
                    // The rest of the line is still on its way.
                    searched = at;
                    pending = true;
                    break;
                };
                let status = std::str::from_utf8(&self.buf[rest..rest + nl])
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok());
                let Some(status) = status else {
                    // Not the end line (only output that happens to look like its start).
                    searched = at + 1;
                    continue;
                };
                let after = self.buf.split_off(rest + nl + 1);
                let mut out = std::mem::replace(&mut self.buf, after);
                out.truncate(at);
                return Ok((out, status));
            }
            // The end line may straddle two reads: search again from where it could start.
            if !pending {
                searched = searched.max(self.buf.len().saturating_sub(start.len()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = r.read(&mut chunk).await.map_err(Lost::Read)?;
            if n == 0 {
                return Err(Lost::Ended(name));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One worker's streams: its standard input, output and error.
pub struct Worker<W, O, E> {
    token: String,
    stdin: W,
    stdout: O,
    stderr: E,
    out: Stream,
    err: Stream,
    started: bool,
}

impl<W, O, E> Worker<W, O, E>
where
    W: AsyncWrite + Unpin,
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    /// A worker over the streams of a process running [`WORKER`], with a fresh token (sent
    /// before its first script).
    pub fn new(stdin: W, stdout: O, stderr: E) -> Self {
        Worker {
            token: token(),
            stdin,
            stdout,
            stderr,
            out: Stream::default(),
            err: Stream::default(),
            started: false,
        }
    }

    /// Runs one rendered script with `payload` on its standard input, and returns what it
    /// printed and its status. The input is written while the output is read, so neither
    /// side waits for the other. After an error the worker must be dropped.
    pub async fn run(&mut self, script: &str, payload: &[u8]) -> Result<Ran, Lost> {
        let mut input = Vec::new();
        if !self.started {
            input.extend_from_slice(self.token.as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(&frame(&self.token, script, payload.len()));
        let token = self.token.as_str();
        let stdin = &mut self.stdin;
        let write = async move {
            stdin.write_all(&input).await?;
            if !payload.is_empty() {
                stdin.write_all(payload).await?;
            }
            stdin.flush().await
        };
        let write = async move { write.await.map_err(Lost::Write) };
        let out = self.out.until_marker(&mut self.stdout, token, "output");
        let err = self
            .err
            .until_marker(&mut self.stderr, token, "error output");
        let ((), (stdout, status), (stderr, _)) = tokio::try_join!(write, out, err)?;
        self.started = true;
        Ok(Ran {
            status,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::script::Script;

    type Local = Worker<
        tokio::process::ChildStdin,
        tokio::process::ChildStdout,
        tokio::process::ChildStderr,
    >;

    /// A worker on the local /bin/sh (the hosts' `sh` is POSIX too: dash on Debian).
    fn local() -> (tokio::process::Child, Local) {
        let mut child = spawn_sh();
        let w = Worker::new(
            child.stdin.take().unwrap(),
            child.stdout.take().unwrap(),
            child.stderr.take().unwrap(),
        );
        (child, w)
    }

    /// [`WORKER`] on the local /bin/sh, its three streams piped.
    fn spawn_sh() -> tokio::process::Child {
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(WORKER)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start /bin/sh")
    }

    /// A worker on the local /bin/sh given its token and then `frames` only (the connection
    /// dropped there): what it printed and how it ended.
    async fn cut_short(frames: &[u8]) -> std::process::Output {
        let mut child = spawn_sh();
        let mut stdin = child.stdin.take().unwrap();
        let mut input = b"TOKEN\n".to_vec();
        input.extend_from_slice(frames);
        stdin.write_all(&input).await.unwrap();
        drop(stdin);
        child.wait_with_output().await.unwrap()
    }

    fn script(lines: &[&'static str]) -> String {
        let mut s = Script::new("test");
        for l in lines {
            s.lines(l);
        }
        s.render().unwrap()
    }

    #[test]
    fn frames_and_tokens() {
        let t = token();
        assert!(
            t.starts_with("cargo-ship-end-") && t.len() == 15 + 32,
            "{t}"
        );
        assert_ne!(t, token());
        assert_eq!(frame("T", "echo a\n", 0), b"0 0\necho a\nT\n");
        assert_eq!(frame("T", "echo a", 5), b"5 0\necho a\nT\n");
        // Exactly HEAD_MIN bytes: read with `head`, the body's length counting the token's line.
        let big = format!("{}\n", "#".repeat(HEAD_MIN - 1));
        assert_eq!(
            frame("T", &big, 7),
            format!("7 {}\n{big}T\n", HEAD_MIN + 2).into_bytes()
        );
        // One byte less: read line by line.
        let small = &big[1..];
        assert_eq!(
            frame("T", small, 7),
            format!("7 0\n{small}T\n").into_bytes()
        );
    }

    #[tokio::test]
    async fn marker_parsing_keeps_output_byte_for_byte() {
        // Output without a trailing newline, split across reads, with the marker's text inside.
        let mut s = Stream::default();
        let mut r: &[u8] = b"a\r\nT 0 no\n\x00\xffend\nT 3\nnext";
        let (out, st) = s.until_marker(&mut r, "T", "output").await.unwrap();
        assert_eq!((out.as_slice(), st), (&b"a\r\nT 0 no\n\x00\xffend"[..], 3));
        assert_eq!(s.buf, b"next");
        // Arriving a few bytes at a time, so the end line straddles reads.
        for size in [1, 2, 3, 5] {
            let (mut tx, mut rx) = tokio::io::duplex(size);
            let feed = tokio::spawn(async move {
                tx.write_all(b"one\ntwo\nT-x no\nT-x 12\n").await.unwrap();
                tx
            });
            let mut s = Stream::default();
            let (out, st) = s.until_marker(&mut rx, "T-x", "output").await.unwrap();
            assert_eq!(
                (out.as_slice(), st),
                (&b"one\ntwo\nT-x no"[..], 12),
                "reads of {size}"
            );
            drop(feed.await);
        }
        let mut r: &[u8] = b"\nT 1";
        assert!(matches!(
            s.until_marker(&mut r, "T", "output").await,
            Err(Lost::Ended("output"))
        ));
    }

    #[tokio::test]
    async fn runs_scripts_one_after_another_byte_for_byte() {
        let (_child, mut w) = local();
        // No trailing newline, on both streams.
        let r = w
            .run(&script(&["printf 'no newline'", "printf 'err' >&2"]), &[])
            .await
            .unwrap();
        assert_eq!(
            r,
            Ran {
                status: 0,
                stdout: b"no newline".to_vec(),
                stderr: b"err".to_vec()
            }
        );
        // Binary-ish output (every byte but NUL, which `printf` cannot write from a script line).
        let r = w
            .run(
                &script(&["printf '\\001\\002\\377\\r\\n\\n\\n'", "printf '\\n'"]),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.stdout, b"\x01\x02\xff\r\n\n\n\n");
        // Exit statuses, 127 included (just a status with its stderr).
        for st in [0, 1, 127, 255] {
            let s = format!("set -eu\necho out{st}\nexit {st}\n");
            let r = w.run(&s, &[]).await.unwrap();
            assert_eq!(
                (r.status, r.stdout.as_slice()),
                (st, format!("out{st}\n").as_bytes())
            );
        }
        let r = w
            .run(&script(&["no-such-command-here"]), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 127);
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("no-such-command-here"),
            "{r:?}"
        );
        // `set -e` stops the script, not the worker.
        let r = w
            .run(&script(&["false", "echo not reached"]), &[])
            .await
            .unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (1, &b""[..]));
    }

    #[tokio::test]
    async fn payloads_read_in_part_or_not_at_all_leave_the_next_frame_intact() {
        let (_child, mut w) = local();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // Read whole: byte for byte, then end of input.
        let r = w.run(&script(&["cat"]), &payload).await.unwrap();
        assert_eq!(r.status, 0);
        assert_eq!(r.stdout, payload);
        // Read in part: the rest is drained.
        let r = w
            .run(&script(&["head -c 10 | od -An -tu1"]), &payload)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        );
        // Not read at all, and the script fails.
        let r = w
            .run(&script(&["echo ignored", "exit 3"]), &payload)
            .await
            .unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (3, &b"ignored\n"[..]));
        // The next script finds its own (empty) input, not a leftover.
        let r = w.run(&script(&["wc -c"]), &[]).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "0");
        let r = w.run(&script(&["wc -c"]), b"abc").await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "3");
    }

    #[tokio::test]
    async fn scripts_on_one_worker_share_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_child, mut w) = local();
        let mut s = Script::new("set things");
        s.line("cd {}", &[dir.path().to_str().unwrap()]);
        s.lines("x=set; export Y=exported; f() { echo f; }; trap 'echo trapped' EXIT; exec 7>seven; umask 077");
        let r = w.run(&s.render().unwrap(), &[]).await.unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (0, &b"trapped\n"[..]));
        let r = w
            .run(
                &script(&[
                    "echo \"x=${x:-unset} Y=${Y:-unset} $(command -v f || echo nof) $(umask)\"",
                    "pwd",
                    "echo hi >&7 || echo no fd 7",
                ]),
                &[],
            )
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(out.starts_with("x=unset Y=unset nof 00"), "{out}");
        assert!(!out.contains(dir.path().to_str().unwrap()), "{out}");
        assert!(out.contains("no fd 7"), "{out}");
        assert!(!out.contains("trapped"), "{out}");
    }

    /// A script whose end line never arrives (the connection dropped mid-frame) never runs.
    #[tokio::test]
    async fn a_script_cut_short_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ran");
        let mut s = Script::new("touch");
        s.line("touch {}", &[flag.to_str().unwrap()]);
        let framed = frame("TOKEN", &s.render().unwrap(), 0);
        let out = cut_short(&framed[..framed.len() - 3]).await;
        assert!(out.status.success());
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        assert!(!flag.exists(), "a script without its end line ran");
    }

    /// A script of exactly `size` bytes (padded with a comment line) ending in `lines`.
    fn sized(size: usize, lines: &[&'static str]) -> String {
        let tail = script(lines);
        let s = format!("#{}\n{tail}", "p".repeat(size - tail.len() - 2));
        assert_eq!(s.len(), size);
        s
    }

    /// Large scripts (read with `head -c`) and small ones alternate on one worker, byte for
    /// byte, with and without payloads; the sizes around [`HEAD_MIN`] included.
    #[tokio::test]
    async fn large_scripts_are_read_whole_and_leave_the_payload_to_the_script() {
        let (_child, mut w) = local();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for size in [HEAD_MIN - 1, HEAD_MIN, HEAD_MIN + 1, 40_000] {
            let s = sized(size, &["printf '%s|' big", "cat"]);
            let r = w.run(&s, &payload).await.unwrap();
            assert_eq!(
                r.status,
                0,
                "{size}: {:?}",
                String::from_utf8_lossy(&r.stderr)
            );
            assert_eq!(&r.stdout[..4], b"big|", "{size}");
            assert_eq!(&r.stdout[4..], &payload[..], "{size}");
            // The next frame is intact, small or large, with no payload.
            let r = w.run(&script(&["wc -c"]), &[]).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "0", "{size}");
            let r = w
                .run(&sized(size, &["echo $$ >/dev/null", "exit 4"]), &[])
                .await
                .unwrap();
            assert_eq!((r.status, r.stdout.as_slice()), (4, &b""[..]), "{size}");
        }
    }

    /// A large script whose text does not end in a newline, or ends in several, or ends inside
    /// a here-document with empty lines, runs exactly as written.
    #[tokio::test]
    async fn large_scripts_keep_their_last_bytes() {
        let (_child, mut w) = local();
        let pad = format!("#{}\n", "x".repeat(HEAD_MIN));
        let no_newline = format!("{pad}printf 'a\\n\\n'\nprintf b");
        let r = w.run(&no_newline, &[]).await.unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (0, &b"a\n\nb"[..]));
        let newlines = format!("{pad}printf c\n\n\n\n");
        let r = w.run(&newlines, &[]).await.unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (0, &b"c"[..]));
        let heredoc = format!("{pad}cat <<'E'\n\none\n\n\nE");
        let r = w.run(&heredoc, &[]).await.unwrap();
        assert_eq!((r.status, r.stdout.as_slice()), (0, &b"\none\n\n\n"[..]));
    }

    /// A large script cut short anywhere before its token's line is whole never runs: not
    /// in its body, not in the token, and not when only the header came.
    #[tokio::test]
    async fn a_large_script_cut_short_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ran");
        let mut s = Script::new("touch");
        s.line("touch {}", &[flag.to_str().unwrap()]);
        s.line("# {}", &[&"p".repeat(HEAD_MIN)]);
        let text = s.render().unwrap();
        let framed = frame("TOKEN", &text, 0);
        let header = framed.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_ne!(&framed[..header], b"0 0\n", "read with head");
        for keep in [
            header,
            header + 10,
            framed.len() / 2,
            framed.len() - 7,
            framed.len() - 3,
        ] {
            let out = cut_short(&framed[..keep]).await;
            assert!(out.status.success(), "{keep}");
            assert!(out.stdout.is_empty(), "{keep}: {:?}", out.stdout);
            assert!(!flag.exists(), "a script cut after {keep} bytes ran");
        }
        // Whole, it runs (the test above proves something).
        let (_child, mut w) = local();
        let r = w.run(&text, &[]).await.unwrap();
        assert_eq!(r.status, 0);
        assert!(flag.exists());
    }
}

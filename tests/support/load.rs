//! Constant-rate HTTP load that catches every dropped request, std only.
//!
//! Requests are scheduled at fixed times (open loop: slow answers never delay the next send, so
//! a stall shows as latency instead of as fewer requests), spread round-robin over the targets,
//! each on a NEW TCP connection (`Connection: close`). Every failure is kept with its time and
//! kind: refused, reset, timed out, non-2xx status, or other. Used by the real-host tests
//! (`tests/hosts`) and by `examples/loadgen.rs` (the benchmark's client).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Request i goes to `targets[i % targets.len()]`.
    pub targets: Vec<SocketAddr>,
    /// The request target, e.g. `/version`.
    pub path: String,
    /// Requests per second, over all targets together.
    pub rate_per_sec: u32,
    /// Budget of one request: connect plus the whole response.
    pub timeout: Duration,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// ECONNREFUSED: nothing listened.
    Refused,
    /// ECONNRESET, ECONNABORTED, EPIPE, or the connection ended before a status line.
    Reset,
    /// No connection or no complete response within the timeout.
    Timeout,
    /// A complete response with a status other than 2xx.
    Status(u16),
    /// Anything else (a malformed or truncated response, an unexpected I/O error).
    Other(String),
}

impl FailureKind {
    /// The kind without its detail: `refused`, `reset`, `timeout`, `status 503`, `other`.
    pub fn label(&self) -> String {
        match self {
            FailureKind::Refused => "refused".into(),
            FailureKind::Reset => "reset".into(),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::Status(s) => format!("status {s}"),
            FailureKind::Other(_) => "other".into(),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Other(detail) => write!(f, "other: {detail}"),
            kind => f.write_str(&kind.label()),
        }
    }
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it was scheduled, from the start of the load (`LoadReport::started` + `at` is the
    /// wall-clock time).
    pub at: Duration,
    pub target: SocketAddr,
    pub kind: FailureKind,
}

/// The outcome of a whole run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub path: String,
    pub rate_per_sec: u32,
    /// Wall-clock time of the first scheduled request.
    pub started: SystemTime,
    /// From start to stop (the time requests were being scheduled).
    pub elapsed: Duration,
    /// Requests sent (each one finished: answered, failed or timed out).
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub ok_2xx: u64,
    /// Every failure, in scheduled order.
    pub failures: Vec<Failure>,
    /// Trimmed bodies of 2xx answers (at most 200 characters) and how often each was seen.
    pub bodies: BTreeMap<String, u64>,
    /// Latencies of 2xx answers, from the request's SCHEDULED time to the end of the response.
    pub p50: Duration,
    pub p99: Duration,
    pub max_latency: Duration,
    /// The worst delay between a request's scheduled time and the moment a worker took it: above a
    /// few ms the generator fell behind, and the run measured less than it claims.
    pub max_send_lag: Duration,
    /// Per target: (sent, failed).
    pub per_target: BTreeMap<SocketAddr, (u64, u64)>,
}

/// A running load; [`Load::stop`] ends it and gives the report.
pub struct Load {
    cfg: LoadConfig,
    stop: Arc<AtomicBool>,
    scheduler: JoinHandle<()>,
    shared: Arc<Shared>,
    start: Instant,
    started: SystemTime,
}

/// A request to send: its number, target and scheduled time.
struct Ticket {
    target: SocketAddr,
    due: Instant,
}

struct Outcome {
    at: Duration,
    target: SocketAddr,
    lag: Duration,
    result: Result<(Duration, String), FailureKind>,
}

struct Shared {
    tickets: Mutex<Receiver<Ticket>>,
    /// Workers waiting for a ticket, as the scheduler counts them (it reserves one per ticket).
    idle: AtomicUsize,
    outcomes: Mutex<Vec<Outcome>>,
    path: String,
    timeout: Duration,
    start: Instant,
}

/// A response larger than this is an error (the load is for small health/version answers).
const MAX_RESPONSE: usize = 1 << 20;

impl Load {
    /// Starts sending at once (the first request is due immediately).
    ///
    /// Panics when there is no target or the rate is 0.
    pub fn start(cfg: LoadConfig) -> Load {
        assert!(!cfg.targets.is_empty(), "load: no target");
        assert!(cfg.rate_per_sec > 0, "load: rate must be above 0");
        let (tx, rx) = mpsc::channel::<Ticket>();
        let start = Instant::now();
        let started = SystemTime::now();
        let shared = Arc::new(Shared {
            tickets: Mutex::new(rx),
            idle: AtomicUsize::new(0),
            outcomes: Mutex::new(Vec::new()),
            path: cfg.path.clone(),
            timeout: cfg.timeout,
            start,
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Enough workers for every request of one timeout period to be in flight at once.
        let max_workers = (u64::from(cfg.rate_per_sec) * (cfg.timeout.as_millis() as u64 + 1000)
            / 1000)
            .clamp(16, 4096) as usize;
        let scheduler = {
            let (shared, stop, targets, rate) = (
                shared.clone(),
                stop.clone(),
                cfg.targets.clone(),
                cfg.rate_per_sec,
            );
            thread::Builder::new()
                .name("load-scheduler".into())
                .spawn(move || {
                    let mut workers: Vec<JoinHandle<()>> = Vec::new();
                    for i in 0u64.. {
                        let due = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
                        if !sleep_until(due, &stop) {
                            break;
                        }
                        // Reserve an idle worker, or start one while below the cap (at the cap the
                        // ticket waits, and max_send_lag says so).
                        let reserved = shared
                            .idle
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if !reserved && workers.len() < max_workers {
                            let shared = shared.clone();
                            workers.push(
                                thread::Builder::new()
                                    .name("load-worker".into())
                                    .stack_size(256 * 1024)
                                    .spawn(move || worker(&shared))
                                    .expect("load: cannot start a worker thread"),
                            );
                        }
                        let target = targets[(i % targets.len() as u64) as usize];
                        if tx.send(Ticket { target, due }).is_err() {
                            break;
                        }
                    }
                    drop(tx);
                    for w in workers {
                        let _ = w.join();
                    }
                })
                .expect("load: cannot start the scheduler thread")
        };
        Load {
            cfg,
            stop,
            scheduler,
            shared,
            start,
            started,
        }
    }

    /// Stops scheduling, waits for the requests in flight (at most `timeout`), and reports.
    pub fn stop(self) -> LoadReport {
        let elapsed = self.start.elapsed();
        self.stop.store(true, Ordering::SeqCst);
        self.scheduler.join().expect("load: the scheduler panicked");
        let mut outcomes = std::mem::take(&mut *self.shared.outcomes.lock().unwrap());
        outcomes.sort_by_key(|o| o.at);
        let mut report = LoadReport {
            path: self.cfg.path.clone(),
            rate_per_sec: self.cfg.rate_per_sec,
            started: self.started,
            elapsed,
            sent: 0,
            ok_2xx: 0,
            failures: Vec::new(),
            bodies: BTreeMap::new(),
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max_latency: Duration::ZERO,
            max_send_lag: Duration::ZERO,
            per_target: self.cfg.targets.iter().map(|t| (*t, (0, 0))).collect(),
        };
        let mut latencies = Vec::new();
        for o in outcomes {
            report.sent += 1;
            report.max_send_lag = report.max_send_lag.max(o.lag);
            let counts = report.per_target.entry(o.target).or_default();
            counts.0 += 1;
            match o.result {
                Ok((latency, body)) => {
                    report.ok_2xx += 1;
                    latencies.push(latency);
                    *report.bodies.entry(body).or_default() += 1;
                }
                Err(kind) => {
                    counts.1 += 1;
                    report.failures.push(Failure {
                        at: o.at,
                        target: o.target,
                        kind,
                    });
                }
            }
        }
        latencies.sort();
        report.p50 = percentile(&latencies, 50);
        report.p99 = percentile(&latencies, 99);
        report.max_latency = latencies.last().copied().unwrap_or_default();
        report
    }
}

/// Sleeps until `due`, waking every 50 ms to look at `stop`; false when stopped first.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn worker(shared: &Shared) {
    loop {
        let ticket = match shared.tickets.lock().unwrap().recv() {
            Ok(t) => t,
            Err(_) => return,
        };
        let taken = Instant::now();
        let result = request(shared, ticket.target, ticket.due);
        let outcome = Outcome {
            at: ticket.due - shared.start,
            target: ticket.target,
            lag: taken.saturating_duration_since(ticket.due),
            result: result.map(|body| (ticket.due.elapsed(), body)),
        };
        shared.outcomes.lock().unwrap().push(outcome);
        shared.idle.fetch_add(1, Ordering::SeqCst);
    }
}

/// One request on a new connection; the trimmed body of a 2xx answer.
fn request(shared: &Shared, target: SocketAddr, due: Instant) -> Result<String, FailureKind> {
    // The budget runs from the actual send: a late worker must not turn into a timeout.
    let deadline = Instant::now().max(due) + shared.timeout;
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(FailureKind::Timeout)
        } else {
            Ok(d)
        }
    };
    let mut stream = TcpStream::connect_timeout(&target, left()?).map_err(|e| classify(&e))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: cargo-ship-load\r\nConnection: close\r\n\r\n",
        shared.path
    );
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| classify(&e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| classify(&e))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| classify(&e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > MAX_RESPONSE {
                    return Err(FailureKind::Other(format!(
                        "response over {MAX_RESPONSE} bytes"
                    )));
                }
                if let Some(end) = complete_length(&response) {
                    response.truncate(end);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(&e)),
        }
    }
    parse(&response)
}

fn classify(e: &io::Error) -> FailureKind {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => FailureKind::Refused,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => FailureKind::Reset,
        TimedOut | WouldBlock => FailureKind::Timeout,
        _ => FailureKind::Other(e.to_string()),
    }
}

/// The end of the headers, if they are all there.
fn header_end(response: &[u8]) -> Option<usize> {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn content_length(headers: &str) -> Option<usize> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// With a Content-Length, the length of the complete response once it has arrived.
fn complete_length(response: &[u8]) -> Option<usize> {
    let end = header_end(response)?;
    let len = content_length(&String::from_utf8_lossy(&response[..end]))?;
    (response.len() >= end + len).then_some(end + len)
}

/// A whole response (read to EOF or to its Content-Length) into the trimmed body of a 2xx.
fn parse(response: &[u8]) -> Result<String, FailureKind> {
    if response.is_empty() {
        return Err(FailureKind::Reset);
    }
    let Some(end) = header_end(response) else {
        return Err(FailureKind::Other(format!(
            "response ends inside its headers after {} bytes",
            response.len()
        )));
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    let Some(status) = status else {
        return Err(FailureKind::Other(format!(
            "not an HTTP status line: {status_line:?}"
        )));
    };
    let body = &response[end..];
    if let Some(len) = content_length(&head) {
        if body.len() < len {
            return Err(FailureKind::Other(format!(
                "truncated response: {} of {len} body bytes",
                body.len()
            )));
        }
    }
    if !(200..300).contains(&status) {
        return Err(FailureKind::Status(status));
    }
    let body = String::from_utf8_lossy(body);
    Ok(body.trim().chars().take(200).collect())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl LoadReport {
    /// Requests that failed.
    pub fn failed(&self) -> u64 {
        self.failures.len() as u64
    }

    /// Failures per kind label (`refused`, `reset`, `timeout`, `status 503`, `other`).
    pub fn failures_by_kind(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for f in &self.failures {
            *m.entry(f.kind.label()).or_default() += 1;
        }
        m
    }

    /// One paragraph for people: counts per failure kind, the first failures with their times,
    /// the bodies seen, latencies.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} GET {} over {:.1} s at {}/s to {} target(s): {} answered 2xx, {} failed",
            self.sent,
            self.path,
            self.elapsed.as_secs_f64(),
            self.rate_per_sec,
            self.per_target.len(),
            self.ok_2xx,
            self.failed()
        );
        if self.failed() > 0 {
            let kinds: Vec<String> = self
                .failures_by_kind()
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            s += &format!(" ({})", kinds.join(", "));
            let first: Vec<String> = self
                .failures
                .iter()
                .take(5)
                .map(|f| format!("+{:.3} s {} {}", f.at.as_secs_f64(), f.target, f.kind))
                .collect();
            s += &format!("; first: {}", first.join("; "));
            if self.failures.len() > 5 {
                let last = self.failures.last().unwrap();
                s += &format!(
                    "; last: +{:.3} s {} {}",
                    last.at.as_secs_f64(),
                    last.target,
                    last.kind
                );
            }
        }
        let bodies: Vec<String> = self
            .bodies
            .iter()
            .map(|(b, n)| format!("{b:?} x{n}"))
            .collect();
        s += &format!(
            ". Bodies: {}",
            if bodies.is_empty() {
                "none".into()
            } else {
                bodies.join(", ")
            }
        );
        s += &format!(
            ". Latency of 2xx from the scheduled send: p50 {} ms, p99 {} ms, max {} ms (worst send lag {} ms).",
            ms(self.p50),
            ms(self.p99),
            ms(self.max_latency),
            ms(self.max_send_lag)
        );
        s
    }

    /// The report as one JSON object (durations in ms; every failure listed).
    pub fn to_json(&self) -> String {
        let started_ms = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let kinds: Vec<String> = self
            .failures_by_kind()
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect();
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|f| {
                let detail = match &f.kind {
                    FailureKind::Other(d) => format!(",\"detail\":{}", json_str(d)),
                    FailureKind::Status(code) => format!(",\"status\":{code}"),
                    _ => String::new(),
                };
                format!(
                    "{{\"at_ms\":{},\"unix_ms\":{},\"target\":{},\"kind\":{}{detail}}}",
                    ms(f.at),
                    started_ms + f.at.as_millis(),
                    json_str(&f.target.to_string()),
                    json_str(&f.kind.label())
                )
            })
            .collect();
        let bodies: Vec<String> = self
            .bodies
            .iter()
            .map(|(b, n)| format!("{}:{n}", json_str(b)))
            .collect();
        let per_target: Vec<String> = self
            .per_target
            .iter()
            .map(|(t, (sent, failed))| {
                format!(
                    "{}:{{\"sent\":{sent},\"failed\":{failed}}}",
                    json_str(&t.to_string())
                )
            })
            .collect();
        format!(
            concat!(
                "{{\"path\":{},\"rate_per_sec\":{},\"started_unix_ms\":{},\"elapsed_ms\":{},",
                "\"sent\":{},\"ok_2xx\":{},\"failed\":{},\"failures_by_kind\":{{{}}},\"failures\":[{}],",
                "\"bodies\":{{{}}},\"latency_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}},",
                "\"max_send_lag_ms\":{},\"per_target\":{{{}}}}}"
            ),
            json_str(&self.path),
            self.rate_per_sec,
            started_ms,
            ms(self.elapsed),
            self.sent,
            self.ok_2xx,
            self.failed(),
            kinds.join(","),
            failures.join(","),
            bodies.join(","),
            ms(self.p50),
            ms(self.p99),
            ms(self.max_latency),
            ms(self.max_send_lag),
            per_target.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A local server; `answer` gets each accepted connection after its request was read (or
    /// unread, with `read_request` false). Stops (and closes the port) when dropped.
    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(read_request: bool, answer: fn(TcpStream)) -> Server {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            let addr = l.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = thread::spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            thread::spawn(move || {
                                if read_request {
                                    let mut r = BufReader::new(&s);
                                    let mut line = String::new();
                                    while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n"
                                    {
                                        line.clear();
                                    }
                                }
                                answer(s)
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
            Server {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        /// Closes the listening socket: later connections are refused.
        fn close(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.close();
        }
    }

    fn ok(mut s: TcpStream) {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n0.1.0\n");
    }

    fn run(addrs: &[SocketAddr], rate: u32, timeout: Duration, for_: Duration) -> LoadReport {
        let load = Load::start(LoadConfig {
            targets: addrs.to_vec(),
            path: "/version".into(),
            rate_per_sec: rate,
            timeout,
        });
        thread::sleep(for_);
        load.stop()
    }

    /// `sent` matches the rate over the elapsed time (open loop: no request skipped).
    fn assert_paced(r: &LoadReport) {
        let expected = r.elapsed.as_secs_f64() * f64::from(r.rate_per_sec);
        assert!(
            (r.sent as f64 - expected).abs() <= expected * 0.1 + 2.0,
            "sent {} in {:?} at {}/s",
            r.sent,
            r.elapsed,
            r.rate_per_sec
        );
    }

    #[test]
    fn all_2xx_from_a_server_that_answers() {
        let (a, b) = (Server::start(true, ok), Server::start(true, ok));
        let r = run(
            &[a.addr, b.addr],
            200,
            Duration::from_secs(2),
            Duration::from_millis(600),
        );
        assert_paced(&r);
        assert_eq!((r.ok_2xx, r.failed()), (r.sent, 0), "{}", r.summary());
        assert_eq!(r.bodies, BTreeMap::from([("0.1.0".to_string(), r.sent)]));
        // Round-robin: the two targets got the same count, give or take one.
        let (sa, sb) = (r.per_target[&a.addr].0, r.per_target[&b.addr].0);
        assert!(
            sa.abs_diff(sb) <= 1 && sa + sb == r.sent,
            "{:?}",
            r.per_target
        );
        assert!(
            r.max_latency < Duration::from_millis(500),
            "{}",
            r.summary()
        );
        let json = r.to_json();
        assert!(
            json.contains(&format!(
                "\"sent\":{},\"ok_2xx\":{},\"failed\":0,",
                r.sent, r.sent
            )),
            "{json}"
        );
        assert!(json.contains("\"bodies\":{\"0.1.0\":"), "{json}");
    }

    #[test]
    fn a_closed_port_gives_refused() {
        let mut s = Server::start(true, ok);
        let load = Load::start(LoadConfig {
            targets: vec![s.addr],
            path: "/".into(),
            rate_per_sec: 100,
            timeout: Duration::from_secs(2),
        });
        thread::sleep(Duration::from_millis(300));
        s.close();
        let closed = load.start.elapsed();
        thread::sleep(Duration::from_millis(300));
        let r = load.stop();
        assert_paced(&r);
        assert!(r.ok_2xx >= 20, "{}", r.summary());
        assert!(r.failed() >= 20, "{}", r.summary());
        // Connections still in the accept queue when the port closes are reset; every request
        // scheduled after the close is refused, and none scheduled well before it failed.
        for f in &r.failures {
            assert!(
                f.at + Duration::from_millis(50) >= closed,
                "{}",
                r.summary()
            );
            if f.at > closed {
                assert_eq!(f.kind, FailureKind::Refused, "{}", r.summary());
            } else {
                assert!(
                    matches!(f.kind, FailureKind::Refused | FailureKind::Reset),
                    "{}",
                    r.summary()
                );
            }
        }
        assert_eq!(r.per_target[&s.addr], (r.sent, r.failed()));
        assert!(r.summary().contains("refused"), "{}", r.summary());
        assert!(
            r.to_json().contains("\"failures_by_kind\":{\"refused\":"),
            "{}",
            r.to_json()
        );
    }

    #[test]
    fn accept_then_close_without_answering_gives_reset() {
        let s = Server::start(false, drop);
        let r = run(
            &[s.addr],
            100,
            Duration::from_secs(2),
            Duration::from_millis(300),
        );
        assert!(r.sent >= 20, "{}", r.summary());
        assert_eq!(r.ok_2xx, 0);
        assert!(
            r.failures.iter().all(|f| f.kind == FailureKind::Reset),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn no_answer_within_the_timeout_gives_timeout() {
        let s = Server::start(true, |s| {
            thread::sleep(Duration::from_millis(1500));
            ok(s)
        });
        let r = run(
            &[s.addr],
            50,
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        assert!(r.sent >= 10, "{}", r.summary());
        assert_eq!(r.ok_2xx, 0);
        assert!(
            r.failures.iter().all(|f| f.kind == FailureKind::Timeout),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn non_2xx_is_a_status_failure_and_garbage_is_other() {
        let s = Server::start(true, |mut s| {
            let _ =
                s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n");
        });
        let r = run(
            &[s.addr],
            50,
            Duration::from_secs(2),
            Duration::from_millis(200),
        );
        assert!(
            r.sent >= 5
                && r.failures
                    .iter()
                    .all(|f| f.kind == FailureKind::Status(503)),
            "{}",
            r.summary()
        );
        assert!(
            r.to_json()
                .contains("\"kind\":\"status 503\",\"status\":503"),
            "{}",
            r.to_json()
        );

        let g = Server::start(true, |mut s| {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        });
        let r = run(
            &[g.addr],
            50,
            Duration::from_secs(2),
            Duration::from_millis(200),
        );
        assert!(
            r.sent >= 5
                && r.failures
                    .iter()
                    .all(|f| matches!(f.kind, FailureKind::Other(_))),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_stall_shows_as_latency_without_slowing_the_sends() {
        // Every answer takes 1 s: a closed loop would send a handful; this one keeps the rate.
        let s = Server::start(true, |s| {
            thread::sleep(Duration::from_millis(1000));
            ok(s)
        });
        let r = run(
            &[s.addr],
            200,
            Duration::from_secs(5),
            Duration::from_millis(500),
        );
        assert_paced(&r);
        assert_eq!((r.ok_2xx, r.failed()), (r.sent, 0), "{}", r.summary());
        assert!(r.p50 >= Duration::from_millis(1000), "{}", r.summary());
        assert!(
            r.max_latency < Duration::from_millis(1800),
            "{}",
            r.summary()
        );
        assert!(
            r.max_send_lag < Duration::from_millis(100),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn parse_and_percentiles() {
        assert_eq!(parse(b"HTTP/1.0 204 No Content\r\n\r\n"), Ok(String::new()));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n ok \n"),
            Ok("ok".into())
        );
        assert_eq!(parse(b""), Err(FailureKind::Reset));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok"),
            Err(FailureKind::Other(_))
        ));
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99), Duration::from_millis(1));
        assert_eq!(json_str("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
    }
}

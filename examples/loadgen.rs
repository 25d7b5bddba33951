//! Constant-rate HTTP load for the benchmark: a new TCP connection per request, every failure
//! counted (see `tests/support/load.rs`).
//!
//! ```text
//! cargo run --example loadgen -- --rate 240 --duration 20s --path /version HOST:PORT [HOST:PORT...]
//!     [--timeout 5s] [--until-file F]
//! ```
//!
//! Prints the report as one JSON object on stdout and a summary on stderr. With `--until-file F`
//! it stops as soon as F exists (a bench script starts it, deploys, then touches F), `--duration`
//! being the longest it runs. Exits 0 even when requests failed: the caller judges; 2 on bad
//! arguments.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/load.rs"]
mod load;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use load::{Load, LoadConfig};

const USAGE: &str = "usage: loadgen [--rate N] [--duration 20s] [--path /] [--timeout 5s] \
                     [--until-file F] HOST:PORT [HOST:PORT...]";

struct Args {
    cfg: LoadConfig,
    duration: Duration,
    until_file: Option<PathBuf>,
}

/// `500ms`, `20s`, `2m`, or plain seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("not a duration: {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        cfg: LoadConfig {
            targets: Vec::new(),
            path: "/".into(),
            rate_per_sec: 240,
            timeout: Duration::from_secs(5),
        },
        duration: Duration::from_secs(20),
        until_file: None,
    };
    while let Some(a) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rate" => {
                args.cfg.rate_per_sec = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--rate needs a number above 0")?
            }
            "--duration" => args.duration = duration(&value()?)?,
            "--timeout" => args.cfg.timeout = duration(&value()?)?,
            "--path" => {
                let p = value()?;
                if !p.starts_with('/') {
                    return Err(format!("--path must start with /: {p:?}"));
                }
                args.cfg.path = p;
            }
            "--until-file" => args.until_file = Some(value()?.into()),
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            target => {
                let addr: SocketAddr = target
                    .to_socket_addrs()
                    .map_err(|e| format!("bad target {target:?}: {e}"))?
                    .next()
                    .ok_or(format!("bad target {target:?}: no address"))?;
                args.cfg.targets.push(addr);
            }
        }
    }
    if args.cfg.targets.is_empty() {
        return Err("no target HOST:PORT".into());
    }
    if args.cfg.timeout.is_zero() {
        return Err("--timeout must be above 0".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let targets: Vec<String> = args.cfg.targets.iter().map(|t| t.to_string()).collect();
    eprintln!(
        "loadgen: GET {} at {}/s to {} for up to {:?}{}",
        args.cfg.path,
        args.cfg.rate_per_sec,
        targets.join(" "),
        args.duration,
        match &args.until_file {
            Some(f) => format!(", until {} exists", f.display()),
            None => String::new(),
        }
    );
    let start = Instant::now();
    let load = Load::start(args.cfg);
    while start.elapsed() < args.duration {
        if args.until_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        std::thread::sleep(
            args.duration
                .saturating_sub(start.elapsed())
                .min(Duration::from_millis(50)),
        );
    }
    let report = load.stop();
    eprintln!("loadgen: {}", report.summary());
    println!("{}", report.to_json());
}

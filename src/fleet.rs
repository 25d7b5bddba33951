//! Running work on many hosts: which hosts (`--host` filters), how many at once (`parallel`),
//! switch batches (`batch`), and the per-host rows of the final summary.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use crate::config::{Config, Environment, HostSpec};
use crate::remote::session::Connection;
use crate::ui::{Event, HostRow, Ui};
use crate::{Error, Result};

/// The environment's hosts, narrowed to `filter` (matched against the configured spec or the
/// bare host name) when it is not empty.
pub fn select_hosts(env: &Environment, filter: &[String]) -> Result<Vec<HostSpec>> {
    if filter.is_empty() {
        return Ok(env.hosts.clone());
    }
    let mut picked = Vec::new();
    for f in filter {
        let matches: Vec<&HostSpec> = env
            .hosts
            .iter()
            .filter(|h| h.to_string() == *f || h.host == *f)
            .collect();
        if matches.is_empty() {
            let known: Vec<String> = env.hosts.iter().map(|h| h.to_string()).collect();
            return Err(Error::usage(
                format!("`--host {f}` is not a host of environment `{}`", env.name),
                Some(format!("its hosts are: {}", known.join(", "))),
            ));
        }
        for m in matches {
            if !picked.contains(m) {
                picked.push(m.clone());
            }
        }
    }
    Ok(picked)
}

/// Runs `f` on every item, at most `parallel` at once, and returns the results in item order.
pub async fn bounded<I, T, F, Fut>(items: Vec<I>, parallel: usize, f: F) -> Vec<T>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = T>,
{
    stream::iter(items)
        .map(f)
        .buffered(parallel.max(1))
        .collect()
        .await
}

/// A summary row pre-filled with a connection's host and counters.
pub fn row(conn: &Connection) -> HostRow {
    HostRow {
        host: conn.host().to_string(),
        package: None,
        outcome: String::new(),
        release: None,
        version: None,
        target: None,
        commands: conn.stats().commands(),
        connections: conn
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        bytes_sent: conn.stats().bytes(),
        millis: 0,
        detail: None,
    }
}

/// Connects to each selected host (at most `parallel` at once), runs `f` on the connection,
/// closes it, and returns one row (or error) per host, in configured order.
pub async fn on_each_host<F, Fut>(
    config: &Config,
    filter: &[String],
    ui: &Ui,
    f: F,
) -> Vec<(String, Result<HostRow>)>
where
    F: Fn(Arc<Connection>) -> Fut,
    Fut: Future<Output = Result<HostRow>>,
{
    let env = match config.env() {
        Ok(e) => e,
        Err(e) => return vec![(String::new(), Err(e))],
    };
    let hosts = match select_hosts(env, filter) {
        Ok(h) => h,
        Err(e) => return vec![(String::new(), Err(e))],
    };
    let f = &f;
    bounded(hosts, env.at_once(), |spec| async move {
        let started = Instant::now();
        let name = spec.to_string();
        let conn = match Connection::open(&spec, env, ui).await {
            Ok(c) => Arc::new(c),
            Err(e) => return (name, Err(e)),
        };
        let result = f(conn.clone()).await.map(|mut r| {
            r.commands = conn.stats().commands();
            r.bytes_sent = conn.stats().bytes();
            r.millis = started.elapsed().as_millis() as u64;
            r
        });
        if let Ok(c) = Arc::try_unwrap(conn) {
            c.close().await;
        }
        (name, result)
    })
    .await
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// After an interrupt: connects afresh to each host and runs `script` (a holder-guarded
/// [`crate::steps::abort`]), so hosts are put back whatever phase was cut off. Returns how
/// many hosts ran it successfully.
pub async fn put_back(
    config: &Config,
    hosts: &[HostSpec],
    script: &crate::remote::script::Script,
    ui: &Ui,
) -> usize {
    let Ok(env) = config.env() else { return 0 };
    let done = bounded(hosts.to_vec(), env.at_once(), |spec| async move {
        let conn = Connection::open(&spec, env, ui).await.ok()?;
        let ok = matches!(conn.run(script).await, Ok(ref o) if o.status == 0);
        conn.close().await;
        ok.then_some(())
    })
    .await;
    done.into_iter().flatten().count()
}

/// Emits the summary table and turns failed hosts into one [`Error::Fleet`].
pub fn summarize(operation: &str, results: Vec<(String, Result<HostRow>)>, ui: &Ui) -> Result<()> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok(row) => rows.push(row),
            Err(e) if host.is_empty() => return Err(e),
            Err(e) => {
                rows.push(HostRow {
                    host: host.clone(),
                    package: None,
                    outcome: "failed".into(),
                    release: None,
                    version: None,
                    target: None,
                    commands: 0,
                    connections: 0,
                    bytes_sent: 0,
                    millis: 0,
                    detail: Some(first_line(&e.to_string())),
                });
                errors.push(e);
            }
        }
    }
    let total = rows.len();
    ui.emit(Event::Summary {
        operation: operation.into(),
        hosts: rows,
    });
    fail_if_any(operation, total, errors)
}

/// The end of a command run on every host (`exec`, a job's `run`): the summary table, then
/// the hosts that could not run it as one error, else the hosts where it exited non-zero
/// ([`Error::CommandFailed`], each with its exit code).
pub fn command_summary(
    operation: &str,
    results: Vec<(String, Result<(HostRow, i32)>)>,
    ui: &Ui,
) -> Result<()> {
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok((row, code)) => {
                if code != 0 {
                    failed.push((host, code));
                }
                rows.push(row);
            }
            Err(e) if host.is_empty() => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    let total = rows.len() + errors.len();
    ui.emit(Event::Summary {
        operation: operation.into(),
        hosts: rows,
    });
    fail_if_any(operation, total, errors)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::CommandFailed { failed, total })
    }
}

/// `Ok` when `errors` is empty; the single error itself when there is one; else a
/// [`Error::Fleet`] saying how many of `total` hosts failed.
pub fn fail_if_any(operation: &str, total: usize, mut errors: Vec<Error>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => Err(Error::Fleet {
            summary: format!("{operation} failed on {n} of {total} hosts"),
            errors,
        }),
    }
}

/// The first line of a message (for table cells).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Batch, Budget, Unreachable};

    fn env(hosts: &[&str]) -> Environment {
        Environment {
            name: "prod".into(),
            hosts: hosts
                .iter()
                .map(|h| HostSpec {
                    user: None,
                    host: h.to_string(),
                    port: None,
                })
                .collect(),
            ssh_config: None,
            secrets_file: None,
            connect_parallel: 10,
            parallel: Some(2),
            batch: vec![Batch::All],
            pause: std::time::Duration::ZERO,
            max_fail: Budget::Count(0),
            unreachable: Unreachable::Fail,
        }
    }

    #[test]
    fn selects_hosts() {
        let e = env(&["a", "b", "c"]);
        assert_eq!(select_hosts(&e, &[]).unwrap().len(), 3);
        let picked = select_hosts(&e, &["c".into(), "a".into(), "c".into()]).unwrap();
        assert_eq!(
            picked.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(),
            ["c", "a"]
        );
        let err = select_hosts(&e, &["x".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`--host x` is not a host of environment `prod`"
        );
        assert_eq!(err.help().unwrap(), "its hosts are: a, b, c");
    }

    #[tokio::test]
    async fn bounded_keeps_order_and_limit() {
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = bounded((0..8).collect(), 3, |i: u64| {
            let (live, peak) = (live.clone(), peak.clone());
            async move {
                let n = live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10 * (8 - i))).await;
                live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                i
            }
        })
        .await;
        assert_eq!(out, (0..8).collect::<Vec<_>>());
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 3);
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(Batch::All.size(7), 7);
        assert_eq!(Batch::Count(2).size(7), 2);
        assert_eq!(Batch::Percent(25).size(7), 2);
        assert_eq!(Batch::Percent(1).size(7), 1);
    }

    #[test]
    fn issue_19_ramps_and_budgets() {
        let mut e = env(&["a"]);
        assert_eq!(e.batch_sizes(10), [10]);
        e.batch = vec![
            Batch::Count(1),
            Batch::Percent(10),
            Batch::Percent(50),
            Batch::Percent(100),
        ];
        assert_eq!(e.batch_sizes(10), [1, 1, 5, 3]);
        assert_eq!(e.batch_sizes(100), [1, 10, 50, 39]);
        assert_eq!(e.batch_sizes(1), [1]);
        e.batch = vec![Batch::Count(1), Batch::Percent(30), Batch::Percent(100)];
        assert_eq!(e.batch_sizes(10), [1, 3, 6]);
        // The last entry repeats.
        e.batch = vec![Batch::Count(1), Batch::Count(2)];
        assert_eq!(e.batch_sizes(6), [1, 2, 2, 1]);
        e.batch = vec![Batch::Count(3)];
        assert_eq!(e.batch_sizes(7), [3, 3, 1]);
        assert_eq!(Budget::Count(2).allowed(10), 2);
        assert_eq!(Budget::Percent(5).allowed(10), 0);
        assert_eq!(Budget::Percent(5).allowed(100), 5);
        assert_eq!(Budget::Percent(25).allowed(10), 2);
        e.parallel = None;
        assert_eq!(e.at_once(), usize::MAX);
    }
}

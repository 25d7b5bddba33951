//! cargo-ship: ship a Rust service from a cargo workspace to Linux servers running systemd.
//!
//! The binary (`src/main.rs`) only parses flags (`cli`), calls one flow of this library and
//! renders the error. Every flow reports through [`ui::Ui`]; the library itself never prints.
//!
//! The pipeline reads from the module names:
//! `config` → `workspace`/`target` → `build` → `package` → `remote` (one session per host) →
//! `lock` + `preflight` → `deploy` (stage, hooks, switch via `systemd`, verify via `health`) →
//! `rollback` / `prune` / `status`, with `fleet` running hosts in parallel and in batches.
//! The operator's commands (`logs`, `exec`, `lock`, `status`) are siblings of those flows;
//! the per-host steps they all share (connect, lock and read the state, the warnings about an
//! interrupted switch) live below them in `host`.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod approval;
pub mod arch;
pub mod build;
pub mod config;
pub mod deploy;
pub mod diagnose;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod fingerprint;
pub mod fleet;
pub mod health;
pub mod hooks;
pub mod host;
pub mod hostfacts;
pub mod init;
pub mod inputs;
pub mod jobs;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod logs;
pub mod metrics;
pub mod package;
pub mod preflight;
pub mod prune;
pub mod random;
pub mod recover;
pub mod remote;
pub mod rollback;
pub mod rollout;
pub mod secrets;
pub mod setup;
pub mod status;
pub mod steps;
pub mod systemd;
pub mod target;
pub mod ui;
pub mod workspace;

pub use error::{Error, Result};

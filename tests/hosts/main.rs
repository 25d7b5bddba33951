//! End-to-end tests against real hosts: Debian bookworm booted with systemd-nspawn (real
//! systemd, real sshd), see `scripts/testhosts` and `tests/support/host.rs`. They need root;
//! without it they print `skipping: <reason>` (and fail under `CI=true`).
//!
//! Deploy tests go in their own modules next to `harness`.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/host.rs"]
mod host;

mod harness;

#[path = "../support/load.rs"]
mod load;

mod glibc;

mod action;
mod app;
mod arm64;
mod bigfleet;
mod canary;
mod deadman;
mod delta;
mod deploy;
mod doctor;
mod failures;
mod fleet;
mod hostkey;
mod jobs;
mod ops;
mod privilege;
mod recovery;
mod secrets;
mod security;
mod setup;
mod signals;
mod sshfiles;
mod workspace;
mod zero_downtime;

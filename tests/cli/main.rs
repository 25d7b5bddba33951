//! Fast tests of the `cargo ship` binary and the library: no hosts needed.

#[path = "../support/mod.rs"]
mod support;
mod build;
mod config;
mod init;

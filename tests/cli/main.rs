//! Fast tests of the `cargo ship` binary and the library: no hosts needed.

mod build;
mod completions;
mod config;
mod demo;
mod init;
mod json;
mod package;
mod readme;
mod security;
mod setup;
#[path = "../support/mod.rs"]
mod support;

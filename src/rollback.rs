//! `cargo ship rollback`.
use std::time::Duration;
/// Options of `cargo ship rollback`.
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions { pub to: Option<String>, pub dry_run: bool, pub lock_wait: Option<Duration>, pub hosts: Vec<String> }
/// Rolls back.
pub async fn rollback(_c: &crate::config::Config, _o: &RollbackOptions, _ui: &crate::ui::Ui) -> crate::Result<()> { Err(crate::Error::usage("rollback: in progress", None)) }

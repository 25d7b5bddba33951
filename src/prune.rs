//! `cargo ship prune`.
/// Options of `cargo ship prune`.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions { pub keep: Option<usize>, pub dry_run: bool, pub hosts: Vec<String> }
/// Prunes.
pub async fn prune(_c: &crate::config::Config, _o: &PruneOptions, _ui: &crate::ui::Ui) -> crate::Result<()> { Err(crate::Error::usage("prune: in progress", None)) }

//! `cargo ship status|releases|logs`.
/// Which table to show.
#[derive(Debug, Clone, Copy)]
pub enum View { Status, Releases }
/// Status.
pub async fn status(_c: &crate::config::Config, _h: &[String], _v: View, _ui: &crate::ui::Ui) -> crate::Result<()> { Err(crate::Error::usage("status: in progress", None)) }
/// Logs.
pub async fn logs(_c: &crate::config::Config, _h: &[String], _n: u32, _ui: &crate::ui::Ui) -> crate::Result<()> { Err(crate::Error::usage("logs: in progress", None)) }

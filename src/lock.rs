//! Deploy lock.
/// Unlock.
pub async fn unlock(_c: &crate::config::Config, _h: &[String], _ui: &crate::ui::Ui) -> crate::Result<()> { Err(crate::Error::usage("unlock: in progress", None)) }

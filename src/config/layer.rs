//! One serde struct of `Option`s per table, and the merge.

/// A layer of configuration (workspace, package, environment or command line).
#[derive(Debug, Clone, Default)]
pub struct Layer {}

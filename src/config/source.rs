//! Cargo.toml text with spans, so errors point at file:line:column.

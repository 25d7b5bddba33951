//! Cargo.toml text with spans, so errors point at file:line:column.
//!
//! `cargo metadata` gives the `metadata` tables as JSON without positions, so the workspace's
//! and the package's Cargo.toml are parsed again here with `toml_edit`, which keeps the byte
//! span of every key and value. [`Node`] is a read-only view over those items, and [`Origin`]
//! remembers where a value came from (rendered `path:line:column` plus the full key path) so that
//! validation, which runs after the layers are merged, can still point at the right line.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, Document, Item, Key, Table, Value};

use crate::{Error, Result};

/// One parsed Cargo.toml.
pub(crate) struct Source {
    /// The file, as cargo reported it.
    pub path: PathBuf,
    /// The path shown in messages: relative to the current directory when below it.
    display: String,
    doc: Document<String>,
}

impl Source {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Source> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Source::parse(path, text)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: &Path, text: String) -> Result<Source> {
        let display = display_path(path);
        let doc = Document::parse(text.clone()).map_err(|e| {
            let location = match e.span() {
                Some(span) => format!("{display}:{}", line_col(&text, span.start)),
                None => display.clone(),
            };
            Error::Config {
                location,
                key: "(syntax)".into(),
                problem: e.message().trim().to_string(),
                help: Some("fix the TOML syntax; `cargo metadata` shows the same error".into()),
            }
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            display,
            doc,
        })
    }

    /// The directory holding this Cargo.toml (relative paths in it resolve against this).
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The item at a dotted path of plain keys, e.g. `["package", "metadata", "ship"]`, with
    /// the span of its last key (for "expected a table" errors).
    pub fn get(&self, path: &[&str]) -> Option<(Node<'_>, Option<Range<usize>>)> {
        let mut node = Node::Table(self.doc.as_table());
        let mut key_span = None;
        for k in path {
            let (key, child) = node.entry(k)?;
            key_span = key.span();
            node = child;
        }
        Some((node, key_span))
    }

    /// Where a span is: `path:line:column`, or just the path without a span.
    pub fn location(&self, span: Option<Range<usize>>) -> String {
        match span {
            Some(span) => format!("{}:{}", self.display, line_col(self.doc.raw(), span.start)),
            None => self.display.clone(),
        }
    }

    /// The origin of a key or value at `span`, named by its full key path.
    pub fn origin(&self, key: impl Into<String>, span: Option<Range<usize>>) -> Origin {
        Origin {
            location: self.location(span),
            key: key.into(),
        }
    }
}

/// `line:column`, both 1-based, the column counted in characters.
fn line_col(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{line}:{col}")
}

fn display_path(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match rel {
        Some(r) if !r.as_os_str().is_empty() => r.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// Where a configuration value was written: a file position (or `command line`) and its full
/// key path (`package.metadata.ship.health.timeout`, or `--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// `path:line:column`, a path, or `command line`.
    pub location: String,
    /// The full key path.
    pub key: String,
}

impl Origin {
    /// A value given on the command line by `flag`.
    pub fn flag(flag: &str) -> Origin {
        Origin {
            location: "command line".into(),
            key: flag.into(),
        }
    }

    /// The configuration error for this value.
    pub fn error(&self, problem: impl Into<String>, help: Option<String>) -> Error {
        Error::Config {
            location: self.location.clone(),
            key: self.key.clone(),
            problem: problem.into(),
            help,
        }
    }
}

/// A value together with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Val<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: Origin,
}

impl<T> Val<T> {
    /// Wraps a value.
    pub fn new(value: T, at: Origin) -> Self {
        Val { value, at }
    }
}

/// A read-only view of a TOML item: a table (standard or inline), an array of tables, or any
/// other value.
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    /// `[table]` or a dotted-key table.
    Table(&'a Table),
    /// `[[array]]`.
    Tables(&'a ArrayOfTables),
    /// Any value, inline tables included.
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::None => None,
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            Item::Value(v) => Some(Node::Value(v)),
        }
    }

    /// The span of the value (for a standard table, its header when it has one).
    pub fn span(&self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
            Node::Value(v) => v.span(),
        }
    }

    /// "a string", "an integer"... for "found ..." messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Table(_) | Node::Value(Value::InlineTable(_)) => "a table",
            Node::Tables(_) => "an array of tables",
            Node::Value(Value::String(_)) => "a string",
            Node::Value(Value::Integer(_)) => "an integer",
            Node::Value(Value::Float(_)) => "a float",
            Node::Value(Value::Boolean(_)) => "a boolean",
            Node::Value(Value::Datetime(_)) => "a datetime",
            Node::Value(Value::Array(_)) => "an array",
        }
    }

    /// The value as written in the file (trimmed), for "found ..." messages.
    pub fn shown(&self) -> String {
        match self {
            Node::Value(v) => {
                let s = v.to_string();
                let s = s.trim();
                if s.chars().count() > 60 {
                    format!("{}...", s.chars().take(57).collect::<String>())
                } else {
                    s.to_string()
                }
            }
            Node::Table(_) | Node::Tables(_) => String::new(),
        }
    }

    /// `a string ("five")`, `an integer (0)`, `a table`.
    pub fn found(&self) -> String {
        let shown = self.shown();
        if shown.is_empty() {
            self.kind().to_string()
        } else {
            format!("{} ({shown})", self.kind())
        }
    }

    /// The entries of a table (standard or inline), in file order.
    pub fn entries(&self) -> Option<Vec<(&'a str, &'a Key, Node<'a>)>> {
        match self {
            Node::Table(t) => Some(
                t.iter()
                    .filter_map(|(k, _)| {
                        let (key, item) = t.get_key_value(k)?;
                        Some((key.get(), key, Node::from_item(item)?))
                    })
                    .collect(),
            ),
            Node::Value(Value::InlineTable(t)) => Some(
                t.iter()
                    .filter_map(|(k, _)| {
                        let (key, item) = t.get_key_value(k)?;
                        Some((key.get(), key, Node::from_item(item)?))
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    fn entry(&self, name: &str) -> Option<(&'a Key, Node<'a>)> {
        let (key, item) = match self {
            Node::Table(t) => t.get_key_value(name)?,
            Node::Value(Value::InlineTable(t)) => t.get_key_value(name)?,
            _ => return None,
        };
        Some((key, Node::from_item(item)?))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Node::Value(Value::String(s)) => Some(s.value()),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Node::Value(Value::Integer(i)) => Some(*i.value()),
            _ => None,
        }
    }

    /// The number, if this is a float or an integer.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Node::Value(Value::Float(f)) => Some(*f.value()),
            Node::Value(Value::Integer(i)) => Some(*i.value() as f64),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Value(Value::Boolean(b)) => Some(*b.value()),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Value(Value::Array(a)) => Some(a.iter().map(Node::Value).collect()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[package]\nname = \"x\"\n\n[package.metadata.ship]\nkeep_releases = \"five\"\nsystemd = { unit = \"é\", user = 1 }\n";

    #[test]
    fn positions_are_line_and_column() {
        let src = Source::parse(Path::new("/nowhere/Cargo.toml"), TEXT.into()).unwrap();
        let (ship, key_span) = src.get(&["package", "metadata", "ship"]).unwrap();
        assert!(key_span.is_some());
        let entries = ship.entries().unwrap();
        assert_eq!(
            entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            ["keep_releases", "systemd"]
        );
        let (_, key, value) = &entries[0];
        assert_eq!(src.location(key.span()), "/nowhere/Cargo.toml:5:1");
        assert_eq!(src.location(value.span()), "/nowhere/Cargo.toml:5:17");
        assert_eq!(value.found(), "a string (\"five\")");
        let inner = entries[1].2.entries().unwrap();
        assert_eq!(src.location(inner[1].1.span()), "/nowhere/Cargo.toml:6:25");
        assert_eq!(inner[1].2.kind(), "an integer");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = Source::parse(
            Path::new("/nowhere/Cargo.toml"),
            "[package]\nname = \n".into(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("/nowhere/Cargo.toml:2:"),
            "{err}"
        );
    }
}

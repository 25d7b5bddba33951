//! `cargo ship init`: adds a commented `[package.metadata.ship]` section to the package's
//! Cargo.toml.
//!
//! The existing text is kept byte for byte: the section is appended as text, after `toml_edit`
//! has checked that there is no ship section yet (or, with `--force`, removed the old one, which
//! re-renders only what it touched). The result is parsed and loaded with
//! [`crate::config::load`]'s rules before it is written, so `init` never leaves a Cargo.toml that
//! cargo-ship itself would reject.

use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::config::{self, LoadOptions};
use crate::ui::Ui;
use crate::workspace::{self, Package};
use crate::{Error, Result};

/// `cargo ship init` options.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// `--manifest-path`.
    pub manifest_path: Option<PathBuf>,
    /// `-p/--package`.
    pub package: Option<String>,
    /// Replace an existing `[package.metadata.ship]` section.
    pub force: bool,
}

/// Adds the ship section to the package's Cargo.toml and returns that file's path.
pub fn init(opts: &InitOptions, ui: &Ui) -> Result<PathBuf> {
    let package = workspace::find(opts.manifest_path.as_deref(), opts.package.as_deref())?;
    let path = package.manifest_path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let updated = add_section(&text, &package, opts.force, &path)?;

    std::fs::write(&path, &updated).map_err(|e| Error::io("write", &path, e))?;
    // Check the result with the loader's own rules; put the file back if it does not load.
    let check = LoadOptions {
        manifest_path: Some(path.clone()),
        package: Some(package.name.clone()),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    };
    if let Err(e) = config::load(&check) {
        std::fs::write(&path, &text).map_err(|e| Error::io("restore", &path, e))?;
        return Err(Error::usage(
            format!("the section `cargo ship init` would add does not load, so {} was left as it was: {e}", path.display()),
            e.help(),
        ));
    }
    ui.status(
        "Added",
        format!("[package.metadata.ship] to {}", path.display()),
    );
    ui.status(
        "Next",
        "replace the placeholder host in [package.metadata.ship.environments.prod], then `cargo ship deploy prod`",
    );
    Ok(path)
}

/// The manifest text with the ship section added (or replaced, with `force`).
fn add_section(text: &str, package: &Package, force: bool, path: &Path) -> Result<String> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        Error::usage(
            format!("cannot parse {}: {}", path.display(), e.message().trim()),
            None,
        )
    })?;
    let has_section = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("ship"))
        .is_some();
    let base = if !has_section {
        text.to_string()
    } else if !force {
        return Err(Error::usage(
            format!("{} already has a [package.metadata.ship] section", path.display()),
            Some("edit it, see it resolved with `cargo ship config show`, or pass `--force` to replace it".into()),
        ));
    } else {
        let metadata = doc
            .get_mut("package")
            .and_then(|p| p.get_mut("metadata"))
            .and_then(|m| m.as_table_like_mut());
        if let Some(m) = metadata {
            m.remove("ship");
            // Leave no empty `[package.metadata]` behind when ship was all it had.
            let empty = m.is_empty();
            if empty {
                if let Some(p) = doc.get_mut("package").and_then(|p| p.as_table_like_mut()) {
                    p.remove("metadata");
                }
            }
        }
        doc.to_string()
    };
    let section = section(package);
    let mut out = base.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(&section);
    // The appended tables must extend the document, e.g. not an inline `metadata = { .. }`.
    if let Err(e) = out.parse::<DocumentMut>() {
        return Err(Error::usage(
            format!("cannot add [package.metadata.ship] to {}: {}", path.display(), e.message().trim()),
            Some("`package.metadata` is probably an inline table; turn it into a `[package.metadata]` section".into()),
        ));
    }
    Ok(out)
}

/// The section `init` writes, for `package`.
fn section(package: &Package) -> String {
    let bin = package
        .bins
        .iter()
        .find(|b| **b == package.name)
        .or(package.bins.first())
        .cloned()
        .unwrap_or_else(|| package.name.clone());
    let q = |s: &str| toml_edit::Value::from(s).to_string();
    let deploy_to = format!("/opt/{bin}");
    format!(
        r#"# cargo-ship: `cargo ship deploy prod` builds `{bin}`, packs it with the assets below and
# installs it as a systemd service on every host of the environment. Commented lines show
# defaults or examples; `cargo ship config show prod` prints the resolved configuration.
[package.metadata.ship]
bin = {bin_q}
# target = "x86_64-unknown-linux-gnu"   # default: this machine's; "...-gnu.2.17" pins glibc, "...-musl" is static
# builder = "auto"                      # auto | cargo | zigbuild | cross
# profile = "release"
# strip = true
# assets = ["config", "static"]         # packed into the release root, relative to this file
deploy_to = {deploy_to_q}
keep_releases = 5
# shared_dirs = ["data", "log"]         # kept across releases in <deploy_to>/shared
# shared_files = []
# sudo = false                          # run systemctl through `sudo -n` as a non-root ssh user

[package.metadata.ship.systemd]
unit = {bin_q}
# args = ["--port", "8080"]
# environment = {{ RUST_LOG = "info" }}
# user = {bin_q}
# group = {bin_q}
restart_sec = "1s"
hardening = true

[package.metadata.ship.health]
# http = "http://127.0.0.1:8080/healthz"   # probed on each host through the ssh connection
# command = "./{bin} --check"              # run in the release directory; exit 0 means healthy
timeout = "30s"
settle = "3s"

# [package.metadata.ship.hooks]
# before_switch = ["./{bin} migrate"]      # in the new release directory, before the switch
# after_switch = []

[package.metadata.ship.environments.prod]
hosts = ["deploy@prod1.example.com"]       # placeholder: your servers, as [user@]host[:port]
# ssh_config = "deploy/ssh_config"         # passed to ssh as -F, relative to this file
# parallel = 10
# batch = "25%"                            # hosts switched at a time; default all
"#,
        bin_q = q(&bin),
        deploy_to_q = q(&deploy_to),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> Package {
        Package {
            name: "hello".into(),
            version: "0.1.0".into(),
            manifest_path: "/p/Cargo.toml".into(),
            root: "/p".into(),
            bins: vec!["hello".into()],
            workspace_root: "/p".into(),
            workspace_manifest: "/p/Cargo.toml".into(),
            target_dir: "/p/target".into(),
        }
    }

    const MANIFEST: &str = "[package]\nname = \"hello\" # the name\nversion = \"0.1.0\"\n\n[package.metadata.docs]\nx = 1\n";

    #[test]
    fn appends_and_keeps_the_text() {
        let out = add_section(MANIFEST, &package(), false, Path::new("Cargo.toml")).unwrap();
        assert!(out.starts_with(MANIFEST.trim_end()));
        assert!(out.contains("[package.metadata.ship]\nbin = \"hello\"\n"));
        assert!(out.contains("deploy_to = \"/opt/hello\""));
    }

    #[test]
    fn refuses_an_existing_section_unless_forced() {
        let once = add_section(MANIFEST, &package(), false, Path::new("Cargo.toml")).unwrap();
        let err = add_section(&once, &package(), false, Path::new("Cargo.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cargo.toml already has a [package.metadata.ship] section"
        );
        let twice = add_section(&once, &package(), true, Path::new("Cargo.toml")).unwrap();
        assert_eq!(twice.matches("[package.metadata.ship]").count(), 1);
        assert!(twice.contains("name = \"hello\" # the name"));
        assert!(twice.contains("[package.metadata.docs]\nx = 1"));
    }

    #[test]
    fn inline_metadata_is_reported() {
        let text = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nmetadata = { docs = 1 }\n";
        let err = add_section(text, &package(), false, Path::new("Cargo.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot add [package.metadata.ship] to Cargo.toml"),
            "{err}"
        );
    }
}

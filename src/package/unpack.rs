//! What an artifact may hold, checked twice: on this machine when an artifact is opened
//! (`deploy --artifact`), before any host is touched, and on the host while it is unpacked, so
//! a crafted archive that reaches a host anyway is refused there too.
//!
//! An artifact holds `SHIP_MANIFEST.json` (first, once), directories, and exactly the regular
//! files its manifest lists; nothing else (no symlinks, hard links, devices, FIFOs, setuid
//! bits, `..` or absolute paths). Hosts unpack it without the archive's owners and modes.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Component, Path};

use crate::config::Config;
use crate::remote::script::{Script, EXIT_CHECKSUM};
use crate::remote::transfer::Encoding;
use crate::{Error, Result};

use super::{Artifact, Manifest, MANIFEST_FILE};

/// Reads every entry of the artifact at `path` and refuses it unless it holds exactly what
/// `manifest` (its own, already read) lists.
pub fn check_entries(path: &Path, manifest: &Manifest) -> Result<()> {
    let refuse = |detail: String| Error::Build {
        purpose: format!("check the artifact {}", path.display()),
        detail,
        help: Some(
            "deploy only artifacts made by `cargo ship build`; this one was altered or crafted"
                .into(),
        ),
    };
    let damaged =
        |e: std::io::Error| refuse(format!("it cannot be read as a tar.zst archive: {e}"));
    let file = File::open(path).map_err(|e| Error::io("open the artifact", path, e))?;
    let decoder = zstd::stream::Decoder::new(file).map_err(damaged)?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen = BTreeSet::new();
    for (i, entry) in archive.entries().map_err(damaged)?.enumerate() {
        let entry = entry.map_err(damaged)?;
        let raw = entry.path().map_err(damaged)?.into_owned();
        let shown = raw.display().to_string();
        let name = normal_path(&raw).ok_or_else(|| {
            refuse(format!(
                "entry {shown:?} is not a plain relative path (absolute, `..` or empty)"
            ))
        })?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(damaged)?;
        if mode & 0o7000 != 0 {
            return Err(refuse(format!(
                "entry {shown:?} has mode {mode:o} (setuid, setgid or sticky bits)"
            )));
        }
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            let what = match kind {
                tar::EntryType::Symlink => format!(
                    "a symlink to {:?}",
                    entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.display().to_string())
                        .unwrap_or_default()
                ),
                tar::EntryType::Link => "a hard link".into(),
                tar::EntryType::Char | tar::EntryType::Block => "a device node".into(),
                tar::EntryType::Fifo => "a FIFO".into(),
                other => format!("of tar type {:?}", other.as_byte() as char),
            };
            return Err(refuse(format!(
                "entry {shown:?} is {what}; an artifact holds only regular files and directories"
            )));
        }
        if name == MANIFEST_FILE {
            if i != 0 {
                return Err(refuse(format!(
                    "it holds a second {MANIFEST_FILE} (entry {}); the manifest comes first, once",
                    i + 1
                )));
            }
            seen.insert(name);
            continue;
        }
        let Some(listed) = manifest.files.get(&name) else {
            return Err(refuse(format!(
                "entry {shown:?} is not listed in its {MANIFEST_FILE}"
            )));
        };
        if !seen.insert(name.clone()) {
            return Err(refuse(format!("entry {shown:?} appears twice")));
        }
        if entry.size() != listed.size {
            return Err(refuse(format!(
                "entry {shown:?} is {} bytes, its {MANIFEST_FILE} says {}",
                entry.size(),
                listed.size
            )));
        }
    }
    if let Some(missing) = manifest.files.keys().find(|f| !seen.contains(*f)) {
        return Err(refuse(format!(
            "{missing:?}, listed in its {MANIFEST_FILE}, is not in it"
        )));
    }
    Ok(())
}

/// `a/b` for a path of normal components only.
fn normal_path(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Refuses an artifact built from another package or for another binary than the one this
/// deploy is configured for: the unit would run a file the release does not have, or the
/// wrong service.
pub fn check_is_this_package(config: &Config, artifact: &Artifact) -> Result<()> {
    let m = &artifact.manifest;
    let problem = if m.package != config.package || m.bin != config.bin {
        Some(format!(
            "it holds binary `{}` of package `{}`, but this deploy ships binary `{}` of package `{}`",
            m.bin, m.package, config.bin, config.package
        ))
    } else if !m.files.contains_key(&m.bin) {
        Some(format!(
            "its {MANIFEST_FILE} does not list the binary `{}` at the release root",
            m.bin
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::usage(
            format!("cannot deploy the artifact {}: {p}", artifact.path.display()),
            Some(format!(
                "pass an artifact built by `cargo ship build` for package `{}` (or choose the package with `-p`)",
                config.package
            )),
        )),
    }
}

/// Script lines that unpack the artifact file `art` into the new release dir `rel` without
/// the archive's owners and modes, then refuse (removing `rel` and its `unfinished` mark)
/// anything but directories and the regular files the manifest lists: exit
/// [`EXIT_CHECKSUM`] before any shared path is linked or hook run in it.
pub fn unpack_lines(
    s: &mut Script,
    encoding: Encoding,
    art: &str,
    rel: &str,
    unfinished: &str,
    manifest: &Manifest,
) {
    unpack_and_count(s, encoding, art, rel, manifest);
    refuse_bad(s, rel, unfinished);
}

/// The first half of [`unpack_lines`]: unpacks and counts, leaving what is wrong in `$_bad`
/// (empty when nothing is), so the caller may first check the artifact's own sha256 (a
/// damaged transfer is reported as such, not as a strange archive).
pub fn unpack_and_count(
    s: &mut Script,
    encoding: Encoding,
    art: &str,
    rel: &str,
    manifest: &Manifest,
) {
    match encoding {
        Encoding::Zstd => s.line(
            "if ! zstd -dcq -- {} | tar --no-same-owner --no-same-permissions -xf - -C {}; then _bad='it cannot be unpacked'; else _bad=; fi",
            &[art, rel],
        ),
        Encoding::Gzip => s.line(
            "if ! gzip -dc -- {} | tar --no-same-owner --no-same-permissions -xf - -C {}; then _bad='it cannot be unpacked'; else _bad=; fi",
            &[art, rel],
        ),
        Encoding::Tar => s.line(
            "if ! tar --no-same-owner --no-same-permissions -xf {} -C {}; then _bad='it cannot be unpacked'; else _bad=; fi",
            &[art, rel],
        ),
    };
    // The manifest itself plus every file it lists (the checksums verify each listed file
    // next, so equal counts mean no file the manifest does not list).
    let files = (manifest.files.len() + 1).to_string();
    // One `find` lists every entry that is not a directory: `f` for a regular file, `o <path>`
    // for anything else; the shell counts them (no `cd`, `head`, `tr` or `wc`).
    s.line(
        "if [ -z \"$_bad\" ]; then _n=0; _odd=; _no=0; while IFS= read -r _e; do case $_e in f) _n=$((_n + 1)) ;; '') ;; *) _no=$((_no + 1)); [ \"$_no\" -gt 3 ] || _odd=\"$_odd${{_e#o }} \" ;; esac; done <<SHIP_EOF",
        &[],
    );
    s.line(
        "$(find {} -mindepth 1 ! -type d \\( -type f -printf 'f\\n' -o -printf 'o %P\\n' \\))",
        &[rel],
    );
    s.lines("SHIP_EOF");
    s.lines("  if [ -n \"$_odd\" ]; then _bad=\"it holds entries that are neither regular files nor directories: $_odd\"");
    s.line(
        "  elif [ \"$_n\" != {} ]; then _bad=\"it holds $_n regular files, expected \"{}\" (the manifest and the files it lists)\"; fi; fi",
        &[&files, &files],
    );
}

/// The second half of [`unpack_lines`]: when `$_bad` says what is wrong, removes the release
/// dir and its `unfinished` mark and exits [`EXIT_CHECKSUM`].
pub fn refuse_bad(s: &mut Script, rel: &str, unfinished: &str) {
    s.line(
        "if [ -n \"$_bad\" ]; then rm -rf -- {} {}; echo \"refusing the artifact: $_bad\" >&2; exit {}; fi",
        &[rel, unfinished, &EXIT_CHECKSUM.to_string()],
    );
}

#[cfg(test)]
mod count_tests {
    use super::*;

    /// The one `find` and the shell's count: the manifest plus its files pass; a symlink or an
    /// extra file is refused, naming what is wrong.
    #[test]
    fn counts_entries_in_sh() {
        for (extra, expect) in [
            (None, None),
            (
                Some("link"),
                Some("neither regular files nor directories: link"),
            ),
            (Some("file"), Some("it holds 3 regular files, expected 2")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let rel = dir.path().join("rel");
            std::fs::create_dir_all(rel.join("sub")).unwrap();
            std::fs::write(rel.join("SHIP_MANIFEST.json"), "{}").unwrap();
            std::fs::write(rel.join("sub/a"), "a").unwrap();
            match extra {
                Some("link") => {
                    std::os::unix::fs::symlink("/etc/passwd", rel.join("link")).unwrap()
                }
                Some(_) => std::fs::write(rel.join("b"), "b").unwrap(),
                None => {}
            }
            let art = dir.path().join("a.tar");
            // An archive of nothing: the lines under test come after the unpacking.
            std::process::Command::new("tar")
                .args(["-cf"])
                .arg(&art)
                .args(["-T", "/dev/null"])
                .status()
                .unwrap();
            let mut manifest = Manifest {
                schema: 1,
                package: "x".into(),
                version: "0".into(),
                bin: "x".into(),
                target: "x".into(),
                profile: "release".into(),
                features: Vec::new(),
                git_commit: None,
                git_dirty: false,
                rustc: String::new(),
                builder: "cargo".into(),
                built_at: String::new(),
                glibc_required: None,
                files: Default::default(),
            };
            manifest.files.insert(
                "sub/a".into(),
                crate::package::manifest::FileEntry {
                    sha256: String::new(),
                    size: 1,
                    mode: 0o644,
                },
            );
            let mut s = Script::new("t");
            unpack_lines(
                &mut s,
                Encoding::Tar,
                &art.display().to_string(),
                &rel.display().to_string(),
                &dir.path().join("unfinished").display().to_string(),
                &manifest,
            );
            s.lines("echo ok");
            let out = s.run_local();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            match expect {
                None => assert!(
                    out.status.success() && stdout.contains("ok"),
                    "{stdout}{stderr}"
                ),
                Some(why) => {
                    assert_eq!(out.status.code(), Some(EXIT_CHECKSUM), "{stdout}{stderr}");
                    assert!(stderr.contains(why), "{extra:?}: {stderr}");
                    assert!(!rel.exists(), "the refused release is removed");
                }
            }
        }
    }
}

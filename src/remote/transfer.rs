//! What travels to a host: the artifact, as the bytes of its encoding. They follow the stage
//! script on its standard input (see `steps::stage` and `Connection::run_with_payload`): one
//! round trip for the transfer and the staging, no SFTP session. The stage script writes
//! `<name>.part`, renames it into the cache and checks the size and sha256, so a half-sent
//! file never looks like a cached artifact.
//!
//! Hosts without zstd get the same tar re-compressed with gzip (Debian's gzip is essential),
//! or the plain tar when gzip is missing too; the stage script unpacks whichever arrived.
//!
//! Deltas: when the host has zstd and an earlier artifact that is also in the local store
//! (preflight lists the host's cached artifacts as `have=`), the host gets a [`Delta`] instead:
//! the new artifact's tar compressed with the earlier one's tar as zstd's reference prefix
//! (what `zstd --patch-from` makes and reads). The host rebuilds the tar with
//! `zstd -d --patch-from=<earlier tar>`, checks its sha256 as for every upload and keeps it as
//! `<artifact sha256>.tar`; a host whose zstd cannot apply it exits [`EXIT_DELTA`] and the full
//! artifact is sent instead.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A stage script's exit status when the host could not rebuild the artifact from a delta
/// (no `--patch-from` in its zstd, the earlier artifact unreadable): send it whole.
pub const EXIT_DELTA: i32 = 88;

/// zstd level of deltas. The delta is computed while the host waits for it (stage), so a
/// middle level. Measured (`examples/delta_size`, two 9 MiB builds of cargo-ship a few lines
/// apart): level 3 20.7 % of the artifact in 0.04 s, 9 19.2 % in 0.15 s, 19 14.7 % in 7.2 s.
pub const DELTA_LEVEL: i32 = 9;

/// How an artifact travels to a host that cannot read zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The `.tar.zst` as built (the host has `zstd`).
    Zstd,
    /// Re-compressed with gzip (no zstd, but gzip).
    Gzip,
    /// The plain tar (neither).
    Tar,
}

impl Encoding {
    /// Picks the smallest encoding the host can unpack.
    pub fn for_host(has_zstd: bool, has_gzip: bool) -> Encoding {
        if has_zstd {
            Encoding::Zstd
        } else if has_gzip {
            Encoding::Gzip
        } else {
            Encoding::Tar
        }
    }

    /// File extension on the host (`tar.zst`, `tar.gz`, `tar`).
    pub fn ext(self) -> &'static str {
        match self {
            Encoding::Zstd => "tar.zst",
            Encoding::Gzip => "tar.gz",
            Encoding::Tar => "tar",
        }
    }
}

/// The encoding to stage the artifact with on a host that can unpack zstd/gzip as said and
/// has the artifact cached in the encodings `cached` (preflight's `cached=` lines): the
/// smallest it can unpack, or one it has already (true) — a host that got a delta keeps a
/// `.tar`, and a redeploy sends nothing.
pub fn encoding_for(cached: &[String], has_zstd: bool, has_gzip: bool) -> (Encoding, bool) {
    let preferred = Encoding::for_host(has_zstd, has_gzip);
    let usable = [preferred, Encoding::Zstd, Encoding::Gzip, Encoding::Tar]
        .into_iter()
        .filter(|e| match e {
            Encoding::Zstd => has_zstd,
            Encoding::Gzip => has_gzip,
            Encoding::Tar => true,
        });
    for e in usable {
        if cached.iter().any(|c| c == e.ext()) {
            return (e, true);
        }
    }
    (preferred, false)
}

/// Deltas prepared during one deploy, by artifact and base (the local file: a host that keeps
/// it as `.tar.zst` or as `.tar` gets the same bytes): hosts with the same earlier artifact
/// share one, and one prepared ahead ([`Deltas::prepare_ahead`]) is waited for, not computed
/// twice.
#[derive(Debug, Default)]
pub struct Deltas {
    cells: std::sync::Mutex<std::collections::HashMap<(PathBuf, PathBuf), DeltaCell>>,
    /// The sha256 of each local artifact checked as a base so far: read and hashed once per
    /// deploy, not once per host.
    sums: std::sync::Mutex<std::collections::HashMap<PathBuf, Option<String>>>,
}

/// One delta being or having been computed: `None` once computed when it could not be made.
type DeltaCell = std::sync::Arc<std::sync::OnceLock<Option<DeltaBody>>>;

impl Deltas {
    /// The delta of `art` for a host with zstd whose artifacts dir holds `haves`, if one of
    /// them is in the local store `store_dir` and the delta is at most 80 % of `full` bytes.
    pub fn for_host(
        &self,
        store_dir: &Path,
        art: &crate::package::Artifact,
        haves: &[String],
        full: u64,
    ) -> Option<Delta> {
        // Reading and hashing the candidates blocks: off the async workers.
        let (base, file) = tokio::task::block_in_place(|| {
            pick_base(store_dir, art, haves, |p| self.sha256_of(p))
        })?;
        let cell = self.cell(&art.path, &base);
        let body = tokio::task::block_in_place(|| {
            cell.get_or_init(|| DeltaBody::prepare(&art.path, &base).ok())
                .clone()
        })?;
        ((body.bytes.len() as u64) * 10 <= full * 8).then_some(Delta {
            base_file: file,
            bytes: body.bytes,
            tar_sha256: body.tar_sha256,
            tar_size: body.tar_size,
        })
    }

    /// Starts computing, on a thread of its own, the delta of `art` against the artifact a
    /// host most likely has: the newest other one of the same binary and target in the local
    /// store (the one deployed last from here). The deploy connects and runs preflight
    /// meanwhile; a host that turns out to have that artifact gets the delta without waiting
    /// for it (level 9 on a 9 MiB binary takes ~0.15 s, plus unpacking both). Nothing is
    /// started when the store has no such artifact. Only names and times are read here: the
    /// reading and hashing happen on that thread, and a host gets the delta only when
    /// [`pick_base`] finds that it holds this very file (by its whole sha256).
    pub fn prepare_ahead(&self, store_dir: &Path, art: &crate::package::Artifact) {
        let Some(base) = likely_base(store_dir, art) else {
            return;
        };
        let cell = self.cell(&art.path, &base);
        if cell.get().is_some() {
            return;
        }
        let new = art.path.clone();
        // Detached: a deploy that needs no delta does not wait for it.
        let _ = std::thread::Builder::new()
            .name("delta-ahead".into())
            .spawn(move || {
                cell.get_or_init(|| DeltaBody::prepare(&new, &base).ok());
            });
    }

    fn sha256_of(&self, path: &Path) -> Option<String> {
        let mut sums = self.sums.lock().expect("sha256 cache");
        sums.entry(path.to_path_buf())
            .or_insert_with(|| {
                let bytes = std::fs::read(path).ok()?;
                Some(hex::encode(Sha256::digest(&bytes)))
            })
            .clone()
    }

    fn cell(&self, art: &Path, base: &Path) -> DeltaCell {
        let mut cells = self.cells.lock().expect("delta cache");
        cells
            .entry((art.to_path_buf(), base.to_path_buf()))
            .or_default()
            .clone()
    }
}

/// A delta's bytes and what they rebuild, whatever the base's file name on a host.
#[derive(Debug, Clone)]
struct DeltaBody {
    bytes: std::sync::Arc<Vec<u8>>,
    tar_sha256: String,
    tar_size: u64,
}

impl DeltaBody {
    fn prepare(artifact: &Path, base: &Path) -> Result<DeltaBody> {
        let tar_of = |path: &Path| -> Result<Vec<u8>> {
            let raw = std::fs::read(path).map_err(|e| Error::io("read the artifact", path, e))?;
            zstd::stream::decode_all(raw.as_slice())
                .map_err(|e| Error::io("decompress the artifact", path, e))
        };
        let (old, new) = (tar_of(base)?, tar_of(artifact)?);
        let bytes = delta(&old, &new).map_err(|e| Error::io("compute a delta of", artifact, e))?;
        Ok(DeltaBody {
            bytes: std::sync::Arc::new(bytes),
            tar_sha256: hex::encode(Sha256::digest(&new)),
            tar_size: new.len() as u64,
        })
    }
}

/// The newest artifact in `store_dir` of the same binary and target as `art`, other than
/// `art` itself (by name and modification time).
fn likely_base(store_dir: &Path, art: &crate::package::Artifact) -> Option<PathBuf> {
    let m = &art.manifest;
    // `<bin>-<version>-<target>-<sha12>.tar.zst`, any version and sha.
    let name = crate::package::store::file_name(&m.bin, "", &m.target, &art.sha256);
    let (prefix, suffix) = name.split_once("--")?;
    let ext = suffix
        .rsplit_once('-')
        .map(|(_, s)| s.split_once('.').map(|(_, e)| e))??;
    let target_part = format!("-{}-", m.target);
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(store_dir).ok()?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(&format!("{prefix}-")) else {
            continue;
        };
        // `<version>-<target>-<sha12>.<ext>`: the target right before the sha, and a version
        // before it (`hello-admin-0.9.0-...` is another binary's, not a version of `hello`).
        let Some((head, tail)) = rest.rsplit_once('-') else {
            continue;
        };
        let version = format!("{head}-")
            .strip_suffix(&target_part)
            .map(str::to_string);
        if tail.len() != 12 + 1 + ext.len()
            || !tail.ends_with(&format!(".{ext}"))
            || !version.as_deref().is_some_and(is_version)
            || e.path() == art.path
        {
            continue;
        }
        let Ok(modified) = e.metadata().and_then(|md| md.modified()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, e.path()));
        }
    }
    best.map(|(_, path)| path)
}

/// `MAJOR.MINOR.PATCH`, digits each, with any `-pre` or `+build` after: a package version.
fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The bytes to send to a host, and their sha256 (what the host verifies).
#[derive(Debug, Clone)]
pub struct Payload {
    /// How the bytes are encoded.
    pub encoding: Encoding,
    /// The bytes.
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// Hex sha256 of `bytes`.
    pub sha256: String,
}

impl Payload {
    /// Reads the artifact and re-encodes it when needed.
    pub fn prepare(artifact: &Path, encoding: Encoding) -> Result<Payload> {
        let raw =
            std::fs::read(artifact).map_err(|e| Error::io("read the artifact", artifact, e))?;
        let bytes = match encoding {
            Encoding::Zstd => raw,
            Encoding::Tar | Encoding::Gzip => {
                let mut tar = Vec::new();
                zstd::stream::read::Decoder::new(raw.as_slice())
                    .and_then(|mut d| d.read_to_end(&mut tar))
                    .map_err(|e| Error::io("decompress the artifact", artifact, e))?;
                if encoding == Encoding::Tar {
                    tar
                } else {
                    use std::io::Write;
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                    gz.write_all(&tar)
                        .and_then(|_| gz.finish())
                        .map_err(|e| Error::io("gzip the artifact", artifact, e))?
                }
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Payload {
            encoding,
            bytes: std::sync::Arc::new(bytes),
            sha256,
        })
    }
}

/// The new artifact as a delta against an earlier one the host has.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The earlier artifact's file name in the host's artifacts dir (`<sha256>.tar.zst` or
    /// `<sha256>.tar`).
    pub base_file: String,
    /// The delta (a zstd frame with the earlier tar as reference prefix).
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// sha256 of the tar it rebuilds (what the host checks).
    pub tar_sha256: String,
    /// Size of that tar.
    pub tar_size: u64,
}

/// `new` compressed with `old` as zstd's reference prefix, with a window that spans both (as
/// `zstd --patch-from=old` does, so `zstd -d --patch-from=old` reads it).
pub fn delta(old: &[u8], new: &[u8]) -> std::io::Result<Vec<u8>> {
    delta_at(old, new, DELTA_LEVEL)
}

/// [`delta`] at another zstd level (`examples/delta_size` compares them).
pub fn delta_at(old: &[u8], new: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let span = (old.len() + new.len()).max(1 << 10) as u64;
    let window_log = (64 - span.leading_zeros()).clamp(10, 30);
    let mut enc = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, old)?;
    enc.window_log(window_log)?;
    enc.long_distance_matching(true)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(new.len() as u64))?;
    enc.write_all(new)?;
    enc.finish()
}

/// The artifact to send a delta against: one the host has (`haves`: file names in its
/// artifacts dir) that is also in the local store `store_dir` as an artifact of the same
/// binary and target as `art` (a readable `.tar.zst`, or a `.tar` made from an earlier delta),
/// the newest here first, its whole sha256 (`sha256_of` a local file) matching. Returns the
/// local file and the host's file name.
pub fn pick_base(
    store_dir: &Path,
    art: &crate::package::Artifact,
    haves: &[String],
    sha256_of: impl Fn(&Path) -> Option<String>,
) -> Option<(std::path::PathBuf, String)> {
    let m = &art.manifest;
    let mut found: Vec<(std::time::SystemTime, std::path::PathBuf, String)> = Vec::new();
    for have in haves {
        let Some((sha, ext)) = have.split_once('.') else {
            continue;
        };
        if sha.len() != 64 || sha == art.sha256 || !matches!(ext, "tar.zst" | "tar") {
            continue;
        }
        let name = crate::package::store::file_name(&m.bin, "", &m.target, sha);
        // `<bin>-<version>-<target>-<sha12>.tar.zst`, any version.
        let (prefix, suffix) = name.split_once("--").unwrap_or((&name, ""));
        let Ok(entries) = std::fs::read_dir(store_dir) else {
            return None;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{prefix}-")) && n.ends_with(&format!("-{suffix}")) {
                let modified = e
                    .metadata()
                    .and_then(|md| md.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((modified, e.path(), have.clone()));
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    // The name holds 12 hex digits of the sha256: the whole must match.
    found.into_iter().find_map(|(_, path, have)| {
        let sha = have.split_once('.').map(|(s, _)| s)?;
        (sha256_of(&path)? == sha).then_some((path, have))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_rebuilds_the_new_tar_from_the_old_and_is_small() {
        // A "binary" of 1 MiB of varied bytes with a few bytes changed in the middle.
        let old: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = old.clone();
        new[500_000..500_010].copy_from_slice(b"0123456789");
        let d = delta(&old, &new).unwrap();
        assert!(d.len() < 4096, "{} bytes", d.len());
        let mut back = Vec::new();
        let mut dec = zstd::stream::read::Decoder::with_ref_prefix(
            std::io::BufReader::new(d.as_slice()),
            &old,
        )
        .unwrap();
        dec.window_log_max(30).unwrap();
        dec.read_to_end(&mut back).unwrap();
        assert!(back == new);
    }

    /// An artifact `<bin>-<version>-<target>-<sha12>.tar.zst` in `dir` holding `tar` (bytes
    /// standing for a tar; deltas do not read them as one).
    fn stored(dir: &Path, bin: &str, version: &str, tar: &[u8]) -> crate::package::Artifact {
        let target = "x86_64-unknown-linux-gnu";
        let zst = zstd::encode_all(tar, 3).unwrap();
        let sha = hex::encode(Sha256::digest(&zst));
        let path = dir.join(crate::package::store::file_name(bin, version, target, &sha));
        std::fs::write(&path, &zst).unwrap();
        let manifest: crate::package::Manifest = serde_json::from_value(serde_json::json!({
            "schema": 1, "package": bin, "version": version, "bin": bin, "target": target,
            "profile": "release", "features": [], "git_commit": null, "git_dirty": false,
            "rustc": "", "builder": "cargo", "built_at": "", "glibc_required": null, "files": {}
        }))
        .unwrap();
        crate::package::Artifact {
            path,
            sha256: sha,
            size: zst.len() as u64,
            manifest,
            reused: false,
        }
    }

    /// The delta prepared ahead is against the newest other artifact of the same binary and
    /// target, and is the one a host holding that artifact gets (the same bytes a delta made
    /// on demand has); a host holding another earlier artifact gets one made for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delta_prepared_ahead_is_the_one_a_host_with_the_last_artifact_gets() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..1u32 << 18)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let older = stored(dir.path(), "hello", "0.1.0", &old[1000..]);
        let mut prev = old.clone();
        prev[100..110].copy_from_slice(b"0123456789");
        let previous = stored(dir.path(), "hello", "0.2.0", &prev);
        // Other binaries (`hello-admin`, `hello-2`), newer: never a base of `hello`.
        let other = stored(dir.path(), "hello-admin", "0.9.0", &old);
        let other2 = stored(dir.path(), "hello-2", "0.9.0", &old);
        let mut new = prev.clone();
        new[200_000..200_004].copy_from_slice(b"abcd");
        let art = stored(dir.path(), "hello", "0.3.0", &new);
        let t = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        for (a, secs) in [
            (&older, 10),
            (&previous, 20),
            (&other, 40),
            (&other2, 45),
            (&art, 50),
        ] {
            let f = std::fs::File::options().write(true).open(&a.path).unwrap();
            f.set_modified(t(secs)).unwrap();
        }

        assert_eq!(likely_base(dir.path(), &art), Some(previous.path.clone()));
        let deltas = Deltas::default();
        deltas.prepare_ahead(dir.path(), &art);
        let have = |a: &crate::package::Artifact| vec![format!("{}.tar.zst", a.sha256)];
        let d = deltas
            .for_host(dir.path(), &art, &have(&previous), art.size)
            .unwrap();
        assert_eq!(d.base_file, format!("{}.tar.zst", previous.sha256));
        assert!(d.bytes == std::sync::Arc::new(delta(&prev, &new).unwrap()));
        assert_eq!(d.tar_sha256, hex::encode(Sha256::digest(&new)));
        assert_eq!(d.tar_size, new.len() as u64);
        // A host with the older artifact only (as `.tar`, from an earlier delta).
        let haves = vec![format!("{}.tar", older.sha256)];
        let d = deltas.for_host(dir.path(), &art, &haves, art.size).unwrap();
        assert_eq!(d.base_file, format!("{}.tar", older.sha256));
        assert!(d.bytes == std::sync::Arc::new(delta(&old[1000..], &new).unwrap()));
        // Alone in the store: nothing to prepare.
        let lone = tempfile::tempdir().unwrap();
        let only = stored(lone.path(), "hello", "0.3.0", &new);
        assert_eq!(likely_base(lone.path(), &only), None);
    }

    #[test]
    fn a_cached_encoding_the_host_can_unpack_wins() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(encoding_for(&c(&[]), true, true), (Encoding::Zstd, false));
        assert_eq!(
            encoding_for(&c(&["tar"]), true, true),
            (Encoding::Tar, true)
        );
        assert_eq!(
            encoding_for(&c(&["tar", "tar.zst"]), true, true),
            (Encoding::Zstd, true)
        );
        assert_eq!(
            encoding_for(&c(&["tar.zst"]), false, true),
            (Encoding::Gzip, false)
        );
    }

    #[test]
    fn picks_encoding() {
        assert_eq!(Encoding::for_host(true, true), Encoding::Zstd);
        assert_eq!(Encoding::for_host(false, true), Encoding::Gzip);
        assert_eq!(Encoding::for_host(false, false), Encoding::Tar);
        assert_eq!(Encoding::Gzip.ext(), "tar.gz");
    }

    #[test]
    fn reencodes_to_gzip_and_tar() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "a.txt", &b"hello"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        let p = dir.path().join("a.tar.zst");
        std::fs::write(&p, &zst).unwrap();
        let t = Payload::prepare(&p, Encoding::Tar).unwrap();
        assert_eq!(*t.bytes, tar);
        let g = Payload::prepare(&p, Encoding::Gzip).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(g.bytes.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, tar);
        let z = Payload::prepare(&p, Encoding::Zstd).unwrap();
        assert_eq!(z.sha256, hex::encode(Sha256::digest(&zst)));
    }
}

//! What travels to a host: the artifact, as the bytes of its encoding. They follow the stage
//! script on its standard input (see `steps::stage` and `Connection::run_with_payload`): one
//! round trip for the transfer and the staging, no SFTP session. The stage script writes
//! `<name>.part`, renames it into the cache and checks the size and sha256, so a half-sent
//! file never looks like a cached artifact.
//!
//! Hosts without zstd get the same tar re-compressed with gzip (Debian's gzip is essential),
//! or the plain tar when gzip is missing too; the stage script unpacks whichever arrived.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Issue #18's bytes figure: how big the delta of one binary against another is, beside the
//! artifact a full upload sends (`bench/README.md`, "Delta uploads").
//!
//!     cargo run --release --example delta_size -- OLD_BINARY NEW_BINARY
//!
//! Each binary is packed as cargo-ship packs one (a tar with the file, zstd level
//! `package::ZSTD_LEVEL`); the delta is `remote::transfer::delta` of the new tar against the
//! old one, as a deploy sends it (and at levels 3 and 19 beside it). Prints sizes and the time
//! each delta took on this machine.

#![allow(clippy::print_stderr)]

use std::io::Write;
use std::time::Instant;

fn tar_of(path: &str) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin", data.as_slice()).unwrap();
    tar.into_inner().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [old, new] = args.as_slice() else {
        eprintln!("usage: delta_size OLD_BINARY NEW_BINARY");
        std::process::exit(2);
    };
    let (old_tar, new_tar) = (tar_of(old), tar_of(new));
    let full = zstd::encode_all(new_tar.as_slice(), cargo_ship::package::ZSTD_LEVEL).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "binary (tar) {} bytes; artifact (zstd -{}) {} bytes",
        new_tar.len(),
        cargo_ship::package::ZSTD_LEVEL,
        full.len()
    )
    .unwrap();
    for level in [3, cargo_ship::remote::transfer::DELTA_LEVEL, 19] {
        let t = Instant::now();
        let delta = cargo_ship::remote::transfer::delta_at(&old_tar, &new_tar, level).unwrap();
        writeln!(
            out,
            "delta at level {level}: {} bytes = {:.1}% of the artifact, computed in {:.2} s",
            delta.len(),
            delta.len() as f64 * 100.0 / full.len() as f64,
            t.elapsed().as_secs_f64()
        )
        .unwrap();
    }
}

//! Random tokens that must not be guessed or met by chance in text cargo-ship relays: the
//! worker shell's end line (`remote::worker`) and GitHub's `::stop-commands::` (`ui::github`).

/// 16 bytes of the system's randomness in hex (32 characters). Should /dev/urandom be
/// unreadable, std's hasher keys (also from the system's randomness) and the time stand in.
pub fn hex16() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if from_os.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in b.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    hex::encode(b)
}

//! Secrets: bearer and enrolment tokens (random, shown once, stored only as SHA-256), files
//! holding private keys (created 0600, written whole or not at all), and the marker that tells
//! agents a directory holds secrets.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use sha2::{Digest, Sha256};

/// Prefix of API bearer tokens, so a leaked one is recognisable in a scanner.
pub const API_TOKEN_PREFIX: &str = "cordon_api_";
/// Prefix of one-time enrolment tokens.
pub const ENROLL_TOKEN_PREFIX: &str = "cordon_enroll_";

/// A new random token: prefix + 256 bits in hex.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// What the store keeps of a token. Tokens carry 256 random bits, so a plain SHA-256 is enough:
/// there is nothing to brute-force.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// How many hex characters of a token's hash a log or audit entry may show: enough to tell which
/// known token it was, too few to be of any use to anyone else.
pub const TOKEN_HASH_PREFIX_LEN: usize = 12;

/// The part of a token hash ([`hash_token`]) that logs and the audit log may show.
pub fn hash_prefix(hash: &str) -> String {
    hash.chars().take(TOKEN_HASH_PREFIX_LEN).collect()
}

/// Writes `contents` to `path` with mode 0600, atomically (temporary file, fsync, rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file_mode(path, contents, 0o600)
}

/// Writes `contents` to `path` with `mode`, atomically.
pub fn write_file_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub use cordon_protocol::collect::mark_private_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private_file(&path, b"one").unwrap();
        write_private_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = new_token(API_TOKEN_PREFIX);
        let b = new_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(API_TOKEN_PREFIX));
        assert_eq!(hash_token(&a), hash_token(&format!("{a}\n")));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}

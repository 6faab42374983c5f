//! Responder keys made the way responders make them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::{binary, output::json_of};

/// A responder's key, made by the real `cordon keys generate`.
pub struct ResponderKey {
    /// The private key file (PKCS#8 PEM).
    pub file: PathBuf,
    /// The public key file, as `cordon-agent trust add` takes it.
    pub public_file: PathBuf,
    /// The key id `cordon` printed.
    pub id: String,
    /// The private key itself, read back from `file`.
    pub signing: SigningKey,
}

impl ResponderKey {
    /// The public half.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// The passphrase of the keys [`generate_key`] makes; the deployment's CLI runs with it.
pub const TEST_PASSPHRASE: &str = "cordon test passphrase";

/// Makes `<dir>/<name>.key` (encrypted with [`TEST_PASSPHRASE`], as responders' keys are by
/// default) and its public key file with the real `cordon --json keys generate`.
pub fn generate_key(dir: &Path, name: &str) -> ResponderKey {
    let file = dir.join(format!("{name}.key"));
    let out = Command::new(binary("e2e-cordon"))
        .args(["--json", "keys", "generate", "--out"])
        .arg(&file)
        .env_remove("CORDON_CONFIG")
        .env(cordon_cli::signer::PASSPHRASE_ENV, TEST_PASSPHRASE)
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cordon keys generate");
    let info: serde_json::Value = json_of(&out);
    let pem = std::fs::read_to_string(&file).expect("private key");
    let signing = cordon_cli::signer::open_encrypted(&pem, TEST_PASSPHRASE)
        .expect("an encrypted PKCS#8 key that the test passphrase opens");
    ResponderKey {
        public_file: PathBuf::from(info["public_key_file"].as_str().expect("public file")),
        id: info["key_id"].as_str().expect("key id").to_string(),
        file,
        signing,
    }
}

//! The responder's signer: a key file that is encrypted with a passphrase (the default that
//! `cordon keys generate` writes: PKCS#8 `ENCRYPTED PRIVATE KEY`, scrypt and AES-256-CBC), a
//! plain key file (what `--no-passphrase` and the quickstart write), or a key held by
//! `ssh-agent`, named by its OpenSSH public key file. A copied encrypted file signs nothing
//! without the passphrase; an `ssh-agent` key is never in a file Cordon reads at all.
//!
//! The passphrase comes from `CORDON_KEY_PASSPHRASE` (for scripts) or is asked on the terminal.

use std::{os::unix::fs::PermissionsExt, path::Path};

use ed25519_dalek::{
    pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey},
    Signature, Signer, SigningKey, VerifyingKey,
};
use zeroize::Zeroizing;

use crate::{ssh_agent::AgentKey, CliError};

/// Where a passphrase may come from without a terminal.
pub const PASSPHRASE_ENV: &str = "CORDON_KEY_PASSPHRASE";
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// A key that signs for the responder. (`SigningKey`'s `Debug` shows only the public half.)
#[derive(Debug)]
pub enum ResponderKey {
    File(SigningKey),
    Agent(AgentKey),
}

impl ResponderKey {
    /// Loads the signer `path` names: an encrypted or plain PKCS#8 key file (refused if others
    /// can read it), or an OpenSSH `ssh-ed25519` public key file, for the key in ssh-agent.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let fail = |why: String| CliError::Usage(format!("signing key {}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        if super::ssh_agent::is_openssh_public(&text) {
            return AgentKey::from_public_file(path).map(Self::Agent);
        }
        let mode = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "readable by others (mode {:o}); run chmod 600 on it",
                mode & 0o777
            )));
        }
        if text.contains(ENCRYPTED_LABEL) {
            let passphrase = passphrase(&format!("passphrase for {}: ", path.display()), false)?;
            return open_encrypted(&text, &passphrase)
                .map(Self::File)
                .map_err(fail);
        }
        SigningKey::from_pkcs8_pem(&text)
            .map(Self::File)
            .map_err(|e| fail(format!("not an Ed25519 PKCS#8 PEM private key ({e})")))
    }

    pub fn public(&self) -> VerifyingKey {
        match self {
            Self::File(key) => key.verifying_key(),
            Self::Agent(key) => key.public(),
        }
    }

    pub fn sign(&self, bytes: &[u8]) -> Result<Signature, CliError> {
        match self {
            Self::File(key) => Ok(key.sign(bytes)),
            Self::Agent(key) => key.sign(bytes),
        }
    }
}

/// `key` as PKCS#8 PEM: encrypted under `passphrase`, or plain when there is none.
pub fn encode(key: &SigningKey, passphrase: Option<&str>) -> Result<Zeroizing<String>, CliError> {
    let fail = |e: String| CliError::Other(format!("encoding the key: {e}"));
    let Some(passphrase) = passphrase else {
        return key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| Zeroizing::new(pem.to_string()))
            .map_err(|e| fail(e.to_string()));
    };
    let der = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let encrypted = info
        .encrypt(rand::rngs::OsRng, passphrase.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    encrypted
        .to_pem(ENCRYPTED_LABEL, LineEnding::LF)
        .map_err(|e| fail(e.to_string()))
}

/// The key in an `ENCRYPTED PRIVATE KEY` PEM, if `passphrase` opens it.
pub fn open_encrypted(pem: &str, passphrase: &str) -> Result<SigningKey, String> {
    let (label, doc) =
        pkcs8::SecretDocument::from_pem(pem).map_err(|e| format!("not a PEM private key ({e})"))?;
    if label != ENCRYPTED_LABEL {
        return Err(format!("a PEM {label} block, not an encrypted private key"));
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| format!("not an encrypted PKCS#8 key ({e})"))?;
    let plain = info
        .decrypt(passphrase.as_bytes())
        .map_err(|_| "wrong passphrase (or a damaged key file)".to_string())?;
    SigningKey::from_pkcs8_der(plain.as_bytes()).map_err(|e| format!("not an Ed25519 key ({e})"))
}

/// The passphrase: `CORDON_KEY_PASSPHRASE`, else asked on the terminal (twice when `new`).
/// Without a terminal on standard input (a script, a pipe) nothing is asked: the refusal says
/// what to set.
pub fn passphrase(prompt: &str, new: bool) -> Result<Zeroizing<String>, CliError> {
    use std::io::IsTerminal;
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        let value = value
            .into_string()
            .map_err(|_| CliError::Usage(format!("{PASSPHRASE_ENV} is not UTF-8")))?;
        return non_empty(Zeroizing::new(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "the key is encrypted and there is no terminal to ask for its passphrase: set \
             {PASSPHRASE_ENV} (or, for a new key, pass --no-passphrase)"
        )));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                CliError::Usage(format!(
                "cannot ask for the key's passphrase ({e}): set {PASSPHRASE_ENV}, or use a key \
                 in ssh-agent"
            ))
            })
    };
    let first = non_empty(ask(prompt)?)?;
    if new && *ask("again: ")? != *first {
        return Err(CliError::Usage("the two passphrases differ".into()));
    }
    Ok(first)
}

fn non_empty(p: Zeroizing<String>) -> Result<Zeroizing<String>, CliError> {
    if p.is_empty() {
        return Err(CliError::Usage(
            "an empty passphrase protects nothing; use --no-passphrase to mean it".into(),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests;

//! `cordon keys`: the responder's own Ed25519 signing key. It is made and kept on the
//! responder's machine (PKCS#8 PEM, 0600, encrypted with a passphrase unless asked otherwise;
//! or held by ssh-agent, see [`super::signer`]) and signs containment actions locally; only its
//! public key is ever shown to anyone — to agents' trust lists, never to the controller.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use clap::Subcommand;
use cordon_protocol::action::{key_id, signing_bytes, ActionRequest};
use ed25519_dalek::{
    pkcs8::{spki::der::pem::LineEnding, EncodePublicKey},
    SigningKey, VerifyingKey,
};
use serde::Serialize;

pub use crate::signer::ResponderKey;

use cordon_api::actions::{SignatureSpec, SubmitAction};

use crate::{config, signer, CliError};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key (PKCS#8 PEM, mode 0600, encrypted with a passphrase asked on
    /// the terminal or taken from CORDON_KEY_PASSPHRASE; never overwrites) and its public key
    /// (FILE.pub), and print the public key and key id for agents' trust lists. To keep the key
    /// in ssh-agent instead, make it with `ssh-keygen -t ed25519`, `ssh-add` it, and name its
    /// `.pub` file as the signing key.
    Generate {
        /// Where to write the private key (default: signing.key next to the default config
        /// file, ~/.config/cordon/signing.key).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the key unencrypted: anyone who copies the file can sign with it.
        #[arg(long)]
        no_passphrase: bool,
    },
    /// Print the public key and key id of the signing key in use (a key file, or an OpenSSH
    /// `.pub` file for a key in ssh-agent).
    Show {
        /// The signing key (default: signing_key in the config file).
        #[arg(long, env = "CORDON_SIGNING_KEY")]
        key: Option<PathBuf>,
    },
}

/// A signing key's public half, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    /// The private key file.
    pub key_file: String,
    /// The public key file (SPKI PEM), when one was written.
    pub public_key_file: Option<String>,
    pub key_id: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

pub fn run(
    command: KeysCommand,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let info = match command {
        KeysCommand::Generate { out, no_passphrase } => {
            let path = out
                .or_else(config::default_signing_key_path)
                .ok_or_else(|| CliError::Usage("no home directory: pass --out FILE".into()))?;
            // Refuse an existing file before asking for anything.
            ensure_free(&path)?;
            let passphrase = if no_passphrase {
                None
            } else {
                Some(signer::passphrase(
                    &format!("passphrase for the new key {}: ", path.display()),
                    true,
                )?)
            };
            generate_key_file(&path, passphrase.as_deref().map(String::as_str))?
        }
        KeysCommand::Show { key } => {
            let path = config::signing_key_path(key, config_path)?;
            public_info(&path, &load_signing_key(&path)?.public(), None)?
        }
    };
    if json {
        return Ok(crate::output::json(&info));
    }
    let mut out = format!(
        "private key: {}  (mode 0600; keep it here: it never goes to the controller)\n",
        info.key_file
    );
    if let Some(public) = &info.public_key_file {
        out.push_str(&format!("public key:  {public}\n"));
    }
    out.push_str(&format!(
        "key id:      {}\npublic key:  {}\n\n{}",
        info.key_id, info.public_key, info.public_key_pem
    ));
    if let Some(public) = &info.public_key_file {
        out.push_str(&format!(
            "\nOn each host, trust it for the actions this key may sign:\n  \
             cordon-agent trust add --data-dir DIR --public-key {public} --actions kill,quarantine,restore --max-ttl 1h\n\
             Then use it: signing_key = \"{}\" in the responder config, or --key / CORDON_SIGNING_KEY.\n",
            info.key_file
        ));
    }
    Ok(out)
}

/// Writes a new key to `path` (0600, encrypted under `passphrase` if there is one) and its
/// public key to `path.pub` (0644); refuses if either exists.
pub fn generate_key_file(path: &Path, passphrase: Option<&str>) -> Result<PublicKeyInfo, CliError> {
    ensure_free(path)?;
    let public_path = public_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A directory made for the key holds only keys: mark it so no agent on this machine
        // collects from it. A directory that was there already (a home) is left as it is.
        let made = !dir.exists();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?;
        if made {
            cordon_protocol::collect::mark_private_dir(dir)
                .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?;
        }
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = signer::encode(&key, passphrase)?;
    write_new(path, pem.as_bytes(), 0o600)?;
    let info = public_info(path, &key.verifying_key(), Some(&public_path))?;
    write_new(&public_path, info.public_key_pem.as_bytes(), 0o644)?;
    Ok(info)
}

/// Refuses when `path` or its `.pub` exists: keys are never overwritten.
fn ensure_free(path: &Path) -> Result<(), CliError> {
    for existing in [path, public_path(path).as_path()] {
        if existing.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                existing.display()
            )));
        }
    }
    Ok(())
}

/// `KEY.pub` beside `KEY`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads the signer a key path names (see [`ResponderKey::load`]).
pub fn load_signing_key(path: &Path) -> Result<ResponderKey, CliError> {
    ResponderKey::load(path)
}

/// Signs `request` as the API takes it.
pub fn sign(key: &ResponderKey, request: &ActionRequest) -> Result<SignatureSpec, CliError> {
    let bytes = signing_bytes(request)
        .map_err(|e| CliError::Other(format!("encoding the request: {e}")))?;
    Ok(SignatureSpec {
        public_key: hex::encode(key.public().to_bytes()),
        signature: hex::encode(key.sign(&bytes)?.to_bytes()),
    })
}

/// A fresh request (new id and nonce) for `action` on `agent_id`, valid from now for
/// `valid_for_secs`, signed by `key`: what `POST /api/v1/actions` and a signed fetch take.
pub fn sign_new(
    key: &ResponderKey,
    agent_id: String,
    action: cordon_protocol::action::Action,
    valid_for_secs: u64,
) -> Result<SubmitAction, CliError> {
    let now = cordon_api::now_ms();
    let lifetime_ms = i64::try_from(valid_for_secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| CliError::Usage("--ttl is too long".into()))?;
    let request = ActionRequest {
        action_id: uuid::Uuid::new_v4(),
        agent_id,
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime_ms),
        nonce: rand::random(),
        action,
    };
    let signature = sign(key, &request)?;
    Ok(SubmitAction {
        request,
        signatures: vec![signature],
    })
}

/// The key id of `key` (as agents' policies and the API name it).
pub fn id_of(key: &ResponderKey) -> String {
    key_id(&key.public().to_bytes())
}

fn public_info(
    path: &Path,
    public: &VerifyingKey,
    public_file: Option<&Path>,
) -> Result<PublicKeyInfo, CliError> {
    let pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| CliError::Other(format!("encoding the public key: {e}")))?;
    Ok(PublicKeyInfo {
        key_file: path.display().to_string(),
        public_key_file: public_file.map(|p| p.display().to_string()),
        key_id: key_id(&public.to_bytes()),
        public_key: hex::encode(public.to_bytes()),
        public_key_pem: pem,
    })
}

/// Creates `path` (never replacing a file) with `mode` and writes `contents`, durably.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Other(format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::Usage(format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )),
            _ => fail(e),
        })?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    // The umask may have narrowed the mode; make it exactly what was asked.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_private_loads_back_and_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys/alice.key");
        let info = generate_key_file(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = load_signing_key(&path).unwrap();
        assert_eq!(info.key_id, id_of(&key));
        assert_eq!(info.public_key, hex::encode(key.public().to_bytes()));
        let public = std::fs::read_to_string(public_path(&path)).unwrap();
        assert!(public.contains("BEGIN PUBLIC KEY"), "{public}");
        assert!(!public.contains("PRIVATE"));

        let before = std::fs::read(&path).unwrap();
        let err = generate_key_file(&path, None).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

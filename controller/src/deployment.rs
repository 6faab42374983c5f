//! A controller's data directory: what `cordon-controller init` creates and `serve` loads.
//!
//! ```text
//! DIR/controller.toml   settings (database URL, extra certificate names)
//! DIR/ca.pem, ca.key    the private CA (key 0600)
//! DIR/server.pem, .key  the controller's certificate for agents and the API (key 0600)
//! DIR/automation.key    the controller's Ed25519 automation signing key (PKCS#8 PEM, 0600)
//! DIR/automation.pub    its public key, for agents' trust lists
//! DIR/playbooks/       playbooks (TOML); the four defaults are written when missing
//! DIR/cordon.db         the embedded SQLite store (unless a database URL is set)
//! ```
//!
//! `init` only ever adds what is missing, so running it twice (or after a crash half-way) never
//! destroys a deployment.

use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    now_ms,
    pki::{Ca, PkiError},
    secret,
    store::{Role, Store, StoreError},
};

/// Failures creating or loading a deployment.
#[derive(Debug, Error)]
pub enum DeploymentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{0} is not initialised: run `cordon-controller init --data-dir {0}` first")]
    NotInitialised(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("automation key: {0}")]
    Key(String),
}

/// `controller.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `postgres://…` for PostgreSQL; absent for the embedded SQLite file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Extra DNS names or IP addresses in the server certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn settings(&self) -> PathBuf {
        self.root.join("controller.toml")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn automation_key(&self) -> PathBuf {
        self.root.join("automation.key")
    }
    pub fn automation_pub(&self) -> PathBuf {
        self.root.join("automation.pub")
    }
    /// Evidence bytes, content-addressed (see [`crate::evidence`]).
    pub fn evidence(&self) -> PathBuf {
        self.root.join("evidence")
    }
    pub fn sqlite(&self) -> PathBuf {
        self.root.join("cordon.db")
    }

    pub fn is_initialised(&self) -> bool {
        self.settings().exists() && self.ca_cert().exists() && self.ca_key().exists()
    }

    pub fn read(&self, path: &Path) -> Result<String, DeploymentError> {
        fs::read_to_string(path).map_err(|source| DeploymentError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Marks the directory so no agent on this host collects from it (keys, tokens, evidence).
    pub fn mark_private(&self) -> Result<(), DeploymentError> {
        secret::mark_private_dir(&self.root).map_err(|source| DeploymentError::Io {
            path: self.root.clone(),
            source,
        })
    }

    fn write_private(&self, path: &Path, contents: &str) -> Result<(), DeploymentError> {
        secret::write_private_file(path, contents.as_bytes()).map_err(|source| {
            DeploymentError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn write_public(&self, path: &Path, contents: &str) -> Result<(), DeploymentError> {
        secret::write_file_mode(path, contents.as_bytes(), 0o644).map_err(|source| {
            DeploymentError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads `controller.toml`.
    pub fn load_settings(&self) -> Result<Settings, DeploymentError> {
        let path = self.settings();
        if !path.exists() {
            return Err(DeploymentError::NotInitialised(
                self.root.display().to_string(),
            ));
        }
        let text = self.read(&path)?;
        toml::from_str(&text).map_err(|e| DeploymentError::Config {
            path,
            detail: e.to_string(),
        })
    }

    /// Loads the CA.
    pub fn load_ca(&self) -> Result<Ca, DeploymentError> {
        if !self.is_initialised() {
            return Err(DeploymentError::NotInitialised(
                self.root.display().to_string(),
            ));
        }
        Ok(Ca::load(
            &self.read(&self.ca_cert())?,
            &self.read(&self.ca_key())?,
        )?)
    }

    /// Opens the store named by the settings (or `override_url`), running migrations.
    pub async fn open_store(
        &self,
        settings: &Settings,
        override_url: Option<&str>,
    ) -> Result<Store, DeploymentError> {
        let store = match override_url.or(settings.database_url.as_deref()) {
            Some(url) => Store::connect(url).await?,
            None => Store::open_sqlite(&self.sqlite()).await?,
        };
        Ok(store)
    }
}

/// What `init` was asked for.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub database_url: Option<String>,
    pub server_names: Vec<String>,
}

/// What `init` did.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub data_dir: String,
    /// True when anything was created.
    pub created: bool,
    pub ca_fingerprint: String,
    /// The admin API token, only when it was created now. Shown once, stored hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    pub automation_public_key: String,
}

/// Creates whatever the deployment in `dir` is missing.
pub async fn init(dir: &DataDir, options: &InitOptions) -> Result<InitReport, DeploymentError> {
    let root = dir.root();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|source| DeploymentError::Io {
            path: root.to_path_buf(),
            source,
        })?;
    dir.mark_private()?;
    let mut created = false;

    let ca = if dir.ca_cert().exists() && dir.ca_key().exists() {
        Ca::load(&dir.read(&dir.ca_cert())?, &dir.read(&dir.ca_key())?)?
    } else {
        let (ca, key_pem) = Ca::generate("Cordon deployment CA")?;
        dir.write_private(&dir.ca_key(), &key_pem)?;
        dir.write_public(&dir.ca_cert(), ca.cert_pem())?;
        // A new CA invalidates any server certificate from an earlier, half-finished init.
        let _ = fs::remove_file(dir.server_cert());
        created = true;
        ca
    };

    let mut settings = if dir.settings().exists() {
        dir.load_settings()?
    } else {
        Settings::default()
    };
    if settings.database_url.is_none() {
        settings.database_url = options.database_url.clone();
    }
    for name in &options.server_names {
        if !settings.server_names.contains(name) {
            settings.server_names.push(name.clone());
            let _ = fs::remove_file(dir.server_cert());
        }
    }

    if !(dir.server_cert().exists() && dir.server_key().exists()) {
        let (issued, key_pem) = ca.issue_server(&settings.server_names)?;
        dir.write_private(&dir.server_key(), &key_pem)?;
        dir.write_public(&dir.server_cert(), &issued.cert_pem)?;
        created = true;
    }

    let automation_public_key = if dir.automation_key().exists() {
        dir.read(&dir.automation_pub())?
    } else {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| DeploymentError::Key(e.to_string()))?;
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| DeploymentError::Key(e.to_string()))?;
        dir.write_private(&dir.automation_key(), &pem)?;
        dir.write_public(&dir.automation_pub(), &public)?;
        created = true;
        public
    };

    let store = dir.open_store(&settings, None).await?;
    let admin_token = if store.count_api_tokens().await? == 0 {
        let token = secret::new_token(secret::API_TOKEN_PREFIX);
        store
            .create_api_token(
                &uuid::Uuid::new_v4().to_string(),
                &secret::hash_token(&token),
                "admin (created by init)",
                Role::Admin,
                now_ms(),
                None,
            )
            .await?;
        created = true;
        Some(token)
    } else {
        None
    };
    store.close().await;

    // The default playbooks, each only if missing: a user's edits are never overwritten.
    let playbooks = root.join(crate::playbooks::DIR_NAME);
    crate::playbooks::defaults::install(&playbooks).map_err(|source| DeploymentError::Io {
        path: playbooks,
        source,
    })?;

    // Written last: its presence marks a complete deployment.
    let text = toml::to_string(&settings).map_err(|e| DeploymentError::Config {
        path: dir.settings(),
        detail: e.to_string(),
    })?;
    if !dir.settings().exists() || created {
        dir.write_private(&dir.settings(), &text)?;
    }

    Ok(InitReport {
        data_dir: root.display().to_string(),
        created,
        ca_fingerprint: ca.fingerprint(),
        admin_token,
        automation_public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn init_twice_keeps_the_deployment() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("ctl"));
        let first = init(&dir, &InitOptions::default()).await.unwrap();
        assert!(first.created);
        assert!(first.admin_token.is_some());
        let ca_before = fs::read(dir.ca_cert()).unwrap();
        let second = init(&dir, &InitOptions::default()).await.unwrap();
        assert!(!second.created);
        assert!(
            second.admin_token.is_none(),
            "the admin token is shown once"
        );
        assert_eq!(second.ca_fingerprint, first.ca_fingerprint);
        assert_eq!(fs::read(dir.ca_cert()).unwrap(), ca_before);
        for key in [dir.ca_key(), dir.server_key(), dir.automation_key()] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}

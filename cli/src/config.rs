//! Where the responder CLI finds its controller: flags, then `CORDON_URL` / `CORDON_TOKEN` /
//! `CORDON_CA`, then a TOML file (`--config`, `CORDON_CONFIG`, or `~/.config/cordon/config.toml`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// The responder config file.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderConfig {
    /// e.g. `https://127.0.0.1:8443`
    pub url: Option<String>,
    /// API bearer token. Keep this file 0600.
    pub token: Option<String>,
    /// The deployment CA certificate (PEM) that the API's certificate must chain to.
    pub ca_cert: Option<PathBuf>,
    /// The responder's own signing key (PKCS#8 PEM from `cordon keys generate`), for
    /// containment actions; relative to this file. It never leaves this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
}

impl fmt::Debug for ResponderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

/// The settings a command runs with, all present.
pub struct Resolved {
    pub url: String,
    /// Absent only where the command needs none (`cordon health`).
    pub token: Option<String>,
    pub ca_cert: PathBuf,
}

/// Default config path: `$XDG_CONFIG_HOME/cordon/config.toml` or `~/.config/cordon/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("cordon/config.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/cordon/config.toml"))
}

/// Reads a config file. A missing file is only an error when it was asked for explicitly.
pub fn load(path: &Path, explicit: bool) -> Result<ResponderConfig, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(ResponderConfig::default())
        }
        Err(e) => Err(CliError::Usage(format!("{}: {e}", path.display()))),
    }
}

/// Merges flags/env (already merged by clap) over the file.
pub fn resolve(
    url: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    config_path: Option<PathBuf>,
    needs_token: bool,
) -> Result<Resolved, CliError> {
    let (path, explicit) = match config_path {
        Some(p) => (Some(p), true),
        None => (default_path(), false),
    };
    let file = match &path {
        Some(p) => load(p, explicit)?,
        None => ResponderConfig::default(),
    };
    let where_ = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "a config file".into());
    let missing = |what: &str, flag: &str, env: &str| {
        CliError::Usage(format!(
            "no {what}: pass {flag}, set {env}, or put it in {where_}"
        ))
    };
    let url = url
        .or(file.url)
        .ok_or_else(|| missing("controller URL", "--url", "CORDON_URL"))?;
    check_url(&url)?;
    let token = token.or(file.token);
    if needs_token && token.is_none() {
        return Err(missing("API token", "--token", "CORDON_TOKEN"));
    }
    Ok(Resolved {
        url,
        token,
        ca_cert: ca_cert
            .or(file.ca_cert)
            .ok_or_else(|| missing("CA certificate", "--ca", "CORDON_CA"))?,
    })
}

/// The controller's API speaks HTTPS only: anything else is a usage error that says so.
fn check_url(url: &str) -> Result<(), CliError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") && url.len() > "https://".len() => Ok(()),
        _ => Err(CliError::Usage(format!(
            "controller URL {url:?}: the API is HTTPS only; write it as https://HOST:PORT \
             (e.g. https://127.0.0.1:8443)"
        ))),
    }
}

/// Default signing key path: next to the default config file, `signing.key`.
pub fn default_signing_key_path() -> Option<PathBuf> {
    default_path().map(|config| config.with_file_name("signing.key"))
}

/// Where the responder's signing key is: `--key` / `CORDON_SIGNING_KEY` (already merged by
/// clap), then `signing_key` in the config file (relative to the file), then the default path.
pub fn signing_key_path(
    flag: Option<PathBuf>,
    config_path: Option<PathBuf>,
) -> Result<PathBuf, CliError> {
    if let Some(path) = flag {
        return Ok(path);
    }
    let (path, explicit) = match config_path {
        Some(p) => (Some(p), true),
        None => (default_path(), false),
    };
    if let Some(config) = &path {
        if let Some(key) = load(config, explicit)?.signing_key {
            return Ok(match config.parent() {
                Some(dir) if key.is_relative() => dir.join(key),
                _ => key,
            });
        }
    }
    default_signing_key_path()
        .filter(|p| p.exists())
        .ok_or_else(|| {
            CliError::Usage(
                "no signing key: pass --key FILE, set CORDON_SIGNING_KEY, or put signing_key = \"FILE\" \
                 in the config file (make one with `cordon keys generate`)"
                    .into(),
            )
        })
}

//! `DATA_DIR/firewall.json`: when the current isolation ends, so an agent that restarts (or a
//! host that reboots and loses its ruleset) re-applies it for the time that is left. Blocks need
//! no record: their timeouts live in the kernel, and a reboot ends them, as it should.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};
use serde::{Deserialize, Serialize};

const FILE: &str = "firewall.json";

/// What the agent remembers about its firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Record {
    /// Wall-clock end of the isolation (ms since the Unix epoch); `None` when not isolated.
    pub isolated_until_ms: Option<i64>,
    /// The controller's addresses when the isolation began: used again after a reboot if the
    /// controller's name cannot be resolved yet (DNS may come up after the agent).
    pub controller: Vec<SocketAddr>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError {
        code: TaskErrorCode::Internal,
        message: format!("{}: cannot {what}: {e}", path.display()),
    }
}

/// The record, or the default when there is none yet.
pub fn load(data_dir: &Path) -> Result<Record, TaskError> {
    let path = path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_error(&path, "parse it", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(io_error(&path, "read it", e)),
    }
}

/// Replaces the record atomically (temporary file, fsync, rename), so a crash leaves the old
/// record or the new one, never half of one.
pub fn store(data_dir: &Path, record: &Record) -> Result<(), TaskError> {
    let path = path(data_dir);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| io_error(&path, "encode it", e))?;
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        // Make the rename itself durable.
        fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| io_error(&path, "write it", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Record::default());
        let record = Record {
            isolated_until_ms: Some(1_700_000_000_000),
            controller: vec!["10.0.0.1:7443".parse().unwrap()],
        };
        store(dir.path(), &record).unwrap();
        assert_eq!(load(dir.path()).unwrap(), record);
        fs::write(dir.path().join(FILE), b"{oops").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.message.contains("firewall.json"), "{}", err.message);
    }
}

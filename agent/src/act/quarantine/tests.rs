//! Quarantine and restore of real files, on one file system and across two (a tmpfs mounted by
//! the test, when running as root), and recovery from the states a crash can leave.

use std::{
    fs::{File, FileTimes},
    io::{Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use cordon_protocol::message::TaskErrorCode;
use sha2::{Digest, Sha256};

use super::{vault::*, *};
use crate::policy::Policy;

pub(super) fn env_for(data_dir: &Path, protected: &[&Path]) -> ActEnv {
    ActEnv {
        data_dir: data_dir.to_path_buf(),
        agent_id: "agent-test".into(),
        controller: "127.0.0.1:1".into(),
        agent_pid: std::process::id(),
        policy: Arc::new(Policy {
            protected_paths: protected
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            ..Policy::default()
        }),
    }
}

fn is_root() -> bool {
    crate::collect::effective_uid() == Some(0)
}

/// A file with distinctive bytes, owner (when root), setuid mode and nanosecond times.
fn make_file(path: &Path) -> Vec<u8> {
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(path, &bytes).unwrap();
    if is_root() {
        std::os::unix::fs::chown(path, Some(1234), Some(5678)).unwrap();
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o4751)).unwrap();
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(
            FileTimes::new()
                .set_accessed(UNIX_EPOCH + Duration::new(1_500_000_000, 987_654_321))
                .set_modified(UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789)),
        )
        .unwrap();
    bytes
}

/// What restore must give back: bytes (by hash), owner, mode and times to the nanosecond.
/// Read with `O_NOATIME`, so that looking does not change the access time being compared.
fn identity(path: &Path) -> (String, u32, u32, u32, i64, i64, i64, i64) {
    let m = std::fs::symlink_metadata(path).unwrap();
    let mut bytes = Vec::new();
    File::options()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    (
        sha(&bytes),
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
        m.mtime(),
        m.mtime_nsec(),
        m.atime(),
        m.atime_nsec(),
    )
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Quarantines `file`, checks the vault and the receipt, restores it, checks the round trip.
/// Returns the two `done` lines.
fn round_trip(file: &Path, data_dir: &Path) -> (String, String) {
    let env = env_for(data_dir, &[]);
    let bytes = make_file(file);
    let original = identity(file);
    let path = file.to_str().unwrap();

    let out = quarantine(path, &env).unwrap();
    assert!(!file.exists(), "origin still there");
    let id = out.after["quarantine_id"].as_str().unwrap().to_string();
    assert_eq!(out.before["sha256"], sha(&bytes));
    assert_eq!(out.after["sha256"], sha(&bytes));
    assert_eq!(out.before["mode"], "4751");
    assert_eq!(out.after["origin_exists"], false);
    let vault = data_dir.join("vault");
    assert_eq!(
        std::fs::metadata(&vault).unwrap().mode() & 0o777,
        0o700,
        "vault is private"
    );
    let bin = std::fs::metadata(vault.join(format!("{id}.bin"))).unwrap();
    if is_root() {
        assert_eq!(
            (bin.mode() & 0o7777, bin.uid(), bin.gid()),
            (0, 0, 0),
            "defanged"
        );
        assert_eq!(out.after["mode"], "0000");
    }
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(vault.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(manifest.state, State::Quarantined);
    assert_eq!(manifest.original_path, path);
    assert_eq!(manifest.sha256.as_deref(), Some(sha(&bytes).as_str()));
    assert_eq!(manifest.file.mode, 0o4751);
    assert_eq!(manifest.file.mtime.nanos, 123_456_789);

    let back = restore(&id, &env).unwrap();
    assert_eq!(
        identity(file),
        original,
        "bytes, owner, mode and times round-trip"
    );
    assert_eq!(back.after["sha256"], sha(&bytes));
    assert_eq!(back.after["in_vault"], false);
    assert!(!vault.join(format!("{id}.bin")).exists());
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(vault.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(manifest.state, State::Restored);
    assert!(manifest.restored_at_ms.is_some());

    let again = restore(&id, &env).unwrap_err();
    assert_eq!(again.code, TaskErrorCode::NotFound);
    assert!(
        again.message.contains("already restored"),
        "{}",
        again.message
    );
    (out.done, back.done)
}

#[test]
fn quarantine_and_restore_round_trip_on_one_file_system() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (q, r) = round_trip(&host.path().join("evil.bin"), data.path());
    assert!(q.contains("copied into the vault, copy verified"), "{q}");
    assert!(r.contains("same file system"), "{r}");
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn mount(dir: &Path) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::io::stderr().write_all(
                b"\n*** SKIPPED: cannot mount a tmpfs (not root?): the cross-file-system \
                  quarantine test did not run ***\n",
            );
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn quarantine_and_restore_round_trip_across_file_systems() {
    let mnt = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let Some(_mount) = TmpfsMount::mount(mnt.path()) else {
        return;
    };
    let file = mnt.path().join("dropper");
    assert_ne!(
        std::fs::metadata(mnt.path()).unwrap().dev(),
        std::fs::metadata(data.path()).unwrap().dev(),
        "the tmpfs is another file system"
    );
    let (q, r) = round_trip(&file, data.path());
    assert!(q.contains("copied into the vault, copy verified"), "{q}");
    assert!(r.contains("across file systems"), "{r}");
    let leftovers: Vec<_> = std::fs::read_dir(mnt.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary left beside the origin");
}

#[test]
fn restore_never_overwrites_a_file_that_appeared_at_the_origin() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env_for(data.path(), &[]);
    let file = host.path().join("payload");
    let bytes = make_file(&file);
    let out = quarantine(file.to_str().unwrap(), &env).unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap();

    std::fs::write(&file, b"a new file").unwrap();
    let err = restore(id, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(err.message.contains("never overwrites"), "{}", err.message);
    assert!(err.message.contains(id), "{}", err.message);
    assert_eq!(std::fs::read(&file).unwrap(), b"a new file");
    let vault = Vault::open(data.path()).unwrap();
    assert_eq!(vault.read(id).unwrap().state, State::Quarantined);
    drop(vault);

    std::fs::remove_file(&file).unwrap();
    restore(id, &env).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the vault copy was kept"
    );
}

#[test]
fn protected_paths_are_refused() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = host.path().join("config");
    std::fs::write(&file, b"keep").unwrap();
    let env = env_for(data.path(), &[host.path()]);
    let err = quarantine(file.to_str().unwrap(), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(err.message.contains("protected_paths"), "{}", err.message);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    // Reached through a symlinked directory: still protected.
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("innocent");
    std::os::unix::fs::symlink(host.path(), &link).unwrap();
    let err = quarantine(link.join("config").to_str().unwrap(), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(file.exists());

    // The agent's own data directory and the kernel's file systems, whatever the policy says.
    let env = env_for(data.path(), &[]);
    let own = data.path().join("identity.key");
    std::fs::write(&own, b"secret").unwrap();
    for path in [
        own.to_str().unwrap(),
        "/proc/self/status",
        "/sys/kernel/uevent_seqnum",
    ] {
        let err = quarantine(path, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied, "{path}");
    }
    assert!(own.exists());
}

#[test]
fn only_regular_files_are_quarantined() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env_for(data.path(), &[]);
    let dir = host.path().join("sub");
    std::fs::create_dir(&dir).unwrap();
    let err = quarantine(dir.to_str().unwrap(), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(err.message.contains("is a directory"), "{}", err.message);
    assert!(dir.is_dir());

    let target = host.path().join("target");
    std::fs::write(&target, b"x").unwrap();
    let link = host.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = quarantine(link.to_str().unwrap(), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(err.message.contains("symbolic link"), "{}", err.message);
    assert!(target.exists() && link.is_symlink());

    let err = quarantine("/dev/null", &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(
        err.message.contains("not a regular file"),
        "{}",
        err.message
    );

    let missing = host.path().join("missing");
    let err = quarantine(missing.to_str().unwrap(), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::NotFound);
    assert!(err.message.contains("missing"), "{}", err.message);

    for bad in ["relative/file", "/tmp/../etc/passwd", "/tmp/a\0b", "/"] {
        let err = quarantine(bad, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput, "{bad:?}");
    }
}

#[test]
fn quarantine_ids_are_checked_before_use() {
    let data = tempfile::tempdir().unwrap();
    let env = env_for(data.path(), &[]);
    for bad in [
        "../../etc/passwd",
        "",
        "9F1C6E1E-5B7A-4D4B-9D0A-3C2B1A0F9E8D",
        "9f1c6e1e5b7a4d4b9d0a3c2b1a0f9e8d",
    ] {
        let err = restore(bad, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput, "{bad:?}");
    }
    let err = restore("9f1c6e1e-5b7a-4d4b-9d0a-3c2b1a0f9e8d", &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::NotFound);
    assert!(err.message.contains("9f1c6e1e-5b7a-4d4b-9d0a-3c2b1a0f9e8d"));
}

/// Rewrites an item's manifest as a crash would have left it.
fn set_state(data_dir: &Path, id: &str, state: State, sha256: Option<String>) {
    let path = data_dir.join("vault").join(format!("{id}.json"));
    let mut m: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m.state = state;
    m.sha256 = sha256;
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn a_crash_after_the_move_is_completed_by_recovery() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env_for(data.path(), &[]);
    let file = host.path().join("moved");
    let bytes = make_file(&file);
    let out = quarantine(file.to_str().unwrap(), &env).unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap();
    // As if the agent died between unlinking the origin and the final manifest.
    set_state(data.path(), id, State::Pending, None);
    let vault = Vault::open(data.path()).unwrap();
    let m = vault.read(id).unwrap();
    assert_eq!(m.state, State::Quarantined);
    assert_eq!(m.sha256, Some(sha(&bytes)));
    drop(vault);
    restore(id, &env).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

#[test]
fn a_crash_before_the_origin_was_unlinked_is_undone_by_recovery() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = host.path().join("still-here");
    let bytes = make_file(&file);
    let vault = Vault::open(data.path()).unwrap();
    // As if an older agent died right after linking the file into the vault.
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::hard_link(&file, data.path().join("vault").join(format!("{id}.bin"))).unwrap();
    let m = Manifest {
        id: id.clone(),
        original_path: file.to_str().unwrap().to_string(),
        requested_path: file.to_str().unwrap().to_string(),
        state: State::Pending,
        file: FileMeta::of(&std::fs::metadata(&file).unwrap()),
        origin_dir: None,
        sha256: None,
        quarantined_at_ms: 0,
        restored_at_ms: None,
    };
    vault.write(&m).unwrap();
    // And one that died halfway through a copy.
    let id2 = uuid::Uuid::new_v4().to_string();
    vault
        .write(&Manifest {
            id: id2.clone(),
            ..m
        })
        .unwrap();
    std::fs::write(
        data.path().join("vault").join(format!("{id2}.part")),
        b"half",
    )
    .unwrap();
    drop(vault);

    let vault = Vault::open(data.path()).unwrap();
    for id in [&id, &id2] {
        assert_eq!(vault.read(id).unwrap_err().code, TaskErrorCode::NotFound);
    }
    let left: Vec<_> = std::fs::read_dir(data.path().join("vault"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "vault not cleaned: {left:?}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "origin untouched");
}

#[test]
fn a_crash_during_restore_is_rolled_back_by_recovery() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env_for(data.path(), &[]);
    let file = host.path().join("back");
    let bytes = make_file(&file);
    let out = quarantine(file.to_str().unwrap(), &env).unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap();
    // As if the agent died after putting metadata back on the vault copy, before linking it.
    let bin = data.path().join("vault").join(format!("{id}.bin"));
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_state(data.path(), id, State::Restoring, Some(sha(&bytes)));
    let vault = Vault::open(data.path()).unwrap();
    assert_eq!(vault.read(id).unwrap().state, State::Quarantined);
    if is_root() {
        assert_eq!(
            std::fs::metadata(&bin).unwrap().mode() & 0o7777,
            0,
            "defanged again"
        );
    }
    assert!(!file.exists());
    drop(vault);
    restore(id, &env).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

//! Quarantine and restore attacked as a user on the host would: hard links to protected files,
//! a process that keeps the file open and writes after quarantine, and a restore whose origin
//! directory was swapped for a symlink or another directory.

use std::{
    io::{Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
};

use cordon_protocol::message::TaskErrorCode;
use sha2::{Digest, Sha256};

use super::*;

fn env(data_dir: &Path, protected: &[&Path]) -> ActEnv {
    super::tests::env_for(data_dir, protected)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_hard_link_to_a_protected_file_is_refused_and_defangs_nothing() {
    let protected = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let precious = protected.path().join("sshd_config");
    std::fs::write(&precious, b"keep me").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = elsewhere.path().join("looks-harmless");
    std::fs::hard_link(&precious, &link).unwrap();
    let env = env(data.path(), &[protected.path()]);

    let err = quarantine(s(&link), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied, "{}", err.message);
    assert!(err.message.contains("protected"), "{}", err.message);
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    assert_eq!(mode(&precious), 0o644, "not defanged");
    assert!(link.exists());

    // An unprotected file with another name is refused too, saying so: one name would stay.
    let a = elsewhere.path().join("a");
    std::fs::write(&a, b"payload").unwrap();
    std::fs::hard_link(&a, elsewhere.path().join("b")).unwrap();
    let err = quarantine(s(&a), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(
        err.message.contains("1 other hard links"),
        "{}",
        err.message
    );
    assert!(err.message.contains("nothing was moved"), "{}", err.message);
    assert!(a.exists() && mode(&a) != 0);

    // The suggested command is quoted for a shell: a name cannot smuggle a command into it.
    let evil = elsewhere.path().join("x; rm -rf ~ $(id)");
    std::fs::write(&evil, b"payload").unwrap();
    std::fs::hard_link(&evil, elsewhere.path().join("c")).unwrap();
    let err = quarantine(s(&evil), &env).unwrap_err();
    let suggested = err.message.split('`').nth(1).unwrap();
    let words = shlex::split(suggested).unwrap();
    assert_eq!(
        words.last().map(String::as_str),
        Some(s(&evil)),
        "{suggested}"
    );
}

/// Quarantine through a bind mount of a protected subdirectory, run in a private mount
/// namespace by [`a_bind_mounted_protected_directory_is_still_protected`].
#[test]
#[ignore = "runs inside a mount namespace made by a_bind_mounted_protected_directory_is_still_protected"]
fn bind_mount_inner() {
    let lab = crate::testing::lab();
    let lab = lab.as_path();
    let env = env(&lab.join("data"), &[&lab.join("protected")]);
    let through_mount = lab.join("mnt/unit");
    let err = quarantine(s(&through_mount), &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied, "{}", err.message);
    assert_eq!(std::fs::read(&through_mount).unwrap(), b"keep");
}

#[test]
fn a_bind_mounted_protected_directory_is_still_protected() {
    if crate::collect::effective_uid() != Some(0) {
        eprintln!("SKIPPED: bind mounts need root");
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let p = |rel: &str| lab.path().join(rel);
    std::fs::create_dir_all(p("protected/sub")).unwrap();
    std::fs::create_dir_all(p("mnt")).unwrap();
    std::fs::create_dir_all(p("data")).unwrap();
    std::fs::write(p("protected/sub/unit"), b"keep").unwrap();
    crate::testing::in_mount_namespace(
        &[(&p("protected/sub"), &p("mnt"))],
        "act::quarantine::attacks::bind_mount_inner",
        lab.path(),
    );
    assert_eq!(std::fs::read(p("protected/sub/unit")).unwrap(), b"keep");
}

#[test]
fn a_writer_holding_the_file_open_cannot_change_the_vault_copy() {
    let host = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = host.path().join("implant.bin");
    std::fs::write(&file, b"original bytes").unwrap();
    // Another process holds it open for writing, and so does this one.
    let mut holder = Command::new("sh")
        .args(["-c", "exec 3>>\"$0\"; exec sleep 100", s(&file)])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_dir(format!("/proc/{}/fd", holder.id()))
        .map(|fds| fds.count())
        .unwrap_or(0)
        < 4
        || std::fs::read_to_string(format!("/proc/{}/comm", holder.id())).unwrap_or_default()
            != "sleep\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "holder never opened the file"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut writer = std::fs::OpenOptions::new().write(true).open(&file).unwrap();

    let env = env(data.path(), &[]);
    let out = quarantine(s(&file), &env).unwrap();
    let open_by = out.before["open_by"].as_array().unwrap();
    assert!(
        open_by.iter().any(|h| h["pid"] == holder.id()),
        "the holder is named: {}",
        out.before
    );
    assert!(
        out.done.contains(&format!("pid {}", holder.id())),
        "{}",
        out.done
    );

    // The writer rewrites what it holds; the vault keeps the original bytes.
    writer.seek(SeekFrom::Start(0)).unwrap();
    writer.write_all(b"REWRITTEN AFTER").unwrap();
    writer.sync_all().unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap();
    restore(id, &env).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"original bytes");
    assert_eq!(
        out.after["sha256"],
        hex::encode(Sha256::digest(b"original bytes"))
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn restore_refuses_an_origin_directory_that_was_swapped() {
    let lab = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env(data.path(), &[]);
    let user_dir = lab.path().join("user");
    let root_only = lab.path().join("root-only");
    std::fs::create_dir(&user_dir).unwrap();
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).unwrap();

    // 1. The directory replaced by a symlink to a root-only one.
    std::fs::write(
        user_dir.join("authorized_keys"),
        b"ssh-ed25519 AAAA attacker",
    )
    .unwrap();
    let out = quarantine(s(&user_dir.join("authorized_keys")), &env).unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap().to_string();
    std::fs::rename(&user_dir, lab.path().join("user.old")).unwrap();
    std::os::unix::fs::symlink(&root_only, &user_dir).unwrap();
    let err = restore(&id, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput, "{}", err.message);
    assert!(err.message.contains("symbolic link"), "{}", err.message);
    assert!(
        err.message.contains(&id),
        "says where the file is: {}",
        err.message
    );
    assert!(
        !root_only.join("authorized_keys").exists(),
        "nothing planted"
    );

    // 2. The symlink replaced by a new directory of the same name: not the same directory.
    std::fs::remove_file(&user_dir).unwrap();
    std::fs::create_dir(&user_dir).unwrap();
    let err = restore(&id, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput, "{}", err.message);
    assert!(
        err.message.contains("not the directory it was"),
        "{}",
        err.message
    );
    assert!(!user_dir.join("authorized_keys").exists());

    // 3. The original directory back: the restore goes through, the item never lost.
    std::fs::remove_dir(&user_dir).unwrap();
    std::fs::rename(lab.path().join("user.old"), &user_dir).unwrap();
    restore(&id, &env).unwrap();
    assert_eq!(
        std::fs::read(user_dir.join("authorized_keys")).unwrap(),
        b"ssh-ed25519 AAAA attacker"
    );
}

#[test]
fn restore_refuses_an_origin_directory_whose_owner_changed() {
    if crate::collect::effective_uid() != Some(0) {
        eprintln!("SKIPPED: changing a directory's owner needs root");
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = env(data.path(), &[]);
    let dir = lab.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), b"x").unwrap();
    let out = quarantine(s(&dir.join("f")), &env).unwrap();
    let id = out.after["quarantine_id"].as_str().unwrap().to_string();
    // Given to an unprivileged user (who could then have swapped its contents).
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = restore(&id, &env).unwrap_err();
    assert!(err.message.contains("owner"), "{}", err.message);
    assert!(!dir.join("f").exists());
}

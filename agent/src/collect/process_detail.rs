//! One process in detail (`TaskKind::ProcessDetail`): what the list says about it, plus its
//! working directory, open descriptors, children and, on request, its environment.

use std::{path::Path, time::Instant};

use cordon_protocol::{
    collect::ProcessDetail,
    message::{TaskError, TaskErrorCode},
};

use super::{
    io_error,
    process::{read_process, required_boot_time_ms, split_nul, CPU_SAMPLES},
    procfs::{self, parse_stat, ReadBuf},
    task_error, IdNames,
};

/// Most descriptors listed; a process can hold millions.
const MAX_OPEN_FILES: usize = 10_000;

/// One process: its info, cwd, open descriptors, children and, when `environment` is set, its
/// environment. A pid that is not a running process (or is a thread) → `NotFound`. What the
/// agent may not read (another user's descriptors when not root) is left empty rather than
/// failing the task.
pub fn detail(pid: u32, environment: bool) -> Result<ProcessDetail, TaskError> {
    let not_found = || {
        task_error(
            TaskErrorCode::NotFound,
            format!("no process with pid {pid}"),
        )
    };
    let dir = format!("/proc/{pid}");
    let mut buf = ReadBuf::new();
    // /proc/TID exists for every thread too, though it is not listed; a thread is not a process.
    let status = buf
        .read(&format!("{dir}/status"))
        .map_err(|_| not_found())?;
    let tgid = String::from_utf8_lossy(status)
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:").map(|v| v.trim().parse::<u32>()));
    if !matches!(tgid, Some(Ok(t)) if t == pid) {
        return Err(not_found());
    }
    let boot_ms = required_boot_time_ms()?;
    let raw = read_process(pid, boot_ms, &mut buf).ok_or_else(not_found)?;
    let mut info = raw.info;
    info.user = info.uid.and_then(|u| IdNames::load().user(u));
    if let Ok(guard) = CPU_SAMPLES.lock() {
        if let Some(prev) = guard.as_ref() {
            info.cpu_percent = prev.percent((pid, info.start_time_ms), raw.cpu_ms, Instant::now());
        }
    }

    let environment = if environment {
        let path = format!("{dir}/environ");
        let env = buf.read(&path).map_err(|e| {
            let err = io_error(Path::new(&path), &e);
            task_error(err.code, format!("pid {pid}: {}", err.message))
        })?;
        Some(split_nul(env).into_iter().map(redact).collect())
    } else {
        None
    };
    Ok(ProcessDetail {
        process: info,
        cwd: std::fs::read_link(format!("{dir}/cwd"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        open_files: open_files(&dir),
        environment,
        children: children(pid),
    })
}

/// Pids whose parent is `pid`, ascending.
fn children(pid: u32) -> Vec<u32> {
    let Ok(pids) = procfs::pids() else {
        return Vec::new();
    };
    procfs::parallel_map(&pids, ReadBuf::new, |&candidate, buf| {
        let stat = parse_stat(buf.read(&format!("/proc/{candidate}/stat")).ok()?)?;
        (stat.ppid == pid).then_some(candidate)
    })
}

/// Targets of `/proc/PID/fd/*` in descriptor order, at most [`MAX_OPEN_FILES`] (then a last line
/// says how many more there were).
fn open_files(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("{dir}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let more = fds.len().saturating_sub(MAX_OPEN_FILES);
    let mut out: Vec<String> = fds
        .iter()
        .take(MAX_OPEN_FILES)
        // A descriptor closed since the directory was read is simply gone.
        .filter_map(|fd| std::fs::read_link(format!("{dir}/fd/{fd}")).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    if more > 0 {
        out.push(format!("(… {more} more descriptors not listed)"));
    }
    out
}

/// What a secret variable's value is shown as.
const REDACTED: &str = "[redacted by the agent: the name says it holds a secret]";

/// `NAME=value`, with the value withheld when the name says it is a secret (tokens, passwords,
/// passphrases, keys): a process's environment may hold a responder's key passphrase or an
/// API token, which must not leave the host through a collection.
fn redact(var: String) -> String {
    const SECRET_WORDS: &[&str] = &[
        "TOKEN",
        "PASSPHRASE",
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "PRIVATE_KEY",
        "API_KEY",
        "CREDENTIAL",
    ];
    let Some((name, _)) = var.split_once('=') else {
        return var;
    };
    let upper = name.to_ascii_uppercase();
    if SECRET_WORDS.iter().any(|w| upper.contains(w)) {
        format!("{name}={REDACTED}")
    } else {
        var
    }
}

#[cfg(test)]
mod tests {
    use crate::collect::process::{process_start_time_ms, testing::Sleeper};

    use super::*;

    #[test]
    fn secrets_in_environments_are_redacted_by_name() {
        assert_eq!(redact("PATH=/usr/bin".into()), "PATH=/usr/bin");
        assert_eq!(redact("CORDON_TEST_ENV=x".into()), "CORDON_TEST_ENV=x");
        for secret in [
            "CORDON_KEY_PASSPHRASE=hunter2",
            "CORDON_TOKEN=cordon_api_abc",
            "AWS_SECRET_ACCESS_KEY=k",
            "db_password=p",
            "GITHUB_TOKEN=t",
        ] {
            let shown = redact(secret.into());
            assert!(shown.ends_with(REDACTED), "{shown}");
            let value = secret.split_once('=').unwrap().1;
            assert!(!shown.ends_with(&format!("={value}")), "{shown}");
        }
    }

    #[test]
    fn detail_shows_cwd_environment_children_and_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let child = Sleeper::spawn("cordon-detail-marker", dir.path());

        let d = detail(child.pid(), true).unwrap();
        assert_eq!(d.process.pid, child.pid());
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(d.cwd.as_deref(), Some(cwd.to_str().unwrap()));
        let env = d.environment.expect("asked for");
        assert!(
            env.iter().any(|e| e == "CORDON_TEST_ENV=detail-env-marker"),
            "{env:?}"
        );
        assert_eq!(
            detail(child.pid(), false).unwrap().environment,
            None,
            "only on request"
        );

        // The test process: its child, and a file it holds open.
        let held = tempfile::NamedTempFile::new().unwrap();
        let me = detail(std::process::id(), false).unwrap();
        assert!(me.children.contains(&child.pid()), "{:?}", me.children);
        let held_path = std::fs::canonicalize(held.path()).unwrap();
        assert!(
            me.open_files.iter().any(|f| Path::new(f) == held_path),
            "{:?} not in {:?}",
            held_path,
            me.open_files
        );
    }

    #[test]
    fn a_pid_that_is_not_a_process_is_not_found() {
        let err = detail(u32::MAX, false).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::NotFound);
        assert_eq!(err.message, format!("no process with pid {}", u32::MAX));
        assert_eq!(process_start_time_ms(u32::MAX), None);

        // A thread of this process has a /proc entry but is not a process.
        let _worker = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let me = std::process::id();
        let tid = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&t| t != me)
            .expect("a second thread");
        assert_eq!(
            detail(tid, false).unwrap_err().code,
            TaskErrorCode::NotFound
        );
    }
}

//! Processes (`TaskKind::Processes`), read straight from `/proc`; one process in detail is in
//! [`super::process_detail`], and the start time the kill action checks is here.
//!
//! Not through `sysinfo`, although it can list processes: it cannot give the start time to the
//! clock tick (kill binds a process by pid *and* start time, so whole seconds are not enough) nor
//! the command line byte for byte (it trims arguments and drops empty ones), so using it meant
//! reading `stat` twice, plus `statm`, with every `stat` file held open. Reading `stat`,
//! `status`, `cmdline` and the `exe` link once each, as `ps` does, on a few threads, took the
//! 1,000-process list from 56 ms to 18 ms (`benches/collect.rs`; budget in DESIGN.md).

use std::{
    collections::HashMap, fs::File, os::unix::fs::MetadataExt, path::Path, sync::Mutex,
    time::Instant,
};

use cordon_protocol::{
    collect::{ProcessInfo, ProcessList},
    message::{TaskError, TaskErrorCode},
};

use super::{
    cancel::Cancel,
    file::sha256_reader,
    gate::Index,
    io_error,
    procfs::{self, parse_stat, ReadBuf, Stat},
    task_error, IdNames,
};

/// The boot time in ms since the epoch, from `btime` in `/proc/stat`. Whole seconds, but the same
/// value every time it is read (unlike "now − uptime"), so start times derived from it are stable.
pub fn boot_time_ms() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    let secs: i64 = line["btime ".len()..].trim().parse().ok()?;
    Some(secs.saturating_mul(1000))
}

/// [`boot_time_ms`], or an `Internal` error: without it no start time can be given.
pub(super) fn required_boot_time_ms() -> Result<i64, TaskError> {
    boot_time_ms().ok_or_else(|| {
        task_error(
            TaskErrorCode::Internal,
            "/proc/stat: no readable boot time (btime)",
        )
    })
}

/// When process `pid` started, in ms since the epoch, to the clock tick (10 ms). With the pid this
/// identifies a process over time; the kill action compares it before signalling. `None` if the
/// process does not exist (or `/proc` cannot be read).
pub fn process_start_time_ms(pid: u32) -> Option<i64> {
    let boot_ms = boot_time_ms()?;
    let mut buf = ReadBuf::new();
    let stat = parse_stat(buf.read(&format!("/proc/{pid}/stat")).ok()?)?;
    Some(stat.start_time_ms(boot_ms))
}

/// Splits NUL-terminated strings (cmdline, environ), argument for argument: an empty one stays,
/// and a missing final NUL is tolerated.
pub(super) fn split_nul(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The real and effective uid and the resident set (`VmRSS`, absent for kernel threads) from
/// `/proc/PID/status`.
fn parse_status(status: &[u8]) -> (Option<(u32, u32)>, u64) {
    let text = String::from_utf8_lossy(status);
    let mut uids = None;
    let mut rss_kib = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            let mut ids = v.split_ascii_whitespace().map(|x| x.parse::<u32>().ok());
            if let (Some(Some(real)), Some(Some(effective))) = (ids.next(), ids.next()) {
                uids = Some((real, effective));
            }
        } else if let Some(v) = line.strip_prefix("VmRSS:") {
            rss_kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    (uids, rss_kib)
}

/// One process as read from `/proc`, before user names and CPU percentages are filled in.
pub(super) struct Raw {
    pub info: ProcessInfo,
    pub cpu_ms: u64,
}

/// Reads one process; `None` if it exited meanwhile. Fields the agent may not read (another
/// user's `exe` when not root) stay empty.
pub(super) fn read_process(pid: u32, boot_ms: i64, buf: &mut ReadBuf) -> Option<Raw> {
    let stat: Stat = parse_stat(buf.read(&format!("/proc/{pid}/stat")).ok()?)?;
    let (uids, rss_kib) = match buf.read(&format!("/proc/{pid}/status")) {
        Ok(status) => parse_status(status),
        Err(_) => (None, 0),
    };
    // Kernel threads have neither a command line nor an executable: skip two reads each.
    let (cmdline, exe) = if stat.is_kernel_thread() {
        (Vec::new(), None)
    } else {
        let cmdline = buf
            .read(&format!("/proc/{pid}/cmdline"))
            .map(split_nul)
            .unwrap_or_default();
        // Kept as the kernel says it, " (deleted)" included: a running binary deleted from
        // disk is a classic sign of malware.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        (cmdline, exe)
    };
    Some(Raw {
        cpu_ms: stat.cpu_ms(),
        info: ProcessInfo {
            pid,
            ppid: (stat.ppid != 0).then_some(stat.ppid),
            start_time_ms: stat.start_time_ms(boot_ms),
            name: stat.comm,
            exe,
            cmdline,
            // The effective uid: the privileges the process has, and what `ps` shows as USER.
            uid: uids.map(|(_, effective)| effective),
            user: None,
            memory_bytes: rss_kib.saturating_mul(1024),
            cpu_percent: 0.0,
            exe_sha256: None,
        },
    })
}

/// CPU time of every process at the previous listing, so a listing can report use since then
/// without the agent sampling anything while idle.
pub(super) struct CpuSamples {
    at: Instant,
    /// (pid, start_time_ms) → accumulated CPU time in ms.
    cpu_ms: HashMap<(u32, i64), u64>,
}

pub(super) static CPU_SAMPLES: Mutex<Option<CpuSamples>> = Mutex::new(None);

impl CpuSamples {
    /// Percent of one core since this sample; 0 for a process it did not see.
    pub(super) fn percent(&self, key: (u32, i64), cpu_ms: u64, now: Instant) -> f32 {
        let elapsed_ms = now.duration_since(self.at).as_millis();
        match self.cpu_ms.get(&key) {
            Some(&before) if elapsed_ms > 0 => {
                (cpu_ms.saturating_sub(before) as f64 * 100.0 / elapsed_ms as f64) as f32
            }
            _ => 0.0,
        }
    }
}

/// SHA-256 of running executables, by (device, inode) of the file: a thousand workers share one
/// binary, hashed once.
pub(super) struct ExeHashes<'i> {
    index: &'i Index,
    cancel: &'i Cancel,
    seen: HashMap<(u64, u64), Option<String>>,
}

impl<'i> ExeHashes<'i> {
    /// Hashes that the gate's `index` decides on.
    pub(super) fn new(index: &'i Index, cancel: &'i Cancel) -> Self {
        Self {
            index,
            cancel,
            seen: HashMap::new(),
        }
    }

    /// Hashes through `/proc/PID/exe`, which works even when the file was deleted or replaced on
    /// disk. Unreadable (kernel thread, no permission) or denied by the gate (an executable that
    /// is, or lies in, a denied file or directory) → `None`.
    pub(super) fn hash(&mut self, pid: u32) -> Option<String> {
        let mut file = File::open(format!("/proc/{pid}/exe")).ok()?;
        let meta = file.metadata().ok()?;
        if self.cancel.is_cancelled() || self.index.check_identity(&meta).is_err() {
            return None;
        }
        self.seen
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| {
                sha256_reader(&mut file, self.cancel)
                    .ok()
                    .map(|(_, hex)| hex)
            })
            .clone()
    }
}

/// Lists every process, sorted by pid; with `hash_exes`, the SHA-256 of each executable the
/// gate's `index` allows.
pub fn list(hash_exes: bool, index: &Index, cancel: &Cancel) -> Result<ProcessList, TaskError> {
    let pids = procfs::pids().map_err(|e| io_error(Path::new("/proc"), &e))?;
    let boot_ms = required_boot_time_ms()?;
    let raws = procfs::parallel_map(&pids, ReadBuf::new, |&pid, buf| {
        read_process(pid, boot_ms, buf)
    });
    let now = Instant::now();
    let names = IdNames::load();
    // Taken, not copied: this listing's samples replace them.
    let previous = CPU_SAMPLES.lock().ok().and_then(|mut g| g.take());
    let mut hashes = ExeHashes::new(index, cancel);
    let mut cpu_ms = HashMap::with_capacity(raws.len());
    let processes: Vec<ProcessInfo> = raws
        .into_iter()
        .map(|raw| {
            let mut info = raw.info;
            let key = (info.pid, info.start_time_ms);
            info.user = info.uid.and_then(|u| names.user(u));
            info.cpu_percent = previous
                .as_ref()
                .map_or(0.0, |prev| prev.percent(key, raw.cpu_ms, now));
            if hash_exes {
                info.exe_sha256 = hashes.hash(info.pid);
            }
            cpu_ms.insert(key, raw.cpu_ms);
            info
        })
        .collect();
    if let Ok(mut guard) = CPU_SAMPLES.lock() {
        *guard = Some(CpuSamples { at: now, cpu_ms });
    }
    Ok(ProcessList {
        collected_at_ms: crate::now_ms(),
        processes,
    })
}

/// What the process tests share: a child to look at.
#[cfg(test)]
pub(crate) mod testing {
    use std::{os::unix::process::CommandExt, path::Path, process::Command, time::Instant};

    /// A `sleep 30` whose argv[0] is distinctive (and has spaces sysinfo would have trimmed);
    /// killed when dropped.
    pub(crate) struct Sleeper(pub std::process::Child);

    impl Sleeper {
        pub fn spawn(marker: &str, cwd: &Path) -> Self {
            let child = Command::new("sleep")
                .arg0(marker)
                .arg("30")
                .current_dir(cwd)
                .env("CORDON_TEST_ENV", "detail-env-marker")
                .spawn()
                .unwrap();
            wait_for_exec(child.id());
            Self(child)
        }

        pub fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// spawn returns once the child is inside execve, a moment before the kernel has set up
    /// its new command line and environment.
    pub(crate) fn wait_for_exec(pid: u32) {
        let environ = format!("/proc/{pid}/environ");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read(&environ).map_or(true, |e| e.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::{Path, PathBuf},
        process::Command,
    };

    use sha2::{Digest, Sha256};

    use super::{testing::*, *};

    #[test]
    fn a_spawned_child_is_listed_with_pid_ppid_cmdline_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!(" cordon-list-marker {} ", std::process::id());
        let spawned_at = crate::now_ms();
        let child = Sleeper::spawn(&marker, dir.path());

        let list = list(true, &Index::none(), &Cancel::never()).unwrap();
        assert!(
            list.processes.windows(2).all(|w| w[0].pid < w[1].pid),
            "sorted by pid"
        );
        let found = list
            .processes
            .iter()
            .find(|p| p.pid == child.pid())
            .unwrap_or_else(|| panic!("pid {} not listed", child.pid()));
        assert_eq!(found.ppid, Some(std::process::id()));
        assert_eq!(
            found.cmdline,
            vec![marker.clone(), "30".to_string()],
            "argv exactly"
        );
        assert_eq!(found.name, "sleep");
        assert!(
            (found.start_time_ms - spawned_at).abs() < 5_000,
            "start {} vs spawned {spawned_at}",
            found.start_time_ms
        );
        assert_eq!(
            process_start_time_ms(child.pid()),
            Some(found.start_time_ms),
            "the kill action sees the same start time as the listing"
        );
        assert_eq!(found.uid, effective_uid_of_self());
        assert!(found.user.is_some(), "the test user has a passwd entry");
        assert!(found.memory_bytes > 0);

        // hash_exes: the SHA-256 of the binary actually running.
        let exe = found.exe.as_deref().expect("exe readable");
        let expected = hex::encode(Sha256::digest(std::fs::read(exe).unwrap()));
        assert_eq!(found.exe_sha256.as_deref(), Some(expected.as_str()));
        let unhashed = super::list(false, &Index::none(), &Cancel::never()).unwrap();
        assert!(unhashed.processes.iter().all(|p| p.exe_sha256.is_none()));
    }

    fn effective_uid_of_self() -> Option<u32> {
        crate::collect::effective_uid()
    }

    #[test]
    fn a_reaped_process_has_no_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let child = Sleeper::spawn("cordon-reaped-marker", dir.path());
        let pid = child.pid();
        assert!(process_start_time_ms(pid).is_some());
        drop(child);
        assert_eq!(process_start_time_ms(pid), None);
    }

    #[test]
    fn a_deleted_executable_is_flagged_and_still_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("cordon-deleted-sleep");
        let sleep = which_sleep();
        std::fs::copy(&sleep, &copy).unwrap();
        let expected = hex::encode(Sha256::digest(std::fs::read(&copy).unwrap()));
        let mut child = spawn_fresh_copy(&copy);
        wait_for_exec(child.id());
        std::fs::remove_file(&copy).unwrap();
        // What `list(true)` does for each process, for this one only: hashing every binary on
        // the host takes seconds in an unoptimised test build.
        let raw = read_process(child.id(), 0, &mut ReadBuf::new()).unwrap();
        let hash = ExeHashes::new(&Index::none(), &Cancel::never()).hash(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let exe = raw.info.exe.unwrap();
        assert!(exe.ends_with("cordon-deleted-sleep (deleted)"), "{exe}");
        assert_eq!(hash.as_deref(), Some(expected.as_str()));
    }

    /// Executing a file just written can fail with ETXTBSY while another test thread's
    /// fork still holds the write descriptor inherited from the copy; retry briefly.
    fn spawn_fresh_copy(path: &Path) -> std::process::Child {
        for _ in 0..50 {
            match Command::new(path).arg("30").spawn() {
                Ok(child) => return child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("spawn {}: {e}", path.display()),
            }
        }
        panic!("{} stayed busy", path.display())
    }

    fn which_sleep() -> PathBuf {
        ["/usr/bin/sleep", "/bin/sleep"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("sleep installed")
    }

    #[test]
    fn kernel_strings_split_argument_for_argument() {
        assert_eq!(split_nul(b"a\0\0 b \0"), vec!["a", "", " b "]);
        assert_eq!(split_nul(b"no-final-nul"), vec!["no-final-nul"]);
        assert!(split_nul(b"").is_empty());
        let status = b"Name:\tsleep\nUid:\t1000\t0\t0\t0\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_status(status), (Some((1000, 0)), 1234));
        assert_eq!(parse_status(b"Name:\tkthreadd\n"), (None, 0));
    }
}

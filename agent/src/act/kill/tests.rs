//! Kill tests on real processes: `sleep`s and a shell with a child, spawned by the test.

use std::{
    os::unix::process::ExitStatusExt,
    process::{Child, Command},
    sync::Arc,
};

use super::*;
use crate::{
    collect::{process::testing::wait_for_exec, procfs},
    policy::Policy,
};

fn env_with(protected: &[&str]) -> ActEnv {
    env_protecting(protected, &[])
}

fn env_protecting(protected: &[&str], users: &[&str]) -> ActEnv {
    ActEnv {
        data_dir: std::env::temp_dir(),
        agent_id: "agent-test".into(),
        controller: "127.0.0.1:1".into(),
        agent_pid: std::process::id(),
        policy: Arc::new(Policy {
            protected_processes: protected.iter().map(|s| s.to_string()).collect(),
            protected_users: users.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        }),
    }
}

/// A child process, killed and reaped when dropped whatever the test did.
struct Spawned(Child);

impl Spawned {
    fn new(program: &str, args: &[&str]) -> Self {
        // A program copied a moment ago may still be open for writing in a child another test
        // thread forked meanwhile (ETXTBSY): try again shortly.
        let mut tries = 0;
        let child = loop {
            match Command::new(program).args(args).spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(POLL);
                }
                other => break other.unwrap(),
            }
        };
        wait_for_exec(child.id());
        Self(child)
    }

    /// Waits until the process calls itself `comm` (it renames itself, or execs).
    fn wait_for_comm(&self, comm: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_stat(self.pid()).map(|(s, _)| s.comm).as_deref() != Some(comm) {
            assert!(
                Instant::now() < deadline,
                "pid {} never became {comm}",
                self.pid()
            );
            std::thread::sleep(POLL);
        }
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn start(&self) -> i64 {
        process_start_time_ms(self.pid()).unwrap()
    }

    fn is_alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_of(pid: u32) -> Option<u8> {
    read_stat(pid).map(|(_, s)| s)
}

#[test]
fn kill_ends_the_process_and_reports_it() {
    let mut sleep = Spawned::new("sleep", &["100"]);
    let (pid, start) = (sleep.pid(), sleep.start());
    let out = kill(pid, start, false, &env_with(&[])).unwrap();
    assert_eq!(out.done, format!("killed pid {pid} (sleep)"));
    assert_eq!(out.before["pid"], pid);
    assert_eq!(out.before["name"], "sleep");
    assert_eq!(out.before["start_time_ms"], start);
    assert_eq!(out.before["cmdline"], json!(["sleep", "100"]));
    assert_eq!(out.after["running"], false);
    let status = sleep.0.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn a_wrong_start_time_is_refused_and_the_process_lives() {
    let mut sleep = Spawned::new("sleep", &["100"]);
    let (pid, start) = (sleep.pid(), sleep.start());
    let err = kill(pid, start - 10, false, &env_with(&[])).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(err.message.contains(&start.to_string()), "{}", err.message);
    assert!(
        err.message.contains(&(start - 10).to_string()),
        "{}",
        err.message
    );
    assert!(err.message.contains("recycled"), "{}", err.message);
    std::thread::sleep(Duration::from_millis(50));
    assert!(sleep.is_alive());
}

#[test]
fn pid_1_the_agent_and_its_ancestors_are_refused() {
    let env = env_with(&[]);
    let init_start = process_start_time_ms(1).unwrap();
    let err = kill(1, init_start, false, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(err.message.contains("pid 1"), "{}", err.message);

    let me = std::process::id();
    let err = kill(me, process_start_time_ms(me).unwrap(), true, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(err.message.contains("agent itself"), "{}", err.message);

    let parent = read_stat(me).unwrap().0.ppid;
    if parent > 1 {
        let start = process_start_time_ms(parent).unwrap();
        let err = kill(parent, start, false, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
        assert!(err.message.contains("ancestor"), "{}", err.message);
    }
}

/// Whether processes this test starts run as root or a system account, the only ones a
/// protected executable shields.
fn shielded_runner() -> bool {
    crate::collect::effective_uid().is_some_and(|uid| uid < 1000)
}

#[test]
fn a_protected_process_is_refused_and_lives() {
    if !shielded_runner() {
        eprintln!("SKIPPED: protected executables shield root and system accounts only");
        return;
    }
    let mut sleep = Spawned::new("sleep", &["100"]);
    let err = kill(sleep.pid(), sleep.start(), false, &env_with(&["sleep"])).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(err.message.contains("protected"), "{}", err.message);
    assert!(err.message.contains(&system_sleep()), "{}", err.message);
    std::thread::sleep(Duration::from_millis(50));
    assert!(sleep.is_alive());
}

#[test]
fn a_missing_pid_is_not_found() {
    // Above any pid_max the kernel allows (2^22).
    let err = kill(1 << 30, 0, false, &env_with(&[])).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::NotFound);
    assert!(err.message.contains(&(1u32 << 30).to_string()));
}

/// `sh -c 'sleep 100 & wait'` and the pid and start time of its `sleep`.
fn shell_with_child() -> (Spawned, u32, i64) {
    let sh = Spawned::new("sh", &["-c", "sleep 100 & wait"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let child = procfs::pids()
            .unwrap()
            .into_iter()
            .find(|&p| read_stat(p).is_some_and(|(s, _)| s.ppid == sh.pid() && s.comm == "sleep"));
        if let Some(child) = child {
            wait_for_exec(child);
            return (sh, child, process_start_time_ms(child).unwrap());
        }
        assert!(Instant::now() < deadline, "sh never started its sleep");
        std::thread::sleep(POLL);
    }
}

#[test]
fn a_tree_kill_ends_the_children_too() {
    let (mut sh, child, child_start) = shell_with_child();
    let out = kill(sh.pid(), sh.start(), true, &env_with(&[])).unwrap();
    assert!(out.done.ends_with("and its 1 descendant"), "{}", out.done);
    assert_eq!(out.before["descendants"][0]["pid"], child);
    assert_eq!(out.before["descendants"][0]["name"], "sleep");
    assert_eq!(out.after["descendants_running"], 0);
    assert_eq!(sh.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    // The sleep is gone, or a zombie its new parent has not reaped yet.
    let still = process_start_time_ms(child) == Some(child_start);
    assert!(!still || matches!(state_of(child), Some(b'Z' | b'X')));
}

/// The `sleep` program's real path (what a bare `sleep` protects).
fn system_sleep() -> String {
    protect::SYSTEM_DIRS
        .iter()
        .map(|d| format!("{d}/sleep"))
        .find(|p| std::path::Path::new(p).is_file())
        .expect("sleep in a system directory")
}

/// A copy of `sleep` named `name` in a fresh temp dir: the same program under a name it chose.
fn impostor(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(system_sleep(), &path).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn a_process_named_like_a_protected_one_is_not_protected() {
    // A copy of sleep called `sleep`: its comm and argv[0] are `sleep`, its file is not.
    let (_dir, fake) = impostor("sleep");
    let mut renamed = Spawned::new(&fake, &["100"]);
    assert_eq!(read_stat(renamed.pid()).unwrap().0.comm, "sleep");
    let out = kill(renamed.pid(), renamed.start(), false, &env_with(&["sleep"])).unwrap();
    assert!(out.done.starts_with("killed"), "{}", out.done);
    assert!(!renamed.is_alive());

    // A process that writes a protected name into its own comm.
    let mut named = Spawned::new("sh", &["-c", RENAME_AND_WAIT, "sh", "sshd"]);
    named.wait_for_comm("sshd");
    kill(
        named.pid(),
        named.start(),
        false,
        &env_with(&["sshd", "sleep"]),
    )
    .unwrap();
    assert!(!named.is_alive());
}

/// A shell script that renames its own process to `$1` and then waits.
const RENAME_AND_WAIT: &str = "printf %s \"$1\" > /proc/$$/comm; while :; do sleep 1; done";

#[test]
fn a_process_running_a_protected_executable_is_refused_whatever_it_is_called() {
    if !shielded_runner() {
        eprintln!("SKIPPED: protected executables shield root and system accounts only");
        return;
    }
    // The shell renames itself after it started: it still runs the protected file.
    let mut sh = Spawned::new("sh", &["-c", RENAME_AND_WAIT, "sh", "harmless"]);
    sh.wait_for_comm("harmless");
    for protected in ["sh", "/bin/sh"] {
        let err = kill(sh.pid(), sh.start(), false, &env_with(&[protected])).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
        assert!(
            err.message.contains("protected executable"),
            "{}",
            err.message
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(sh.is_alive());
}

#[test]
fn a_process_of_a_protected_user_is_refused() {
    if crate::collect::effective_uid() != Some(0) {
        eprintln!("SKIPPED: starting a process as another user needs root");
        return;
    }
    let mut sleep = Spawned::new(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "100",
        ],
    );
    sleep.wait_for_comm("sleep");
    for user in ["65534", "nobody"] {
        let err = kill(
            sleep.pid(),
            sleep.start(),
            false,
            &env_protecting(&[], &[user]),
        )
        .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
        assert!(err.message.contains("protected user"), "{}", err.message);
    }
    assert!(sleep.is_alive());
    // The same unprivileged user running a protected program gets no shield from it.
    kill(sleep.pid(), sleep.start(), false, &env_with(&["sleep"])).unwrap();
    assert!(!sleep.is_alive());
}

#[test]
fn a_tree_kill_spares_protected_members_names_them_and_kills_the_rest() {
    if !shielded_runner() {
        eprintln!("SKIPPED: protected executables shield root and system accounts only");
        return;
    }
    let (mut sh, child, _) = shell_with_child();
    let out = kill(sh.pid(), sh.start(), true, &env_with(&["sleep"])).unwrap();
    assert_eq!(sh.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(out.before["spared"][0]["pid"], child, "{}", out.before);
    let why = out.before["spared"][0]["why"].as_str().unwrap();
    assert!(why.contains("protected executable"), "{why}");
    assert!(
        out.done.contains(&format!("spared pid {child} (sleep)")),
        "{}",
        out.done
    );
    assert_eq!(out.after["descendants_spared"], 1);
    // The spared child runs on, never stopped.
    assert!(
        matches!(state_of(child), Some(b'S' | b'R')),
        "{:?}",
        state_of(child)
    );
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child as i32).unwrap(),
        Signal::KILL,
    );

    // A child that only calls itself `sleep` blocks nothing and dies with its tree.
    let (_dir, fake) = impostor("sleep");
    let mut sh = Spawned::new("sh", &["-c", &format!("{fake} 100 & wait")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procfs::pids()
        .unwrap()
        .into_iter()
        .any(|p| read_stat(p).is_some_and(|(s, _)| s.ppid == sh.pid() && s.comm == "sleep"))
    {
        assert!(Instant::now() < deadline, "sh never started its sleep");
        std::thread::sleep(POLL);
    }
    let out = kill(sh.pid(), sh.start(), true, &env_with(&["sleep"])).unwrap();
    assert!(out.done.ends_with("and its 1 descendant"), "{}", out.done);
    assert_eq!(out.after["descendants_spared"], 0);
    assert!(!sh.is_alive());
}

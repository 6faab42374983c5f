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
    ActEnv {
        data_dir: std::env::temp_dir(),
        agent_id: "agent-test".into(),
        controller: "127.0.0.1:1".into(),
        agent_pid: std::process::id(),
        policy: Arc::new(Policy {
            protected_processes: protected.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        }),
    }
}

/// A child process, killed and reaped when dropped whatever the test did.
struct Spawned(Child);

impl Spawned {
    fn new(program: &str, args: &[&str]) -> Self {
        let child = Command::new(program).args(args).spawn().unwrap();
        wait_for_exec(child.id());
        Self(child)
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

#[test]
fn a_protected_process_is_refused_and_lives() {
    let mut sleep = Spawned::new("sleep", &["100"]);
    let err = kill(sleep.pid(), sleep.start(), false, &env_with(&["sleep"])).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(err.message.contains("protected"), "{}", err.message);
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

#[test]
fn a_tree_with_a_protected_member_is_refused_and_resumed() {
    let (mut sh, child, _) = shell_with_child();
    let err = kill(sh.pid(), sh.start(), true, &env_with(&["sleep"])).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    assert!(
        err.message.contains(&format!("pid {child} (sleep)")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("nothing was killed"),
        "{}",
        err.message
    );
    assert!(sh.is_alive());
    // Continued, not left stopped.
    let deadline = Instant::now() + Duration::from_secs(2);
    while state_of(sh.pid()) == Some(b'T') && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    assert_ne!(state_of(sh.pid()), Some(b'T'));
    assert_ne!(state_of(child), Some(b'T'));
}

#[test]
fn long_protected_names_cover_the_kernels_cut() {
    let protected = vec!["cordon-controller-main".to_string()];
    assert!(is_protected("cordon-controll", &protected));
    assert!(!is_protected("cordon", &protected));
    assert!(is_protected("sshd", &["sshd".to_string()]));
    assert!(!is_protected("sshd2", &["sshd".to_string()]));
}

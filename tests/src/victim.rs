//! A throwaway process for containment tests to act on.

use std::{
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use cordon_protocol::action::Action;

/// `sleep 600.<test process id>`, whose command line names this test run; killed and reaped
/// when dropped, whatever happened.
pub struct Victim {
    child: Child,
    arg: String,
}

impl Victim {
    /// Starts one.
    pub fn spawn() -> Self {
        let arg = format!("600.{}", std::process::id());
        let child = Command::new("sleep")
            .arg(&arg)
            .spawn()
            .expect("spawn sleep");
        Victim { child, arg }
    }

    /// One that ignores SIGTERM (the disposition survives the `exec` into `sleep`).
    pub fn spawn_deaf_to_term() -> Self {
        let arg = format!("600.{}", std::process::id());
        let child = Command::new("sh")
            .args(["-c", &format!("trap '' TERM; exec sleep {arg}")])
            .spawn()
            .expect("spawn sh");
        Victim { child, arg }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its pid, as a command-line argument.
    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    /// What it was given to sleep (`600.<test process id>`): its command line is `sleep <arg>`.
    pub fn arg(&self) -> &str {
        &self.arg
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// How it ended, if it ends within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it ends within `timeout`.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        self.exit_within(timeout).is_some()
    }

    /// Waits for it to end, however long that takes.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait")
    }

    /// A kill of this process alone, bound to its start time.
    pub fn kill_action(&self) -> Action {
        Action::Kill {
            pid: self.pid(),
            start_time_ms: cordon_agent::collect::process::process_start_time_ms(self.pid())
                .expect("start time of the spawned process"),
            tree: false,
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

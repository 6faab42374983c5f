//! A CLI command left running in the background (a follow mode), read line by line as it
//! prints, without blocking the test's async workers (the controller runs on them).

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// A running command whose stdout lines and stderr are collected as they come.
pub struct Follower {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    /// Spawns `command` (`what` names it in failures) with its output piped here.
    pub fn spawn(mut command: Command, what: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .expect("stderr sink")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            what: what.to_owned(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits (up to `limit`) until its stderr holds `needle`.
    pub async fn stderr_with(&mut self, limit: Duration, needle: &str) {
        let deadline = Instant::now() + limit;
        while !self.stderr().contains(needle) {
            if Instant::now() >= deadline {
                self.fail(&format!("never wrote {needle:?} to stderr"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -INT {}: {e}", self.what));
        assert!(sent.success(), "kill -INT {}", self.what);
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr sink").clone()
    }

    /// True while the command has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (up to `limit`) for a stdout line for which `wanted` holds and returns it;
    /// panics with everything it printed if none comes.
    pub async fn line_where(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left).await {
                Some(line) if wanted(&line) => return line,
                Some(_) => {}
                None => self.fail("printed no such line"),
            }
        }
    }

    /// The next stdout line, if one comes within `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(line) = self.lines.try_recv() {
                self.seen.push(line.clone());
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `limit`) for the command to exit; its status and every stdout line.
    pub async fn exit_within(&mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader thread ends at end of file, so every line is in the channel.
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.seen.extend(self.lines.try_iter());
                return (status, self.seen.clone());
            }
            if Instant::now() >= deadline {
                self.fail("did not exit in time");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        self.seen.extend(self.lines.try_iter());
        panic!(
            "{} {why}\nstdout: {:?}\nstderr: {}",
            self.what,
            self.seen,
            self.stderr()
        );
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

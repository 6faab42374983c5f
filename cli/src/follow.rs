//! What every follow mode (`watch`, `events`, `tasks show --wait`, `actions show --wait`,
//! `hunt`) does when the controller goes away: says so once per try on stderr, waits a little
//! longer each time (from half a second up to half a minute), and carries on where it was once
//! the controller answers again. Only an unreachable controller is tried again; any answer it
//! gives (a refusal, a missing thing) ends the follow as it would any command.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{client::Client, CliError};

/// The waits between tries to reach the controller: doubling, capped.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first wait after the controller stops answering.
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest wait between two tries.
    pub const LAST: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The controller answered: the next outage starts from the first wait again.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The wait before the next try, and doubles the one after it.
    pub fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(Self::LAST);
        wait
    }

    /// Says why the controller could not be reached, then waits before the next try.
    pub async fn pause(&mut self, why: &str) {
        let wait = self.step();
        eprintln!(
            "cordon: cannot reach the controller ({}); trying again in {}",
            crate::output::escape(why),
            if wait < Duration::from_secs(1) {
                format!("{}ms", wait.as_millis())
            } else {
                cordon_api::format::duration(wait.as_secs())
            }
        );
        tokio::time::sleep(wait).await;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// GETs `path`, trying again (after `backoff`'s wait) for as long as the controller cannot be
/// reached; any answer, success or refusal, is returned.
pub async fn get<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    backoff: &mut Backoff,
) -> Result<T, CliError> {
    loop {
        match client.get(path).await {
            Err(CliError::Unreachable(why)) => backoff.pause(&why).await,
            answer => {
                backoff.reset();
                return answer;
            }
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, whichever comes first, for a follow mode that says what it
/// leaves running when it stops.
pub struct Interrupt {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    pub fn new() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let failed = |e: std::io::Error| CliError::Other(format!("cannot catch signals: {e}"));
            Ok(Self {
                int: signal(SignalKind::interrupt()).map_err(failed)?,
                term: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_an_answer() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..9).map(|_| backoff.step()).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[5], Duration::from_secs(16));
        assert_eq!(waits[6], Backoff::LAST);
        assert_eq!(waits[8], Backoff::LAST);
        backoff.reset();
        assert_eq!(backoff.step(), Backoff::FIRST);
    }
}

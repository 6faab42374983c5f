//! Task starts an agent reported, written a little late. Most tasks end within milliseconds of
//! starting (pings, collections, signed actions): for those the start is written together with
//! the end, one write instead of two ([`crate::store::Store::finish_started_task`]). A task
//! still running [`START_WRITE_DELAY`] after it started is then written `running` on its own.
//! Nothing depends on `running` but people watching: a task is `sent` until then, and `sent`
//! and `running` tasks are treated alike everywhere else (requeued when the session drops,
//! cancelled on the agent).

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

/// How long a reported start waits for its task's end before it is written alone.
pub const START_WRITE_DELAY: Duration = Duration::from_millis(200);

/// Most starts held at once; beyond, the oldest are written at once. An agent runs at most 64
/// tasks at a time, so only a misbehaving one gets here.
const MAX_WAITING: usize = 1024;

/// The starts of one session not written yet, oldest first.
#[derive(Debug, Default)]
pub struct Starts {
    waiting: VecDeque<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    task_id: String,
    at_ms: i64,
    due: Instant,
}

impl Starts {
    /// Holds the start of `task_id`, reported at `at_ms`, until `now` + [`START_WRITE_DELAY`].
    /// Returns starts to write at once (when too many are held).
    pub fn push(&mut self, task_id: String, at_ms: i64, now: Instant) -> Vec<(String, i64)> {
        self.waiting.push_back(Waiting {
            task_id,
            at_ms,
            due: now + START_WRITE_DELAY,
        });
        let over = self.waiting.len().saturating_sub(MAX_WAITING);
        self.waiting
            .drain(..over)
            .map(|w| (w.task_id, w.at_ms))
            .collect()
    }

    /// The start of `task_id`, if it is still held (its end is arriving): no longer held.
    pub fn take(&mut self, task_id: &str) -> Option<i64> {
        let i = self.waiting.iter().position(|w| w.task_id == task_id)?;
        self.waiting.remove(i).map(|w| w.at_ms)
    }

    /// When the oldest held start is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.front().map(|w| w.due)
    }

    /// The starts due at `now`, no longer held: write them.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, i64)> {
        let due = self.waiting.iter().take_while(|w| w.due <= now).count();
        self.waiting
            .drain(..due)
            .map(|w| (w.task_id, w.at_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_held_until_its_end_or_its_delay() {
        let t0 = Instant::now();
        let mut starts = Starts::default();
        assert_eq!(starts.next_due(), None);
        assert!(starts.push("a".into(), 1, t0).is_empty());
        assert!(starts
            .push("b".into(), 2, t0 + Duration::from_millis(50))
            .is_empty());
        assert_eq!(starts.next_due(), Some(t0 + START_WRITE_DELAY));
        // `a` ends quickly: its start goes with its end.
        assert_eq!(starts.take("a"), Some(1));
        assert_eq!(starts.take("a"), None);
        assert!(starts.take_due(t0 + START_WRITE_DELAY).is_empty());
        // `b` runs on: written once due.
        let due = t0 + Duration::from_millis(50) + START_WRITE_DELAY;
        assert_eq!(starts.take_due(due), vec![("b".to_string(), 2)]);
        assert_eq!(starts.next_due(), None);
    }

    #[test]
    fn too_many_held_starts_are_written_at_once() {
        let t0 = Instant::now();
        let mut starts = Starts::default();
        for i in 0..MAX_WAITING {
            assert!(starts.push(format!("t{i}"), 0, t0).is_empty());
        }
        assert_eq!(
            starts.push("last".into(), 0, t0),
            vec![("t0".to_string(), 0)]
        );
    }
}

//! Answers for envelopes delivered again.
//!
//! The controller sends an action again when it never stored the answer: the session dropped
//! after the agent acted but before the receipt arrived, and the task was queued again. The
//! agent must not run it twice, and must not answer "replay" either, which would record as
//! refused an action that was done. So for every action it accepts, the agent keeps the answer
//! it gave (the signed receipt, or the error) with the SHA-256 of the envelope as it was
//! delivered ([`envelope_digest`]), and answers the *same* envelope with the *same* answer —
//! byte for byte the same signed receipt. Anything else reusing that action id or nonce (other
//! parameters, other signatures, a single byte changed) is not the same envelope: it goes
//! through [`crate::policy::verify`] and is refused as a replay.
//!
//! An answer is kept as long as the replay cache remembers its action, and rebuilt from the
//! journal at start ([`Redeliveries::load`]), so a re-delivery after an agent restart gets the
//! same receipt too. An action that was running when the agent stopped has no recorded end: a
//! re-delivery is told so, and the action is not run again. While the first delivery still
//! runs, a second one waits for its answer.

use std::{
    collections::HashMap,
    sync::{Condvar, Mutex, MutexGuard},
    time::Duration,
};

use cordon_protocol::{
    action::SignedAction,
    message::{Receipt, TaskError, TaskErrorCode},
};
use sha2::{Digest, Sha256};

use crate::{
    journal::{Entry, Phase},
    replay::{ReplayCache, KEEP_AFTER_EXPIRY_MS},
};

/// Longest a re-delivery waits for the first delivery's answer.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Lowercase hex SHA-256 of the envelope's canonical encoding: the request and every signature,
/// in order.
pub fn envelope_digest(signed: &SignedAction) -> Result<String, TaskError> {
    let bytes = cordon_protocol::codec::encode(signed).map_err(|e| TaskError {
        code: TaskErrorCode::InvalidInput,
        message: format!("malformed: cannot encode the envelope: {e}"),
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// What the agent answered, or answers, to an accepted action.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Accepted; running now.
    Running,
    /// How it ended.
    Ended(Result<Receipt, TaskError>),
    /// Started before the agent stopped; how it ended was never recorded.
    Interrupted { started_at_ms: i64 },
}

#[derive(Debug)]
struct Known {
    digest: String,
    expires_at_ms: i64,
    answer: Answer,
}

/// What [`Redeliveries::answer_or_admit`] decided.
#[derive(Debug)]
pub enum Admitted<T> {
    /// This very envelope was accepted before: here is the answer it got.
    Again(Result<Receipt, TaskError>),
    /// A new action, admitted (and marked running): run it, then call
    /// [`Redeliveries::finish`].
    New(T),
}

/// The answers to the actions the replay cache remembers. Shared by every task.
#[derive(Debug, Default)]
pub struct Redeliveries {
    known: Mutex<HashMap<String, Known>>,
    changed: Condvar,
}

impl Redeliveries {
    /// Rebuilds the answers from the journal's `entries` (oldest first), for the actions
    /// `replay` still remembers. Entries written before envelopes were digested are skipped:
    /// their re-delivery is refused as a replay, as it was then.
    pub fn load(entries: &[Entry], replay: &ReplayCache) -> Redeliveries {
        let mut known: HashMap<String, Known> = HashMap::new();
        for entry in entries {
            let Some(expires_at_ms) = replay.expires_at(&entry.action_id) else {
                continue;
            };
            match entry.phase {
                Phase::Started => {
                    if let Some(digest) = &entry.envelope_sha256 {
                        known.insert(
                            entry.action_id.clone(),
                            Known {
                                digest: digest.clone(),
                                expires_at_ms,
                                answer: Answer::Interrupted {
                                    started_at_ms: entry.at_ms,
                                },
                            },
                        );
                    }
                }
                Phase::Finished | Phase::Failed => {
                    let Some(known) = known.get_mut(&entry.action_id) else {
                        continue;
                    };
                    let answer = match (&entry.error, &entry.receipt) {
                        (Some(error), _) => Err(error.clone()),
                        (None, Some(record)) => record.to_receipt().ok_or_else(|| TaskError {
                            code: TaskErrorCode::Internal,
                            message: format!(
                                "action {} ran, but the receipt kept in the journal is damaged",
                                entry.action_id
                            ),
                        }),
                        (None, None) => Err(TaskError {
                            code: TaskErrorCode::Internal,
                            message: format!(
                                "action {} ran (see the agent's journal) but no receipt was made",
                                entry.action_id
                            ),
                        }),
                    };
                    known.answer = Answer::Ended(answer);
                }
            }
        }
        Redeliveries {
            known: Mutex::new(known),
            changed: Condvar::new(),
        }
    }

    /// If the action `action_id` was accepted before as this very envelope (`digest`), its
    /// answer, waiting (up to [`MAX_WAIT`] or the envelope's expiry) while the first delivery
    /// still runs. Otherwise `admit` decides, with no other delivery of the action in between;
    /// what it admits is marked running.
    pub fn answer_or_admit<T>(
        &self,
        action_id: &str,
        digest: &str,
        expires_at_ms: i64,
        now_ms: i64,
        admit: impl FnOnce() -> Result<T, TaskError>,
    ) -> Result<Admitted<T>, TaskError> {
        let mut known = self.lock();
        known.retain(|_, k| k.expires_at_ms.saturating_add(KEEP_AFTER_EXPIRY_MS) >= now_ms);
        if known.get(action_id).is_some_and(|k| k.digest == digest) {
            let wait = u64::try_from(expires_at_ms.saturating_sub(now_ms))
                .map(Duration::from_millis)
                .unwrap_or_default()
                .clamp(Duration::from_secs(1), MAX_WAIT);
            let (known, _) = self
                .changed
                .wait_timeout_while(known, wait, |known| {
                    known
                        .get(action_id)
                        .is_some_and(|k| k.answer == Answer::Running)
                })
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let answer = match known.get(action_id).map(|k| &k.answer) {
                Some(Answer::Ended(answer)) => answer.clone(),
                Some(Answer::Running) => Err(TaskError {
                    code: TaskErrorCode::Busy,
                    message: format!(
                        "action {action_id} is still running from its first delivery; ask again later"
                    ),
                }),
                Some(Answer::Interrupted { started_at_ms }) => Err(TaskError {
                    code: TaskErrorCode::Internal,
                    message: format!(
                        "action {action_id} was started at {started_at_ms} ms and the agent stopped \
                         before it recorded how it ended; it is not run again (see the agent's journal)"
                    ),
                }),
                // Pruned while waiting: it has expired, so the controller no longer waits.
                None => Err(TaskError {
                    code: TaskErrorCode::Expired,
                    message: format!("action {action_id} has expired"),
                }),
            };
            return Ok(Admitted::Again(answer));
        }
        let admitted = admit()?;
        known.insert(
            action_id.to_string(),
            Known {
                digest: digest.to_string(),
                expires_at_ms,
                answer: Answer::Running,
            },
        );
        Ok(Admitted::New(admitted))
    }

    /// Records the answer to an admitted action and wakes re-deliveries waiting for it.
    pub fn finish(&self, action_id: &str, answer: Result<Receipt, TaskError>) {
        if let Some(known) = self.lock().get_mut(action_id) {
            known.answer = Answer::Ended(answer);
        }
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Known>> {
        // Every update is a single insert or assignment: nothing is left half done.
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn receipt(id: &str) -> Receipt {
        Receipt {
            action_id: id.into(),
            agent_id: "agent-1".into(),
            at_ms: NOW,
            before: "{}".into(),
            done: "killed".into(),
            after: "{}".into(),
            agent_public_key: vec![1; 32],
            signature: vec![2; 64],
        }
    }

    fn admit_ok() -> Result<(), TaskError> {
        Ok(())
    }

    #[test]
    fn the_same_envelope_gets_the_same_answer_and_another_goes_to_admit() {
        let r = Redeliveries::default();
        let first = r
            .answer_or_admit("a1", "d1", NOW + 60_000, NOW, admit_ok)
            .unwrap();
        assert!(matches!(first, Admitted::New(())));
        r.finish("a1", Ok(receipt("a1")));
        let again = r
            .answer_or_admit("a1", "d1", NOW + 60_000, NOW, || -> Result<(), _> {
                panic!("a re-delivery is not verified or run again")
            })
            .unwrap();
        assert!(matches!(again, Admitted::Again(Ok(ref got)) if *got == receipt("a1")));
        // Same id, other bytes: admit decides (and verify would say "replay").
        let refused = r.answer_or_admit("a1", "d2", NOW + 60_000, NOW, || -> Result<(), _> {
            Err(TaskError {
                code: TaskErrorCode::Unauthorized,
                message: "replay: action a1 was seen before".into(),
            })
        });
        assert!(refused.unwrap_err().message.starts_with("replay"));
        // An error is repeated the same way.
        r.answer_or_admit("a2", "d3", NOW + 60_000, NOW, admit_ok)
            .unwrap();
        let error = TaskError {
            code: TaskErrorCode::NotFound,
            message: "no process 4242".into(),
        };
        r.finish("a2", Err(error.clone()));
        let again = r
            .answer_or_admit("a2", "d3", NOW + 60_000, NOW, admit_ok)
            .unwrap();
        assert!(matches!(again, Admitted::Again(Err(ref e)) if *e == error));
    }

    #[test]
    fn a_redelivery_waits_for_the_running_first_delivery() {
        let r = Arc::new(Redeliveries::default());
        r.answer_or_admit("a1", "d1", NOW + 60_000, NOW, admit_ok)
            .unwrap();
        let waiter = {
            let r = r.clone();
            std::thread::spawn(move || r.answer_or_admit("a1", "d1", NOW + 60_000, NOW, admit_ok))
        };
        std::thread::sleep(Duration::from_millis(100));
        r.finish("a1", Ok(receipt("a1")));
        let again = waiter.join().unwrap().unwrap();
        assert!(matches!(again, Admitted::Again(Ok(_))));
    }

    #[test]
    fn answers_are_forgotten_with_the_replay_entry() {
        let r = Redeliveries::default();
        r.answer_or_admit("a1", "d1", NOW + 1000, NOW, admit_ok)
            .unwrap();
        r.finish("a1", Ok(receipt("a1")));
        let later = NOW + 1000 + KEEP_AFTER_EXPIRY_MS + 1;
        let fresh = r
            .answer_or_admit("a1", "d1", later + 1000, later, admit_ok)
            .unwrap();
        assert!(matches!(fresh, Admitted::New(())));
    }
}

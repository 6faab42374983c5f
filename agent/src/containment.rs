//! Runs a signed containment task end to end: verify the envelope against the policy and the
//! replay cache ([`crate::policy::verify`]), journal it, run it ([`crate::act::run`]), sign the
//! receipt with the agent's own key, and journal the result with that receipt. The same
//! envelope delivered again is answered with the same receipt, not run again
//! ([`crate::redelivery`]).
//!
//! The policy is read from `policy.toml` at start and again whenever the file changes, so
//! `cordon-agent trust remove` revokes a key without a restart (and the session reports the
//! change to the controller, [`Containment::reported_policy`]). A policy file that has become
//! invalid refuses every action until it is fixed (fail closed).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::SystemTime,
};

use cordon_protocol::{
    action::{Action, PolicySummary, SignedAction},
    message::{Receipt, TaskError, TaskErrorCode, TaskOutput},
};
use ed25519_dalek::{Signer, SigningKey};

use crate::{
    act::{self, ActEnv, Outcome},
    journal::{self, Journal},
    policy::{self, Policy, VerifiedAction},
    redelivery::{self, Admitted, Redeliveries},
    replay::ReplayCache,
    AgentError,
};

/// What identifies a version of the policy file: a change to any part means "read it again".
type FileStamp = Option<(SystemTime, u64, u64)>;

/// The agent's containment machinery, built once at start and shared by every task.
pub struct Containment {
    data_dir: PathBuf,
    /// The environment actions run in; its policy is swapped when the file changes.
    env: Mutex<(ActEnv, FileStamp)>,
    replay: Mutex<ReplayCache>,
    journal: Mutex<Journal>,
    redeliveries: Redeliveries,
    /// The policy file was invalid at the last look (logged once per change).
    policy_broken: AtomicBool,
}

impl std::fmt::Debug for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containment")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Containment {
    /// Loads the policy and the replay cache of `data_dir`. `controller` is the `HOST:PORT` the
    /// agent dials (never blocked). An invalid policy file is an error: the agent does not start.
    pub fn open(data_dir: &Path, agent_id: &str, controller: &str) -> Result<Self, AgentError> {
        let stamp = stamp(data_dir);
        let policy = Policy::load(data_dir)?;
        let replay = ReplayCache::open(data_dir, crate::now_ms())?;
        // The answers to what the replay cache remembers, so a re-delivery gets the same one.
        // A journal that cannot be read costs only that: re-deliveries are refused as replays.
        let entries = journal::read_all(data_dir).unwrap_or_else(|e| {
            tracing::warn!(data_dir = %data_dir.display(), error = %e, "cannot read the action journal; re-delivered actions will be refused as replays");
            Vec::new()
        });
        let redeliveries = Redeliveries::load(&entries, &replay);
        let env = ActEnv {
            data_dir: data_dir.to_path_buf(),
            agent_id: agent_id.to_string(),
            controller: controller.to_string(),
            agent_pid: std::process::id(),
            policy: Arc::new(policy),
        };
        Ok(Containment {
            data_dir: data_dir.to_path_buf(),
            env: Mutex::new((env, stamp)),
            replay: Mutex::new(replay),
            journal: Mutex::new(Journal::new(data_dir)),
            redeliveries,
            policy_broken: AtomicBool::new(false),
        })
    }

    /// At agent start, before any action: re-applies an isolation a reboot wiped (until its
    /// time limit) and settles a vault a crash left half done. Failures are logged, not fatal:
    /// the agent must still connect so a responder can see and fix the host.
    pub async fn recover(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let done = tokio::task::spawn_blocking(move || {
            let env = match this.env() {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!(error = %e, "containment recovery skipped: invalid policy");
                    return;
                }
            };
            if let Err(e) = act::firewall::reapply_on_start(&env) {
                tracing::error!(code = ?e.code, error = %e.message, "cannot re-apply the recorded isolation");
            }
            if let Err(e) = act::quarantine::recover_vault(&env) {
                tracing::error!(code = ?e.code, error = %e.message, "cannot settle the quarantine vault");
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "containment recovery failed");
        }
    }

    /// The environment actions run in, with the policy as it is on disk now.
    pub fn env(&self) -> Result<ActEnv, AgentError> {
        let mut guard = lock(&self.env);
        let now = stamp(&self.data_dir);
        if now != guard.1 {
            let policy = Policy::load(&self.data_dir)?;
            tracing::info!(
                signers = policy.signers.len(),
                "containment policy reloaded"
            );
            guard.0.policy = Arc::new(policy);
            guard.1 = now;
        }
        Ok(guard.0.clone())
    }

    /// The gate collection reads through: the built-in denied paths, the policy's
    /// `denied_paths` and the data directory (see [`crate::collect::gate`]).
    pub fn gate(&self) -> crate::collect::gate::Gate {
        let policy = self.policy();
        crate::collect::gate::Gate::new(
            policy.denied_paths.as_deref().unwrap_or_default(),
            Some(&self.data_dir),
        )
    }

    /// The policy as last loaded.
    pub fn policy(&self) -> Arc<Policy> {
        match self.env() {
            Ok(env) => env.policy,
            Err(_) => lock(&self.env).0.policy.clone(),
        }
    }

    /// What the agent reports to the controller (in its hello, and whenever it changes): the
    /// policy on disk now, or, while the file is invalid, no trusted signer at all, since every
    /// action is refused until it is fixed.
    pub fn reported_policy(&self) -> PolicySummary {
        match self.env() {
            Ok(env) => {
                if self.policy_broken.swap(false, Ordering::Relaxed) {
                    tracing::info!("containment policy file valid again");
                }
                env.policy.summary()
            }
            Err(e) => {
                if !self.policy_broken.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "containment policy file is invalid: every action is refused until it is fixed");
                }
                PolicySummary::default()
            }
        }
    }

    /// Whether reading file contents needs a signature here (`signed_reads`); an invalid
    /// policy file means yes.
    pub fn reads_need_signature(&self) -> bool {
        self.env().map_or(true, |env| env.policy.signed_reads)
    }

    /// Checks `signed`, a fetch authorisation, as any signed action is checked (trusted key
    /// for `fetch`, this agent, the time window, never seen before, enough signers), and that
    /// it names exactly `path`. Blocking (the replay cache is persisted).
    pub fn authorize_read(
        &self,
        task_id: &str,
        signed: &SignedAction,
        path: &str,
    ) -> Result<(), TaskError> {
        let env = self.env().map_err(|e| TaskError {
            code: TaskErrorCode::Unauthorized,
            message: format!("policy: {e}; no signed read is accepted until it is fixed"),
        })?;
        let Action::Fetch { path: signed_path } = &signed.request.action else {
            return Err(TaskError {
                code: TaskErrorCode::Unauthorized,
                message: format!(
                    "the authorisation is a signed {}, not a fetch",
                    signed.request.action.kind()
                ),
            });
        };
        if signed_path != path {
            return Err(TaskError {
                code: TaskErrorCode::Unauthorized,
                message: format!("the signature is for reading {signed_path}, not {path}"),
            });
        }
        let verified = self.verify(task_id, signed, &env, "signed read")?;
        let action_id = signed.request.action_id;
        tracing::info!(task_id, %action_id, path, signers = ?verified.signers, "signed read accepted");
        Ok(())
    }

    /// `signed` checked against `env`'s policy and the replay cache (see [`policy::verify`]);
    /// a refusal is logged as a refused `what` and returned as its task error.
    fn verify(
        &self,
        task_id: &str,
        signed: &SignedAction,
        env: &ActEnv,
        what: &str,
    ) -> Result<policy::VerifiedAction, TaskError> {
        let mut replay = lock(&self.replay);
        policy::verify(
            signed,
            &env.agent_id,
            crate::now_ms(),
            &env.policy,
            &mut replay,
        )
        .map_err(|refusal| {
            let action_id = signed.request.action_id;
            tracing::warn!(task_id, %action_id, check = refusal.check(), %refusal, "{what} refused");
            refusal.to_task_error()
        })
    }

    /// Runs the signed action of task `task_id` on a blocking thread and returns its receipt.
    pub async fn execute(
        self: &Arc<Self>,
        task_id: &str,
        signed: SignedAction,
        signer: Arc<SigningKey>,
    ) -> Result<TaskOutput, TaskError> {
        let this = Arc::clone(self);
        let task_id = task_id.to_string();
        tokio::task::spawn_blocking(move || this.execute_blocking(&task_id, &signed, &signer))
            .await
            .map_err(|e| TaskError {
                code: TaskErrorCode::Internal,
                message: format!("containment action failed: {e}"),
            })?
    }

    fn execute_blocking(
        &self,
        task_id: &str,
        signed: &SignedAction,
        signer: &SigningKey,
    ) -> Result<TaskOutput, TaskError> {
        let action_id = signed.request.action_id.to_string();
        let digest = redelivery::envelope_digest(signed)?;
        // An envelope answered before gets that answer again, whatever the policy says now:
        // nothing runs. A new one is checked against the policy on disk.
        let admitted = self.redeliveries.answer_or_admit(
            &action_id,
            &digest,
            signed.request.expires_at_ms,
            crate::now_ms(),
            || {
                let env = self.env().map_err(|e| TaskError {
                    code: TaskErrorCode::Unauthorized,
                    message: format!("policy: {e}; no action runs until it is fixed"),
                })?;
                let verified = self.verify(task_id, signed, &env, "signed action")?;
                Ok((verified, env))
            },
        )?;
        let (verified, env) = match admitted {
            Admitted::New(admitted) => admitted,
            Admitted::Again(answer) => {
                tracing::info!(task_id, %action_id, receipt = answer.is_ok(), "signed action delivered again: answered as the first time, not run again");
                return answer.map(TaskOutput::Receipt);
            }
        };
        // From here on the action has an answer, whatever happens (a panic included).
        let mut pending = Pending {
            redeliveries: &self.redeliveries,
            action_id: &action_id,
            answered: false,
        };
        let kind = verified.request.action.kind();
        tracing::info!(task_id, %action_id, %kind, signers = ?verified.signers, "signed action accepted");

        if let Err(e) = lock(&self.journal).started(task_id, &verified, &digest, crate::now_ms()) {
            let error = TaskError {
                code: TaskErrorCode::Internal,
                message: format!("cannot journal the action, so it was not run: {e}"),
            };
            pending.answer(Err(error.clone()));
            return Err(error);
        }
        let result = act::run(&verified.request.action, &env);
        let answer = match &result {
            Ok(outcome) => sign_receipt(&verified, outcome, signer, crate::now_ms()),
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = lock(&self.journal).ended(
            task_id,
            &verified,
            &result,
            answer.as_ref().ok(),
            crate::now_ms(),
        ) {
            // The action has happened; the receipt says so even if the journal could not.
            tracing::error!(task_id, %action_id, error = %e, "cannot journal the action's end");
        }
        match &result {
            Ok(outcome) => {
                tracing::info!(task_id, %action_id, %kind, done = %outcome.done, "signed action done")
            }
            Err(e) => {
                tracing::warn!(task_id, %action_id, %kind, code = ?e.code, error = %e.message, "signed action failed")
            }
        }
        pending.answer(answer.clone());
        answer.map(TaskOutput::Receipt)
    }
}

/// An admitted action whose answer is not recorded yet; if it is dropped unanswered (a panic
/// while acting), re-deliveries are told the action failed instead of waiting for it.
struct Pending<'a> {
    redeliveries: &'a Redeliveries,
    action_id: &'a str,
    answered: bool,
}

impl Pending<'_> {
    fn answer(&mut self, answer: Result<Receipt, TaskError>) {
        self.redeliveries.finish(self.action_id, answer);
        self.answered = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.redeliveries.finish(
                self.action_id,
                Err(TaskError {
                    code: TaskErrorCode::Internal,
                    message: format!(
                        "action {} failed while it ran; see the agent's journal and log",
                        self.action_id
                    ),
                }),
            );
        }
    }
}

/// Builds the receipt for `outcome` and signs it over [`Receipt::signing_bytes`].
pub fn sign_receipt(
    verified: &VerifiedAction,
    outcome: &Outcome,
    signer: &SigningKey,
    at_ms: i64,
) -> Result<Receipt, TaskError> {
    let internal = |what: &str, e: &dyn std::fmt::Display| TaskError {
        code: TaskErrorCode::Internal,
        message: format!("the action ran but its receipt could not be made ({what}: {e})"),
    };
    let mut receipt = Receipt {
        action_id: verified.request.action_id.to_string(),
        agent_id: verified.request.agent_id.clone(),
        at_ms,
        before: serde_json::to_string(&outcome.before).map_err(|e| internal("before", &e))?,
        done: outcome.done.clone(),
        after: serde_json::to_string(&outcome.after).map_err(|e| internal("after", &e))?,
        agent_public_key: signer.verifying_key().to_bytes().to_vec(),
        signature: Vec::new(),
    };
    let bytes = receipt
        .signing_bytes()
        .map_err(|e| internal("encoding", &e))?;
    receipt.signature = signer.sign(&bytes).to_bytes().to_vec();
    Ok(receipt)
}

fn stamp(data_dir: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(policy::path(data_dir)).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done that matters here: the replay
    // cache and the journal are written line by line.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use cordon_protocol::action::{key_id, signing_bytes, Action, ActionRequest, ActionSignature};
    use ed25519_dalek::Verifier;

    use super::*;
    use crate::{journal, policy::TrustedSigner};

    fn signed(key: &SigningKey, agent_id: &str, action: Action) -> SignedAction {
        let now = crate::now_ms();
        let request = ActionRequest {
            action_id: uuid::Uuid::from_bytes(rand::random()),
            agent_id: agent_id.into(),
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
            nonce: rand::random(),
            action,
        };
        let signature = key.sign(&signing_bytes(&request).unwrap());
        SignedAction {
            request,
            signatures: vec![ActionSignature {
                key_id: key_id(&key.verifying_key().to_bytes()),
                signature: signature.to_bytes().to_vec(),
            }],
        }
    }

    #[test]
    fn receipts_verify_under_the_agent_key_and_detect_edits() {
        let agent_key = SigningKey::from_bytes(&[5; 32]);
        let responder = SigningKey::from_bytes(&[6; 32]);
        let verified = VerifiedAction {
            request: signed(&responder, "agent-1", Action::Release).request,
            signers: vec![],
        };
        let outcome = Outcome {
            before: serde_json::json!({"isolated": true}),
            done: "released".into(),
            after: serde_json::json!({"isolated": false}),
        };
        let mut receipt = sign_receipt(&verified, &outcome, &agent_key, 42).unwrap();
        let public = ed25519_dalek::VerifyingKey::try_from(&receipt.agent_public_key[..]).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&receipt.signature).unwrap();
        public
            .verify(&receipt.signing_bytes().unwrap(), &signature)
            .unwrap();
        receipt.done = "nothing".into();
        assert!(public
            .verify(&receipt.signing_bytes().unwrap(), &signature)
            .is_err());
    }

    #[test]
    fn a_signed_read_opens_exactly_its_path_once_for_a_key_trusted_to_fetch() {
        let tmp = tempfile::tempdir().unwrap();
        let reader = SigningKey::from_bytes(&[7; 32]);
        let killer = SigningKey::from_bytes(&[8; 32]);
        let mut policy = Policy {
            signed_reads: true,
            ..Policy::default()
        };
        for (name, key, action) in [("reader", &reader, "fetch"), ("killer", &killer, "kill")] {
            policy.signers.push(TrustedSigner {
                name: name.into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
                actions: vec![action.into()],
                max_ttl_secs: 600,
            });
        }
        policy.save(tmp.path()).unwrap();
        let containment = Containment::open(tmp.path(), "agent-1", "127.0.0.1:1").unwrap();
        assert!(containment.reads_need_signature());
        let fetch = |path: &str| Action::Fetch { path: path.into() };

        let ok = signed(&reader, "agent-1", fetch("/var/log/auth.log"));
        containment
            .authorize_read("t1", &ok, "/var/log/auth.log")
            .unwrap();
        // Once: the same signature again is a replay.
        let again = containment
            .authorize_read("t2", &ok, "/var/log/auth.log")
            .unwrap_err();
        assert!(again.message.contains("replay"), "{}", again.message);
        // Another path than the one signed.
        let other = signed(&reader, "agent-1", fetch("/var/log/auth.log"));
        let err = containment
            .authorize_read("t3", &other, "/etc/passwd")
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unauthorized);
        assert!(err.message.contains("not /etc/passwd"), "{}", err.message);
        // A key trusted for kill only, another agent, or another action.
        let err = containment
            .authorize_read("t4", &signed(&killer, "agent-1", fetch("/x")), "/x")
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unauthorized, "{}", err.message);
        let err = containment
            .authorize_read("t5", &signed(&reader, "agent-2", fetch("/x")), "/x")
            .unwrap_err();
        assert!(err.message.contains("agent-2"), "{}", err.message);
        let err = containment
            .authorize_read("t6", &signed(&reader, "agent-1", Action::Release), "/x")
            .unwrap_err();
        assert!(err.message.contains("not a fetch"), "{}", err.message);
        // The policy is reported, so the controller and CLI know to sign.
        assert!(containment.reported_policy().signed_reads);
    }

    #[tokio::test]
    async fn policy_changes_on_disk_apply_to_the_next_action() {
        let tmp = tempfile::tempdir().unwrap();
        let agent_key = Arc::new(SigningKey::from_bytes(&[5; 32]));
        let responder = SigningKey::from_bytes(&[6; 32]);
        let containment =
            Arc::new(Containment::open(tmp.path(), "agent-1", "127.0.0.1:1").unwrap());

        // A restore of a quarantine id that does not exist: harmless whatever the build does.
        let restore = || Action::Restore {
            quarantine_id: "no-such-quarantine".into(),
        };
        // Nothing trusted yet.
        let err = containment
            .execute(
                "t1",
                signed(&responder, "agent-1", restore()),
                agent_key.clone(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unauthorized);
        assert!(err.message.starts_with("untrusted key"), "{}", err.message);

        let mut policy = Policy::default();
        policy.signers.push(TrustedSigner {
            name: "resp".into(),
            public_key: hex::encode(responder.verifying_key().to_bytes()),
            actions: vec!["restore".into()],
            max_ttl_secs: 600,
        });
        policy.save(tmp.path()).unwrap();
        assert_eq!(containment.policy().signers.len(), 1);
        // Verified now; what the action then says (not found, not built yet) is journaled.
        let result = containment
            .execute(
                "t2",
                signed(&responder, "agent-1", restore()),
                agent_key.clone(),
            )
            .await;
        if let Err(e) = &result {
            assert_ne!(e.code, TaskErrorCode::Unauthorized, "{}", e.message);
        }
        let entries = journal::read(tmp.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].phase, journal::Phase::Started);
        assert_eq!(entries[0].task_id, "t2");

        // Revoked on disk: refused again without a restart.
        Policy::default().save(tmp.path()).unwrap();
        let err = containment
            .execute("t3", signed(&responder, "agent-1", restore()), agent_key)
            .await
            .unwrap_err();
        assert!(err.message.starts_with("untrusted key"), "{}", err.message);
    }
}

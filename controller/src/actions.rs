//! Signed containment on the controller: accepts actions already signed by responders' own keys
//! (the controller never holds those keys), collects signatures until the target agent's policy
//! has enough distinct signers, delivers the envelope as a task, and keeps the agent's signed
//! receipt. The controller's automation key is one more signer, used only when automation asks
//! for it and only as far as the agent's policy trusts it.
//!
//! Everything checked here ([`check`]) is checked again by the agent against its own policy;
//! the controller checks early so a refusal is immediate and clear, not for security.

pub mod check;
pub mod receipt;
pub mod view;

use std::time::Duration;

use cordon_protocol::{
    action::{signing_bytes, ActionRequest, ActionSignature, PolicySummary, SignedAction},
    message::{ControllerMessage, Task, TaskKind},
};
use ed25519_dalek::{pkcs8::DecodePrivateKey, Signer, SigningKey};
use serde::Serialize;
use thiserror::Error;

pub use check::{CheckError, SignatureSpec, StoredSignature};
pub use receipt::StoredReceipt;
pub use view::{ActionView, AutomationAction, SubmitAction};

use crate::{
    audit::DeferredAttempt,
    now_ms,
    sessions::registry::DispatchError,
    state::Controller,
    store::{actions::Delivery, ActionRecord, ActionState, NewAction, NewTask, StoreError},
};

/// Lifetime of an automation-signed action when the caller gives none.
pub const DEFAULT_AUTOMATION_TTL_SECS: u64 = 300;

/// Why an action could not be submitted, approved or read.
#[derive(Debug, Error)]
pub enum ActionError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("no agent {0}")]
    UnknownAgent(String),
    #[error("agent {0} is revoked")]
    RevokedAgent(String),
    #[error("agent {0} has not reported its containment policy yet (it has never connected); try again once it is online")]
    NoPolicy(String),
    #[error("action {0} already exists")]
    Exists(String),
    #[error("no action {0}")]
    UnknownAction(String),
    #[error("action {id} is {state}, not pending: it takes no more signatures")]
    NotPending { id: String, state: &'static str },
    #[error("key {key_id} already signed action {id}; it counts once: another trusted key must approve it")]
    AlreadySigned { id: String, key_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the controller's automation key: {0}")]
    AutomationKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Controller {
    /// Accepts a signed action: checks it early against the target agent's reported policy,
    /// records it, and delivers it at once when enough distinct keys signed (otherwise it waits,
    /// `pending`, for approvals).
    pub async fn submit_action(
        &self,
        submit: SubmitAction,
        by: &str,
    ) -> Result<ActionView, ActionError> {
        self.submit_action_audited(submit, by, None).await
    }

    /// [`Controller::submit_action`] for an API call whose `attempt` audit entry is appended
    /// in the transaction that records the action (see [`DeferredAttempt`]).
    pub async fn submit_action_audited(
        &self,
        submit: SubmitAction,
        by: &str,
        attempt: Option<&DeferredAttempt>,
    ) -> Result<ActionView, ActionError> {
        let SubmitAction {
            request,
            signatures,
        } = submit;
        if let cordon_protocol::action::Action::Fetch { path } = &request.action {
            return Err(ActionError::Invalid(format!(
                "a signed fetch of {path} is not an action: give it as the authorization of a \
                 fetch_file task (cordon files fetch --key)"
            )));
        }
        let now = now_ms();
        check::check_window(&request, now)?;
        let policy = self.action_policy(&request.agent_id).await?;
        let id = request.action_id.to_string();
        let bytes = signing_bytes(&request)
            .map_err(|e| ActionError::Invalid(format!("cannot encode the request: {e}")))?;
        let signatures = check::check_all(&bytes, &request, &signatures, &policy, by, now)?;
        let required = policy.required(request.action.kind());
        let task = enough(&signatures, required)
            .then(|| delivery(&request, &signatures, by, now))
            .transpose()?;
        let send_now = self.registry.is_online(&request.agent_id);
        let new = NewAction {
            id: id.clone(),
            agent_id: request.agent_id.clone(),
            kind: request.action.kind().to_string(),
            request: to_json(&request)?,
            signing_bytes: hex::encode(&bytes),
            signatures: to_json(&signatures)?,
            required_signers: i64::from(required),
            created_by: by.to_string(),
            created_at_ms: now,
            expires_at_ms: request.expires_at_ms,
        };
        let first = task.as_ref().map(|(task, _)| Delivery { task, send_now });
        let entry = attempt.map(DeferredAttempt::entry);
        match self
            .store
            .insert_action_audited(&new, first, entry.as_ref())
            .await
        {
            Ok(appended) => {
                if let (Some(attempt), Some(appended)) = (attempt, appended) {
                    attempt.appended(appended.seq);
                }
            }
            // The same envelope again (its id is the primary key).
            Err(e) if e.is_duplicate() => return Err(ActionError::Exists(id)),
            Err(e) => return Err(e.into()),
        }
        let kind = request.action.kind();
        let submitted = task.is_some();
        match task {
            Some((task, message)) => {
                tracing::info!(action_id = %id, agent_id = %request.agent_id, %kind, by, task_id = %task.id, "action submitted");
                self.deliver(&task, message, send_now).await;
            }
            None => {
                tracing::info!(action_id = %id, agent_id = %request.agent_id, %kind, by, signed = signatures.len(), required, "action pending approval");
            }
        }
        let event = if submitted {
            crate::events::kind::ACTION_SUBMITTED
        } else {
            crate::events::kind::ACTION_PENDING
        };
        self.publish_action(&id, event).await;
        // As recorded: nothing to settle yet.
        Ok(ActionView::try_from(self.action_record(&id).await?)?)
    }

    /// Adds one signature to a pending action; delivers it once enough distinct keys signed.
    /// A key that already signed is refused: it would count once anyway.
    pub async fn add_action_signature(
        &self,
        id: &str,
        spec: SignatureSpec,
        by: &str,
    ) -> Result<ActionView, ActionError> {
        // Approvals racing each other: the loser re-reads and tries again.
        for _ in 0..5 {
            let record = self.action_record(id).await?;
            if record.state != ActionState::Pending {
                return Err(ActionError::NotPending {
                    id: id.to_string(),
                    state: record.state.as_str(),
                });
            }
            let request: ActionRequest =
                serde_json::from_str(&record.request).map_err(|source| StoreError::Json {
                    what: "action request",
                    source,
                })?;
            let bytes =
                hex::decode(&record.signing_bytes).map_err(|e| StoreError::InvalidData {
                    what: "action signing bytes",
                    detail: e.to_string(),
                })?;
            let mut signatures: Vec<StoredSignature> = serde_json::from_str(&record.signatures)
                .map_err(|source| StoreError::Json {
                    what: "action signatures",
                    source,
                })?;
            let now = now_ms();
            check::check_window(&request, now)?;
            let policy = self.action_policy(&record.agent_id).await?;
            let index = signatures.len() + 1;
            let signed = check::check_signature(&bytes, &request, &spec, index, &policy, by, now)?;
            if signatures.iter().any(|s| s.key_id == signed.key_id) {
                return Err(ActionError::AlreadySigned {
                    id: id.to_string(),
                    key_id: signed.key_id,
                });
            }
            if signatures.len() >= check::MAX_SIGNATURES {
                return Err(CheckError::Malformed(format!(
                    "action {id} already carries {} signatures",
                    check::MAX_SIGNATURES
                ))
                .into());
            }
            let key_id = signed.key_id.clone();
            signatures.push(signed);
            let required = policy.required(request.action.kind());
            let task = enough(&signatures, required)
                .then(|| delivery(&request, &signatures, by, now))
                .transpose()?;
            let send_now = self.registry.is_online(&record.agent_id);
            let updated = self
                .store
                .update_action_signatures(
                    id,
                    &record.signatures,
                    &to_json(&signatures)?,
                    i64::from(required),
                    task.as_ref().map(|(task, _)| Delivery { task, send_now }),
                )
                .await?;
            if !updated {
                continue;
            }
            tracing::info!(action_id = id, agent_id = %record.agent_id, key_id, by, signed = signatures.len(), required, submitted = task.is_some(), "action approved");
            if let Some((task, message)) = task {
                self.deliver(&task, message, send_now).await;
                self.publish_action(id, crate::events::kind::ACTION_SUBMITTED)
                    .await;
            }
            return self.action_view(id).await;
        }
        Err(ActionError::Invalid(format!(
            "action {id} kept changing while this signature was added; try again"
        )))
    }

    /// Builds, signs with the controller's automation key, and submits an action. The key is
    /// just another signer: an agent whose policy does not trust it for this action refuses.
    pub async fn submit_automation_action(
        &self,
        body: AutomationAction,
        by: &str,
        attempt: Option<&DeferredAttempt>,
    ) -> Result<ActionView, ActionError> {
        let ttl_secs = body.ttl_secs.unwrap_or(DEFAULT_AUTOMATION_TTL_SECS);
        let lifetime_ms = i64::try_from(ttl_secs)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .filter(|ms| (1..=check::MAX_LIFETIME_MS).contains(ms))
            .ok_or_else(|| {
                ActionError::Invalid(format!(
                    "ttl_secs must be between 1 and {}",
                    check::MAX_LIFETIME_MS / 1000
                ))
            })?;
        let key = self.automation_key()?;
        let now = now_ms();
        let request = ActionRequest {
            action_id: uuid::Uuid::new_v4(),
            agent_id: body.agent_id,
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(lifetime_ms),
            nonce: rand::random(),
            action: body.action,
        };
        let bytes = signing_bytes(&request)
            .map_err(|e| ActionError::Invalid(format!("cannot encode the request: {e}")))?;
        let signature = SignatureSpec {
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(key.sign(&bytes).to_bytes()),
        };
        let submit = SubmitAction {
            request,
            signatures: vec![signature],
        };
        self.submit_action_audited(submit, &format!("{by} (automation key)"), attempt)
            .await
    }

    /// One action, settled with its task.
    pub async fn action_view(&self, id: &str) -> Result<ActionView, ActionError> {
        let record = self.action_record(id).await?;
        let record = self.settle_action(record).await?;
        Ok(ActionView::try_from(record)?)
    }

    /// Recent actions, newest first, optionally for one agent.
    pub async fn list_action_views(
        &self,
        agent_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ActionView>, ActionError> {
        let mut views = Vec::new();
        for record in self.store.list_actions(agent_id, limit).await? {
            let record = match record.state.is_final() {
                true => record,
                false => self.settle_action(record).await?,
            };
            views.push(ActionView::try_from(record)?);
        }
        Ok(views)
    }

    /// Waits until the action has ended or `timeout` passes; returns its latest view.
    pub async fn wait_for_action(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<ActionView, ActionError> {
        let mut events = self.task_events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // A stopping controller answers at once, so its shutdown is not held open.
        let stopping = self.events.closing();
        loop {
            let record = self.settle_action(self.action_record(id).await?).await?;
            if record.state.is_final()
                || tokio::time::Instant::now() >= deadline
                || stopping.is_cancelled()
            {
                return Ok(ActionView::try_from(record)?);
            }
            // Wake when its task ends, or re-check every second regardless: approvals, expiry
            // and missed (lagged) events need no task event to be seen.
            let recheck = tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            );
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(task_id) if record.task_id.as_deref() == Some(task_id.as_str()) => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            (&mut recheck).await;
                            break;
                        }
                    },
                    _ = &mut recheck => break,
                    _ = stopping.cancelled() => break,
                }
            }
        }
    }

    /// Hands a just-recorded delivery task to its agent. `sent` (recorded as already sent, the
    /// agent being online): straight to the live session, back to the queue if that fails.
    /// Otherwise (or then) the dispatcher sends whatever is queued once the agent is there.
    async fn deliver(&self, task: &NewTask, message: ControllerMessage, sent: bool) {
        if sent {
            match self.registry.send(&task.agent_id, message) {
                Ok(()) => {
                    tracing::debug!(task_id = %task.id, agent_id = %task.agent_id, "action task sent");
                    return;
                }
                Err(e @ (DispatchError::Busy(_) | DispatchError::Offline(_))) => {
                    tracing::debug!(task_id = %task.id, agent_id = %task.agent_id, error = %e, "action task queued instead");
                    if let Err(e) = self.store.requeue_task(&task.id).await {
                        tracing::warn!(task_id = %task.id, error = %e, "cannot requeue task");
                    }
                }
                Err(e) => {
                    tracing::warn!(task_id = %task.id, error = %e, "action task not sent");
                    return;
                }
            }
        }
        self.dispatch_queued(&task.agent_id).await;
    }

    async fn action_record(&self, id: &str) -> Result<ActionRecord, ActionError> {
        self.store
            .get_action(id)
            .await?
            .ok_or_else(|| ActionError::UnknownAction(id.to_string()))
    }

    /// The agent reported mid-session that its containment policy changed (`cordon-agent
    /// trust …` on its host): the early checks use the new one from now on.
    pub async fn agent_policy_changed(&self, agent_id: &str, policy: PolicySummary) {
        match self.store.set_agent_action_policy(agent_id, &policy).await {
            Ok(()) => tracing::info!(
                agent_id,
                signers = policy.signers.len(),
                "agent reported a new containment policy"
            ),
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "cannot store the agent's new containment policy")
            }
        }
    }

    /// The containment policy `agent_id` reported, if it may be sent actions at all.
    async fn action_policy(&self, agent_id: &str) -> Result<PolicySummary, ActionError> {
        let agent = self
            .store
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| ActionError::UnknownAgent(agent_id.to_string()))?;
        if agent.revoked_at_ms.is_some() {
            return Err(ActionError::RevokedAgent(agent_id.to_string()));
        }
        agent
            .inventory
            .map(|inventory| inventory.action_policy)
            .ok_or_else(|| ActionError::NoPolicy(agent_id.to_string()))
    }

    /// The automation signing key from the data directory.
    pub(crate) fn automation_key(&self) -> Result<SigningKey, ActionError> {
        let path = self.data_dir.automation_key();
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| ActionError::AutomationKey(format!("{}: {e}", path.display())))?;
        SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| ActionError::AutomationKey(format!("{}: {e}", path.display())))
    }
}

/// Whether `signatures` (distinct keys) satisfy a policy asking for `required`.
fn enough(signatures: &[StoredSignature], required: u32) -> bool {
    signatures.len() >= usize::try_from(required).unwrap_or(usize::MAX)
}

/// The task that carries the signed envelope to its agent, living as long as the action, and
/// the message that hands it over.
fn delivery(
    request: &ActionRequest,
    signatures: &[StoredSignature],
    by: &str,
    now: i64,
) -> Result<(NewTask, ControllerMessage), ActionError> {
    let signatures = signatures
        .iter()
        .map(|s| {
            Ok(ActionSignature {
                key_id: s.key_id.clone(),
                signature: hex::decode(&s.signature).map_err(|e| {
                    ActionError::Invalid(format!("signature of key {}: {e}", s.key_id))
                })?,
            })
        })
        .collect::<Result<Vec<_>, ActionError>>()?;
    let kind = TaskKind::Action(SignedAction {
        request: request.clone(),
        signatures,
    });
    let task = NewTask {
        id: uuid::Uuid::new_v4().to_string(),
        agent_id: request.agent_id.clone(),
        hunt_id: None,
        kind: kind.name().to_string(),
        request: to_json(&kind)?,
        created_by: by.to_string(),
        created_at_ms: now,
        expires_at_ms: request.expires_at_ms,
    };
    let message = ControllerMessage::Task(Task {
        task_id: task.id.clone(),
        deadline_ms: task.expires_at_ms,
        kind,
    });
    Ok((task, message))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ActionError> {
    serde_json::to_string(value).map_err(|source| {
        ActionError::Store(StoreError::Json {
            what: "action",
            source,
        })
    })
}

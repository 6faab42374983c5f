//! Containment a playbook proposes. Each proposal becomes a stored action with no signature,
//! `pending` until responders sign it (`cordon approve ID`) — the controller never holds their
//! keys. Where the target agent's reported policy trusts the controller's automation key for
//! the action, by itself (one signer required) and for the lifetime asked, the controller
//! signs it with that key and it is delivered at once instead.
//!
//! A proposal's lifetime (and a block's or isolation's own TTL) is clamped to the longest the
//! agent lets any key trusted for the action give, so the approval is not refused for being
//! over policy. A kill is bound to the process's start time, so it is only proposed after a
//! fresh listing on the host (attached to the incident) shows the alert's process.

use cordon_protocol::action::{key_id, signing_bytes, Action, ActionRequest, SignerSummary};
use ed25519_dalek::Signer;

use super::{
    runner::{Interrupted, RunContext, StepOutcome},
    HostScope, Proposal, ProposedAction,
};
use crate::{
    actions::{check, ActionError, SignatureSpec, SubmitAction},
    audit::{new_entry, DeferredAttempt},
    incidents::LinkKind,
    now_ms,
    state::Controller,
    store::{ActionState, NewAction, StoreError},
};

/// The TTL an action carries itself (blocks and isolations).
fn own_ttl(action: &Action) -> Option<u64> {
    match action {
        Action::Block { ttl_secs, .. } | Action::Isolate { ttl_secs } => Some(*ttl_secs),
        _ => None,
    }
}

fn with_ttl(action: Action, ttl: u64) -> Action {
    match action {
        Action::Block { targets, .. } => Action::Block {
            targets,
            ttl_secs: ttl,
        },
        Action::Isolate { .. } => Action::Isolate { ttl_secs: ttl },
        other => other,
    }
}

fn request(id: &str, agent_id: &str, lifetime_secs: u64, action: Action) -> Option<ActionRequest> {
    let now = now_ms();
    let lifetime_ms = i64::try_from(lifetime_secs).ok()?.checked_mul(1000)?;
    Some(ActionRequest {
        action_id: id.parse().ok()?,
        agent_id: agent_id.to_owned(),
        issued_at_ms: now,
        expires_at_ms: now.checked_add(lifetime_ms)?,
        nonce: rand::random(),
        action,
    })
}

impl Controller {
    /// One proposal step: for each target host, the action(s) proposed or submitted.
    pub(crate) async fn propose_step(
        &self,
        ctx: &RunContext<'_>,
        step: &str,
        proposal: &Proposal,
    ) -> Result<Vec<StepOutcome>, Interrupted> {
        let what = proposal.action.name();
        let hosts = match target_hosts(ctx, proposal.hosts) {
            Ok(hosts) => hosts,
            Err(why) => return Ok(vec![StepOutcome::skipped(step, None, what, why)]),
        };
        let mut out = Vec::new();
        for host in hosts {
            let skip = |why: String| StepOutcome::skipped(step, Some(&host), what, why);
            let actions: Vec<(String, Action, String)> = match &proposal.action {
                ProposedAction::Kill { tree } => match self.kill_targets(ctx, step, &host).await? {
                    Ok(found) => found
                        .into_iter()
                        .map(|p| {
                            (
                                format!("{step}.pid{}", p.pid),
                                Action::Kill {
                                    pid: p.pid,
                                    start_time_ms: p.start_time_ms,
                                    tree: *tree,
                                },
                                format!("kill of pid {} ({})", p.pid, p.name),
                            )
                        })
                        .collect(),
                    Err(why) => {
                        out.push(skip(why));
                        continue;
                    }
                },
                ProposedAction::Quarantine { path } => match path.render(&ctx.alert) {
                    Ok(path) => vec![(
                        step.to_owned(),
                        Action::Quarantine { path: path.clone() },
                        format!("quarantine of {path}"),
                    )],
                    Err(e) => {
                        out.push(skip(e.to_string()));
                        continue;
                    }
                },
                ProposedAction::Block { targets, ttl_secs } => {
                    match targets
                        .iter()
                        .map(|t| t.render(&ctx.alert))
                        .collect::<Result<Vec<_>, _>>()
                    {
                        Ok(targets) => vec![(
                            step.to_owned(),
                            Action::Block {
                                targets: targets.clone(),
                                ttl_secs: *ttl_secs,
                            },
                            format!("block of {}", targets.join(", ")),
                        )],
                        Err(e) => {
                            out.push(skip(e.to_string()));
                            continue;
                        }
                    }
                }
                ProposedAction::Isolate { ttl_secs } => vec![(
                    step.to_owned(),
                    Action::Isolate {
                        ttl_secs: *ttl_secs,
                    },
                    "isolation".to_owned(),
                )],
            };
            for (key, action, description) in actions {
                out.push(
                    self.propose_one(ctx, &key, &host, action, description, proposal)
                        .await?,
                );
            }
        }
        Ok(out)
    }

    /// Proposes (or, where the automation key suffices, submits) one action, once.
    async fn propose_one(
        &self,
        ctx: &RunContext<'_>,
        key: &str,
        host: &str,
        action: Action,
        description: String,
        proposal: &Proposal,
    ) -> Result<StepOutcome, Interrupted> {
        let id = ctx.step_id(key, host);
        let kind = action.kind();
        let outcome = |outcome: &str, note: String| StepOutcome {
            step: key.to_owned(),
            host: Some(host.to_owned()),
            what: description.clone(),
            outcome: outcome.to_owned(),
            id: Some(id.clone()),
            note: Some(note),
        };
        let skip = |why: String| StepOutcome::skipped(key, Some(host), kind.as_str(), why);
        if let Some(existing) = self.store.get_action(&id).await? {
            if let Err(why) = self.attach(ctx, LinkKind::Action, &id).await? {
                return Ok(skip(why));
            }
            return Ok(match existing.state {
                ActionState::Pending => outcome("proposed", approve_note(&id, &existing)),
                _ => outcome("submitted", format!("action {id}")),
            });
        }
        let agent = match self.store.get_agent(host).await? {
            Some(agent) if agent.revoked_at_ms.is_none() => agent,
            Some(_) => return Ok(skip(format!("agent {host} is revoked"))),
            None => return Ok(skip(format!("no agent {host}"))),
        };
        let Some(policy) = agent.inventory.map(|i| i.action_policy) else {
            return Ok(skip(format!(
                "agent {host} has never reported its containment policy (it has not connected yet)"
            )));
        };
        let automation = self.automation_key().ok();
        let automation_id = automation
            .as_ref()
            .map(|k| key_id(&k.verifying_key().to_bytes()));
        let trusts = |s: &&SignerSummary| s.actions.contains(&kind);
        let fits = |s: &SignerSummary| own_ttl(&action).is_none_or(|ttl| ttl <= s.max_ttl_secs);

        // The automation key alone suffices: sign and submit now.
        let auto_signer = policy
            .signers
            .iter()
            .filter(trusts)
            .find(|s| Some(&s.key_id) == automation_id.as_ref() && fits(s));
        if let (Some(signing), Some(signer), 1) = (&automation, auto_signer, policy.required(kind))
        {
            let lifetime = proposal.valid_for_secs.min(signer.max_ttl_secs);
            let Some(request) = request(&id, host, lifetime, action.clone()) else {
                return Ok(skip(format!("cannot build an action lasting {lifetime} s")));
            };
            let bytes = match signing_bytes(&request) {
                Ok(bytes) => bytes,
                Err(e) => return Ok(skip(format!("cannot encode the request: {e}"))),
            };
            let submit = SubmitAction {
                request,
                signatures: vec![SignatureSpec {
                    public_key: hex::encode(signing.verifying_key().to_bytes()),
                    signature: hex::encode(signing.sign(&bytes).to_bytes()),
                }],
            };
            let by = format!("{} (automation key)", ctx.actor());
            // Audited like an API submission: the entry lands with the action, in one commit.
            let attempt = DeferredAttempt::new(
                &by,
                "playbook.submit_action",
                &id,
                serde_json::json!({
                    "incident_id": ctx.incident.id,
                    "playbook": ctx.playbook.name,
                    "agent_id": host,
                    "kind": kind.as_str(),
                }),
            );
            match self
                .submit_action_audited(submit, &by, Some(&attempt))
                .await
            {
                Ok(_) | Err(ActionError::Exists(_)) => {}
                Err(ActionError::Store(e)) => return Err(e.into()),
                Err(e) => return Ok(skip(e.to_string())),
            }
            if let Err(why) = self.attach(ctx, LinkKind::Action, &id).await? {
                return Ok(skip(why));
            }
            return Ok(outcome(
                "submitted",
                format!("signed by the automation key, which agent {host} trusts for {kind}: action {id}"),
            ));
        }

        // Otherwise a proposal for responders, within what their keys may sign.
        let signers: Vec<&SignerSummary> = policy
            .signers
            .iter()
            .filter(trusts)
            .filter(|s| Some(&s.key_id) != automation_id.as_ref())
            .collect();
        let Some(longest) = signers.iter().map(|s| s.max_ttl_secs).max() else {
            return Ok(skip(format!(
                "agent {host} trusts no key for {kind}; trust a responder's key on the host \
                 (cordon-agent trust add --actions {kind}) first"
            )));
        };
        let mut note = String::new();
        let action = match own_ttl(&action) {
            Some(ttl) if ttl > longest => {
                note = format!(", ttl cut from {ttl} s to {longest} s by agent policy");
                with_ttl(action, longest)
            }
            _ => action,
        };
        let lifetime = proposal.valid_for_secs.min(longest);
        let Some(request) = request(&id, host, lifetime, action) else {
            return Ok(skip(format!("cannot build an action lasting {lifetime} s")));
        };
        match self
            .propose_action(&request, policy.required(kind), &ctx.actor())
            .await
        {
            Ok(()) | Err(ActionError::Exists(_)) => {}
            Err(ActionError::Store(e)) => return Err(e.into()),
            Err(e) => return Ok(skip(e.to_string())),
        }
        if let Err(why) = self.attach(ctx, LinkKind::Action, &id).await? {
            return Ok(skip(why));
        }
        tracing::info!(incident_id = %ctx.incident.id, action_id = %id, agent_id = host, %kind, "playbook proposed an action");
        Ok(outcome(
            "proposed",
            format!(
                "action {id} awaiting {} signature(s): cordon approve {id}{note}",
                policy.required(kind)
            ),
        ))
    }

    /// Stores `request` as a pending action with no signature yet, needing `required`
    /// distinct signers (`cordon approve` adds them).
    pub async fn propose_action(
        &self,
        request: &ActionRequest,
        required: u32,
        by: &str,
    ) -> Result<(), ActionError> {
        let now = now_ms();
        check::check_window(request, now)?;
        let bytes = signing_bytes(request)
            .map_err(|e| ActionError::Invalid(format!("cannot encode the request: {e}")))?;
        let json = serde_json::to_string(request).map_err(|source| {
            ActionError::Store(StoreError::Json {
                what: "action request",
                source,
            })
        })?;
        let id = request.action_id.to_string();
        let new = NewAction {
            id: id.clone(),
            agent_id: request.agent_id.clone(),
            kind: request.action.kind().to_string(),
            request: json,
            signing_bytes: hex::encode(&bytes),
            signatures: "[]".into(),
            required_signers: i64::from(required.max(1)),
            created_by: by.to_owned(),
            created_at_ms: now,
            expires_at_ms: request.expires_at_ms,
        };
        let audit = new_entry(
            by,
            "action.propose",
            &id,
            "pending",
            serde_json::json!({
                "agent_id": request.agent_id,
                "kind": request.action.kind().as_str(),
                "required_signers": new.required_signers,
            }),
        );
        match self
            .store
            .insert_action_audited(&new, None, Some(&audit))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_duplicate() => Err(ActionError::Exists(id)),
            Err(e) => Err(e.into()),
        }
    }
}

/// What to write about a pending action found from an earlier run.
fn approve_note(id: &str, record: &crate::store::ActionRecord) -> String {
    format!(
        "action {id} awaiting {} signature(s): cordon approve {id}",
        record.required_signers
    )
}

/// The hosts a proposal is for.
fn target_hosts(ctx: &RunContext<'_>, scope: HostScope) -> Result<Vec<String>, String> {
    if ctx.hosts.is_empty() {
        return Err("the incident has no hosts; add one (cordon incidents hosts add)".into());
    }
    match scope {
        HostScope::All => Ok(ctx.hosts.clone()),
        HostScope::Alert => match ctx.alert["host"]["agent_id"].as_str() {
            Some(agent) => Ok(vec![agent.to_owned()]),
            None if ctx.hosts.len() == 1 => Ok(ctx.hosts.clone()),
            None => Err(format!(
                "the alert names no enrolled host and the incident has {} hosts; propose by hand",
                ctx.hosts.len()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_cut_to_policy() {
        let isolate = Action::Isolate { ttl_secs: 3600 };
        assert_eq!(own_ttl(&isolate), Some(3600));
        assert_eq!(with_ttl(isolate, 600), Action::Isolate { ttl_secs: 600 });
        let kill = Action::Kill {
            pid: 1,
            start_time_ms: 2,
            tree: false,
        };
        assert_eq!(own_ttl(&kill), None);
        let r = request(&uuid::Uuid::new_v4().to_string(), "a1", 600, kill).unwrap();
        assert_eq!(r.expires_at_ms - r.issued_at_ms, 600_000);
        assert!(request("not-a-uuid", "a1", 600, Action::Release).is_none());
    }
}

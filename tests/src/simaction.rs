//! Signed containment for simulated agents (`cordon-loadgen --actions N`): the policy a
//! simulated fleet reports (one run key may sign kills), the answer a simulated agent gives to
//! an envelope (checked as a real agent checks it, then a receipt signed with its own key;
//! nothing is killed), and the measurement loop that signs kills one at a time through the API
//! and times each until its verified receipt is stored.

use std::time::{Duration, Instant};

use anyhow::bail;
use cordon_api::actions::{ActionState, ActionView, SignatureSpec, SubmitAction};
use cordon_cli::client::Client;
use cordon_protocol::{
    action::{
        key_id, signing_bytes, Action, ActionKind, ActionRequest, PolicySummary, SignedAction,
        SignerSummary,
    },
    message::{Receipt, TaskError, TaskErrorCode, TaskOutput},
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// A fresh key for one run, seeded from two random (v4) UUIDs.
pub fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    SigningKey::from_bytes(&seed)
}

/// The policy every simulated agent reports: `signer` may sign kills, for up to an hour.
pub fn fleet_policy(signer: &SigningKey) -> PolicySummary {
    PolicySummary {
        signers: vec![SignerSummary {
            name: "loadgen".into(),
            key_id: key_id(&signer.verifying_key().to_bytes()),
            actions: vec![ActionKind::Kill],
            max_ttl_secs: 3600,
        }],
        required_signers: vec![],
        signed_reads: false,
    }
}

/// A simulated agent's answer to a signed action: target, trusted key and `verify_strict` of
/// every signature, as a real agent checks them, then a receipt signed with `key`, the agent's
/// own. Only kills are simulated, and nothing is killed.
pub fn answer_action(
    agent_id: &str,
    key: &SigningKey,
    trusted: &VerifyingKey,
    signed: &SignedAction,
) -> Result<TaskOutput, TaskError> {
    check_signed(agent_id, trusted, signed)?;
    let Action::Kill { pid, .. } = signed.request.action else {
        return Err(TaskError {
            code: TaskErrorCode::Unsupported,
            message: "simulated agent: kill only".into(),
        });
    };
    signed_receipt(
        agent_id,
        key,
        signed,
        format!("{{\"pid\":{pid},\"running\":true}}"),
        format!("killed pid {pid} (simulated)"),
        format!("{{\"pid\":{pid},\"running\":false}}"),
    )
}

/// Checks `signed` as a real agent does: meant for `agent_id`, and every signature by
/// `trusted` and good under `verify_strict`; refused as unauthorized otherwise.
pub fn check_signed(
    agent_id: &str,
    trusted: &VerifyingKey,
    signed: &SignedAction,
) -> Result<(), TaskError> {
    let refuse = |message: String| TaskError {
        code: TaskErrorCode::Unauthorized,
        message,
    };
    if signed.request.agent_id != agent_id {
        return Err(refuse("wrong agent".into()));
    }
    if signed.signatures.is_empty() {
        return Err(refuse("malformed: no signature".into()));
    }
    let bytes = signing_bytes(&signed.request).map_err(|e| refuse(format!("malformed: {e}")))?;
    let trusted_id = key_id(&trusted.to_bytes());
    for s in &signed.signatures {
        if s.key_id != trusted_id {
            return Err(refuse(format!("untrusted key: key {}", s.key_id)));
        }
        let sig = ed25519_dalek::Signature::from_slice(&s.signature)
            .map_err(|e| refuse(format!("bad signature: {e}")))?;
        trusted
            .verify_strict(&bytes, &sig)
            .map_err(|e| refuse(format!("bad signature: {e}")))?;
    }
    Ok(())
}

/// The receipt for `signed` saying `before`, `done` and `after`, signed with `key`, the
/// agent's own.
pub fn signed_receipt(
    agent_id: &str,
    key: &SigningKey,
    signed: &SignedAction,
    before: String,
    done: String,
    after: String,
) -> Result<TaskOutput, TaskError> {
    let mut receipt = Receipt {
        action_id: signed.request.action_id.to_string(),
        agent_id: agent_id.to_string(),
        at_ms: cordon_agent::now_ms(),
        before,
        done,
        after,
        agent_public_key: key.verifying_key().to_bytes().to_vec(),
        signature: Vec::new(),
    };
    let bytes = receipt.signing_bytes().map_err(|e| TaskError {
        code: TaskErrorCode::Internal,
        message: format!("cannot encode the receipt: {e}"),
    })?;
    receipt.signature = key.sign(&bytes).to_bytes().to_vec();
    Ok(TaskOutput::Receipt(receipt))
}

/// Latencies of a run of actions.
#[derive(Debug, Default)]
pub struct ActionTimes {
    /// Client clock: `POST /api/v1/actions` sent → the action read back done with its receipt.
    pub round_trip: Vec<Duration>,
    /// Client clock: how long the POST itself took.
    pub submit: Vec<Duration>,
    /// Controller clock (ms): action created → receipt stored.
    pub server: Vec<Duration>,
}

/// Signs `count` kills with `signer`, one after another, round-robin over `agents`, submits
/// each through the API and follows it until its receipt is stored; fails on any action that
/// does not end done with a receipt.
pub async fn measure(
    client: &Client,
    agents: &[String],
    signer: &SigningKey,
    count: usize,
) -> anyhow::Result<ActionTimes> {
    if agents.is_empty() {
        bail!("no agents to send actions to");
    }
    let mut times = ActionTimes::default();
    for n in 0..count {
        let now = cordon_agent::now_ms();
        let request = ActionRequest {
            action_id: uuid::Uuid::new_v4(),
            agent_id: agents[n % agents.len()].clone(),
            issued_at_ms: now,
            expires_at_ms: now + 300_000,
            nonce: *uuid::Uuid::new_v4().as_bytes(),
            action: Action::Kill {
                pid: 4242,
                start_time_ms: 1_700_000_000_000,
                tree: false,
            },
        };
        let signature = signer.sign(&signing_bytes(&request)?);
        let body = SubmitAction {
            signatures: vec![SignatureSpec {
                public_key: hex::encode(signer.verifying_key().to_bytes()),
                signature: hex::encode(signature.to_bytes()),
            }],
            request,
        };
        let started = Instant::now();
        let mut view: ActionView = client
            .post("/api/v1/actions", &body)
            .await
            .map_err(|e| anyhow::anyhow!("submitting action {n}: {e}"))?;
        times.submit.push(started.elapsed());
        while !view.state.is_final() {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("action {} not done after 60 s: {:?}", view.id, view.state);
            }
            view = client
                .get(&format!("/api/v1/actions/{}?wait=30", view.id))
                .await
                .map_err(|e| anyhow::anyhow!("following action {}: {e}", view.id))?;
        }
        times.round_trip.push(started.elapsed());
        if view.state != ActionState::Done || view.receipt.is_none() {
            bail!(
                "action {} ended {:?}: {:?}",
                view.id,
                view.state,
                view.error
            );
        }
        if let Some(finished) = view.finished_at_ms {
            let ms = u64::try_from(finished - view.created_at_ms).unwrap_or(0);
            times.server.push(Duration::from_millis(ms));
        }
    }
    Ok(times)
}

/// `p50 … p99 … max` of `samples` in milliseconds, for a report line.
pub fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

#[cfg(test)]
mod tests {
    use cordon_protocol::action::ActionSignature;

    use super::*;

    fn signed(agent_id: &str, signer: &SigningKey) -> SignedAction {
        let request = ActionRequest {
            action_id: uuid::Uuid::new_v4(),
            agent_id: agent_id.into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            nonce: [0; 16],
            action: Action::Kill {
                pid: 7,
                start_time_ms: 1,
                tree: false,
            },
        };
        let signature = signer.sign(&signing_bytes(&request).unwrap());
        SignedAction {
            request,
            signatures: vec![ActionSignature {
                key_id: key_id(&signer.verifying_key().to_bytes()),
                signature: signature.to_bytes().to_vec(),
            }],
        }
    }

    #[test]
    fn a_simulated_agent_signs_receipts_only_for_the_trusted_key() {
        let run = random_key();
        let agent = crate::simulated_signing_key("a1");
        let out = answer_action("a1", &agent, &run.verifying_key(), &signed("a1", &run)).unwrap();
        let TaskOutput::Receipt(receipt) = out else {
            panic!("{out:?}")
        };
        let sig = ed25519_dalek::Signature::from_slice(&receipt.signature).unwrap();
        agent
            .verifying_key()
            .verify_strict(&receipt.signing_bytes().unwrap(), &sig)
            .unwrap();
        let other = random_key();
        let err = answer_action("a1", &agent, &run.verifying_key(), &signed("a1", &other));
        assert_eq!(err.unwrap_err().code, TaskErrorCode::Unauthorized);
        let err = answer_action("a2", &agent, &run.verifying_key(), &signed("a1", &run));
        assert_eq!(err.unwrap_err().code, TaskErrorCode::Unauthorized);
        assert_eq!(
            fleet_policy(&run).signers[0].key_id,
            key_id(&run.verifying_key().to_bytes())
        );
    }
}

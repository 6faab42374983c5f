//! Signed containment through a real controller and a real agent: the agent runs only what a key
//! in its own policy signed, once, and answers with a receipt signed by its own key. The
//! envelopes go straight through the controller's registry, the way the action API hands them
//! on.

use std::{os::unix::process::ExitStatusExt, path::Path, process::Command, time::Duration};

use cordon_api::agents::AgentStatus;
use cordon_protocol::{
    action::{key_id, signing_bytes, Action, ActionRequest, ActionSignature, SignedAction},
    message::{Receipt, TaskError, TaskErrorCode, TaskKind, TaskOutput, TaskResult},
};
use cordon_tests::{simaction::random_key, Deployment, TestAgent, Victim};
use ed25519_dalek::{
    pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, EncodePublicKey},
    Signer, SigningKey, Verifier,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    cordon_agent::now_ms()
}

fn request(agent_id: &str, action: Action) -> ActionRequest {
    ActionRequest {
        action_id: uuid::Uuid::new_v4(),
        agent_id: agent_id.to_string(),
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + 120_000,
        nonce: rand_nonce(),
        action,
    }
}

fn rand_nonce() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

fn sign(request: ActionRequest, key: &SigningKey) -> SignedAction {
    let signature = key.sign(&signing_bytes(&request).expect("signing bytes"));
    SignedAction {
        request,
        signatures: vec![ActionSignature {
            key_id: key_id(&key.verifying_key().to_bytes()),
            signature: signature.to_bytes().to_vec(),
        }],
    }
}

/// Writes `key`'s public half as a PEM file, as `cordon keys generate` would, and trusts it.
fn trust(agent: &TestAgent, name: &str, key: &SigningKey, actions: &str, max_ttl: &str) {
    let file = agent.data_dir().join(format!("{name}.pub"));
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public key PEM");
    std::fs::write(&file, pem).expect("write public key");
    cordon_agent::trust::add(
        agent.data_dir(),
        &cordon_agent::trust::AddOptions {
            public_key_file: &file,
            actions,
            max_ttl: Some(max_ttl),
            name: Some(name),
        },
    )
    .expect("trust add");
}

async fn send(deployment: &Deployment, agent_id: &str, signed: SignedAction) -> TaskResult {
    deployment
        .controller()
        .registry
        .run_task(agent_id, TaskKind::Action(signed), TIMEOUT)
        .await
        .expect("the agent answered")
}

fn receipt(result: TaskResult) -> Receipt {
    match result.outcome {
        Ok(TaskOutput::Receipt(receipt)) => receipt,
        other => panic!("expected a receipt, got {other:?}"),
    }
}

fn refused(result: TaskResult, check: &str) -> TaskError {
    let err = result.outcome.expect_err("refused");
    assert_eq!(err.code, TaskErrorCode::Unauthorized, "{}", err.message);
    assert!(
        err.message.starts_with(&format!("{check}:")),
        "expected the {check:?} check to fail, got: {}",
        err.message
    );
    err
}

fn agent_public_key(dir: &Path) -> Vec<u8> {
    let dir = cordon_agent::identity::AgentDir::new(dir);
    cordon_agent::signing::load_or_create(&dir)
        .expect("agent signing key")
        .verifying_key()
        .to_bytes()
        .to_vec()
}

async fn restart(deployment: &Deployment, agent: &mut TestAgent) {
    agent.stop().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Offline)
        .await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_kill_runs_once_with_a_receipt_and_forgeries_are_refused() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let responder = random_key();
    trust(&agent, "responder", &responder, "kill", "10m");
    agent.start();
    // The hello told the controller whom the agent trusts (ids only).
    let summary = deployment.wait_for_inventory(&agent.id).await.action_policy;
    assert_eq!(summary.signers.len(), 1);
    assert_eq!(
        summary.signers[0].key_id,
        key_id(&responder.verifying_key().to_bytes())
    );

    // The signed kill runs: the process is gone, and the receipt is signed by the agent.
    let mut victim = Victim::spawn();
    let signed = sign(request(&agent.id, victim.kill_action()), &responder);
    let receipt = receipt(send(&deployment, &agent.id, signed.clone()).await);
    assert_eq!(receipt.action_id, signed.request.action_id.to_string());
    assert_eq!(receipt.agent_id, agent.id);
    assert_eq!(receipt.agent_public_key, agent_public_key(agent.data_dir()));
    let public = ed25519_dalek::VerifyingKey::try_from(&receipt.agent_public_key[..]).expect("key");
    let signature = ed25519_dalek::Signature::from_slice(&receipt.signature).expect("signature");
    public
        .verify(&receipt.signing_bytes().expect("bytes"), &signature)
        .expect("the receipt verifies under the agent's key");
    let before: serde_json::Value = serde_json::from_str(&receipt.before).expect("before JSON");
    assert_eq!(before["pid"], victim.pid());
    let status = victim.wait();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");

    // The agent journaled it before and after.
    let journal = cordon_agent::journal::read(agent.data_dir()).expect("journal");
    let id = signed.request.action_id.to_string();
    let phases: Vec<_> = journal
        .iter()
        .filter(|e| e.action_id == id)
        .map(|e| e.phase)
        .collect();
    use cordon_agent::journal::Phase;
    assert_eq!(phases, [Phase::Started, Phase::Finished]);

    // The same envelope again (as the controller re-sends one whose answer it lost): the same
    // receipt, and nothing run twice. Other envelopes reusing it are replays (see below).
    assert_eq!(
        self::receipt(send(&deployment, &agent.id, signed.clone()).await),
        receipt
    );

    // Forged, tampered, untrusted: refused, and the process lives on.
    let mut survivor = Victim::spawn();
    let mallory = SigningKey::from_bytes(&[66; 32]);
    let mut forged = sign(request(&agent.id, survivor.kill_action()), &mallory);
    forged.signatures[0].key_id = key_id(&responder.verifying_key().to_bytes());
    refused(send(&deployment, &agent.id, forged).await, "bad signature");

    let mut tampered = sign(
        request(
            &agent.id,
            Action::Kill {
                pid: 1,
                start_time_ms: 0,
                tree: false,
            },
        ),
        &responder,
    );
    tampered.request.action = survivor.kill_action();
    refused(
        send(&deployment, &agent.id, tampered).await,
        "bad signature",
    );

    let untrusted = sign(request(&agent.id, survivor.kill_action()), &mallory);
    refused(
        send(&deployment, &agent.id, untrusted).await,
        "untrusted key",
    );

    let elsewhere = sign(
        request("some-other-agent", survivor.kill_action()),
        &responder,
    );
    refused(send(&deployment, &agent.id, elsewhere).await, "wrong agent");

    let mut stale = request(&agent.id, survivor.kill_action());
    stale.issued_at_ms = now_ms() - 120_000;
    stale.expires_at_ms = now_ms() - 60_000;
    refused(
        send(&deployment, &agent.id, sign(stale, &responder)).await,
        "expired",
    );
    assert!(survivor.running(), "a refused kill must not kill");

    // After a restart the agent still remembers what it ran: the same id under another nonce
    // is a replay.
    restart(&deployment, &mut agent).await;
    let mut again = signed.request.clone();
    again.nonce = rand_nonce();
    again.action = survivor.kill_action();
    refused(
        send(&deployment, &agent.id, sign(again, &responder)).await,
        "replay",
    );
    assert!(survivor.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automation_key_cannot_do_what_agent_policy_does_not_allow() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    // The agent trusts the controller's automation key, but only to block for up to an hour.
    let data = cordon_controller::deployment::DataDir::new(&deployment.data_dir);
    let automation_pub = std::fs::read_to_string(data.automation_pub()).expect("automation.pub");
    let file = agent.data_dir().join("automation.pub");
    std::fs::write(&file, automation_pub).expect("write");
    cordon_agent::trust::add(
        agent.data_dir(),
        &cordon_agent::trust::AddOptions {
            public_key_file: &file,
            actions: "block",
            max_ttl: Some("1h"),
            name: Some("automation"),
        },
    )
    .expect("trust the automation key");
    let automation = SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(data.automation_key()).expect("automation key"),
    )
    .expect("automation key PEM");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;

    // A compromised controller signs a kill with its automation key: refused.
    let mut victim = Victim::spawn();
    let kill = sign(request(&agent.id, victim.kill_action()), &automation);
    let err = refused(send(&deployment, &agent.id, kill).await, "key not allowed");
    assert!(err.message.contains("kill"), "{}", err.message);
    // A block longer than the policy allows: refused before any firewall is touched.
    let block = sign(
        request(
            &agent.id,
            Action::Block {
                targets: vec!["203.0.113.7".into()],
                ttl_secs: 24 * 3600,
            },
        ),
        &automation,
    );
    refused(
        send(&deployment, &agent.id, block).await,
        "lifetime over policy",
    );
    assert!(victim.running());
}

/// Runs the real `cordon-agent trust …` with `args`.
fn trust_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cordon_tests::binary("e2e-cordon-agent"))
        .arg("trust")
        .args(args)
        .output()
        .expect("run cordon-agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_trust_cli_adds_lists_requires_and_removes_keys() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("agent");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let alice = random_key();
    let alice_id = key_id(&alice.verifying_key().to_bytes());
    let alice_file = tmp.path().join("alice.pub");
    std::fs::write(&alice_file, hex::encode(alice.verifying_key().to_bytes())).expect("write");
    let alice_arg = alice_file.to_str().expect("utf-8 path");

    let (ok, out, err) = trust_cli(&[
        "add",
        "--data-dir",
        dir_arg,
        "--public-key",
        alice_arg,
        "--actions",
        "kill,quarantine",
        "--max-ttl",
        "15m",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&alice_id), "{out}");
    let mode = std::fs::metadata(dir.join("policy.toml"))
        .expect("policy.toml")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (ok, _, err) = trust_cli(&[
        "add",
        "--data-dir",
        dir_arg,
        "--public-key",
        alice_arg,
        "--actions",
        "kill",
    ]);
    assert!(!ok && err.contains("already trusted"), "{err}");
    let (ok, _, err) = trust_cli(&[
        "add",
        "--data-dir",
        dir_arg,
        "--public-key",
        alice_arg,
        "--actions",
        "kill,reboot",
    ]);
    assert!(!ok && err.contains("reboot"), "{err}");

    let (ok, _, err) = trust_cli(&[
        "require",
        "--data-dir",
        dir_arg,
        "--action",
        "kill",
        "--signers",
        "2",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = trust_cli(&["list", "--data-dir", dir_arg]);
    assert!(ok);
    assert!(out.contains(&alice_id) && out.contains("15m"), "{out}");
    assert!(out.contains("required signers: kill=2"), "{out}");
    let (ok, out, _) = trust_cli(&["list", "--data-dir", dir_arg, "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["signers"][0]["key_id"], alice_id.as_str());

    let (ok, _, err) = trust_cli(&["remove", "--data-dir", dir_arg, &alice_id]);
    assert!(ok, "{err}");
    let (ok, out, _) = trust_cli(&["list", "--data-dir", dir_arg, "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["signers"].as_array().map(Vec::len), Some(0));
}

/// The checks the first test does not reach through a real agent, one envelope each: every one
/// is refused naming its check, and the process lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_check_refuses_by_name_through_a_real_agent() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = random_key();
    let bob = random_key();
    let carol = random_key();
    trust(&agent, "alice", &alice, "kill", "10m");
    trust(&agent, "bob", &bob, "kill", "10m");
    trust(&agent, "carol", &carol, "block", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let mut victim = Victim::spawn();

    // Not yet valid: issued further ahead of the agent's clock than the skew allowance.
    let mut ahead = request(&agent.id, victim.kill_action());
    ahead.issued_at_ms = now_ms() + 10 * 60_000;
    ahead.expires_at_ms = ahead.issued_at_ms + 60_000;
    refused(
        send(&deployment, &agent.id, sign(ahead, &alice)).await,
        "not yet valid",
    );

    // Lifetime over policy: alice may give 10 minutes, this lives 11.
    let mut long = request(&agent.id, victim.kill_action());
    long.expires_at_ms = long.issued_at_ms + 11 * 60_000;
    let err = refused(
        send(&deployment, &agent.id, sign(long, &alice)).await,
        "lifetime over policy",
    );
    assert!(err.message.contains("660 s"), "{}", err.message);

    // Key not allowed this action: carol may block, not kill.
    let err = refused(
        send(
            &deployment,
            &agent.id,
            sign(request(&agent.id, victim.kill_action()), &carol),
        )
        .await,
        "key not allowed",
    );
    assert!(err.message.contains("carol"), "{}", err.message);

    // Two distinct signers needed: alice signing twice counts once.
    cordon_agent::trust::require(agent.data_dir(), "kill", 2).expect("require 2");
    let twice = {
        let mut signed = sign(request(&agent.id, victim.kill_action()), &alice);
        signed.signatures.push(signed.signatures[0].clone());
        signed
    };
    let err = refused(send(&deployment, &agent.id, twice).await, "too few signers");
    assert!(err.message.contains("needs 2"), "{}", err.message);
    assert!(
        victim.running(),
        "no refused envelope may touch the process"
    );

    // Alice and bob: two distinct keys, so it runs.
    let mut both = sign(request(&agent.id, victim.kill_action()), &alice);
    both.signatures
        .extend(sign(both.request.clone(), &bob).signatures);
    receipt(send(&deployment, &agent.id, both).await);
    let status = victim.wait();
    assert_eq!(status.signal(), Some(9));
}

/// Kill is bound to the process's start time: a pid signed with another start time (the pid
/// was recycled, or the responder looked at another process) is refused, and nothing is
/// signalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_signed_for_another_start_time_is_refused_and_the_process_lives() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let responder = random_key();
    trust(&agent, "responder", &responder, "kill", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let mut victim = Victim::spawn();
    let Action::Kill { start_time_ms, .. } = victim.kill_action() else {
        unreachable!()
    };
    let recycled = Action::Kill {
        pid: victim.pid(),
        start_time_ms: start_time_ms - 5_000,
        tree: false,
    };
    let result = send(
        &deployment,
        &agent.id,
        sign(request(&agent.id, recycled), &responder),
    )
    .await;
    let err = result.outcome.expect_err("refused");
    assert_eq!(err.code, TaskErrorCode::InvalidInput, "{}", err.message);
    assert!(
        err.message.contains("nothing was signalled"),
        "{}",
        err.message
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(victim.running());
}

/// Quarantine and restore through a real agent: the file leaves its place for the vault and
/// comes back with the same bytes, mode and modification time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_and_restore_through_the_agent_round_trip_a_file() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let responder = random_key();
    trust(&agent, "responder", &responder, "quarantine,restore", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;

    let files = tempfile::tempdir().expect("tmp");
    let path = files.path().join("dropper.sh");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(&path, &bytes).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let before = std::fs::metadata(&path).expect("stat");

    let quarantine = Action::Quarantine {
        path: path.to_str().expect("utf-8").to_string(),
    };
    let quarantined = receipt(
        send(
            &deployment,
            &agent.id,
            sign(request(&agent.id, quarantine), &responder),
        )
        .await,
    );
    assert!(!path.exists(), "the file left its place");
    let after: serde_json::Value = serde_json::from_str(&quarantined.after).expect("after JSON");
    assert_eq!(after["origin_exists"], false);
    let id = after["quarantine_id"].as_str().expect("quarantine id");
    let vault = after["vault_path"].as_str().expect("vault path");
    let vault_mode = std::fs::metadata(vault).expect("in the vault").mode();
    assert_eq!(vault_mode & 0o111, 0, "defanged: no exec bits in the vault");

    let restore = Action::Restore {
        quarantine_id: id.to_string(),
    };
    receipt(
        send(
            &deployment,
            &agent.id,
            sign(request(&agent.id, restore), &responder),
        )
        .await,
    );
    assert_eq!(std::fs::read(&path).expect("restored"), bytes);
    let restored = std::fs::metadata(&path).expect("stat");
    assert_eq!(restored.mode() & 0o7777, 0o750);
    assert_eq!(restored.mtime(), before.mtime());
    assert_eq!(restored.mtime_nsec(), before.mtime_nsec());
    assert_eq!(
        (restored.uid(), restored.gid()),
        (before.uid(), before.gid())
    );
}

/// The controller sends an action again when it never got the answer (the session dropped
/// between act and receipt). The same envelope is answered with the receipt the agent gave the
/// first time, byte for byte, and is not run again, also after the agent restarted; anything
/// else reusing its id or nonce is still a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_envelope_again_gets_the_same_receipt_and_anything_else_is_a_replay() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let responder = random_key();
    trust(&agent, "responder", &responder, "kill", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;

    let mut victim = Victim::spawn();
    let signed = sign(request(&agent.id, victim.kill_action()), &responder);
    let first = receipt(send(&deployment, &agent.id, signed.clone()).await);
    assert_eq!(victim.wait().signal(), Some(9));

    // Delivered again (a new task, as a requeued one gets): the very same signed receipt.
    let again = receipt(send(&deployment, &agent.id, signed.clone()).await);
    assert_eq!(again, first);

    // The same action id with other bytes: another nonce, or a signature repeated.
    let mut other = signed.request.clone();
    other.nonce = rand_nonce();
    refused(
        send(&deployment, &agent.id, sign(other, &responder)).await,
        "replay",
    );
    let mut padded = signed.clone();
    padded.signatures.push(padded.signatures[0].clone());
    refused(send(&deployment, &agent.id, padded).await, "replay");
    // Another action id with the same nonce.
    let mut reused = request(&agent.id, signed.request.action.clone());
    reused.nonce = signed.request.nonce;
    refused(
        send(&deployment, &agent.id, sign(reused, &responder)).await,
        "replay",
    );

    // After a restart the answer comes from the journal: still the same receipt.
    restart(&deployment, &mut agent).await;
    let after_restart = receipt(send(&deployment, &agent.id, signed.clone()).await);
    assert_eq!(after_restart, first);
    let id = signed.request.action_id.to_string();
    let journal = cordon_agent::journal::read(agent.data_dir()).expect("journal");
    let started = journal
        .iter()
        .filter(|e| e.action_id == id && e.phase == cordon_agent::journal::Phase::Started)
        .count();
    assert_eq!(started, 1, "run once, answered three times");
}

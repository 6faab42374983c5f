//! Signed containment as responders and automation use it: keys made with `cordon keys
//! generate`, actions signed by the real CLI (or by hand) and submitted through the API, held
//! as pending until enough distinct keys signed, refused early when the agent's reported policy
//! does not trust the key, and run by a real agent that answers with a receipt the controller
//! verifies and keeps. The agent stays the security boundary: what the controller lets through
//! on a stale view of the policy, the agent still refuses.

use std::{
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cordon_api::agents::AgentStatus;
use cordon_cli::signer::PASSPHRASE_ENV;
use cordon_controller::{
    actions::{ActionView, SignatureSpec, StoredReceipt},
    store::ActionState,
};
use cordon_protocol::action::{signing_bytes, Action, ActionRequest};
use cordon_tests::{
    binary, generate_key, keys::TEST_PASSPHRASE, text, Deployment, PgSchema, TestAgent, Victim,
};
use ed25519_dalek::{pkcs8::DecodePrivateKey, Signer, SigningKey};

/// Trusts `key` on `agent` the way a host owner does (`cordon-agent trust add`).
fn trust(agent: &TestAgent, name: &str, key: &Path, actions: &str) {
    agent.trust(name, key, actions, "10m");
}

fn request(agent_id: &str, action: Action) -> ActionRequest {
    let now = cordon_agent::now_ms();
    ActionRequest {
        action_id: uuid::Uuid::new_v4(),
        agent_id: agent_id.to_string(),
        issued_at_ms: now,
        expires_at_ms: now + 120_000,
        nonce: *uuid::Uuid::new_v4().as_bytes(),
        action,
    }
}

fn signature(key: &SigningKey, request: &ActionRequest) -> serde_json::Value {
    let sig = key.sign(&signing_bytes(request).expect("signing bytes"));
    serde_json::json!({
        "public_key": hex::encode(key.verifying_key().to_bytes()),
        "signature": hex::encode(sig.to_bytes()),
    })
}

/// The agent's own signing key as the controller pinned it.
fn agent_key_hex(agent: &TestAgent) -> String {
    let dir = cordon_agent::identity::AgentDir::new(agent.data_dir());
    hex::encode(
        cordon_agent::signing::load_or_create(&dir)
            .expect("agent signing key")
            .verifying_key()
            .to_bytes(),
    )
}

async fn started(deployment: &Deployment, agent: &mut TestAgent) {
    agent.start();
    deployment.wait_for_inventory(&agent.id).await;
}

async fn wait_done(deployment: &Deployment, id: &str) -> ActionView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: ActionView = deployment
            .api()
            .get_json(&format!("/api/v1/actions/{id}?wait=10"))
            .await
            .expect("action readable");
        if view.state.is_final() {
            return view;
        }
        assert!(Instant::now() < deadline, "action never ended: {view:?}");
    }
}

#[test]
fn keys_are_generated_private_and_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = generate_key(tmp.path(), "alice");
    let mode = std::fs::metadata(&key.file)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        key.id,
        cordon_protocol::action::key_id(&key.signing.verifying_key().to_bytes())
    );
    let public = std::fs::read_to_string(&key.public_file).expect("public key");
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");

    // Again into the same file: refused, the key untouched.
    let before = std::fs::read(&key.file).expect("key");
    let again = Command::new(binary("e2e-cordon"))
        .args(["keys", "generate", "--out"])
        .arg(&key.file)
        .env_remove("CORDON_CONFIG")
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(text(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&key.file).expect("key"), before);

    // Encrypted at rest: a copy of the file signs nothing without the passphrase.
    let pem = std::fs::read_to_string(&key.file).expect("key");
    assert!(pem.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{pem}");
    let show = |passphrase: Option<&str>| {
        let mut command = Command::new(binary("e2e-cordon"));
        command
            .args(["keys", "show", "--key"])
            .arg(&key.file)
            .env_remove("CORDON_CONFIG")
            .env_remove("CORDON_URL")
            .env_remove(PASSPHRASE_ENV)
            .stdin(std::process::Stdio::null());
        if let Some(p) = passphrase {
            command.env(PASSPHRASE_ENV, p);
        }
        command.output().expect("run")
    };
    let no_passphrase = show(None);
    assert_eq!(no_passphrase.status.code(), Some(2), "{no_passphrase:?}");
    assert!(
        text(&no_passphrase.stderr).contains(PASSPHRASE_ENV),
        "{no_passphrase:?}"
    );
    let wrong = show(Some("not the passphrase"));
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(
        text(&wrong.stderr).contains("wrong passphrase"),
        "{wrong:?}"
    );
    // `keys show` prints the same id, with no controller configured at all.
    let shown = show(Some(TEST_PASSPHRASE));
    assert!(shown.status.success(), "{shown:?}");
    assert!(text(&shown.stdout).contains(&key.id));
}

/// `ssh-agent` on its own socket, killed when dropped.
struct SshAgent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Ed25519 key made by `ssh-keygen` and added to a fresh `ssh-agent`; `None` (loudly) where
/// OpenSSH's client tools are not installed.
fn key_in_ssh_agent(dir: &std::path::Path) -> Option<(SshAgent, std::path::PathBuf)> {
    let socket = dir.join("ssh-agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("SKIPPED: ssh-agent is not installed (openssh-client)");
        return None;
    };
    let agent = SshAgent { child, socket };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent never made its socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let private = dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let added = Command::new("ssh-add")
        .arg(&private)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .expect("ssh-add");
    assert!(added.status.success(), "{added:?}");
    // Only the agent holds the private key now.
    std::fs::remove_file(&private).expect("remove the private key file");
    Some((agent, dir.join("id_ed25519.pub")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_ssh_agent_signs_a_kill_the_agent_runs() {
    let deployment = Deployment::start().await;
    let Some((ssh_agent, public)) = key_in_ssh_agent(deployment.tmp.path()) else {
        return;
    };
    // Its Cordon id and hex public key, for the host's trust list.
    let shown = deployment
        .cli_command(&deployment.admin_token)
        .args(["--json", "keys", "show", "--key"])
        .arg(&public)
        .env("SSH_AUTH_SOCK", &ssh_agent.socket)
        .output()
        .expect("run");
    let info: serde_json::Value = cordon_tests::json_of(&shown);
    let hex_file = deployment.tmp.path().join("carol.hex");
    std::fs::write(&hex_file, info["public_key"].as_str().expect("public key")).expect("write");
    let mut agent = deployment.enroll_agent().await;
    let trusted = Command::new(binary("e2e-cordon-agent"))
        .args(["trust", "add", "--data-dir"])
        .arg(agent.data_dir())
        .arg("--public-key")
        .arg(&hex_file)
        .args(["--actions", "kill", "--name", "carol-ssh"])
        .output()
        .expect("trust add");
    assert!(trusted.status.success(), "{trusted:?}");
    started(&deployment, &mut agent).await;

    let mut victim = Victim::spawn();
    let pid = victim.pid_arg();
    let out = deployment
        .cli_command(&deployment.admin_token)
        .args(["kill", "--agent", &agent.id, "--pid", &pid, "--key"])
        .arg(&public)
        .env("SSH_AUTH_SOCK", &ssh_agent.socket)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("carol-ssh"),
        "{}",
        text(&out.stdout)
    );
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9));

    // Without the agent the same key file signs nothing.
    let mut victim = Victim::spawn();
    let pid = victim.pid_arg();
    let out = deployment
        .cli_command(&deployment.admin_token)
        .args(["kill", "--agent", &agent.id, "--pid", &pid, "--key"])
        .arg(&public)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("SSH_AUTH_SOCK"), "{out:?}");
    assert!(victim.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_kill_runs_and_its_verified_receipt_is_kept() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    trust(&agent, "alice", &alice.public_file, "kill");
    started(&deployment, &mut agent).await;

    // Through the API, signed by hand: created and delivered at once (one signer needed).
    let mut victim = Victim::spawn();
    let req = request(&agent.id, victim.kill_action());
    let body =
        serde_json::json!({ "request": req, "signatures": [signature(&alice.signing, &req)] });
    let created: ActionView = deployment
        .api()
        .post_json("/api/v1/actions", body.clone())
        .await
        .expect("action accepted");
    assert_eq!(created.id, req.action_id.to_string());
    assert!(matches!(
        created.state,
        ActionState::Submitted | ActionState::Done
    ));
    assert_eq!(created.signatures[0].signer, "alice");
    let done = wait_done(&deployment, &created.id).await;
    assert_eq!(done.state, ActionState::Done, "{done:?}");
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9), "{status:?}");

    // The receipt is stored, and verifies under the agent's own key.
    let receipt: StoredReceipt = done.receipt.as_ref().expect("receipt").to_text();
    let agent_key = agent_key_hex(&agent);
    receipt
        .verify(&done.id, &agent.id, &agent_key)
        .expect("the stored receipt verifies under the agent's key");
    let before: serde_json::Value = serde_json::from_str(&receipt.before).expect("before");
    assert_eq!(before["pid"], victim.pid());
    let mut forged = receipt.clone();
    forged.done = "nothing happened".into();
    assert!(forged.verify(&done.id, &agent.id, &agent_key).is_err());
    // Delivered as an ordinary task, which ended with the same receipt.
    let task = deployment
        .wait_for_task(done.task_id.as_deref().expect("task id"))
        .await;
    assert_eq!(task.kind, "action");
    assert_eq!(task.result.expect("result")["done"], receipt.done.as_str());

    // The same envelope again: the controller already has it.
    let again = deployment
        .api()
        .post_json::<ActionView>("/api/v1/actions", body)
        .await
        .expect_err("duplicate");
    assert_eq!(again.status, 409, "{again:?}");

    // Through the CLI: it looks up the start time itself, signs, waits, prints the receipt.
    let mut victim = Victim::spawn();
    let key = alice.file.to_str().expect("utf-8");
    let pid = victim.pid_arg();
    let out = deployment
        .run_cli(&["kill", "--agent", &agent.id, "--pid", &pid, "--key", key])
        .await;
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert!(printed.contains(": done"), "{printed}");
    assert!(
        printed.contains("receipt, signed by the agent"),
        "{printed}"
    );
    assert!(printed.contains("alice"), "{printed}");
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9));

    let listed = deployment
        .run_cli(&["--json", "actions", "list", "--agent", &agent.id])
        .await;
    let listed: Vec<ActionView> = serde_json::from_slice(&listed.stdout).expect("JSON list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a.state == ActionState::Done));

    // A pid that is not running: the start-time lookup says so (not found), nothing is signed.
    let out = deployment
        .run_cli(&[
            "kill", "--agent", &agent.id, "--pid", "4000000", "--key", key,
        ])
        .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_n_waits_for_a_second_distinct_key() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let bob = generate_key(deployment.tmp.path(), "bob");
    trust(&agent, "alice", &alice.public_file, "kill");
    trust(&agent, "bob", &bob.public_file, "kill");
    cordon_agent::trust::require(agent.data_dir(), "kill", 2).expect("require 2");
    started(&deployment, &mut agent).await;

    let mut victim = Victim::spawn();
    let (alice_key, bob_key) = (
        alice.file.to_str().expect("utf-8"),
        bob.file.to_str().expect("utf-8"),
    );
    let pid = victim.pid_arg();
    let out = deployment
        .run_cli(&[
            "kill", "--agent", &agent.id, "--pid", &pid, "--key", alice_key,
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert!(printed.contains("pending: 1 of 2"), "{printed}");
    let id = printed
        .split_whitespace()
        .skip_while(|w| *w != "approve")
        .nth(1)
        .expect("the approve hint names the action")
        .to_string();
    let pending: ActionView = deployment
        .api()
        .get_json(&format!("/api/v1/actions/{id}"))
        .await
        .expect("pending action");
    assert_eq!(pending.state, ActionState::Pending);
    assert_eq!(pending.task_id, None, "nothing is sent to the agent yet");
    // Someone follows it by a prefix of its id: that waits for the approval, then the run.
    let mut follower = deployment.follow(&["--json", "actions", "show", &id[..8], "--wait"]);
    follower
        .stderr_with(Duration::from_secs(20), "has 1 of 2 required signatures")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(victim.running());
    assert!(follower.running(), "still waiting for a second signer");

    // Alice approving her own action: refused by the CLI, and by the API when asked directly.
    let out = deployment
        .run_cli(&["approve", &id, "--key", alice_key])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("already signed"), "{out:?}");
    let again = deployment
        .api()
        .post_json::<ActionView>(
            &format!("/api/v1/actions/{id}/signatures"),
            signature(&alice.signing, &pending.request),
        )
        .await
        .expect_err("same key twice");
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"], "already_signed");
    let still: ActionView = deployment
        .api()
        .get_json(&format!("/api/v1/actions/{id}"))
        .await
        .expect("action");
    assert_eq!(still.state, ActionState::Pending);
    assert_eq!(still.signatures.len(), 1);
    assert!(victim.running());

    // Bob approves: now two distinct keys, so it runs.
    let out = deployment
        .run_cli(&["approve", &id, "--key", bob_key])
        .await;
    assert!(out.status.success(), "{out:?}");
    let printed = text(&out.stdout);
    assert!(printed.contains("approved with key"), "{printed}");
    assert!(printed.contains(": done"), "{printed}");
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9));
    let (status, lines) = follower.exit_within(Duration::from_secs(60)).await;
    assert!(status.success(), "{lines:?} {}", follower.stderr());
    let followed: ActionView = serde_json::from_str(&lines.concat()).expect("the action as JSON");
    assert_eq!(followed.state, ActionState::Done);
    let done = wait_done(&deployment, &id).await;
    let signers: Vec<&str> = done.signatures.iter().map(|s| s.signer.as_str()).collect();
    assert_eq!(signers, ["alice", "bob"]);
    assert!(done.receipt.is_some());

    // Done: no more approvals.
    let out = deployment
        .run_cli(&["approve", &id, "--key", bob_key])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_keys_and_bad_signatures_are_refused_early() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let carol = generate_key(deployment.tmp.path(), "carol");
    let mallory = generate_key(deployment.tmp.path(), "mallory");
    trust(&agent, "alice", &alice.public_file, "kill");
    trust(&agent, "carol", &carol.public_file, "block");
    started(&deployment, &mut agent).await;
    let mut victim = Victim::spawn();
    let pid = victim.pid_arg();

    // A key the agent does not trust: exit 3, with the reason, and nothing recorded.
    let out = deployment
        .run_cli(&[
            "kill",
            "--agent",
            &agent.id,
            "--pid",
            &pid,
            "--key",
            mallory.file.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "key {} is not trusted by agent {} for kill",
            mallory.id, agent.id
        )),
        "{err}"
    );
    // A trusted key, but not for this action.
    let out = deployment
        .run_cli(&[
            "kill",
            "--agent",
            &agent.id,
            "--pid",
            &pid,
            "--key",
            carol.file.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("it may sign: block"), "{out:?}");

    // Over the API: a forged signature (mallory's, under alice's public key) and a request
    // changed after it was signed are bad signatures, 400.
    let req = request(&agent.id, victim.kill_action());
    let mut forged = signature(&mallory.signing, &req);
    forged["public_key"] = hex::encode(alice.signing.verifying_key().to_bytes()).into();
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions",
            serde_json::json!({ "request": req, "signatures": [forged] }),
        )
        .await
        .expect_err("forged");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.body["error"], "bad_signature");
    let mut tampered = request(&agent.id, Action::Release);
    let spec = signature(&alice.signing, &tampered);
    tampered.action = victim.kill_action();
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions",
            serde_json::json!({ "request": tampered, "signatures": [spec] }),
        )
        .await
        .expect_err("tampered");
    assert_eq!(refused.body["error"], "bad_signature", "{refused:?}");
    // Expired before it was submitted.
    let mut stale = request(&agent.id, victim.kill_action());
    stale.issued_at_ms -= 600_000;
    stale.expires_at_ms = stale.issued_at_ms + 60_000;
    let spec = signature(&alice.signing, &stale);
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions",
            serde_json::json!({ "request": stale, "signatures": [spec] }),
        )
        .await
        .expect_err("expired");
    assert_eq!(refused.body["error"], "expired", "{refused:?}");
    // An agent that does not exist.
    let elsewhere = request("no-such-agent", victim.kill_action());
    let spec = signature(&alice.signing, &elsewhere);
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions",
            serde_json::json!({ "request": elsewhere, "signatures": [spec] }),
        )
        .await
        .expect_err("unknown agent");
    assert_eq!(refused.status, 404, "{refused:?}");

    let listed: Vec<ActionView> = deployment
        .api()
        .get_json("/api/v1/actions")
        .await
        .expect("list");
    assert!(
        listed.is_empty(),
        "refused actions are not kept: {listed:?}"
    );
    assert!(victim.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automation_key_runs_only_what_agent_policy_trusts_it_for() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let data = cordon_controller::deployment::DataDir::new(&deployment.data_dir);
    let automation_pub = data.automation_pub();
    let automation_id = {
        let pem = std::fs::read_to_string(data.automation_key()).expect("automation key");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("PEM");
        cordon_protocol::action::key_id(&key.verifying_key().to_bytes())
    };
    trust(&agent, "automation", &automation_pub, "kill");
    started(&deployment, &mut agent).await;

    // Not trusted for quarantine: refused by the controller before anything is sent.
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions/automation",
            serde_json::json!({
                "agent_id": agent.id,
                "action": { "Quarantine": { "path": "/etc/hostname" } },
            }),
        )
        .await
        .expect_err("not trusted for quarantine");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body["error"], "untrusted_signer");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("it may sign: kill"),
        "{refused:?}"
    );

    // The host owner withdraws the trust while the agent is down. The controller still has
    // the policy the agent last reported and lets the kill through, to wait for the agent;
    // the agent, back, refuses it.
    agent.stop().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Offline)
        .await;
    cordon_agent::trust::remove(agent.data_dir(), &automation_id).expect("trust remove");
    let mut victim = Victim::spawn();
    let submitted: ActionView = deployment
        .api()
        .post_json(
            "/api/v1/actions/automation",
            serde_json::json!({
                "agent_id": agent.id,
                "action": victim.kill_action(),
                "ttl_secs": 60,
            }),
        )
        .await
        .expect("the controller's stale view lets it through");
    assert!(submitted.created_by.contains("automation key"));
    started(&deployment, &mut agent).await;
    let ended = wait_done(&deployment, &submitted.id).await;
    assert_eq!(ended.state, ActionState::Failed, "{ended:?}");
    let error = ended.error.expect("error");
    assert_eq!(error.code.as_str(), "unauthorized");
    assert!(error.message.starts_with("untrusted key:"), "{error:?}");
    assert!(ended.receipt.is_none());
    assert!(victim.running(), "an action the agent refused must not run");
    // A refused action is exit code 3 for scripts.
    let out = deployment
        .run_cli(&["actions", "show", &submitted.id])
        .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The agent's hello told the controller: the next one is refused at once.
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            "/api/v1/actions/automation",
            serde_json::json!({ "agent_id": agent.id, "action": victim.kill_action() }),
        )
        .await
        .expect_err("no longer trusted");
    assert_eq!(refused.body["error"], "untrusted_signer", "{refused:?}");
    assert!(victim.running());
}

/// The containment policy the controller holds for an agent, as the API shows it.
async fn reported_policy(
    deployment: &Deployment,
    agent_id: &str,
) -> cordon_protocol::action::PolicySummary {
    let view: cordon_api::agents::AgentView = deployment
        .api()
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .await
        .expect("agent view");
    view.inventory.expect("inventory").action_policy
}

/// Waits (up to 20 s) until the controller holds a policy for `agent_id` that satisfies `ok`.
async fn wait_for_policy(
    deployment: &Deployment,
    agent_id: &str,
    what: &str,
    ok: impl Fn(&cordon_protocol::action::PolicySummary) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let policy = reported_policy(deployment, agent_id).await;
        if ok(&policy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never learned that {what}: {policy:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the real `cordon-agent trust …` on `agent`'s data dir, as the host's owner does.
async fn trust_cli(agent: &TestAgent, args: &[&str]) {
    let mut command = Command::new(binary("e2e-cordon-agent"));
    command
        .arg("trust")
        .arg(args[0])
        .arg("--data-dir")
        .arg(agent.data_dir())
        .args(&args[1..]);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cordon-agent"))
        .await
        .expect("thread");
    assert!(out.status.success(), "{out:?}");
}

/// `cordon-agent trust add/require/remove` on a running agent's host: the agent notices,
/// reports its new policy, and the controller's early checks follow it without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_changes_on_a_running_agent_reach_the_controllers_checks() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let bob = generate_key(deployment.tmp.path(), "bob");
    trust(&agent, "alice", &alice.public_file, "kill");
    started(&deployment, &mut agent).await;
    let submit = |key: &SigningKey, req: &ActionRequest| {
        let body = serde_json::json!({ "request": req, "signatures": [signature(key, req)] });
        let api = deployment.api();
        async move { api.post_json::<ActionView>("/api/v1/actions", body).await }
    };
    let mut victim = Victim::spawn();

    // Bob is not trusted yet: refused by the controller at once.
    let req = request(&agent.id, victim.kill_action());
    let refused = submit(&bob.signing, &req).await.expect_err("untrusted");
    assert_eq!(refused.body["error"], "untrusted_signer", "{refused:?}");

    // The host's owner trusts bob, the agent still running.
    let bob_pub = bob.public_file.to_str().expect("utf-8");
    trust_cli(
        &agent,
        &[
            "add",
            "--public-key",
            bob_pub,
            "--actions",
            "kill",
            "--max-ttl",
            "10m",
        ],
    )
    .await;
    wait_for_policy(&deployment, &agent.id, "bob is trusted", |p| {
        p.signers.iter().any(|s| s.key_id == bob.id)
    })
    .await;
    let req = request(&agent.id, victim.kill_action());
    let created = submit(&bob.signing, &req).await.expect("now trusted");
    let done = wait_done(&deployment, &created.id).await;
    assert_eq!(done.state, ActionState::Done, "{done:?}");
    assert_eq!(
        victim
            .exit_within(Duration::from_secs(10))
            .expect("killed")
            .signal(),
        Some(9)
    );

    // Two signers now required for a kill: alice's alone waits as pending.
    trust_cli(&agent, &["require", "--action", "kill", "--signers", "2"]).await;
    wait_for_policy(&deployment, &agent.id, "kill needs 2 signers", |p| {
        p.required(cordon_protocol::action::ActionKind::Kill) == 2
    })
    .await;
    let mut victim = Victim::spawn();
    let req = request(&agent.id, victim.kill_action());
    let pending = submit(&alice.signing, &req).await.expect("pending");
    assert_eq!(pending.state, ActionState::Pending, "{pending:?}");
    assert_eq!(pending.required_signers, 2);

    // Alice's key is withdrawn: her next order is refused at once.
    trust_cli(&agent, &["remove", &alice.id]).await;
    wait_for_policy(&deployment, &agent.id, "alice is no longer trusted", |p| {
        p.signers.iter().all(|s| s.key_id != alice.id)
    })
    .await;
    let req = request(&agent.id, victim.kill_action());
    let refused = submit(&alice.signing, &req).await.expect_err("withdrawn");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body["error"], "untrusted_signer");
    assert!(victim.running());
}

/// The approval path keeps a signature from an approver who signed something else out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_must_sign_the_pending_request_itself() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let bob = generate_key(deployment.tmp.path(), "bob");
    trust(&agent, "alice", &alice.public_file, "block");
    trust(&agent, "bob", &bob.public_file, "block");
    cordon_agent::trust::require(agent.data_dir(), "block", 2).expect("require");
    started(&deployment, &mut agent).await;

    let req = request(
        &agent.id,
        Action::Block {
            targets: vec!["203.0.113.9".into()],
            ttl_secs: 60,
        },
    );
    let created: ActionView = deployment
        .api()
        .post_json(
            "/api/v1/actions",
            serde_json::json!({ "request": req, "signatures": [signature(&alice.signing, &req)] }),
        )
        .await
        .expect("pending");
    assert_eq!(created.state, ActionState::Pending);
    assert_eq!(created.required_signers, 2);
    // Bob signs a different block (longer ttl) and offers it as an approval: refused.
    let mut other = req.clone();
    other.action = Action::Block {
        targets: vec!["203.0.113.9".into()],
        ttl_secs: 600,
    };
    let spec: SignatureSpec =
        serde_json::from_value(signature(&bob.signing, &other)).expect("spec");
    let refused = deployment
        .api()
        .post_json::<ActionView>(
            &format!("/api/v1/actions/{}/signatures", created.id),
            serde_json::to_value(spec).expect("JSON"),
        )
        .await
        .expect_err("signature over another request");
    assert_eq!(refused.body["error"], "bad_signature", "{refused:?}");
    let view: ActionView = deployment
        .api()
        .get_json(&format!("/api/v1/actions/{}", created.id))
        .await
        .expect("view");
    assert_eq!(view.state, ActionState::Pending);
    assert_eq!(view.signatures.len(), 1);
}

/// The quickstart makes a responder key, points its responder config at it, and has its local
/// agent trust it: `cordon kill` works right away with the config it wrote.
#[test]
fn the_quickstart_responder_can_kill_on_the_local_agent() {
    use std::io::{BufRead, BufReader};

    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = tmp.path().join("cordon");
    let mut quickstart = Command::new(binary("e2e-cordon-controller"))
        .args(["quickstart", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--agent-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quickstart");
    let stdout = quickstart.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        assert!(Instant::now() < deadline, "quickstart: {printed:?}");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            printed.push(line);
        }
    }
    let printed = printed.join("\n");
    assert!(printed.contains("signing key:"), "{printed}");

    let config = data_dir.join("responder.toml");
    let written = std::fs::read_to_string(&config).expect("responder config");
    assert!(written.contains("signing_key"), "{written}");
    let cordon = |args: &[&str]| {
        Command::new(binary("e2e-cordon"))
            .args(args)
            .env("CORDON_CONFIG", &config)
            .env_remove("CORDON_URL")
            .env_remove("CORDON_TOKEN")
            .env_remove("CORDON_CA")
            .env_remove("CORDON_SIGNING_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run cordon")
    };
    let agent_id = loop {
        let out = cordon(&["--json", "agents", "list"]);
        let list: Vec<cordon_api::agents::AgentView> =
            serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(agent) = list.iter().find(|a| a.status == AgentStatus::Online) {
            let shown = cordon(&["--json", "agents", "show", &agent.id]);
            let agent: cordon_api::agents::AgentView =
                serde_json::from_slice(&shown.stdout).expect("agent JSON");
            // Online a moment before its inventory (and policy) is stored.
            if let Some(inventory) = &agent.inventory {
                let policy = &inventory.action_policy;
                assert_eq!(policy.signers.len(), 1, "{policy:?}");
                assert_eq!(
                    policy.signers[0].actions.len(),
                    cordon_protocol::action::ActionKind::ALL.len(),
                    "every action"
                );
                break agent.id.clone();
            }
        }
        assert!(Instant::now() < deadline, "local agent never online");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut victim = Victim::spawn();
    let out = cordon(&["kill", "--agent", &agent_id, "--pid", &victim.pid_arg()]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains(": done"), "{out:?}");
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9));

    let _ = Command::new("kill")
        .args(["-INT", &quickstart.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quickstart.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same path on the PostgreSQL store (skipped loudly without `CORDON_TEST_DATABASE_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_kill_on_postgres() {
    let Some(schema) = PgSchema::create("a_signed_kill_on_postgres").await else {
        return;
    };
    let mut deployment = Deployment::start_with_database(Some(schema.url())).await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    trust(&agent, "alice", &alice.public_file, "kill");
    started(&deployment, &mut agent).await;
    let mut victim = Victim::spawn();
    let req = request(&agent.id, victim.kill_action());
    let body =
        serde_json::json!({ "request": req, "signatures": [signature(&alice.signing, &req)] });
    let created: ActionView = deployment
        .api()
        .post_json("/api/v1/actions", body.clone())
        .await
        .expect("accepted");
    let done = wait_done(&deployment, &created.id).await;
    assert_eq!(done.state, ActionState::Done, "{done:?}");
    done.receipt
        .expect("receipt")
        .to_text()
        .verify(&done.id, &agent.id, &agent_key_hex(&agent))
        .expect("verified receipt");
    assert_eq!(
        victim
            .exit_within(Duration::from_secs(10))
            .expect("killed")
            .signal(),
        Some(9)
    );
    let again = deployment
        .api()
        .post_json::<ActionView>("/api/v1/actions", body)
        .await
        .expect_err("duplicate");
    assert_eq!(again.status, 409, "{again:?}");
    agent.stop().await;
    deployment.stop_controller().await;
    schema.drop().await;
}

/// A TCP relay between an agent and its controller that can lose an answer: armed, it passes
/// the next task on to the agent and from then on swallows whatever the agent sends on that
/// connection. The agent acts, its receipt never arrives, and the controller, hearing nothing
/// more, drops the session and queues the task again. Later connections are relayed whole.
struct LossyRelay {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    loss: std::sync::Arc<Loss>,
    task: tokio::task::JoinHandle<()>,
}

/// What the relay lost, and when the connection that lost it ended (ms since the epoch).
#[derive(Default)]
struct Loss {
    swallowed: std::sync::atomic::AtomicUsize,
    ended_at_ms: std::sync::atomic::AtomicI64,
}

/// Bytes the controller sends in one go that can only be a task: a heartbeat ack is one small
/// TLS record (about 30 bytes); a signed kill is hundreds.
const TASK_BYTES: usize = 150;

impl LossyRelay {
    async fn start(controller: std::net::SocketAddr) -> Self {
        use std::sync::{atomic::AtomicBool, Arc};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let armed = Arc::new(AtomicBool::new(false));
        let loss = Arc::new(Loss::default());
        let (a, l) = (armed.clone(), loss.clone());
        let task = tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(controller).await else {
                    continue;
                };
                tokio::spawn(relay_pair(agent, upstream, a.clone(), l.clone()));
            }
        });
        LossyRelay {
            addr,
            armed,
            loss,
            task,
        }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes of the agent's swallowed, and when the connection that swallowed them ended
    /// (0 while it lasts).
    fn loss(&self) -> (usize, i64) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            self.loss.swallowed.load(SeqCst),
            self.loss.ended_at_ms.load(SeqCst),
        )
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_pair(
    agent: tokio::net::TcpStream,
    controller: tokio::net::TcpStream,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    loss: std::sync::Arc<Loss>,
) {
    use std::sync::{atomic::Ordering, Arc};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deaf = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut agent_rx, mut agent_tx) = agent.into_split();
    let (mut controller_rx, mut controller_tx) = controller.into_split();
    let (deaf_down, deaf_end) = (deaf.clone(), deaf.clone());
    let loss_end = loss.clone();
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = controller_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            // Deaf before the task goes on, so nothing the agent answers can slip through.
            if n > TASK_BYTES && armed.swap(false, Ordering::SeqCst) {
                deaf_down.store(true, Ordering::SeqCst);
            }
            if agent_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = agent_tx.shutdown().await;
    };
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = agent_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if deaf.load(Ordering::SeqCst) {
                loss.swallowed.fetch_add(n, Ordering::SeqCst);
                continue;
            }
            if controller_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = controller_tx.shutdown().await;
    };
    tokio::join!(down, up);
    if deaf_end.load(Ordering::SeqCst) {
        loss_end
            .ended_at_ms
            .store(cordon_agent::now_ms(), Ordering::SeqCst);
    }
}

/// The session drops after the agent acted but before its receipt reached the controller: the
/// controller queues the action's task again, and the agent, given the same envelope, answers
/// with the receipt it journaled — the action ends done, run once, not refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_lost_with_the_session_arrives_when_the_action_is_sent_again() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    trust(&agent, "alice", &alice.public_file, "kill");
    let relay = LossyRelay::start(deployment.agent_addr).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = cordon_agent::AgentConfig::new(agent.data_dir());
    config.controller_override = Some(relay.addr.to_string());
    config.reconnect_initial = Duration::from_millis(100);
    config.reconnect_max = Duration::from_millis(500);
    let running = tokio::spawn(cordon_agent::run(config, shutdown.clone()));
    deployment.wait_for_inventory(&agent.id).await;

    relay.arm();
    let mut victim = Victim::spawn();
    let req = request(&agent.id, victim.kill_action());
    let created: ActionView = deployment
        .api()
        .post_json(
            "/api/v1/actions",
            serde_json::json!({ "request": req, "signatures": [signature(&alice.signing, &req)] }),
        )
        .await
        .expect("accepted");
    let status = victim.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9));

    // The agent's answer went nowhere; the controller drops the silent session, the agent
    // reconnects, the task goes again.
    let done = wait_done(&deployment, &created.id).await;
    assert_eq!(done.state, ActionState::Done, "{done:?}");
    let (swallowed, lost_session_ended_ms) = relay.loss();
    assert!(swallowed > 0, "the first answer was lost");
    assert!(lost_session_ended_ms > 0, "the session that lost it ended");
    let receipt = done.receipt.expect("receipt");
    receipt
        .to_text()
        .verify(&done.id, &agent.id, &agent_key_hex(&agent))
        .expect("the receipt verifies under the agent's key");

    // Run once; the receipt stored is the one journaled the first time.
    let journal = cordon_agent::journal::read(agent.data_dir()).expect("journal");
    let entries: Vec<_> = journal.iter().filter(|e| e.action_id == done.id).collect();
    let phases: Vec<_> = entries.iter().map(|e| e.phase).collect();
    use cordon_agent::journal::Phase;
    assert_eq!(phases, [Phase::Started, Phase::Finished], "{entries:?}");
    // It ran on the first delivery, in the session that lost its answer; the receipt came with
    // the second.
    assert!(
        entries[0].at_ms < lost_session_ended_ms,
        "{entries:?} vs {lost_session_ended_ms}"
    );
    let journaled = entries[1].receipt.as_ref().expect("journaled receipt");
    assert_eq!(journaled.signature, receipt.signature);
    assert_eq!(journaled.at_ms, receipt.at_ms);

    shutdown.cancel();
    let _ = running.await;
}

/// Submitting an action writes the audit `attempt` in the same transaction as the action, and
/// the outcome after, pointing back at it; a refused submission is audited too; and when the
/// audit log cannot be written, no action is recorded or sent (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_action_is_audited_with_it_and_not_made_without_it() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let mallory = generate_key(deployment.tmp.path(), "mallory");
    trust(&agent, "alice", &alice.public_file, "kill");
    started(&deployment, &mut agent).await;
    let api = deployment.api();
    let submit = |key: &SigningKey, req: &ActionRequest| {
        let body = serde_json::json!({ "request": req, "signatures": [signature(key, req)] });
        let api = deployment.api();
        async move { api.post_json::<ActionView>("/api/v1/actions", body).await }
    };
    let entries = || async {
        let page: serde_json::Value = deployment
            .api()
            .get_json("/api/v1/audit?limit=1000")
            .await
            .expect("audit list");
        page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["action"] == "POST /api/v1/actions")
            .cloned()
            .collect::<Vec<_>>()
    };

    let victim = Victim::spawn();
    let req = request(&agent.id, victim.kill_action());
    let created = submit(&alice.signing, &req).await.expect("accepted");
    wait_done(&deployment, &created.id).await;
    let mut victim = Victim::spawn();
    let refused = submit(&mallory.signing, &request(&agent.id, victim.kill_action()))
        .await
        .expect_err("untrusted");
    assert_eq!(refused.status, 403);
    let audited = entries().await;
    let summary: Vec<(String, i64)> = audited
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or_default().to_string(),
                e["detail"]["attempt"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let seq = |i: usize| audited[i]["seq"].as_i64().expect("seq");
    assert_eq!(
        summary,
        [
            ("attempt".to_string(), 0),
            ("201".to_string(), seq(0)),
            ("attempt".to_string(), 0),
            ("refused".to_string(), seq(2)),
        ],
        "{audited:#?}"
    );
    assert_eq!(audited[0]["actor"], audited[1]["actor"]);
    // The agent's receipt is in the chain too, pinned by its hash.
    let page: serde_json::Value = api
        .get_json("/api/v1/audit?limit=1000")
        .await
        .expect("audit list");
    let receipts: Vec<&serde_json::Value> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "action.receipt")
        .collect();
    assert_eq!(receipts.len(), 1, "{page:#}");
    assert_eq!(receipts[0]["target"], created.id.as_str());
    assert_eq!(receipts[0]["outcome"], "done");
    assert_eq!(receipts[0]["actor"], format!("agent:{}", agent.id));
    assert_eq!(
        receipts[0]["detail"]["receipt_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    let verified: serde_json::Value = api.get_json("/api/v1/audit/verify").await.expect("verify");
    assert_eq!(verified["ok"], true, "{verified}");

    // The log cannot be written: the action is neither recorded nor sent.
    let db = deployment.sqlite().await;
    sqlx::query(
        "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit log unwritable'); END",
    )
    .execute(&db)
    .await
    .expect("trigger");
    let req = request(&agent.id, victim.kill_action());
    let refused = submit(&alice.signing, &req).await.expect_err("unaudited");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body["error"], "audit_unavailable");
    let missing = api
        .get_json::<ActionView>(&format!("/api/v1/actions/{}", req.action_id))
        .await
        .expect_err("not recorded");
    assert_eq!(missing.status, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        victim.running(),
        "an action that was not audited must not run"
    );
    sqlx::query("DROP TRIGGER audit_refuses")
        .execute(&db)
        .await
        .expect("drop trigger");
    db.close().await;
}

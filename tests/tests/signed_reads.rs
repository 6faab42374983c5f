//! A host whose policy says `signed_reads = true`: file contents leave it only when a key the
//! host trusts for `fetch` signed that very path, however the fetch was asked for.

use cordon_tests::{fails, generate_key, ok, Deployment, TestAgent};
use serde_json::json;

/// Sets `signed_reads = true` in the agent's policy file, by hand as a host's admin would.
fn require_signed_reads(agent: &TestAgent) {
    let path = cordon_agent::policy::path(agent.data_dir());
    let text = std::fs::read_to_string(&path).expect("policy");
    assert!(text.contains("signed_reads = false"), "{text}");
    let text = text.replace("signed_reads = false", "signed_reads = true");
    std::fs::write(&path, text).expect("write policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contents_leave_a_signed_reads_host_only_with_a_fetch_signature() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = generate_key(deployment.tmp.path(), "alice");
    let bob = generate_key(deployment.tmp.path(), "bob");
    agent.trust("alice", &alice.public_file, "fetch", "2h");
    agent.trust("bob", &bob.public_file, "kill", "2h");
    require_signed_reads(&agent);
    agent.start();
    let inventory = deployment.wait_for_inventory(&agent.id).await;
    assert!(
        inventory.action_policy.signed_reads,
        "the agent reports that it requires signed reads"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("auth.log");
    std::fs::write(&file, b"Dec  2 sshd: Accepted publickey").expect("write");
    let path = file.to_str().expect("utf-8");

    // Through the API with no signature (a stolen token, or the controller alone): refused.
    let task = deployment
        .run_task(&agent.id, json!({ "type": "fetch_file", "path": path }))
        .await;
    assert_eq!(task.state.as_str(), "failed", "{task:?}");
    let error = task.error.expect("error");
    assert_eq!(error.code.as_str(), "unauthorized", "{}", error.message);
    assert!(error.message.contains("signed_reads"), "{}", error.message);
    // Reading metadata is not reading contents: stat and hash still work.
    let hashed = deployment
        .run_task(&agent.id, json!({ "type": "file_hash", "path": path }))
        .await;
    assert_eq!(hashed.state.as_str(), "done", "{hashed:?}");

    // The CLI without a key says what is needed, before queueing anything.
    let out = deployment
        .run_cli(&["files", "fetch", "--agent", &agent.id, "--wait", path])
        .await;
    let err = fails(&out, 2);
    assert!(err.contains("requires a responder's signature"), "{err}");

    // Signed by a key trusted for fetch: the bytes come.
    let alice_key = alice.file.to_str().expect("utf-8");
    let fetched = ok(&deployment
        .run_cli(&[
            "files", "fetch", "--agent", &agent.id, "--wait", "--key", alice_key, path,
        ])
        .await);
    assert!(fetched.contains("sha256"), "{fetched}");

    // Signed by a key trusted only to kill: refused by the agent, naming why.
    let bob_key = bob.file.to_str().expect("utf-8");
    let out = deployment
        .run_cli(&[
            "--json", "files", "fetch", "--agent", &agent.id, "--wait", "--key", bob_key, path,
        ])
        .await;
    assert!(!out.status.success(), "{out:?}");
    let text = cordon_tests::text(&out.stdout) + &cordon_tests::text(&out.stderr);
    assert!(text.contains("unauthorized"), "{text}");

    // A signed fetch is not an action to run.
    let refused = deployment
        .api()
        .post_json::<serde_json::Value>(
            "/api/v1/actions",
            json!({
                "request": {
                    "action_id": uuid::Uuid::new_v4(),
                    "agent_id": agent.id,
                    "issued_at_ms": cordon_agent::now_ms(),
                    "expires_at_ms": cordon_agent::now_ms() + 60_000,
                    "nonce": vec![0u8; 16],
                    "action": { "Fetch": { "path": path } },
                },
                "signatures": [],
            }),
        )
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 400, "{refused:?}");
    agent.stop().await;
}

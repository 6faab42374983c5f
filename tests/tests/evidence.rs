//! Evidence end to end with a real agent: fetched files and snapshots stored content-addressed
//! with the agent's signed manifest, downloads and re-verification; and everything that must
//! not become evidence — bad paths, files over the limit, chunks that do not match their hash,
//! manifests signed by another key, an agent that drops mid-transfer.

use std::time::Duration;

use cordon_api::tasks::TaskView;
use cordon_controller::evidence::{EvidenceView, Verification};
use cordon_protocol::{
    evidence::{EvidenceKind, EvidenceManifest, SignedManifest},
    message::{AgentMessage, Chunk, ChunkEnd, ControllerMessage, TaskOutput, TaskResult},
};
use cordon_tests::{agent_tls, hello_for, open_session, simulated_signing_key, Deployment};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn evidence_of(task: &TaskView) -> EvidenceView {
    assert_eq!(task.state.as_str(), "done", "{task:?}");
    serde_json::from_value(task.result.clone().expect("result")).expect("evidence view")
}

/// Files left in the controller's incoming directory (transfers not finished or not cleaned).
fn incoming(deployment: &Deployment) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(deployment.data_dir.join("evidence/incoming"))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

async fn evidence_count(deployment: &Deployment) -> usize {
    let list: Vec<EvidenceView> = deployment
        .api()
        .get_json("/api/v1/evidence?limit=1000")
        .await
        .unwrap();
    list.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_file_is_stored_verified_and_downloadable() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("implant.bin");
    // Several chunks, not a multiple of the chunk size.
    let bytes: Vec<u8> = (0..(3 * 256 * 1024 + 4321))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();

    let task = deployment
        .run_task(&agent.id, json!({ "type": "fetch_file", "path": path }))
        .await;
    let view = evidence_of(&task);
    assert_eq!(view.sha256, sha256_hex(&bytes));
    assert_eq!(view.size, bytes.len() as i64);
    assert_eq!(view.kind, "file");
    assert_eq!(view.source_path.as_deref(), Some(path));
    assert_eq!(view.manifest["file"]["size"], bytes.len());

    let (status, body) = deployment
        .api()
        .get_bytes(&format!("/api/v1/evidence/{}", view.sha256))
        .await;
    assert_eq!(status, 200);
    assert!(body == bytes, "downloaded bytes differ");
    let verification: Verification = deployment
        .api()
        .get_json(&format!("/api/v1/evidence/{}/verify", view.sha256))
        .await
        .unwrap();
    assert!(verification.ok, "{verification:?}");
    assert!(verification
        .checks
        .iter()
        .any(|c| c.check.ends_with("signature") && c.ok));

    // The CLI: fetch with -o saves the same bytes; verify passes; an existing file is kept.
    let out = tmp.path().join("copy.bin");
    let cli = deployment.cli(&[
        "files",
        "fetch",
        "--agent",
        &agent.id,
        path,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let again = deployment.cli(&[
        "files",
        "fetch",
        "--agent",
        &agent.id,
        path,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2), "refuses to overwrite");
    let verify = deployment.cli(&["evidence", "verify", &view.sha256]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Tampering with the stored bytes is caught.
    let object = deployment
        .data_dir
        .join("evidence/objects")
        .join(&view.sha256[..2])
        .join(&view.sha256);
    std::fs::write(&object, b"edited").unwrap();
    let verification: Verification = deployment
        .api()
        .get_json(&format!("/api/v1/evidence/{}/verify", view.sha256))
        .await
        .unwrap();
    assert!(!verification.ok);
    let verify = deployment.cli(&["evidence", "verify", &view.sha256]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("FAILED"));

    // Unknown and malformed hashes.
    let (status, _) = deployment
        .api()
        .get_bytes(&format!("/api/v1/evidence/{}", "0".repeat(64)))
        .await;
    assert_eq!(status, 404);
    let (status, _) = deployment
        .api()
        .get_bytes("/api/v1/evidence/..%2F..%2Fca.key")
        .await;
    assert_eq!(status, 400);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fetches_fail_clearly_and_store_nothing() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![1u8; 4096]).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let cases = [
        (
            json!({ "type": "fetch_file", "path": format!("{dir}/missing") }),
            "not_found",
        ),
        (
            json!({ "type": "fetch_file", "path": dir.clone() }),
            "invalid_input",
        ),
        (
            json!({ "type": "fetch_file", "path": format!("{dir}/../etc/passwd") }),
            "invalid_input",
        ),
        (
            json!({ "type": "fetch_file", "path": "relative/path" }),
            "invalid_input",
        ),
        (
            json!({ "type": "fetch_file", "path": "/etc/\u{0}x" }),
            "invalid_input",
        ),
        (
            json!({ "type": "fetch_file", "path": big.to_str().unwrap(), "max_bytes": 100 }),
            "too_large",
        ),
    ];
    for (spec, code) in cases {
        let task = deployment.run_task(&agent.id, spec.clone()).await;
        assert_eq!(task.state.as_str(), "failed", "{spec}: {task:?}");
        let error = task.error.expect("error");
        assert_eq!(error.code.as_str(), code, "{spec}: {}", error.message);
    }
    assert_eq!(evidence_count(&deployment).await, 0);
    assert!(incoming(&deployment).is_empty());
    // The agent is still there and still works.
    let ok = deployment
        .run_task(
            &agent.id,
            json!({ "type": "fetch_file", "path": big.to_str().unwrap() }),
        )
        .await;
    assert_eq!(evidence_of(&ok).size, 4096);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_a_signed_bundle_of_every_collector() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    let task = deployment
        .run_task(&agent.id, json!({ "type": "snapshot" }))
        .await;
    let view = evidence_of(&task);
    assert_eq!(view.kind, "snapshot");
    let sections: Vec<&str> = view.manifest["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sections, ["system", "processes", "network"]);
    let (_, body) = deployment
        .api()
        .get_bytes(&format!("/api/v1/evidence/{}", view.sha256))
        .await;
    let bundle: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let me = std::process::id();
    assert!(
        bundle["processes"]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == me && p["exe_sha256"].is_string()),
        "the test process is in the snapshot with its executable's hash"
    );
    let verification: Verification = deployment
        .api()
        .get_json(&format!("/api/v1/evidence/{}/verify", view.sha256))
        .await
        .unwrap();
    assert!(verification.ok, "{verification:?}");
    assert!(verification
        .checks
        .iter()
        .any(|c| c.check.ends_with("sections") && c.ok));
    agent.stop().await;
}

/// Plays an agent by hand: opens its session, receives the fetch task, and answers with what
/// the test wants.
async fn hand_played_fetch(
    deployment: &Deployment,
    agent_id: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    answer: impl FnOnce(&str) -> Vec<AgentMessage>,
) -> TaskView {
    let (hello, mut conn) = open_session(deployment.agent_addr, tls, &hello_for(agent_id))
        .await
        .expect("session");
    assert!(matches!(
        hello.outcome,
        cordon_protocol::hello::HelloOutcome::Accepted { .. }
    ));
    let created: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent_id, "task": { "type": "fetch_file", "path": "/etc/hostname" } }),
        )
        .await
        .unwrap();
    let task_id = loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.recv::<ControllerMessage>())
            .await
            .expect("task within 10 s")
            .expect("frame")
        {
            Some(ControllerMessage::Task(task)) => break task.task_id,
            Some(_) => continue,
            None => panic!("controller closed the session"),
        }
    };
    assert_eq!(task_id, created.id);
    for message in answer(&task_id) {
        conn.send(&message).await.unwrap();
    }
    deployment.wait_for_task(&created.id).await
}

/// One chunk with the right hash, then a manifest for it signed by `key`.
fn intact_transfer(
    agent_id: &str,
    task_id: &str,
    data: &[u8],
    key: &ed25519_dalek::SigningKey,
) -> Vec<AgentMessage> {
    let signed = SignedManifest::sign(&manifest_for(agent_id, task_id, data), key).unwrap();
    vec![
        AgentMessage::Chunk(Chunk {
            task_id: task_id.into(),
            seq: 0,
            data: data.to_vec(),
            end: Some(ChunkEnd {
                total_len: data.len() as u64,
                sha256: sha256_hex(data),
            }),
        }),
        AgentMessage::TaskResult(TaskResult {
            task_id: task_id.into(),
            outcome: Ok(TaskOutput::Evidence(signed)),
        }),
    ]
}

fn manifest_for(agent_id: &str, task_id: &str, data: &[u8]) -> EvidenceManifest {
    EvidenceManifest {
        version: 1,
        kind: EvidenceKind::File,
        agent_id: agent_id.into(),
        hostname: "sim".into(),
        task_id: task_id.into(),
        collected_at_ms: 1,
        total_len: data.len() as u64,
        sha256: sha256_hex(data),
        source_path: Some("/etc/hostname".into()),
        file: None,
        sections: vec![],
        problems: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_that_do_not_match_and_forged_manifests_are_refused() {
    let deployment = Deployment::start().await;
    // Enrolled, never run: the test plays this agent.
    let agent = deployment.enroll_agent().await;
    let tls = agent_tls(agent.data_dir());
    let id = agent.id.clone();
    let data = b"the real bytes".to_vec();

    // The final chunk announces a hash the bytes do not have.
    let task = hand_played_fetch(&deployment, &id, tls.clone(), |task_id| {
        vec![AgentMessage::Chunk(Chunk {
            task_id: task_id.into(),
            seq: 0,
            data: data.clone(),
            end: Some(ChunkEnd {
                total_len: data.len() as u64,
                sha256: sha256_hex(b"other bytes"),
            }),
        })]
    })
    .await;
    assert_eq!(task.state.as_str(), "failed");
    let error = task.error.unwrap();
    assert_eq!(error.code.as_str(), "integrity");
    assert!(error.message.contains("SHA-256"), "{}", error.message);

    // Intact bytes, but the manifest is signed by a key that is not the agent's pinned key.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let task = hand_played_fetch(&deployment, &id, tls.clone(), |task_id| {
        intact_transfer(&id, task_id, &data, &forger)
    })
    .await;
    assert_eq!(task.state.as_str(), "failed");
    assert!(task.error.unwrap().message.contains("different key"));

    // A chunk out of order.
    let task = hand_played_fetch(&deployment, &id, tls.clone(), |task_id| {
        vec![AgentMessage::Chunk(Chunk {
            task_id: task_id.into(),
            seq: 3,
            data: data.clone(),
            end: None,
        })]
    })
    .await;
    assert_eq!(task.error.unwrap().code.as_str(), "integrity");

    // And the genuine article, signed by the pinned key, is accepted.
    let key = simulated_signing_key(&id);
    let task = hand_played_fetch(&deployment, &id, tls, |task_id| {
        intact_transfer(&id, task_id, &data, &key)
    })
    .await;
    assert_eq!(evidence_of(&task).sha256, sha256_hex(&data));
    assert_eq!(
        evidence_count(&deployment).await,
        1,
        "only the genuine one is stored"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        incoming(&deployment).is_empty(),
        "{:?}",
        incoming(&deployment)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_drops_mid_transfer_leaves_nothing_and_the_fetch_runs_again() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("disk.img");
    // Sparse: large enough that the transfer is still running when the agent is killed.
    std::fs::File::create(&file)
        .unwrap()
        .set_len(256 * 1024 * 1024)
        .unwrap();
    let mut process = agent.spawn_process();
    deployment
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Online)
        .await;
    let created: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent.id, "task": { "type": "fetch_file", "path": file.to_str().unwrap() } }),
        )
        .await
        .unwrap();
    // Kill the agent (SIGKILL) once bytes are arriving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while incoming(&deployment).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "transfer never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.kill();
    deployment
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Offline)
        .await;
    // Requeued for when the agent returns (just after the session is recorded as ended).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task: TaskView = deployment
            .api()
            .get_json(&format!("/api/v1/tasks/{}", created.id))
            .await
            .unwrap();
        if task.state.as_str() == "queued" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not requeued: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        incoming(&deployment).is_empty(),
        "the partial transfer was deleted"
    );
    assert_eq!(evidence_count(&deployment).await, 0);

    // Back again: the fetch runs from the start and completes.
    let _process = agent.spawn_process();
    let done = deployment.wait_for_task(&created.id).await;
    let view = evidence_of(&done);
    assert_eq!(view.size, 256 * 1024 * 1024);
    let zeros = vec![0u8; 256 * 1024 * 1024];
    assert_eq!(view.sha256, sha256_hex(&zeros));
}

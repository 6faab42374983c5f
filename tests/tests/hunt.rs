//! Hunts end to end: a real controller and real agents. Several hosts, one with the marker;
//! agents chosen by label; an agent that is offline when the hunt starts answers when it comes
//! back, one that never does expires; bad input is refused clearly.
//!
//! Agents on one machine see the same processes and files, so "hosts" that differ need
//! separate views of the system: the first test runs each real agent binary in its own PID
//! namespace (as containers do), where it sees only its own processes. It needs `unshare`
//! (root, or unprivileged user namespaces) and says loudly when it is skipped. The other tests
//! need nothing special: their agents share this host and what it has.

use std::{
    collections::BTreeSet,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
};

use cordon_api::agents::AgentStatus;
use cordon_controller::hunts::{HuntAgentResult, HuntView};
use cordon_tests::{binary, Deployment};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Starts a hunt through the API.
async fn start_hunt(deployment: &Deployment, body: Value) -> HuntView {
    deployment
        .api()
        .post_json("/api/v1/hunts", body)
        .await
        .unwrap_or_else(|e| panic!("hunt refused: {e:?}"))
}

/// The hunt's view once complete (or after 30 s).
async fn wait_hunt(deployment: &Deployment, id: &str) -> HuntView {
    deployment
        .api()
        .get_json(&format!("/api/v1/hunts/{id}?wait=30"))
        .await
        .expect("hunt readable")
}

fn results(view: &HuntView) -> &[HuntAgentResult] {
    view.results.as_deref().unwrap_or_default()
}

fn matched_agents(view: &HuntView) -> BTreeSet<String> {
    results(view)
        .iter()
        .filter(|r| r.matched == Some(true))
        .map(|r| r.agent_id.clone())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `unshare` arguments that give a child its own PID namespace and `/proc`, killed with it; or
/// `None` when this machine cannot.
fn pid_namespace() -> Option<Vec<&'static str>> {
    let base = ["--pid", "--fork", "--mount-proc", "--kill-child"];
    [vec![], vec!["--user", "--map-root-user"]]
        .into_iter()
        .map(|mut args| {
            args.extend(base);
            args
        })
        .find(|args| {
            Command::new("unshare")
                .args(args)
                .arg("true")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A real agent in its own PID namespace ("host"); with `marker`, that host also runs it (a
/// path whose file name is the marker, linked to `sleep`). Killed with its namespace on drop.
struct Host(Child);

impl Host {
    fn spawn(unshare: &[&str], data_dir: &Path, marker: Option<&Path>) -> Self {
        let script = match marker {
            Some(_) => r#""$2" 600 & exec "$0" run --data-dir "$1""#,
            None => r#"exec "$0" run --data-dir "$1""#,
        };
        let mut command = Command::new("unshare");
        command
            .args(unshare)
            .args(["sh", "-c", script])
            .arg(binary("e2e-cordon-agent"))
            .arg(data_dir);
        if let Some(marker) = marker {
            command.arg(marker);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        Host(child)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleep_binary() -> std::path::PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("sleep installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hunt_over_several_hosts_finds_the_one_with_the_marker() {
    let Some(unshare) = pid_namespace() else {
        eprintln!(
            "SKIPPED a_hunt_over_several_hosts_finds_the_one_with_the_marker: `unshare --pid \
             --mount-proc` is not available here (needs root or user namespaces)"
        );
        return;
    };
    let deployment = Deployment::start().await;
    let agents = [
        deployment.enroll_agent().await,
        deployment.enroll_agent().await,
        deployment.enroll_agent().await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let name = format!("cordon-hunt-marker-{}", std::process::id());
    let marker = dir.path().join(&name);
    std::os::unix::fs::symlink(sleep_binary(), &marker).unwrap();
    let _hosts: Vec<Host> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| Host::spawn(&unshare, a.data_dir(), (i == 0).then_some(&*marker)))
        .collect();
    for agent in &agents {
        deployment
            .wait_for_status(&agent.id, AgentStatus::Online)
            .await;
    }
    let marked = agents[0].id.as_str();

    // By name: argv[0]'s file name (the kernel's name for it is cut to 15 bytes).
    let hunt = start_hunt(&deployment, json!({ "query": { "process_name": name } })).await;
    assert_eq!(hunt.progress.targeted, 3);
    let done = wait_hunt(&deployment, &hunt.id).await;
    assert!(done.progress.complete, "{:?}", done.progress);
    assert_eq!(done.progress.tasks.done, 3, "{:?}", done.progress);
    assert_eq!(done.progress.matched, Some(1));
    assert_eq!(matched_agents(&done), set(&[marked]));
    let hit = results(&done)
        .iter()
        .find(|r| r.agent_id == marked)
        .unwrap();
    let process = &hit.matches.as_ref().unwrap().processes[0];
    assert_eq!(process.cmdline, vec![marker.to_str().unwrap(), "600"]);
    for other in results(&done).iter().filter(|r| r.agent_id != marked) {
        assert_eq!(other.matched, Some(false), "{other:?}");
        assert!(
            other.matches.is_none(),
            "a host without a match reports nothing"
        );
    }

    // By what the process runs: sleep's SHA-256 (only the marked host runs sleep at all).
    let sha = hex::encode(Sha256::digest(std::fs::read(sleep_binary()).unwrap()));
    let hunt = start_hunt(
        &deployment,
        json!({ "query": { "exe_sha256": sha, "cmdline_contains": "600" } }),
    )
    .await;
    let done = wait_hunt(&deployment, &hunt.id).await;
    assert_eq!(matched_agents(&done), set(&[marked]));
    let hit = results(&done)
        .iter()
        .find(|r| r.agent_id == marked)
        .unwrap();
    let process = &hit.matches.as_ref().unwrap().processes[0];
    assert_eq!(process.exe_sha256.as_deref(), Some(sha.as_str()));

    // The CLI: a progress bar (not on a pipe), then the table of what matched.
    let out = deployment.cli(&["hunt", "--process-name", &name, "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 of 3 agents matched"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" process ") && l.contains(&name))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].starts_with(marked), "{stdout}");
    let out = deployment.cli(&["--json", "hunt", "--process-name", &name, "--wait"]);
    let view: HuntView = serde_json::from_slice(&out.stdout).expect("JSON hunt");
    assert_eq!(matched_agents(&view), set(&[marked]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_choose_agents_and_offline_ones_answer_when_they_return() {
    let deployment = Deployment::start().await;
    let mut web1 = deployment.enroll_agent().await;
    let mut web2 = deployment.enroll_agent().await;
    let mut db = deployment.enroll_agent().await;
    let store = &deployment.controller().store;
    for (agent, label) in [(&web1, "role=web"), (&web2, "role=web"), (&db, "role=db")] {
        store
            .set_agent_labels(&agent.id, &[label.to_string(), "env=test".into()])
            .await
            .unwrap();
    }
    web1.start();
    db.start();
    for agent in [&web1, &db] {
        deployment
            .wait_for_status(&agent.id, AgentStatus::Online)
            .await;
    }
    // What the web hosts have: a connection to this listener, made by this process.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();

    let hunt = start_hunt(
        &deployment,
        json!({
            "query": { "remote_address": "127.0.0.1", "remote_port": port },
            "label": "role=web",
            "ttl_secs": 600,
        }),
    )
    .await;
    assert_eq!(hunt.progress.targeted, 2, "the db host is not chosen");
    let t = &hunt.progress.tasks;
    assert_eq!(t.queued, 1, "web2 is away: {:?}", hunt.progress);
    assert_eq!(t.sent + t.running + t.done, 1, "web1 got it at once");
    let partial = wait_hunt_until(&deployment, &hunt.id, |v| v.progress.tasks.done == 1).await;
    assert!(!partial.progress.complete);
    assert_eq!(partial.progress.tasks.queued, 1, "web2 is away");
    assert_eq!(matched_agents(&partial), set(&[&web1.id]));
    let targeted: BTreeSet<String> = results(&partial)
        .iter()
        .map(|r| r.agent_id.clone())
        .collect();
    assert_eq!(targeted, set(&[&web1.id, &web2.id]));

    web2.start();
    let done = wait_hunt(&deployment, &hunt.id).await;
    assert!(done.progress.complete, "{:?}", done.progress);
    assert_eq!(matched_agents(&done), set(&[&web1.id, &web2.id]));
    for r in results(&done) {
        let m = r.matches.as_ref().unwrap();
        let socket = &m.sockets[0];
        assert_eq!(
            (socket.remote_port, socket.pid),
            (port, Some(std::process::id()))
        );
        assert_eq!(m.processes[0].pid, std::process::id(), "with its owner");
    }

    // The db host has a file the web hosts share too, but only the db host is asked.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dropper.sh");
    std::fs::write(&file, b"#!/bin/sh\necho pwned\n").unwrap();
    let sha = hex::encode(Sha256::digest(b"#!/bin/sh\necho pwned\n"));
    let hunt = start_hunt(
        &deployment,
        json!({
            "query": { "file_path": file.to_str().unwrap(), "file_sha256": sha },
            "label": "role=db",
        }),
    )
    .await;
    let done = wait_hunt(&deployment, &hunt.id).await;
    assert_eq!(done.progress.targeted, 1);
    assert_eq!(matched_agents(&done), set(&[&db.id]));
    let found = results(&done)[0]
        .matches
        .as_ref()
        .unwrap()
        .file
        .clone()
        .unwrap();
    assert_eq!(found.sha256.as_deref(), Some(sha.as_str()));

    // Listed, newest first; shown by the CLI with both web hosts.
    let out = deployment.cli(&["hunts", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{listing}");
    assert_eq!(ids[0], hunt.id, "{listing}");
    let out = deployment.cli(&["hunts", "show", ids[1]]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("2 of 2 agents matched"), "{shown}");
    assert!(
        shown.contains(&web2.id) && !shown.contains(&db.id),
        "{shown}"
    );
    for agent in [&mut web1, &mut web2, &mut db] {
        agent.stop().await;
    }
}

/// Polls the hunt until `ready` holds (at most 30 s).
async fn wait_hunt_until(
    deployment: &Deployment,
    id: &str,
    ready: impl Fn(&HuntView) -> bool,
) -> HuntView {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let view: HuntView = deployment
            .api()
            .get_json(&format!("/api/v1/hunts/{id}"))
            .await
            .expect("hunt readable");
        if ready(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hunt never got there: {:?}",
            view.progress
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunts_expire_for_absent_agents_and_bad_input_is_refused() {
    let deployment = Deployment::start().await;
    let absent = deployment.enroll_agent().await;
    let hunt = start_hunt(
        &deployment,
        json!({ "query": { "process_name": "sshd" }, "ttl_secs": 1 }),
    )
    .await;
    let done = wait_hunt(&deployment, &hunt.id).await;
    assert!(done.progress.complete, "{:?}", done.progress);
    assert_eq!(done.progress.tasks.expired, 1);
    assert_eq!(results(&done)[0].agent_id, absent.id);
    assert_eq!(
        results(&done)[0].error.as_ref().unwrap().code.as_str(),
        "expired"
    );

    let api = deployment.api();
    for (body, status, says) in [
        (json!({ "query": {} }), 400, "at least one filter"),
        (
            json!({ "query": { "process_name": "sshd" }, "label": "env" }),
            400,
            "key=value",
        ),
        (
            json!({ "query": { "file_sha256": "0".repeat(64) } }),
            400,
            "needs file_path",
        ),
        (json!({ "query": { "remote_port": 0 } }), 400, "remote_port"),
        (
            json!({ "query": { "remote_address": "not-an-ip" } }),
            400,
            "remote_address",
        ),
        (
            json!({ "query": { "process_name": "sshd" }, "ttl_secs": 0 }),
            400,
            "lifetime",
        ),
        (
            json!({ "query": { "process_name": "sshd" }, "label": "role=nobody" }),
            404,
            "role=nobody",
        ),
    ] {
        let err = api
            .post_json::<Value>("/api/v1/hunts", body.clone())
            .await
            .unwrap_err();
        assert_eq!(err.status, status, "{body}: {err:?}");
        let detail = err.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    let misspelt = api
        .post_raw("/api/v1/hunts", r#"{"query": {"proces_name": "sshd"}}"#)
        .await;
    assert!(matches!(misspelt.status, 400 | 422), "{misspelt:?}");
    assert!(
        misspelt.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("proces_name"),
        "{misspelt:?}"
    );
    let unknown = api
        .get_json::<Value>("/api/v1/hunts/no-such-hunt")
        .await
        .unwrap_err();
    assert_eq!(unknown.status, 404);
    let bad_filter = api
        .get_json::<Value>(&format!("/api/v1/hunts/{}?results=some", hunt.id))
        .await
        .unwrap_err();
    assert_eq!(bad_filter.status, 400);

    let out = deployment.cli(&["hunt"]);
    assert_eq!(out.status.code(), Some(2), "no filter: usage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one filter"));
    let out = deployment.cli(&["hunts", "show", "no-such-hunt"]);
    assert_eq!(out.status.code(), Some(4), "unknown hunt: not found");
}

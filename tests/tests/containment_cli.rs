//! Containment from the CLI through a real agent: `cordon quarantined` (what an agent's vault
//! holds, from the agent's own manifests, with the action that put each item there) and
//! `cordon kill --signal term` (SIGTERM first, SIGKILL after the grace).

use std::{os::unix::process::ExitStatusExt, time::Duration};

use cordon_api::agents::AgentStatus;
use cordon_tests::{fails, generate_key, json_of, ok, Deployment, Victim};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_lists_the_vault_with_the_action_behind_each_item() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let key = generate_key(deployment.tmp.path(), "alice");
    agent.trust("alice", &key.public_file, "quarantine,restore", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let key_file = key.file.to_str().expect("utf-8 key path");

    let empty = deployment
        .run_cli(&["quarantined", "--agent", &agent.id])
        .await;
    assert!(ok(&empty).contains("is empty"), "{empty:?}");

    let files = tempfile::tempdir().expect("tmp");
    let path = files.path().join("dropper.sh");
    let bytes = b"#!/bin/sh\necho pwned\n";
    std::fs::write(&path, bytes).expect("write");
    let path = path.to_str().expect("utf-8 path");
    let quarantined: Value = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "quarantine",
                "--agent",
                &agent.id,
                "--key",
                key_file,
                path,
            ])
            .await,
    );
    let action_id = quarantined["id"].as_str().expect("the action's id");

    let listed: Vec<Value> = json_of(
        &deployment
            .run_cli(&["--json", "quarantined", "--agent", &agent.id[..8]])
            .await,
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    let item = &listed[0];
    assert_eq!(item["original_path"], path);
    assert_eq!(item["state"], "quarantined");
    assert_eq!(item["size"], bytes.len());
    assert_eq!(
        item["sha256"].as_str().map(str::len),
        Some(64),
        "the hash of the bytes kept: {item}"
    );
    assert_eq!(item["action_id"], action_id);
    let id = item["id"].as_str().expect("the quarantine id").to_owned();

    // The table says the same, and a restore shows as such.
    ok(&deployment
        .run_cli(&["restore", "--agent", &agent.id, "--key", key_file, &id])
        .await);
    let table = ok(&deployment
        .run_cli(&["quarantined", "--agent", &agent.id])
        .await);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {table}"));
    assert!(
        row.contains("restored") && row.contains(path) && row.contains(action_id),
        "{row}"
    );

    // An agent nobody has: not found, and nothing is queued.
    fails(
        &deployment
            .run_cli(&["quarantined", "--agent", "no-such-host"])
            .await,
        4,
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_with_signal_term_gives_the_process_its_grace_then_kills_it() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let key = generate_key(deployment.tmp.path(), "alice");
    agent.trust("alice", &key.public_file, "kill", "10m");
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let key_file = key.file.to_str().expect("utf-8 key path");
    let kill = |victim: &Victim, extra: &[&str]| {
        let mut args = vec![
            "--json".to_owned(),
            "kill".into(),
            "--agent".into(),
            agent.id.clone(),
            "--key".into(),
            key_file.into(),
            "--pid".into(),
            victim.pid_arg(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };

    // A process that heeds SIGTERM ends on it.
    let mut polite = Victim::spawn();
    let args = kill(&polite, &["--signal", "term", "--grace", "30s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done: Value = json_of(&deployment.run_cli(&args).await);
    let status = polite
        .exit_within(Duration::from_secs(10))
        .expect("it ended");
    assert_eq!(status.signal(), Some(15), "SIGTERM, not SIGKILL");
    assert_eq!(done["state"], "done", "{done}");
    assert!(
        done["receipt"]["done"]
            .as_str()
            .unwrap_or_default()
            .contains("ended on SIGTERM"),
        "{done}"
    );
    assert_eq!(
        done["request"]["action"]["Terminate"]["grace_secs"], 30,
        "{done}"
    );

    // A stopped one is woken to act on it, rather than waiting out the grace.
    let mut stopped = Victim::spawn();
    let sent = std::process::Command::new("kill")
        .args(["-STOP", &stopped.pid_arg()])
        .status()
        .expect("kill -STOP");
    assert!(sent.success());
    let args = kill(
        &stopped,
        &["--signal", "term", "--grace", "2m", "--ttl", "5m"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&deployment.run_cli(&args).await);
    let status = stopped
        .exit_within(Duration::from_secs(10))
        .expect("it ended");
    assert_eq!(status.signal(), Some(15), "woken, it ends on SIGTERM");

    // One that ignores it is killed once the grace is over.
    let mut deaf = Victim::spawn_deaf_to_term();
    // Let the shell set its trap before the signal comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let args = kill(&deaf, &["--signal", "term", "--grace", "1s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done: Value = json_of(&deployment.run_cli(&args).await);
    let status = deaf.exit_within(Duration::from_secs(10)).expect("killed");
    assert_eq!(status.signal(), Some(9), "SIGKILL after the grace");
    assert!(
        done["receipt"]["done"]
            .as_str()
            .unwrap_or_default()
            .contains("still running 1 s after SIGTERM"),
        "{done}"
    );

    // What cannot be signed is refused before anything is: no grace, too long a one, one the
    // order would not outlive, a tree.
    let mut spared = Victim::spawn();
    for extra in [
        &["--signal", "term", "--grace", "0s"][..],
        &["--signal", "term", "--grace", "1h"],
        // A grace the order would not outlive (default validity 5m).
        &["--signal", "term", "--grace", "5m"],
        &["--signal", "term", "--tree"],
    ] {
        let args = kill(&spared, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&deployment.run_cli(&args).await, 2);
    }
    assert!(spared.running());
    agent.stop().await;
}

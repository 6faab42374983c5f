//! Forensic collection through the API and the CLI, with a real agent: processes, sockets,
//! files; tasks that wait for an offline agent; bad input answered clearly.

use std::time::Duration;

use cordon_api::{agents::AgentStatus, tasks::TaskView};
use cordon_protocol::collect::{FileHash, NetworkSnapshot, ProcessList};
use cordon_tests::Deployment;
use serde_json::json;

async fn run_task(deployment: &Deployment, agent_id: &str, task: serde_json::Value) -> TaskView {
    deployment.run_task(agent_id, task).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_while_the_agent_is_offline_runs_when_it_returns() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let created: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent.id, "task": { "type": "inventory" }, "ttl_secs": 600 }),
        )
        .await
        .expect("queued for an offline agent");
    assert_eq!(created.state.as_str(), "queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still: TaskView = deployment
        .api()
        .get_json(&format!("/api/v1/tasks/{}", created.id))
        .await
        .unwrap();
    assert_eq!(
        still.state.as_str(),
        "queued",
        "nothing runs while the agent is away"
    );

    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let done: TaskView = deployment
        .api()
        .get_json(&format!("/api/v1/tasks/{}?wait=30", created.id))
        .await
        .unwrap();
    assert_eq!(done.state.as_str(), "done", "{done:?}");
    let result = done.result.expect("result stored");
    assert_eq!(result["hostname"], cordon_agent::inventory::hostname());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_an_offline_agent_expires() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let created: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent.id, "task": { "type": "ping" }, "ttl_secs": 1 }),
        )
        .await
        .unwrap();
    let ended: TaskView = deployment
        .api()
        .get_json(&format!("/api/v1/tasks/{}?wait=20", created.id))
        .await
        .unwrap();
    assert_eq!(ended.state.as_str(), "expired", "{ended:?}");
    assert!(ended.error.unwrap().message.contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_for_unknown_agents_and_bad_specs_are_refused() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let unknown = api
        .post_json::<serde_json::Value>(
            "/api/v1/tasks",
            json!({ "agent_id": "nobody", "task": { "type": "ping" } }),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["detail"].as_str().unwrap().contains("nobody"));
    let bad = api
        .post_raw(
            "/api/v1/tasks",
            r#"{"agent_id": "x", "task": {"type": "format_disk"}}"#,
        )
        .await;
    assert!(bad.status == 400 || bad.status == 422, "{bad:?}");
    assert!(
        bad.body["detail"].as_str().unwrap().contains("format_disk"),
        "{bad:?}"
    );
    let missing = api
        .get_json::<serde_json::Value>("/api/v1/tasks/no-such-task")
        .await
        .unwrap_err();
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_the_test_spawns_appears_with_its_pid_ppid_and_cmdline() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let marker = format!("cordon-marker-{}", std::process::id());
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 60", &marker])
        .spawn()
        .unwrap();
    let task = run_task(&deployment, &agent.id, json!({ "type": "processes" })).await;
    let list: ProcessList = serde_json::from_value(task.result.expect("done")).unwrap();
    let found = list
        .processes
        .iter()
        .find(|p| p.pid == child.id())
        .unwrap_or_else(|| panic!("pid {} not listed", child.id()));
    assert_eq!(found.ppid, Some(std::process::id()));
    assert!(
        found.cmdline.iter().any(|a| a == &marker),
        "{:?}",
        found.cmdline
    );

    // The CLI shows it too, waiting for the result.
    let out = deployment.cli(&["ps", "--agent", &agent.id, "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table
        .lines()
        .any(|l| l.starts_with(&child.id().to_string()) && l.contains(&marker)));
    let _ = child.kill();
    let _ = child.wait();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_the_test_opens_appears_with_its_owning_pid() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = run_task(&deployment, &agent.id, json!({ "type": "network" })).await;
    let net: NetworkSnapshot = serde_json::from_value(task.result.expect("done")).unwrap();
    let socket = net
        .sockets
        .iter()
        .find(|s| s.protocol == "tcp" && s.local_port == port && s.state == "LISTEN")
        .unwrap_or_else(|| panic!("listener on {port} not found"));
    assert_eq!(socket.pid, Some(std::process::id()));

    let out = deployment.cli(&["netstat", "--agent", &agent.id, "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("127.0.0.1:{port}")));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stat_hash_and_bad_paths_get_clear_answers() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.bin");
    std::fs::write(&file, b"cordon test bytes\n").unwrap();
    let path = file.to_str().unwrap();

    let task = run_task(
        &deployment,
        &agent.id,
        json!({ "type": "file_hash", "path": path }),
    )
    .await;
    let hash: FileHash = serde_json::from_value(task.result.expect("done")).unwrap();
    // sha256("cordon test bytes\n")
    let expected = {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"cordon test bytes\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(hash.sha256, expected);
    assert_eq!(hash.size, 18);

    let out = deployment.cli(&["files", "stat", "--agent", &agent.id, "--wait", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("18"));

    for (bad, code) in [
        ("/definitely/not/here", "not_found"),
        ("relative/path", "invalid_input"),
        ("/tmp/../etc/passwd", "invalid_input"),
    ] {
        let task = run_task(
            &deployment,
            &agent.id,
            json!({ "type": "file_hash", "path": bad }),
        )
        .await;
        assert_eq!(task.state.as_str(), "failed", "{bad}: {task:?}");
        let error = task.error.unwrap();
        assert_eq!(error.code.as_str(), code, "{bad}: {}", error.message);
    }
    let dir_path = dir.path().to_str().unwrap();
    let task = run_task(
        &deployment,
        &agent.id,
        json!({ "type": "file_hash", "path": dir_path }),
    )
    .await;
    assert_eq!(
        task.error.unwrap().code.as_str(),
        "invalid_input",
        "a directory is not a file"
    );

    let missing = deployment.cli(&[
        "files",
        "hash",
        "--agent",
        &agent.id,
        "--wait",
        "/definitely/not/here",
    ]);
    assert_eq!(
        missing.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_path_policy_denies_its_data_dir_and_the_shadow_files() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let data_dir = agent.data_dir().to_path_buf();
    let key = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().is_file())
        .expect("the agent's data dir holds files")
        .path();
    let key = key.to_str().unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("innocent-looking");
    std::os::unix::fs::symlink(key, &link).unwrap();
    let link = link.to_str().unwrap();
    // The same file under another name: a hard link (where the temp dirs share a file system).
    let hard = link_dir.path().join("hard-link");
    let hard = std::fs::hard_link(key, &hard)
        .ok()
        .map(|()| hard.to_str().unwrap().to_string());
    // The controller's own secrets, through the agent on the controller's host: its data
    // directory is marked, wherever it is.
    let ca_key = deployment.data_dir.join("ca.key");
    let ca_key = ca_key.to_str().unwrap();
    let controller_dir = deployment.data_dir.to_str().unwrap();

    let mut tasks = vec![
        json!({ "type": "fetch_file", "path": key }),
        json!({ "type": "file_hash", "path": link }),
        json!({ "type": "file_stat", "path": "/etc/shadow" }),
        json!({ "type": "fetch_file", "path": "/etc/shadow" }),
        json!({ "type": "fetch_file", "path": ca_key }),
        json!({ "type": "file_hash", "path": ca_key }),
        json!({ "type": "file_stat", "path": ca_key }),
        json!({ "type": "list_dir", "path": controller_dir, "max_depth": 3, "max_entries": 100 }),
    ];
    if let Some(hard) = &hard {
        tasks.push(json!({ "type": "fetch_file", "path": hard }));
        tasks.push(json!({ "type": "file_hash", "path": hard }));
    }
    for task in tasks {
        let view = run_task(&deployment, &agent.id, task.clone()).await;
        assert_eq!(view.state.as_str(), "failed", "{task}: {view:?}");
        let error = view.error.unwrap();
        assert_eq!(
            error.code.as_str(),
            "permission_denied",
            "{task}: {}",
            error.message
        );
        assert!(
            error.message.contains("path policy"),
            "{task}: {}",
            error.message
        );
    }
    // A listing of the directory the controller's data dir is in reports it, and lists nothing
    // from inside it.
    let parent = deployment.data_dir.parent().unwrap().to_str().unwrap();
    let listing = run_task(
        &deployment,
        &agent.id,
        json!({ "type": "list_dir", "path": parent, "max_depth": 3, "max_entries": 1000 }),
    )
    .await;
    assert_eq!(listing.state.as_str(), "done", "{listing:?}");
    let result = serde_json::to_string(&listing.result).unwrap();
    assert!(!result.contains("ca.key"), "{result}");
    assert!(result.contains("Cordon private directory"), "{result}");
    // Nothing partial became evidence, and the agent still answers.
    let ok = run_task(
        &deployment,
        &agent.id,
        json!({ "type": "file_stat", "path": "/etc/passwd" }),
    )
    .await;
    assert_eq!(ok.state.as_str(), "done", "{ok:?}");
}

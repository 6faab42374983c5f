//! Agents enrol, come online, go offline when killed, and come back with the same identity —
//! through the API and the real CLI — and survive a controller restart.

use cordon_api::agents::{AgentStatus, AgentView};
use cordon_tests::Deployment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_process_online_killed_offline_restarted_online_same_id() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;

    let mut process = agent.spawn_process();
    let hostname = deployment.wait_for_inventory(&agent.id).await.hostname;
    let online = deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    assert_eq!(hostname, cordon_agent::inventory::hostname());
    assert!(online.peer.is_some());

    // The CLI shows it, as a table and as JSON.
    let table = deployment.cli(&["agents", "list"]);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with(&agent.id))
        .unwrap_or_else(|| panic!("agent not in table:\n{table}"));
    assert!(line.contains("online"), "{line}");
    assert!(table.starts_with("ID"), "table has headers:\n{table}");

    let json = deployment.cli(&["agents", "list", "--json"]);
    assert!(json.status.success());
    let listed: Vec<AgentView> = serde_json::from_slice(&json.stdout).expect("JSON list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, agent.id);
    assert_eq!(listed[0].status, AgentStatus::Online);

    process.kill();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Offline)
        .await;
    let shown = deployment.cli(&["agents", "show", &agent.id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("offline"));

    let _process = agent.spawn_process();
    let back = deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    assert_eq!(back.id, agent.id, "same identity after restart");
    let all: Vec<AgentView> = deployment.api().get_json("/api/v1/agents").await.unwrap();
    assert_eq!(all.len(), 1, "a restart must not enrol a second agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_agents_reconnect_and_nothing_is_lost() {
    let mut deployment = Deployment::start().await;
    let mut a = deployment.enroll_agent().await;
    let mut b = deployment.enroll_agent().await;
    a.start();
    b.start();
    deployment.wait_for_status(&a.id, AgentStatus::Online).await;
    deployment.wait_for_status(&b.id, AgentStatus::Online).await;
    let labelled = deployment.cli(&["agents", "label", &a.id, "env=prod", "role=web"]);
    assert!(
        labelled.status.success(),
        "{}",
        String::from_utf8_lossy(&labelled.stderr)
    );
    let before: Vec<AgentView> = deployment.api().get_json("/api/v1/agents").await.unwrap();

    deployment.stop_controller().await;
    deployment.start_controller().await;

    // Nobody touches the agents: they find the controller again by themselves.
    deployment.wait_for_status(&a.id, AgentStatus::Online).await;
    deployment.wait_for_status(&b.id, AgentStatus::Online).await;
    let after: Vec<AgentView> = deployment.api().get_json("/api/v1/agents").await.unwrap();
    assert_eq!(after.len(), before.len());
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.enrolled_at_ms, y.enrolled_at_ms);
        assert_eq!(x.labels, y.labels);
    }
    let a_after = after.iter().find(|v| v.id == a.id).unwrap();
    assert_eq!(a_after.labels, vec!["env=prod", "role=web"]);

    // The old admin token still works after the restart.
    let health = deployment.cli(&["health"]);
    assert!(health.status.success());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_the_agent_and_its_result_comes_back() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let result = deployment
        .controller()
        .registry
        .run_task(
            &agent.id,
            cordon_protocol::message::TaskKind::Inventory,
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("task answered");
    match result.outcome {
        Ok(cordon_protocol::message::TaskOutput::Inventory(inv)) => {
            assert_eq!(inv.hostname, cordon_agent::inventory::hostname())
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    // A task that fails on the agent is answered with why, not dropped.
    let result = deployment
        .controller()
        .registry
        .run_task(
            &agent.id,
            cordon_protocol::message::TaskKind::FileStat {
                path: "not/absolute".into(),
            },
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("task answered");
    let err = result.outcome.expect_err("refused");
    assert_eq!(
        err.code,
        cordon_protocol::message::TaskErrorCode::InvalidInput
    );
    agent.stop().await;
}

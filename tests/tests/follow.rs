//! Every follow mode outlives a controller restart the same way: it says it cannot reach the
//! controller, tries again with a growing wait, and carries on where it was.

use std::{path::Path, time::Duration};

use cordon_api::{agents::AgentStatus, tasks::TaskView};
use cordon_tests::{Deployment, Follower};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_modes_outlive_a_controller_restart() {
    let mut deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().expect("watched dir");
    let watched = dir.path().to_str().expect("utf-8 path");

    // A watch followed from before the restart.
    let mut watch = deployment.follow(&["watch", "--json", "--agent", &agent.id, watched]);
    seen_after_writes(&mut watch, dir.path(), "before").await;

    // A task queued for the agent while it is away, waited on by prefix, and the event stream.
    agent.stop().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Offline)
        .await;
    let task: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent.id, "task": { "type": "inventory" }, "ttl_secs": 600 }),
        )
        .await
        .expect("queued for an offline agent");
    let mut waiting = deployment.follow(&["--json", "tasks", "show", &task.id[..8], "--wait"]);
    let mut events = deployment.follow(&["--json", "events", "--kinds", "task.*"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(waiting.running() && events.running() && watch.running());

    deployment.stop_controller().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    deployment.start_controller().await;
    // Events published while the stream is away are gone with the old controller's memory;
    // once it says it is back, the stream carries on.
    events.stderr_with(DEADLINE, "cordon: reconnected").await;
    agent.start();

    let (status, lines) = waiting.exit_within(DEADLINE).await;
    assert!(status.success(), "{lines:?}\n{}", waiting.stderr());
    let inventory: serde_json::Value =
        serde_json::from_str(&lines.concat()).expect("the task's result as JSON");
    assert!(inventory["hostname"].is_string(), "{inventory}");
    assert!(
        waiting.stderr().contains("cannot reach the controller"),
        "it says why it waits: {}",
        waiting.stderr()
    );
    let done = events
        .line_where(DEADLINE, |l| {
            l.contains(&task.id) && l.contains("task.done")
        })
        .await;
    assert!(done.starts_with('{'), "{done}");
    assert!(events.running(), "the stream goes on");

    // The watch is the agent's again once it is back, and the follower prints its changes.
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let after = seen_after_writes(&mut watch, dir.path(), "after").await;
    assert!(after.starts_with('{'), "{after}");
    watch.interrupt();
    let (status, _) = watch.exit_within(DEADLINE).await;
    assert!(
        status.success(),
        "Ctrl-C ends a follow quietly: {}",
        watch.stderr()
    );
    assert!(watch.stderr().contains("cannot reach the controller"));
    agent.stop().await;
}

/// Writes new files named `name-N.txt` into `dir`, one a second, until `watch` prints a line
/// about one (a watch started again after a reconnect misses files written before it).
async fn seen_after_writes(watch: &mut Follower, dir: &Path, name: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for n in 0.. {
        std::fs::write(dir.join(format!("{name}-{n}.txt")), b"x").expect("write a watched file");
        while let Some(line) = watch.next_line(Duration::from_secs(1)).await {
            if line.contains(&format!("{name}-")) {
                return line;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never printed a {name} file: {}",
            watch.stderr()
        );
    }
    unreachable!("the loop only ends by returning or failing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_that_cannot_verify_the_controller_ends_at_once() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let task: TaskView = deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent.id, "task": { "type": "inventory" }, "ttl_secs": 600 }),
        )
        .await
        .expect("queued for an offline agent");
    // Someone else's CA: the controller's certificate will never verify against it.
    let (other, _) = cordon_controller::pki::Ca::generate("someone else's CA").expect("CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let other_pem = dir.path().join("other-ca.pem");
    std::fs::write(&other_pem, other.cert_pem()).expect("write CA");
    let mut command = deployment.cli_command(&deployment.admin_token);
    command
        .env("CORDON_CA", &other_pem)
        .args(["tasks", "show", &task.id, "--wait"]);
    let mut waiting = Follower::spawn(command, "tasks show --wait, wrong CA");
    let (status, _) = waiting.exit_within(DEADLINE).await;
    let stderr = waiting.stderr();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("over TLS"), "{stderr}");
    assert!(
        !stderr.contains("trying again"),
        "a TLS failure is not retried: {stderr}"
    );
}

//! An agent one protocol version behind its controller: the controller is upgraded first, so it
//! must keep serving older agents, and never send one a task it cannot decode (an undecodable
//! frame ends the session, and the task would be sent again on every reconnect).

use std::time::Duration;

use cordon_api::tasks::TaskView;
use cordon_protocol::{
    hello::HelloOutcome, message::ControllerMessage, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use cordon_tests::{agent_tls, hello_for, open_session, Deployment, RawSession};
use serde_json::json;

async fn create_task(deployment: &Deployment, agent_id: &str, task: serde_json::Value) -> TaskView {
    deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent_id, "task": task }),
        )
        .await
        .expect("task created")
}

/// The next task the controller sends on `conn`.
async fn next_task(conn: &mut RawSession) -> cordon_protocol::message::Task {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.recv::<ControllerMessage>())
            .await
            .expect("a task within 10 s")
            .expect("a frame the agent can decode")
        {
            Some(ControllerMessage::Task(task)) => return task,
            Some(_) => continue,
            None => panic!("the controller closed the session"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_agent_is_served_at_its_version_and_never_sent_what_it_cannot_read() {
    const { assert!(OLDEST_PROTOCOL_VERSION < PROTOCOL_VERSION) };
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let mut hello = hello_for(&agent.id);
    hello.protocol_version = OLDEST_PROTOCOL_VERSION;
    let (answer, mut conn) =
        open_session(deployment.agent_addr, agent_tls(agent.data_dir()), &hello)
            .await
            .expect("session");
    assert!(
        matches!(answer.outcome, HelloOutcome::Accepted { .. }),
        "{answer:?}"
    );
    assert_eq!(
        answer.protocol_version, OLDEST_PROTOCOL_VERSION,
        "the controller answers in the agent's version"
    );

    // A vault listing is newer than this agent: it fails at once, saying why, and is not sent.
    let listing = create_task(&deployment, &agent.id, json!({ "type": "quarantined" })).await;
    let failed = deployment.wait_for_task(&listing.id).await;
    let error = serde_json::to_value(&failed.error).unwrap();
    assert_eq!(failed.state.as_str(), "failed", "{failed:?}");
    assert_eq!(error["code"], "unsupported", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("protocol {OLDEST_PROTOCOL_VERSION}"))
            && message.contains("upgrade the agent"),
        "{message}"
    );

    // The session is still up, and what the agent can read still reaches it.
    let network = create_task(&deployment, &agent.id, json!({ "type": "network" })).await;
    let sent = next_task(&mut conn).await;
    assert_eq!(
        sent.task_id, network.id,
        "the first task the agent sees is the one it can read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_at_the_current_version_is_sent_the_newer_tasks() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let (answer, mut conn) = open_session(
        deployment.agent_addr,
        agent_tls(agent.data_dir()),
        &hello_for(&agent.id),
    )
    .await
    .expect("session");
    assert_eq!(answer.protocol_version, PROTOCOL_VERSION);
    let listing = create_task(&deployment, &agent.id, json!({ "type": "quarantined" })).await;
    let sent = next_task(&mut conn).await;
    assert_eq!(sent.task_id, listing.id);
    assert_eq!(sent.kind, cordon_protocol::message::TaskKind::Quarantined);
}

//! The knowledge base end to end: a Wazuh alert about host A with a file's hash opens an
//! incident, a responder quarantines the file and closes it; an Elastic alert about host B with
//! the same hash then finds that incident first, says why and what worked, and `suggest`
//! proposes the same quarantine on host B, which runs once a responder approves it.

use cordon_api::{
    actions::{ActionState, ActionView},
    agents::AgentStatus,
    alerts::Received,
    similar::Outcome,
    suggest::{SuggestPage, SuggestionState},
};
use cordon_tests::{generate_key, json_of, ok, Deployment};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WAZUH_SYSCHECK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/src/alerts/fixtures/wazuh-syscheck-modified.json"
));
const ECS_MALWARE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/src/alerts/fixtures/ecs-malware.json"
));

async fn send(deployment: &Deployment, alert: &Value) -> Received {
    let sent = deployment
        .api()
        .post_bytes("/api/v1/alerts", alert.to_string().into_bytes())
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    serde_json::from_value(sent.body).expect("alert answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_worked_on_host_a_is_proposed_for_host_b_and_runs_once_approved() {
    let deployment = Deployment::start().await;
    let key = generate_key(deployment.tmp.path(), "alice");
    let key_file = key.file.to_str().expect("utf-8 key path").to_owned();
    let mut a = deployment.enroll_agent().await;
    let mut b = deployment.enroll_agent().await;
    for agent in [&mut a, &mut b] {
        agent.trust("alice", &key.public_file, "quarantine,restore", "1h");
        agent.start();
        deployment
            .wait_for_status(&agent.id, AgentStatus::Online)
            .await;
    }
    let files = tempfile::tempdir().expect("tmp");
    let bytes = b"#!/bin/sh\n# the same dropper on two hosts\n";
    let hash = hex::encode(Sha256::digest(bytes));
    let on_a = files.path().join("a-payload.bin");
    let on_b = files.path().join("b-payload.bin");
    std::fs::write(&on_a, bytes).unwrap();
    std::fs::write(&on_b, bytes).unwrap();
    let (on_a, on_b) = (on_a.to_str().unwrap(), on_b.to_str().unwrap());

    // Incident 1: Wazuh, host A, the file's hash. Quarantined, then closed.
    let mut wazuh: Value = serde_json::from_str(WAZUH_SYSCHECK).unwrap();
    wazuh["agent"]["id"] = json!(a.id);
    wazuh["syscheck"]["path"] = json!(on_a);
    wazuh["syscheck"]["sha256_after"] = json!(hash);
    let first = send(&deployment, &wazuh).await;
    assert_eq!(first.host.agent_id.as_deref(), Some(a.id.as_str()));
    let quarantined: Value = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "quarantine",
                "--agent",
                &a.id,
                "--key",
                &key_file,
                "--incident",
                &first.incident_id,
                on_a,
            ])
            .await,
    );
    assert_eq!(quarantined["state"], "done", "{quarantined}");
    assert!(!std::path::Path::new(on_a).exists(), "quarantined on A");
    ok(&deployment
        .run_cli(&[
            "incidents",
            "close",
            &first.incident_id,
            "--reason",
            "dropper quarantined",
            "--force",
        ])
        .await);

    // Incident 2: Elastic, host B, the same hash.
    let mut ecs: Value = serde_json::from_str(ECS_MALWARE).unwrap();
    ecs["agent"]["id"] = json!(b.id);
    ecs["file"]["path"] = json!(on_b);
    ecs["file"]["hash"]["sha256"] = json!(hash);
    let second = send(&deployment, &ecs).await;
    assert!(second.opened);
    assert_eq!(second.host.agent_id.as_deref(), Some(b.id.as_str()));
    let best = second.similar.first().expect("incident 1 is found");
    assert_eq!(best.id, first.incident_id, "{:#?}", second.similar);
    assert_eq!(best.outcome, Outcome::Closed);
    assert_eq!(
        best.reasons[0].text,
        format!("shares sha256 {hash} (seen in 2 of 2 incidents)")
    );
    let worked = best.worked.first().expect("the quarantine that worked");
    assert_eq!(worked.kind, "quarantine");
    assert!(worked.what.contains(on_a), "{worked:?}");
    assert!(best.secs_to_contain.is_some() && best.secs_to_close.is_some());
    let (_, _, report) = deployment
        .api()
        .get_text(&format!(
            "/api/v1/incidents/{}/report?format=markdown",
            second.incident_id
        ))
        .await;
    assert!(
        report.contains(&first.incident_id) && report.contains("quarantine"),
        "{report}"
    );

    // Suggest: the same quarantine, of B's file, on B; pending, not signed, not run.
    let page: SuggestPage = json_of(
        &deployment
            .run_cli(&["--json", "incidents", "suggest", &second.incident_id[..8]])
            .await,
    );
    let proposed: Vec<_> = page
        .suggestions
        .iter()
        .filter(|s| s.state == SuggestionState::Proposed)
        .collect();
    assert_eq!(proposed.len(), 1, "{page:#?}");
    let suggestion = proposed[0];
    assert_eq!(suggestion.agent_id.as_deref(), Some(b.id.as_str()));
    assert!(suggestion.what.contains(on_b), "{suggestion:?}");
    let action_id = suggestion.action_id.clone().expect("a pending action");
    let pending: ActionView = deployment
        .api()
        .get_json(&format!("/api/v1/actions/{action_id}"))
        .await
        .unwrap();
    assert_eq!(pending.state, ActionState::Pending);
    assert!(
        pending.signatures.is_empty(),
        "nothing is signed by a suggestion"
    );
    assert!(
        std::path::Path::new(on_b).exists(),
        "nothing runs by a suggestion"
    );

    // Suggesting again proposes nothing twice.
    let again: SuggestPage = json_of(
        &deployment
            .run_cli(&["--json", "incidents", "suggest", &second.incident_id])
            .await,
    );
    assert!(
        again
            .suggestions
            .iter()
            .all(|s| s.state != SuggestionState::Proposed),
        "{again:#?}"
    );

    // A responder approves with their own key: the file is quarantined on B.
    let approved = ok(&deployment
        .run_cli(&["approve", &action_id, "--key", &key_file, "--yes"])
        .await);
    assert!(approved.contains("done"), "{approved}");
    assert!(!std::path::Path::new(on_b).exists(), "quarantined on B");
    let view: Value = deployment
        .api()
        .get_json(&format!("/api/v1/incidents/{}", second.incident_id))
        .await
        .unwrap();
    assert!(
        view["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "action" && l["ref_id"] == action_id.as_str()),
        "the proposal is attached to incident 2: {view:#}"
    );
    a.stop().await;
    b.stop().await;
}

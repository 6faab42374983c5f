//! An incident from alert to report, run by the default playbooks, with a real controller and
//! a real agent: a Wazuh alert naming the agent's host and a marker process opens a malware
//! incident; moving it to collection runs the playbook's snapshot, whose evidence shows on
//! the timeline, and records the steps the alert gives nothing for; a controller restart
//! in the middle of a run (its stage entry still pending) repeats no step; moving it to
//! response proposes a kill of the marker process, unsigned, which a responder approves with
//! `cordon approve` and the process dies; the report lists the evidence, the action with its
//! signer and receipt; the audit log verifies, and stops verifying after a direct edit.
//! Where the agent trusts the controller's automation key for kills, the kill is signed and
//! runs at once instead. A bad playbook file is refused by `cordon playbooks validate`, by a
//! reload (the set in force stays) and by `serve`, each naming the file and line.

use std::time::{Duration, Instant};

use cordon_api::{
    actions::{ActionState, ActionView},
    agents::AgentStatus,
    audit::AuditVerifyView,
    incidents::IncidentView,
    playbooks::PlaybookList,
    tokens::ApiTokenCreated,
};
use cordon_controller::{alerts::Received, incidents::report::IncidentReport};
use cordon_protocol::action::Action;
use cordon_tests::{generate_key, text, Api, Deployment, PgSchema, TestAgent, Victim};
use serde_json::{json, Value};

/// A Wazuh auditd alert in the `malware` group about `pid` on the host named `hostname`.
fn wazuh_alert(hostname: &str, marker: &Victim) -> Value {
    let exe = std::fs::read_link(format!("/proc/{}/exe", marker.pid()))
        .expect("the marker's executable")
        .display()
        .to_string();
    json!({
        "timestamp": "2026-11-29T00:00:00.000+0000",
        "rule": {
            "level": 12,
            "description": "Known malware executed (test marker)",
            "id": "100201",
            "groups": ["audit", "malware"],
        },
        "agent": { "id": "042", "name": hostname, "ip": "198.51.100.250" },
        "id": format!("1764374400.{}", marker.pid()),
        "data": {
            "audit": {
                "pid": marker.pid().to_string(),
                "exe": exe,
                "command": "sleep",
            }
        },
        "full_log": format!("type=EXECVE msg=audit: argc=2 a0=\"sleep\" a1=\"{}\"", marker.arg()),
        "location": "/var/log/audit/audit.log",
    })
}

async fn incident(api: &Api, id: &str) -> IncidentView {
    api.get_json(&format!("/api/v1/incidents/{id}"))
        .await
        .expect("incident readable")
}

/// Waits (up to 90 s) until the incident's latest entry into `stage` has had its playbooks run.
async fn playbooks_ran(api: &Api, id: &str, stage: &str) -> IncidentView {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view = incident(api, id).await;
        if view
            .stages
            .iter()
            .rev()
            .find(|s| s.stage == stage)
            .is_some_and(|s| s.playbook_state == "done")
        {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "the {stage} playbooks never ran: {:?}",
            view.stages
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn move_to(api: &Api, id: &str, stage: &str) {
    let _: IncidentView = api
        .post_json(
            &format!("/api/v1/incidents/{id}/stage"),
            json!({ "stage": stage }),
        )
        .await
        .unwrap_or_else(|e| panic!("move to {stage}: {e:?}"));
}

/// (kind, id) of everything attached, sorted.
fn links(view: &IncidentView) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = view
        .links
        .iter()
        .map(|l| (l.kind.to_string(), l.ref_id.clone()))
        .collect();
    out.sort();
    out
}

fn playbook_entries(
    view: &IncidentView,
) -> Vec<&cordon_controller::incidents::timeline::TimelineItem> {
    view.timeline
        .iter()
        .filter(|e| e.kind == "playbook")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_runs_its_playbooks_through_to_a_signed_kill_and_a_report() {
    let mut deployment = Deployment::start().await;
    let admin = deployment.api();

    // The defaults were written by init and are in force.
    let list: PlaybookList = admin.get_json("/api/v1/playbooks").await.unwrap();
    let mut names: Vec<&str> = list.playbooks.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["brute-force", "c2", "malware", "ransomware"]);

    // A host whose owner trusts the responder's key for kills (at most 10 minutes).
    let key = generate_key(deployment.tmp.path(), "responder");
    let mut agent: TestAgent = deployment.enroll_agent().await;
    cordon_agent::trust::add(
        agent.data_dir(),
        &cordon_agent::trust::AddOptions {
            public_key_file: &key.public_file,
            actions: "kill",
            max_ttl: Some("10m"),
            name: Some("alice"),
        },
    )
    .expect("trust the responder key");
    agent.start();
    let hostname = deployment.wait_for_inventory(&agent.id).await.hostname;
    let mut marker = Victim::spawn();

    // The SIEM's alert opens a malware incident on the agent's host.
    let siem: ApiTokenCreated = admin
        .post_json(
            "/api/v1/api-tokens",
            json!({ "name": "wazuh", "role": "automation" }),
        )
        .await
        .unwrap();
    let siem = admin.with_token(&siem.token);
    let sent = siem
        .post_bytes(
            "/api/v1/alerts",
            wazuh_alert(&hostname, &marker).to_string().into_bytes(),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let received: Received = serde_json::from_value(sent.body).unwrap();
    assert_eq!(received.kind, "malware");
    assert_eq!(received.host.agent_id.as_deref(), Some(agent.id.as_str()));
    let id = received.incident_id.clone();
    // No playbook acts on the alert stage: its entry is marked done with nothing made.
    let opened = playbooks_ran(&admin, &id, "alert").await;
    assert!(opened.links.is_empty(), "{:?}", opened.links);

    // Collection: the malware playbook's snapshot is queued on the host, runs, and its
    // evidence shows on the timeline; the steps the alert gives nothing for say so.
    move_to(&admin, &id, "collection").await;
    let collected = playbooks_ran(&admin, &id, "collection").await;
    let snapshot = collected
        .links
        .iter()
        .find(|l| l.kind == "task")
        .expect("the snapshot task is attached")
        .ref_id
        .clone();
    assert_eq!(
        collected
            .links
            .iter()
            .filter(|l| l.linked_by == "playbook:malware")
            .count(),
        1,
        "{:?}",
        collected.links
    );
    let task = deployment.wait_for_task(&snapshot).await;
    assert_eq!(task.kind, "snapshot");
    assert_eq!(task.created_by, "playbook:malware");
    assert_eq!(task.state.as_str(), "done", "{task:?}");
    let entries = playbook_entries(&collected);
    assert_eq!(entries.len(), 1);
    let summary = &entries[0].summary;
    assert!(
        summary.starts_with("playbook malware (collection): queued snapshot on"),
        "{summary}"
    );
    assert!(
        summary.contains("could not file_hash: the alert gives no alert.file.path"),
        "{summary}"
    );
    assert!(
        summary.contains("could not hunt: the alert gives no alert.file.sha256"),
        "{summary}"
    );
    let with_evidence = incident(&admin, &id).await;
    assert!(
        with_evidence
            .timeline
            .iter()
            .any(|e| e.kind == "evidence.stored" && e.detail["task_id"] == json!(snapshot)),
        "{:#?}",
        with_evidence.timeline
    );

    // A restart in the middle of a run: the collection entry is pending again (as if the
    // controller died after making its steps, before marking it done). It runs again after
    // the restart and makes nothing new.
    let collection_entry = with_evidence
        .stages
        .iter()
        .rev()
        .find(|s| s.stage == "collection")
        .unwrap()
        .id
        .clone();
    let tasks_before: Vec<Value> = admin
        .get_json(&format!("/api/v1/tasks?agent_id={}&limit=1000", agent.id))
        .await
        .unwrap();
    deployment.stop_controller().await;
    let db = deployment.sqlite().await;
    sqlx::query("UPDATE stage_entries SET playbook_state = 'pending' WHERE id = ?")
        .bind(&collection_entry)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    deployment.start_controller().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let rerun = playbooks_ran(&admin, &id, "collection").await;
    assert_eq!(links(&rerun), links(&with_evidence), "no step made twice");
    assert_eq!(
        playbook_entries(&rerun).len(),
        1,
        "one timeline entry per run"
    );
    let tasks_after: Vec<Value> = admin
        .get_json(&format!("/api/v1/tasks?agent_id={}&limit=1000", agent.id))
        .await
        .unwrap();
    assert_eq!(tasks_after.len(), tasks_before.len());

    // Response: a kill of the marker process is proposed, unsigned, bound to its start time
    // (from a fresh process lookup, attached too); the quarantine has no file to act on.
    move_to(&admin, &id, "response").await;
    let responded = playbooks_ran(&admin, &id, "response").await;
    let action_id = responded
        .links
        .iter()
        .find(|l| l.kind == "action")
        .expect("the kill proposal is attached")
        .ref_id
        .clone();
    let proposal: ActionView = admin
        .get_json(&format!("/api/v1/actions/{action_id}"))
        .await
        .unwrap();
    assert_eq!(proposal.state, ActionState::Pending);
    assert!(proposal.signatures.is_empty());
    assert_eq!(proposal.required_signers, 1);
    assert_eq!(proposal.agent_id, agent.id);
    assert_eq!(proposal.created_by, "playbook:malware");
    match proposal.request.action {
        Action::Kill { pid, tree, .. } => {
            assert_eq!(pid, marker.pid());
            assert!(!tree);
        }
        other => panic!("expected a kill, got {other:?}"),
    }
    // Clamped to the 10 minutes the agent lets the responder's key give.
    assert!(proposal.request.expires_at_ms - proposal.request.issued_at_ms <= 600_000);
    let response_entry = playbook_entries(&responded)
        .into_iter()
        .find(|e| e.detail["stage"] == "response")
        .expect("the response run is on the timeline")
        .summary
        .clone();
    assert!(
        response_entry.contains(&format!("cordon approve {action_id}")),
        "{response_entry}"
    );
    assert!(
        response_entry.contains("could not quarantine"),
        "{response_entry}"
    );
    assert!(marker.running(), "nothing runs before approval");

    // The responder approves with their key, exactly as `cordon approve` does; it dies.
    let approved = deployment
        .run_cli(&[
            "approve",
            &action_id,
            "--key",
            key.file.to_str().unwrap(),
            "--yes",
        ])
        .await;
    assert!(
        approved.status.success(),
        "{}\n{}",
        text(&approved.stdout),
        text(&approved.stderr)
    );
    assert!(
        marker.exited_within(Duration::from_secs(20)),
        "the marker was not killed"
    );

    // The report lists the evidence and the action with its signer and verified receipt.
    let report: IncidentReport = admin
        .get_json(&format!("/api/v1/incidents/{id}/report?format=json"))
        .await
        .unwrap();
    assert!(
        report
            .evidence
            .iter()
            .any(|e| e.task_id == snapshot && e.kind == "snapshot" && e.verified),
        "{:?}",
        report.evidence
    );
    let action = report
        .actions
        .iter()
        .find(|a| a.id == action_id)
        .expect("the kill is in the report");
    assert_eq!(action.state, "done");
    assert_eq!(action.signers.len(), 1);
    assert_eq!(action.signers[0].key_id, key.id);
    assert_eq!(action.signers[0].name, "alice");
    let receipt = action.receipt.as_ref().expect("a receipt");
    assert!(receipt.signature_verified, "{receipt:?}");
    assert!(report.timeline.iter().any(|e| e.kind == "playbook"));
    assert!(report.timeline.iter().any(|e| e.kind == "action.done"));

    // The proposal, its approval and the agent's receipt are all in the audit chain.
    let page: serde_json::Value = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    let about_action: Vec<(String, String)> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["target"] == action_id.as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [("action.propose", "pending"), ("action.receipt", "done")] {
        assert!(
            about_action
                .iter()
                .any(|(a, o)| (a.as_str(), o.as_str()) == expected),
            "{expected:?} not audited for {action_id}: {about_action:?}"
        );
    }
    assert!(
        about_action
            .iter()
            .any(|(a, _)| a == "POST /api/v1/actions/{id}/signatures"),
        "the approval is not audited: {about_action:?}"
    );

    // The audit log holds, until someone edits it behind the controller's back.
    let verified: AuditVerifyView = admin.get_json("/api/v1/audit/verify").await.unwrap();
    assert!(verified.ok, "{verified:?}");
    let edited = verified.entries / 2 + 1;
    let db = deployment.sqlite().await;
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?")
        .bind(edited)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let broken: AuditVerifyView = admin.get_json("/api/v1/audit/verify").await.unwrap();
    assert!(!broken.ok);
    assert_eq!(broken.first_broken.expect("a broken link").seq, edited);
    let out = deployment.run_cli(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("broken at entry {edited}")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_playbook_is_refused_with_its_file_and_line() {
    let mut deployment = Deployment::start().await;
    let admin = deployment.api();
    let dir = deployment.data_dir.join("playbooks");
    let bad = dir.join("zz-bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\nkinds = [\"*\"]\n\n[[stage]]\nstage = \"respons\"\npropose = [{ action = \"kill\" }]\n",
    )
    .unwrap();

    // `cordon-controller playbooks validate` checks files without a running controller.
    let out = std::process::Command::new(cordon_tests::binary("e2e-cordon-controller"))
        .args(["playbooks", "validate", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5: unknown stage \"respons\"", bad.display())),
        "{stderr}"
    );

    // A reload answers 400 with the same error and keeps the set in force.
    let failed = admin
        .post_bytes("/api/v1/playbooks/reload", b"{}".to_vec())
        .await;
    assert_eq!(failed.status, 400, "{}", failed.body);
    assert!(
        failed.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("zz-bad.toml:5: unknown stage"),
        "{}",
        failed.body
    );
    let list: PlaybookList = admin.get_json("/api/v1/playbooks").await.unwrap();
    assert_eq!(list.playbooks.len(), 4);

    // A controller does not start on it, and says why.
    deployment.stop_controller().await;
    let mut config = cordon_controller::server::ServeConfig::new(&deployment.data_dir);
    config.agent_listen = "127.0.0.1:0".parse().unwrap();
    config.api_listen = "127.0.0.1:0".parse().unwrap();
    let refused =
        cordon_controller::server::start(config, tokio_util::sync::CancellationToken::new())
            .await
            .err()
            .expect("serve refuses a bad playbook");
    assert!(
        refused
            .to_string()
            .contains("zz-bad.toml:5: unknown stage \"respons\""),
        "{refused}"
    );

    // Fixed, it loads; `cordon playbooks show` lists its steps.
    std::fs::write(
        &bad,
        "name = \"bad\"\nkinds = [\"*\"]\n\n[[stage]]\nstage = \"response\"\npropose = [{ action = \"isolate\", ttl = \"15m\" }]\n",
    )
    .unwrap();
    deployment.start_controller().await;
    let out = deployment.run_cli(&["playbooks", "show", "bad"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("propose  isolate ttl_secs=900 on all host(s)"),
        "{}",
        text(&out.stdout)
    );
    let listed = deployment.run_cli(&["playbooks", "list"]).await;
    assert!(text(&listed.stdout).contains("ransomware"), "{listed:?}");
    // A built-in one shows each kind of step, templates unfilled.
    let out = deployment.run_cli(&["playbooks", "show", "malware"]).await;
    let shown = text(&out.stdout);
    for line in [
        "on entering collection:",
        "collect  snapshot",
        "collect  file_hash path={alert.file.path}",
        "hunt     file_sha256={alert.file.sha256} (for 3600 s)",
        "propose  kill tree=false on alert host(s)",
    ] {
        assert!(shown.contains(line), "{line:?} in {shown}");
    }
    // Once fixed, the files validate, naming what they hold.
    let out = std::process::Command::new(cordon_tests::binary("e2e-cordon-controller"))
        .args(["playbooks", "validate", "--json", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["playbooks"].as_array().map(Vec::len),
        Some(5),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_agent_trusts_the_automation_key_the_kill_runs_at_once() {
    automation_kill(Deployment::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_agent_trusts_the_automation_key_the_kill_runs_at_once_on_postgres() {
    let test = "where_the_agent_trusts_the_automation_key_the_kill_runs_at_once_on_postgres";
    let Some(schema) = PgSchema::create(test).await else {
        return;
    };
    automation_kill(Deployment::start_with_database(Some(schema.url())).await).await;
    schema.drop().await;
}

/// Alert → response → the playbook's kill, signed by the automation key, kills the marker.
async fn automation_kill(mut deployment: Deployment) {
    let admin = deployment.api();
    // The host owner lets the controller's automation key kill, on its own.
    let mut agent: TestAgent = deployment.enroll_agent().await;
    cordon_agent::trust::add(
        agent.data_dir(),
        &cordon_agent::trust::AddOptions {
            public_key_file: &deployment.data_dir.join("automation.pub"),
            actions: "kill",
            max_ttl: Some("5m"),
            name: Some("automation"),
        },
    )
    .expect("trust the automation key");
    agent.start();
    deployment.wait_for_inventory(&agent.id).await;
    let mut marker = Victim::spawn();

    // A generic alert by agent id, naming the marker by pid and command line.
    let sent = admin
        .post_bytes(
            "/api/v1/alerts",
            json!({
                "title": "marker flagged", "kind": "malware", "severity": "high",
                "host": { "agent_id": agent.id },
                "process": { "pid": marker.pid(), "name": "sleep",
                             "command_line": format!("sleep {}", marker.arg()) },
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let received: Received = serde_json::from_value(sent.body).unwrap();
    let id = received.incident_id;
    move_to(&admin, &id, "response").await;
    let view = playbooks_ran(&admin, &id, "response").await;
    assert!(
        marker.exited_within(Duration::from_secs(30)),
        "the automation-signed kill did not run"
    );
    let action_id = view
        .links
        .iter()
        .find(|l| l.kind == "action")
        .expect("the kill is attached")
        .ref_id
        .clone();
    let action: ActionView = admin
        .get_json(&format!("/api/v1/actions/{action_id}?wait=20"))
        .await
        .unwrap();
    assert_eq!(action.state, ActionState::Done, "{action:?}");
    assert_eq!(action.signatures.len(), 1);
    assert_eq!(action.signatures[0].signer, "automation");
    assert_eq!(action.created_by, "playbook:malware (automation key)");
    let page: serde_json::Value = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    let submitted = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["target"] == action_id.as_str() && e["action"] == "playbook.submit_action")
        .unwrap_or_else(|| panic!("the automation submission is not audited: {page:#}"));
    assert_eq!(submitted["actor"], "playbook:malware (automation key)");
    assert_eq!(submitted["detail"]["incident_id"], id.as_str());
    let summary = &playbook_entries(&view)[0].summary;
    assert!(
        summary.contains("submitted kill of pid")
            && summary.contains("signed by the automation key"),
        "{summary}"
    );
    drop(agent);
    deployment.stop_controller().await;
}

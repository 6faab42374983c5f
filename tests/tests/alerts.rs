//! Alert intake end to end, with a real controller and a real agent: a Wazuh alert naming the
//! agent's host opens an incident with that host, the same alert again (over the API and
//! through `cordon alerts send`) joins it; an Elastic Security alert is matched to a host by
//! its address alone; an alert naming an unknown host still opens an incident that says so;
//! bad and oversized payloads are refused naming what was wrong and leave nothing behind;
//! viewers and responders may not send alerts; identical alerts sent at once end up in one
//! incident (also on PostgreSQL when CORDON_TEST_DATABASE_URL is set).
//!
//! The address match uses a simulated host (enrolled for real, holding a real mTLS session,
//! reporting an inventory with a chosen address), since the real agent's addresses are this
//! machine's and a test cannot choose them.

use cordon_api::{alerts::AlertView, incidents::IncidentView};
use cordon_controller::{alerts::Received, store::AlertRecord};
use cordon_tests::{ok, text, Api, Deployment, PgSchema, SessionHost};
use serde_json::{json, Value};

const WAZUH_SSHD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/src/alerts/fixtures/wazuh-sshd-brute-force.json"
));
const ECS_C2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../controller/src/alerts/fixtures/ecs-c2-hit.json"
));

/// The address only the simulated host reports.
const SIM_ADDRESS: &str = "203.0.113.80";

async fn token(deployment: &Deployment, name: &str, role: &str) -> String {
    deployment.api_token(role, name).await
}

/// The Wazuh SSH brute-force fixture, about the host named `hostname`.
fn wazuh_alert(hostname: &str) -> Value {
    let mut alert: Value = serde_json::from_str(WAZUH_SSHD).expect("fixture");
    alert["agent"]["name"] = json!(hostname);
    // An address no agent reports: the host name must do the matching.
    alert["agent"]["ip"] = json!("198.51.100.250");
    alert
}

async fn incident(api: &Api, id: &str) -> IncidentView {
    api.get_json(&format!("/api/v1/incidents/{id}"))
        .await
        .expect("incident readable")
}

async fn count_incidents(api: &Api) -> usize {
    let all: Vec<Value> = api
        .get_json("/api/v1/incidents?limit=1000")
        .await
        .expect("incident list");
    all.len()
}

async fn count_alerts(api: &Api) -> usize {
    let all: Vec<AlertRecord> = api
        .get_json("/api/v1/alerts?limit=1000")
        .await
        .expect("alert list");
    all.len()
}

/// Sends `alert` expecting it to be taken with `status`.
async fn send(api: &Api, path: &str, alert: &Value, status: u16) -> Received {
    let response = api.post_bytes(path, alert.to_string().into_bytes()).await;
    assert_eq!(response.status, status, "{:?}", response.body);
    serde_json::from_value(response.body).expect("a Received answer")
}

/// A host enrolled for real that holds its session with an inventory reporting
/// [`SIM_ADDRESS`], and answers nothing.
async fn sim_host(deployment: &Deployment) -> SessionHost {
    SessionHost::start(
        deployment,
        |hello| {
            hello.inventory.hostname = "sim-db-host".into();
            hello.inventory.addresses = vec!["10.99.0.1".into(), SIM_ADDRESS.into()];
        },
        |_, _| Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_open_and_join_incidents_with_their_hosts() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    let hostname = deployment.wait_for_inventory(&agent.id).await.hostname;
    let siem = deployment
        .api()
        .with_token(&token(&deployment, "siem", "automation").await);
    let admin = deployment.api();

    // A Wazuh alert naming the agent's host (in upper case) opens an incident with it.
    let alert = wazuh_alert(&hostname.to_uppercase());
    let opened = send(&siem, "/api/v1/alerts", &alert, 201).await;
    assert!(opened.opened);
    assert_eq!(opened.source.as_str(), "wazuh");
    assert_eq!(opened.host.agent_id.as_deref(), Some(agent.id.as_str()));
    assert_eq!(opened.host.matched_by.as_deref(), Some("hostname"));
    assert_eq!(opened.alert_count, 1);
    let view = incident(&admin, &opened.incident_id).await;
    assert_eq!(view.incident.stage, "alert");
    assert_eq!(view.incident.kind, "brute_force");
    assert_eq!(view.incident.severity, "medium");
    assert_eq!(
        view.incident.fingerprint.as_deref(),
        Some(opened.fingerprint.as_str())
    );
    let hosts: Vec<&str> = view.hosts.iter().map(|h| h.agent_id.as_str()).collect();
    assert_eq!(hosts, [agent.id.as_str()]);
    let entry = view
        .timeline
        .iter()
        .find(|e| e.kind == "alert")
        .expect("the alert is on the timeline");
    assert_eq!(entry.actor, "siem");
    assert_eq!(entry.detail["alert_id"], json!(opened.alert_id));
    assert_eq!(entry.detail["source"], "wazuh");
    assert_eq!(entry.detail["rule"], "5712");
    assert_eq!(entry.detail["host"]["agent_id"], json!(agent.id));
    assert_eq!(
        entry.detail["host"]["hostname"],
        json!(hostname.to_uppercase())
    );
    assert_eq!(entry.detail["severity"], "medium");
    assert_eq!(entry.detail["kind"], "brute_force");
    assert!(entry.detail["received_at_ms"].as_i64().unwrap() > 0);
    let raw_sha = entry.detail["raw_sha256"].as_str().unwrap().to_owned();

    // The stored alert shows the payload exactly as sent.
    let stored: AlertView = admin
        .get_json(&format!("/api/v1/alerts/{}", opened.alert_id))
        .await
        .expect("alert readable");
    assert_eq!(stored.alert.incident_id, opened.incident_id);
    assert_eq!(stored.alert.outcome, "opened");
    assert_eq!(stored.alert.raw_sha256, raw_sha);
    assert_eq!(stored.raw, alert);
    {
        use sha2::Digest;
        let sent = alert.to_string();
        assert_eq!(hex::encode(sha2::Sha256::digest(sent.as_bytes())), raw_sha);
        // The bytes as they came in are there to check the hash against.
        let (status, raw) = admin
            .get_bytes(&format!("/api/v1/alerts/{}/raw", opened.alert_id))
            .await;
        assert_eq!(status, 200);
        assert_eq!(raw, sent.as_bytes());
        assert_eq!(hex::encode(sha2::Sha256::digest(&raw)), raw_sha);
    }

    // The same alert again joins the open incident.
    let joined = send(&siem, "/api/v1/alerts?format=wazuh", &alert, 200).await;
    assert!(!joined.opened);
    assert_eq!(joined.incident_id, opened.incident_id);
    assert_eq!(joined.alert_count, 2);
    assert_eq!(joined.fingerprint, opened.fingerprint);
    let view = incident(&admin, &opened.incident_id).await;
    assert_eq!(view.incident.alert_count, 2);
    assert_eq!(
        view.timeline.iter().filter(|e| e.kind == "alert").count(),
        2
    );

    // And once more through the CLI, from a file.
    let file = deployment.tmp.path().join("alert.json");
    std::fs::write(&file, alert.to_string()).expect("write alert file");
    let siem_token = token(&deployment, "siem-cli", "automation").await;
    let file_arg = file.to_str().expect("utf-8 path");
    let out = deployment
        .run_cli_as(
            &siem_token,
            &["alerts", "send", "--format", "wazuh", file_arg],
        )
        .await;
    let stdout = ok(&out);
    assert!(
        stdout.starts_with(&format!("joined incident {}", opened.incident_id)),
        "{stdout}"
    );
    assert!(stdout.contains("3 alerts now"), "{stdout}");
    let out = deployment
        .run_cli(&[
            "--json",
            "alerts",
            "list",
            "--incident",
            &opened.incident_id,
        ])
        .await;
    let listed: Vec<AlertRecord> = serde_json::from_str(&ok(&out)).expect("alert list JSON");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|a| a.incident_id == opened.incident_id));
    let out = deployment
        .run_cli(&["alerts", "show", &opened.alert_id])
        .await;
    let shown = ok(&out);
    assert!(shown.contains("payload as received"), "{shown}");
    assert!(shown.contains(&raw_sha), "{shown}");
    let out = deployment.run_cli(&["alerts", "list"]).await;
    let table = ok(&out);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("brute_force"), "{table}");

    // An Elastic Security alert naming an unknown host by an address only the simulated host
    // reports is matched by that address.
    let sim = sim_host(&deployment).await;
    let mut ecs: Value = serde_json::from_str(ECS_C2).expect("fixture");
    ecs["_source"]["host.name"] = json!("unknown-db.example");
    ecs["_source"]["host.ip"] = json!([SIM_ADDRESS]);
    let by_ip = send(&siem, "/api/v1/alerts", &ecs, 201).await;
    assert_eq!(by_ip.source.as_str(), "ecs");
    assert_eq!(by_ip.host.agent_id.as_deref(), Some(sim.id.as_str()));
    assert_eq!(by_ip.host.matched_by.as_deref(), Some("ip"));
    let view = incident(&admin, &by_ip.incident_id).await;
    assert_eq!(view.incident.kind, "c2");
    assert_eq!(view.incident.severity, "high");
    assert_eq!(view.hosts.len(), 1);
    assert_eq!(view.hosts[0].agent_id, sim.id);

    // A host no agent is: the incident opens without hosts and its timeline says why.
    let ghost = json!({"title": "Mimikatz seen", "kind": "malware", "severity": "critical",
        "host": {"hostname": "ghost-host.corp.example", "ip": "192.0.2.77"}});
    let unmatched = send(&siem, "/api/v1/alerts", &ghost, 201).await;
    assert_eq!(unmatched.host.agent_id, None);
    let view = incident(&admin, &unmatched.incident_id).await;
    assert!(view.hosts.is_empty());
    let entry = view.timeline.iter().find(|e| e.kind == "alert").unwrap();
    assert!(
        entry
            .summary
            .contains("ghost-host.corp.example / 192.0.2.77, which matches no enrolled agent"),
        "{}",
        entry.summary
    );
    assert_eq!(entry.detail["host"]["agent_id"], Value::Null);
    assert_eq!(entry.detail["host"]["ip"], "192.0.2.77");

    // Bad payloads: 400 naming the field, nothing left behind.
    let (incidents, alerts) = (count_incidents(&admin).await, count_alerts(&admin).await);
    let mut bad = wazuh_alert(&hostname);
    bad["rule"]["level"] = json!("high");
    let refused = siem
        .post_bytes("/api/v1/alerts", bad.to_string().into_bytes())
        .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["detail"], "rule.level must be a number 0-16");
    let bad_file = deployment.tmp.path().join("bad-alert.json");
    std::fs::write(&bad_file, bad.to_string()).expect("write bad alert file");
    let bad_file_arg = bad_file.to_str().expect("utf-8 path");
    let out = deployment
        .run_cli_as(&siem_token, &["alerts", "send", bad_file_arg])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rule.level must be a number 0-16"),
        "{stderr}"
    );
    let refused = siem
        .post_bytes(
            "/api/v1/alerts?format=ecs",
            wazuh_alert(&hostname).to_string().into_bytes(),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.body["detail"],
        "kibana.alert.rule.name must be a non-empty string"
    );
    let refused = siem
        .post_bytes("/api/v1/alerts", b"{\"message\": 1}".to_vec())
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("?format="));
    let refused = siem
        .post_bytes(
            "/api/v1/alerts?format=splunk",
            ghost.to_string().into_bytes(),
        )
        .await;
    assert_eq!(refused.status, 400);
    // Too large: over the alert limit, and over the API's body limit.
    for size in [300 * 1024, 1024 * 1024 + 1] {
        let mut big = ghost.clone();
        big["description"] = json!("x".repeat(size));
        let refused = siem
            .post_bytes("/api/v1/alerts", big.to_string().into_bytes())
            .await;
        assert_eq!(refused.status, 413, "{size}: {:?}", refused.body);
    }
    assert_eq!(count_incidents(&admin).await, incidents);
    assert_eq!(count_alerts(&admin).await, alerts);

    // Only automation (and admin) may send alerts; viewers may read them.
    for role in ["viewer", "responder"] {
        let api = deployment
            .api()
            .with_token(&token(&deployment, role, role).await);
        let refused = api
            .post_bytes("/api/v1/alerts", ghost.to_string().into_bytes())
            .await;
        assert_eq!(refused.status, 403, "{role}: {:?}", refused.body);
        if role == "viewer" {
            let seen: Vec<AlertRecord> =
                api.get_json("/api/v1/alerts").await.expect("viewer reads");
            assert_eq!(seen.len(), alerts);
        }
    }
    assert_eq!(count_incidents(&admin).await, incidents);
    send(
        &admin,
        "/api/v1/alerts",
        &json!({"title": "sent by an admin"}),
        201,
    )
    .await;

    drop(sim);
    agent.stop().await;
}

/// Sends the same new alert `n` times at once; exactly one opens an incident, the rest join
/// it.
async fn concurrent_identical_alerts_end_in_one_incident(deployment: &Deployment, n: usize) {
    let siem = token(deployment, "siem", "automation").await;
    let alert = json!({"title": "beacon", "kind": "c2", "source": "zeek",
        "host": {"hostname": "nowhere"}, "destination": {"ip": "203.0.113.9", "port": 443}});
    let mut sends = Vec::new();
    for _ in 0..n {
        let api = deployment.api().with_token(&siem);
        let body = alert.to_string().into_bytes();
        sends.push(tokio::spawn(async move {
            api.post_bytes("/api/v1/alerts", body).await
        }));
    }
    let mut answers: Vec<Received> = Vec::new();
    for send in sends {
        let answer = send.await.expect("send task");
        assert!(
            answer.status == 200 || answer.status == 201,
            "{:?}",
            answer.body
        );
        answers.push(serde_json::from_value(answer.body).expect("Received"));
    }
    assert_eq!(
        answers.iter().filter(|a| a.opened).count(),
        1,
        "{answers:?}"
    );
    let incident_id = &answers[0].incident_id;
    assert!(answers.iter().all(|a| &a.incident_id == incident_id));
    let view = incident(&deployment.api(), incident_id).await;
    assert_eq!(view.incident.alert_count, i64::try_from(n).unwrap());
    assert_eq!(count_incidents(&deployment.api()).await, 1);
    assert_eq!(count_alerts(&deployment.api()).await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_alerts_share_one_incident() {
    let deployment = Deployment::start().await;
    concurrent_identical_alerts_end_in_one_incident(&deployment, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_alerts_share_one_incident_on_postgres() {
    let test = "concurrent_identical_alerts_share_one_incident_on_postgres";
    let Some(schema) = PgSchema::create(test).await else {
        return;
    };
    let mut deployment = Deployment::start_with_database(Some(schema.url())).await;
    concurrent_identical_alerts_end_in_one_incident(&deployment, 8).await;
    deployment.stop_controller().await;
    schema.drop().await;
}

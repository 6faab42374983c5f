//! Observables on incidents: taken from the alerts that open and join them, added, judged and
//! removed by responders through the API and the real CLI, on the timeline and in the report.

use cordon_api::{
    alerts::Received,
    observables::{ObservableAdded, ObservableType, ObservableView, SightingSource, Verdict},
};
use cordon_tests::{fails, ok, Deployment};
use serde_json::{json, Value};

fn alert(sha256: &str) -> Vec<u8> {
    json!({
        "title": "dropper seen", "kind": "malware", "severity": "high", "rule": "dropper-1",
        "host": { "hostname": "WEB-01", "ip": "192.0.2.10" },
        "file": { "path": "/tmp/.x/payload.bin", "sha256": sha256 },
        "destination": { "ip": "203.0.113.7", "port": 4444 },
    })
    .to_string()
    .into_bytes()
}

async fn observables(deployment: &Deployment, incident: &str) -> Vec<ObservableView> {
    deployment
        .api()
        .get_json(&format!("/api/v1/incidents/{incident}/observables"))
        .await
        .expect("observables")
}

fn find<'a>(list: &'a [ObservableView], kind: ObservableType, value: &str) -> &'a ObservableView {
    list.iter()
        .find(|o| o.kind == kind && o.value == value)
        .unwrap_or_else(|| panic!("no {kind} {value} in {list:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_bring_their_values_and_a_second_alert_is_a_second_sighting() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let hash = "AB".repeat(32);
    let first = api.post_bytes("/api/v1/alerts", alert(&hash)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first: Received = serde_json::from_value(first.body).unwrap();
    let listed = observables(&deployment, &first.incident_id).await;
    let sha = find(&listed, ObservableType::Sha256, &"ab".repeat(32));
    assert_eq!(sha.verdict, Verdict::Unknown);
    assert_eq!(sha.sightings.len(), 1);
    assert_eq!(sha.sightings[0].source, SightingSource::Alert);
    assert_eq!(
        sha.sightings[0].ref_id.as_deref(),
        Some(first.alert_id.as_str())
    );
    for (kind, value) in [
        (ObservableType::Hostname, "web-01"),
        (ObservableType::Ipv4, "192.0.2.10"),
        (ObservableType::FilePath, "/tmp/.x/payload.bin"),
        (ObservableType::FileName, "payload.bin"),
        (ObservableType::Ipv4, "203.0.113.7"),
        (ObservableType::Port, "4444"),
    ] {
        find(&listed, kind, value);
    }

    // The same alert again joins the incident: each value is seen twice, not listed twice.
    let second = api.post_bytes("/api/v1/alerts", alert(&hash)).await;
    let second: Received = serde_json::from_value(second.body).unwrap();
    assert_eq!(second.incident_id, first.incident_id);
    let again = observables(&deployment, &first.incident_id).await;
    assert_eq!(again.len(), listed.len());
    let sha = find(&again, ObservableType::Sha256, &"ab".repeat(32));
    assert_eq!(sha.sighting_count, 2);
    assert_eq!(
        sha.sightings[1].ref_id.as_deref(),
        Some(second.alert_id.as_str())
    );

    // A viewer reads them but may not add one.
    let viewer = deployment.api_token("viewer", "observer").await;
    let as_viewer = api.with_token(&viewer);
    let path = format!("/api/v1/incidents/{}/observables", first.incident_id);
    assert!(as_viewer
        .get_json::<Vec<ObservableView>>(&path)
        .await
        .is_ok());
    let refused = as_viewer
        .post_json::<Value>(&path, json!({ "type": "ipv4", "value": "192.0.2.1" }))
        .await
        .expect_err("a viewer cannot add");
    assert_eq!(refused.status, 403, "{}", refused.body);

    // A bad value is refused naming its type and the value; nothing is added.
    let bad = api
        .post_json::<Value>(&path, json!({ "type": "sha256", "value": "abc" }))
        .await
        .expect_err("not a hash");
    assert_eq!(bad.status, 400);
    let detail = bad.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("sha256") && detail.contains("\"abc\""),
        "{detail}"
    );
    assert_eq!(
        observables(&deployment, &first.incident_id).await.len(),
        listed.len()
    );

    // Added through the API, then judged, then removed: each on the timeline.
    let added: ObservableAdded = api
        .post_json(
            &path,
            json!({ "type": "domain", "value": "Evil.Example.ORG.", "verdict": "suspicious" }),
        )
        .await
        .unwrap();
    assert!(added.created);
    assert_eq!(added.observable.value, "evil.example.org");
    let changed: ObservableView = api
        .patch_json(
            &format!("{path}/{}", added.observable.id),
            json!({ "verdict": "malicious", "ignore_for_similarity": true }),
        )
        .await
        .unwrap();
    assert_eq!(changed.verdict, Verdict::Malicious);
    assert!(changed.ignore_for_similarity);
    let removed: ObservableView = api
        .delete_json(&format!("{path}/{}", added.observable.id))
        .await
        .unwrap();
    assert_eq!(removed.id, added.observable.id);
    let missing = api
        .delete_json::<Value>(&format!("{path}/{}", added.observable.id))
        .await
        .expect_err("gone");
    assert_eq!(missing.status, 404);
    let view: Value = api
        .get_json(&format!("/api/v1/incidents/{}", first.incident_id))
        .await
        .unwrap();
    let said: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "observable")
        .filter_map(|e| e["summary"].as_str())
        .collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(
        said[0].contains("domain evil.example.org (suspicious)"),
        "{said:?}"
    );
    assert!(
        said[1].contains("marked malicious, ignored for similarity"),
        "{said:?}"
    );
    assert!(said[2].contains("removed"), "{said:?}");

    // And the report lists what is left.
    let (status, _, report) = api
        .get_text(&format!(
            "/api/v1/incidents/{}/report?format=markdown",
            first.incident_id
        ))
        .await;
    assert_eq!(status, 200);
    assert!(report.contains("## Observables"), "{report}");
    assert!(report.contains(&"ab".repeat(32)), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_judges_and_removes_by_value() {
    let deployment = Deployment::start().await;
    let created: Value = deployment
        .api()
        .post_json(
            "/api/v1/incidents",
            json!({ "title": "by hand", "kind": "c2" }),
        )
        .await
        .unwrap();
    let incident = created["id"].as_str().unwrap().to_owned();
    let prefix = &incident[..8];

    let out = ok(&deployment
        .run_cli(&[
            "observables",
            "add",
            prefix,
            "--type",
            "ipv6",
            "2001:DB8:0:0::7",
            "--verdict",
            "malicious",
        ])
        .await);
    assert!(
        out.starts_with("added: ") && out.contains("ipv6 2001:db8::7 (malicious, 1 sightings)"),
        "{out}"
    );
    let again = ok(&deployment
        .run_cli(&[
            "observables",
            "add",
            prefix,
            "--type",
            "ipv6",
            "2001:db8::7",
        ])
        .await);
    assert!(
        again.starts_with("seen again: ") && again.contains("(malicious, 2 sightings)"),
        "{again}"
    );

    // Refused before anything is sent, naming the type and the value.
    let stderr = fails(
        &deployment
            .run_cli(&["observables", "add", prefix, "--type", "ipv4", "999.1.1.1"])
            .await,
        2,
    );
    assert!(
        stderr.contains("ipv4") && stderr.contains("999.1.1.1"),
        "{stderr}"
    );
    let stderr = fails(
        &deployment
            .run_cli(&["observables", "add", prefix, "--type", "ip", "1.2.3.4"])
            .await,
        2,
    );
    assert!(stderr.contains("expected one of ipv4, ipv6"), "{stderr}");

    let listed: Vec<ObservableView> = serde_json::from_str(&ok(&deployment
        .run_cli(&["--json", "observables", "list", prefix])
        .await))
    .expect("JSON list");
    assert_eq!(listed.len(), 1);
    let table = ok(&deployment.run_cli(&["observables", "list", prefix]).await);
    assert!(
        table.contains("TYPE") && table.contains("2001:db8::7"),
        "{table}"
    );

    // Named by value, as listed.
    let set = ok(&deployment
        .run_cli(&[
            "observables",
            "set",
            prefix,
            "2001:db8::7",
            "--verdict",
            "benign",
            "--ignore",
        ])
        .await);
    assert!(set.contains("benign") && set.contains("ignored"), "{set}");
    let stderr = fails(
        &deployment
            .run_cli(&["observables", "set", prefix, "2001:db8::7"])
            .await,
        2,
    );
    assert!(stderr.contains("nothing to change"), "{stderr}");
    let stderr = fails(
        &deployment
            .run_cli(&["observables", "remove", prefix, "192.0.2.99"])
            .await,
        4,
    );
    assert!(stderr.contains("no observable 192.0.2.99"), "{stderr}");
    let removed = ok(&deployment
        .run_cli(&["observables", "remove", prefix, &listed[0].id[..6]])
        .await);
    assert!(removed.starts_with("removed "), "{removed}");
    let empty = ok(&deployment.run_cli(&["observables", "list", prefix]).await);
    assert!(empty.contains("has no observables"), "{empty}");
}

//! Similar past incidents: found by what they share, weighted by rarity, with the reasons in
//! words and numbers, how they ended (a reopened one says so), and never by noise.

use cordon_api::{
    alerts::Received,
    incidents::IncidentView,
    similar::{Outcome, ReasonKind, SimilarPage},
};
use cordon_tests::{ok, Deployment};
use serde_json::{json, Value};

/// An alert whose values are all its own but for those given (ports differ by host).
fn alert(host: &str, rule: &str, sha256: &str, destination: &str) -> Vec<u8> {
    let port = 1024 + host.bytes().map(u16::from).sum::<u16>();
    json!({
        "title": format!("{rule} on {host}"), "kind": "malware", "severity": "high",
        "rule": rule,
        "host": { "hostname": host },
        "file": { "sha256": sha256 },
        "destination": { "ip": destination, "port": port },
    })
    .to_string()
    .into_bytes()
}

async fn send(deployment: &Deployment, body: Vec<u8>) -> Received {
    let sent = deployment.api().post_bytes("/api/v1/alerts", body).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    serde_json::from_value(sent.body).expect("alert answer")
}

fn hash(n: u32) -> String {
    format!("{n:064x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_seen_before_on_another_host_finds_that_incident_and_how_it_ended() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let shared = hash(0xdead);
    let first = send(
        &deployment,
        alert("web-a", "dropper", &shared, "198.51.100.1"),
    )
    .await;
    assert!(
        first.similar.is_empty(),
        "nothing came before: {:?}",
        first.similar
    );
    let closed: Value = api
        .post_json(
            &format!("/api/v1/incidents/{}/close", first.incident_id),
            json!({ "resolution": "closed", "reason": "cleaned up", "force": true }),
        )
        .await
        .expect("close");
    assert_eq!(closed["stage"], "closed");

    // Another host, another rule, another address: only the hash is shared.
    let second = send(
        &deployment,
        alert("web-b", "other-rule", &shared, "198.51.100.2"),
    )
    .await;
    assert!(second.opened);
    let best = second.similar.first().expect("the first incident is found");
    assert_eq!(best.id, first.incident_id);
    assert_eq!(best.outcome, Outcome::Closed);
    assert!(best.secs_to_close.is_some());
    let why = &best.reasons[0];
    assert_eq!(why.kind, ReasonKind::Observable);
    assert_eq!(
        why.text,
        format!("shares sha256 {shared} (seen in 2 of 2 incidents)")
    );
    assert!(why.weight > 0.5, "{why:?}");
    assert!(best.reasons.iter().any(|r| r.kind == ReasonKind::Kind));
    assert!((best.score - best.reasons.iter().map(|r| r.weight).sum::<f64>()).abs() < 0.01);

    // The view, the timeline and the report say it too.
    let view: IncidentView = api
        .get_json(&format!("/api/v1/incidents/{}", second.incident_id))
        .await
        .unwrap();
    assert_eq!(view.similar[0].id, first.incident_id);
    let entry = view
        .timeline
        .iter()
        .find(|e| e.kind == "similar")
        .expect("a similar entry on the new incident's timeline");
    assert!(
        entry.summary.contains(&first.incident_id[..8]),
        "{}",
        entry.summary
    );
    let (_, _, report) = api
        .get_text(&format!(
            "/api/v1/incidents/{}/report?format=markdown",
            second.incident_id
        ))
        .await;
    assert!(report.contains("## Similar past incidents"), "{report}");
    assert!(report.contains(&first.incident_id), "{report}");

    // Reopened, the first one is evidence its response did not hold.
    let _: Value = api
        .post_json(
            &format!("/api/v1/incidents/{}/stage", first.incident_id),
            json!({ "stage": "assessment", "reason": "it came back" }),
        )
        .await
        .expect("reopen");
    let page: SimilarPage = api
        .get_json(&format!("/api/v1/incidents/{}/similar", second.incident_id))
        .await
        .unwrap();
    assert_eq!(page.similar[0].outcome, Outcome::Reopened);

    // The CLI prints the reasons with their weights.
    let out = ok(&deployment
        .run_cli(&["incidents", "similar", &second.incident_id[..8]])
        .await);
    assert!(
        out.contains(&first.incident_id[..8]) && out.contains("reopened"),
        "{out}"
    );
    assert!(out.contains(&format!("shares sha256 {shared}")), "{out}");
    let bad = deployment
        .run_cli(&[
            "incidents",
            "similar",
            &second.incident_id[..8],
            "--limit",
            "0",
        ])
        .await;
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_most_incidents_is_noise_and_makes_nothing_similar() {
    let deployment = Deployment::start().await;
    let proxy = "203.0.113.50";
    for n in 0..6 {
        send(
            &deployment,
            alert(&format!("host-{n}"), &format!("rule-{n}"), &hash(n), proxy),
        )
        .await;
    }
    let last = send(
        &deployment,
        alert("host-last", "rule-last", &hash(99), proxy),
    )
    .await;
    assert!(
        last.similar.is_empty(),
        "the shared proxy makes no incident similar: {:#?}",
        last.similar
    );
    let page: SimilarPage = deployment
        .api()
        .get_json(&format!("/api/v1/incidents/{}/similar", last.incident_id))
        .await
        .unwrap();
    assert!(
        page.noise
            .iter()
            .any(|n| n == &format!("ipv4 {proxy} (in 7 of 7 incidents)")),
        "{:?}",
        page.noise
    );
    // Below the noise share it counts again.
    let page: SimilarPage = deployment
        .api()
        .get_json(&format!(
            "/api/v1/incidents/{}/similar?noise_share=1",
            last.incident_id
        ))
        .await
        .unwrap();
    assert_eq!(page.similar.len(), 6);
    // Marked benign here, it does not count even then.
    let listed: Vec<cordon_api::observables::ObservableView> = deployment
        .api()
        .get_json(&format!(
            "/api/v1/incidents/{}/observables",
            last.incident_id
        ))
        .await
        .unwrap();
    let proxy_id = &listed.iter().find(|o| o.value == proxy).expect("proxy").id;
    let _: Value = deployment
        .api()
        .patch_json(
            &format!(
                "/api/v1/incidents/{}/observables/{proxy_id}",
                last.incident_id
            ),
            json!({ "verdict": "benign" }),
        )
        .await
        .unwrap();
    let page: SimilarPage = deployment
        .api()
        .get_json(&format!(
            "/api/v1/incidents/{}/similar?noise_share=1",
            last.incident_id
        ))
        .await
        .unwrap();
    assert!(page.similar.is_empty(), "{:#?}", page.similar);
}

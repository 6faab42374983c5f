//! The OpenAPI document against the real controller: served without a token, the same as the
//! committed one, every documented route there with its method, no undocumented method on a
//! documented path, and nothing outside it.

use cordon_tests::Deployment;
use serde_json::Value;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// `template` with each `{param}` filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                "0000000000000000000000000000000000000000000000000000000000000000"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// An HTTPS client that trusts the deployment's CA and sends no token.
fn client(deployment: &Deployment) -> reqwest::Client {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(deployment.ca_cert_path()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(cordon_controller::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_the_controller_serves() {
    let deployment = Deployment::start().await;
    let anonymous = client(&deployment);
    let base = deployment.api_url();

    // Served without a token, and what `cordon-controller openapi` writes.
    let response = anonymous
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served = response.text().await.unwrap();
    assert_eq!(served, cordon_controller::api::routes::openapi_text());
    let document: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "{} paths", paths.len());

    for (template, item) in paths {
        let url = format!("{base}{}", concrete(template));
        for method in METHODS {
            let documented = item.get(method.to_ascii_lowercase()).is_some();
            let answer = anonymous
                .request(method.parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if documented {
                // The route exists: without a token it is refused (or public and answered),
                // never "no such route" or "method not allowed".
                assert_ne!(status, 405, "{method} {template}: {body}");
                assert!(
                    !(status == 404
                        && body["detail"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("no API route"))),
                    "{method} {template} is documented but not routed: {body}"
                );
                let public = item[method.to_ascii_lowercase()].get("security").is_none();
                if !public {
                    assert_eq!(status, 401, "{method} {template} without a token: {body}");
                }
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not documented: {body}"
                );
            }
        }
    }

    // A path outside the document is no route.
    let answer = anonymous
        .get(format!("{base}/api/v1/not-a-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

#[test]
fn answers_are_held_to_the_documented_schemas() {
    use cordon_tests::contract::check;
    use serde_json::json;
    let health = json!({ "status": "ok", "version": "0.1.0", "agents_online": 3 });
    check("GET", "/api/v1/health", 200, &health);
    let refused = |method: &'static str, path: &'static str, status: u16, body: Value| {
        std::panic::catch_unwind(move || check(method, path, status, &body)).is_err()
    };
    // A field of the wrong type, a missing one, an undocumented status, an undocumented route.
    assert!(refused(
        "GET",
        "/api/v1/health",
        200,
        json!({ "status": 5, "version": "x", "agents_online": 1 })
    ));
    assert!(refused(
        "GET",
        "/api/v1/health",
        200,
        json!({ "status": "ok" })
    ));
    assert!(refused("GET", "/api/v1/health", 201, health.clone()));
    assert!(refused("GET", "/api/v1/nothing", 200, health));
    // Path parameters match any one segment; errors are checked too.
    let error = json!({ "error": "not_found", "detail": "no task x" });
    check("GET", "/api/v1/tasks/x", 404, &error);
    assert!(refused(
        "GET",
        "/api/v1/tasks/x",
        404,
        json!({ "message": "no" })
    ));
}

#[test]
fn typed_fields_never_carry_json_text_and_free_form_ones_are_left_alone() {
    use cordon_tests::contract::{component, json_in_a_string};
    use serde_json::json;
    let receipt = |done: &str, before: Value| {
        json!({
            "action_id": "a", "agent_id": "b", "at_ms": 1, "before": before, "done": done,
            "after": {}, "agent_public_key": "00", "signature": "00"
        })
    };
    let receipts = component("ReceiptView");
    // A typed string holding JSON text is caught, wherever it is.
    assert_eq!(
        json_in_a_string(receipts, &receipt("{\"pid\": 1}", json!({}))).as_deref(),
        Some("`/done`")
    );
    assert!(json_in_a_string(receipts, &receipt("killed {braces} in words", json!({}))).is_none());
    // What the agent found is its own: an argument may well be JSON.
    let found = json!({ "processes": [{ "cmdline": ["{\"a\": 1}"] }] });
    assert!(json_in_a_string(receipts, &receipt("killed", found.clone())).is_none());
    // The gate is the schema, not the name: a task's free-form `result` excuses nothing in a
    // typed part called `result` elsewhere, nor in the typed fields around it.
    let tasks = component("TaskView");
    let task = |kind: &str, result: Value| {
        json!({ "id": "t", "agent_id": "a", "kind": kind, "state": "done", "created_by": "x",
                "created_at_ms": 1, "expires_at_ms": 2, "request": {}, "result": result })
    };
    assert!(json_in_a_string(tasks, &task("processes", found)).is_none());
    assert_eq!(
        json_in_a_string(tasks, &task("[1, 2]", json!({}))).as_deref(),
        Some("`/kind`")
    );
}

#[test]
fn fields_the_document_does_not_name_are_refused() {
    use cordon_tests::contract::check;
    use serde_json::json;
    let health = json!({ "status": "ok", "version": "0.1.0", "agents_online": 3 });
    check("GET", "/api/v1/health", 200, &health);
    let mut extra = health.clone();
    extra["secret_field"] = json!("x");
    assert!(std::panic::catch_unwind(move || check("GET", "/api/v1/health", 200, &extra)).is_err());
}

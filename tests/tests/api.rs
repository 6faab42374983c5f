//! The API's contract: JSON errors with the right status for every kind of bad request, tokens
//! checked, health open to probes.

use cordon_api::agents::Health;
use cordon_tests::Deployment;

fn error_of(body: &serde_json::Value) -> (&str, &str) {
    (
        body["error"].as_str().unwrap_or_default(),
        body["detail"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let deployment = Deployment::start().await;
    let api = deployment.api();

    let health: Health = api.with_token("").get_json("/api/v1/health").await.unwrap();
    assert_eq!(health.status, "ok");

    let missing = api
        .with_token("")
        .get_json::<serde_json::Value>("/api/v1/agents")
        .await
        .unwrap_err();
    assert_eq!(missing.status, 401);
    assert_eq!(error_of(&missing.body).0, "unauthorized");

    let wrong = api
        .with_token("cordon_api_not-a-real-token")
        .get_json::<serde_json::Value>("/api/v1/agents")
        .await
        .unwrap_err();
    assert_eq!(wrong.status, 401);

    let unknown = api
        .get_json::<serde_json::Value>("/api/v1/agents/no-such-agent")
        .await
        .unwrap_err();
    assert_eq!(unknown.status, 404);
    assert!(error_of(&unknown.body).1.contains("no-such-agent"));

    let no_route = api
        .get_json::<serde_json::Value>("/api/v1/nothing-here")
        .await
        .unwrap_err();
    assert_eq!(no_route.status, 404);
    assert_eq!(error_of(&no_route.body).0, "not_found");

    let bad_json = api
        .post_raw("/api/v1/enrollment-tokens", "{\"ttl_secs\": ")
        .await;
    assert_eq!(bad_json.status, 400);
    assert_eq!(error_of(&bad_json.body).0, "bad_request");

    let bad_field = api
        .post_raw(
            "/api/v1/enrollment-tokens",
            "{\"ttl_secs\": 60, \"bogus\": 1}",
        )
        .await;
    assert!(
        bad_field.status == 400 || bad_field.status == 422,
        "{bad_field:?}"
    );
    assert!(
        error_of(&bad_field.body).1.contains("bogus"),
        "{bad_field:?}"
    );

    let bad_ttl = api
        .post_json::<serde_json::Value>(
            "/api/v1/enrollment-tokens",
            serde_json::json!({ "ttl_secs": 0 }),
        )
        .await
        .unwrap_err();
    assert_eq!(bad_ttl.status, 400);
    assert!(error_of(&bad_ttl.body).1.contains("ttl_secs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_tell_scripts_what_happened() {
    let deployment = Deployment::start().await;
    let not_found = deployment.cli(&["agents", "show", "no-such-agent"]);
    assert_eq!(not_found.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("no-such-agent"));

    let json = deployment.cli(&["agents", "show", "no-such-agent", "--json"]);
    let body: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("JSON error on stdout");
    assert_eq!(body["exit_code"], 4);

    let created = deployment.cli(&["tokens", "create", "--ttl", "10m", "--json"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert!(token["token"]
        .as_str()
        .unwrap()
        .starts_with("cordon_enroll_"));
    assert_eq!(token["ca_fingerprint"], deployment.ca_fingerprint.as_str());

    let bad_ttl = deployment.cli(&["tokens", "create", "--ttl", "soon"]);
    assert_eq!(bad_ttl.status.code(), Some(2));

    let denied = std::process::Command::new(cordon_tests::binary("e2e-cordon"))
        .args(["agents", "list"])
        .env("CORDON_URL", deployment.api_url())
        .env("CORDON_TOKEN", "cordon_api_wrong")
        .env("CORDON_CA", deployment.ca_cert_path())
        .env("HOME", deployment.tmp.path())
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(3));

    let unreachable = std::process::Command::new(cordon_tests::binary("e2e-cordon"))
        .args(["agents", "list"])
        .env("CORDON_URL", "https://127.0.0.1:9")
        .env("CORDON_TOKEN", &deployment.admin_token)
        .env("CORDON_CA", deployment.ca_cert_path())
        .env("HOME", deployment.tmp.path())
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(5));
}

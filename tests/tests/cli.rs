//! The real `cordon` binary where new users tripped: output into a pipe that closes early,
//! durations without a unit, the health check without a token, a URL that is not HTTPS, and
//! colour codes in logs that are not going to a terminal.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use cordon_tests::{output::text, Deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_pipe_closed_early_ends_quietly_with_status_0() {
    let deployment = Deployment::start().await;
    for args in [
        vec!["agents", "list"],
        vec!["agents", "list", "--json"],
        vec!["tokens", "list"],
    ] {
        let mut command = deployment.cli_command(&deployment.admin_token);
        command
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("spawn cordon");
            // The reader goes away before the CLI has had its answer from the controller.
            drop(child.stdout.take());
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            (child.wait().expect("wait for cordon"), stderr)
        })
        .await
        .unwrap();
        let (status, stderr) = out;
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said something: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_need_a_unit_and_take_the_usual_forms() {
    let deployment = Deployment::start().await;
    // A bare number is a usage error that names the accepted forms.
    let out = deployment
        .run_cli(&["tokens", "create", "--ttl", "30"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no unit") && stderr.contains("1h30m") && stderr.contains("1w"),
        "{stderr}"
    );
    // The usual forms all work.
    for ttl in ["90s", "10m", "1h30m", "2d", "1w"] {
        let out = deployment
            .run_cli(&["tokens", "create", "--ttl", ttl, "--json"])
            .await;
        assert!(out.status.success(), "--ttl {ttl}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_and_the_url_must_be_https() {
    let deployment = Deployment::start().await;
    let mut command = deployment.cli_command("unused");
    command.env_remove("CORDON_TOKEN").arg("health");
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("ok"), "{out:?}");

    // Any other command still asks for one, saying where to give it.
    let mut command = deployment.cli_command("unused");
    command.env_remove("CORDON_TOKEN").args(["agents", "list"]);
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--token"), "{out:?}");

    // A URL without https:// is a usage error that says so, before any connection is tried.
    let plain = deployment.api_url().replacen("https://", "http://", 1);
    for url in [plain.as_str(), "127.0.0.1:8443", "https://"] {
        let out = deployment
            .cli_command(&deployment.admin_token)
            .args(["--url", url, "health"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("HTTPS only"), "{url}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let mut child = Command::new(cordon_tests::binary("e2e-cordon-agent"))
        .args(["run", "--data-dir"])
        .arg(agent.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    deployment
        .wait_for_status(
            &agent.id,
            cordon_controller::api::types::AgentStatus::Online,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    assert!(stderr.contains("INFO"), "the agent logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

//! The real `cordon` binary where new users tripped: output into a pipe that closes early,
//! durations without a unit, the health check without a token, a URL that is not HTTPS, and
//! colour codes in logs that are not going to a terminal; ids by hostname or prefix.

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
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Online)
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

/// Runs the CLI as the admin with `args` and parses its `--json` answer.
async fn json_of(deployment: &Deployment, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let out = deployment.run_cli(&all).await;
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_enrolment_tokens_are_listed_and_revoked() {
    let deployment = Deployment::start().await;

    // An API token: listed (never the token itself), refused once revoked.
    let created = json_of(
        &deployment,
        &[
            "tokens",
            "api-create",
            "--role",
            "viewer",
            "--name",
            "soar-bot",
        ],
    )
    .await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    let listed = deployment.run_cli(&["tokens", "api-list"]).await;
    let table = text(&listed.stdout);
    assert!(table.contains(&id) && table.contains("soar-bot"), "{table}");
    assert!(!table.contains(&token), "a listing never shows a token");
    let works = deployment.run_cli_as(&token, &["agents", "list"]).await;
    assert!(works.status.success(), "{works:?}");
    let revoked = json_of(&deployment, &["tokens", "api-revoke", &id]).await;
    assert!(revoked["revoked_at_ms"].as_i64().is_some(), "{revoked}");
    let refused = deployment.run_cli_as(&token, &["agents", "list"]).await;
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let unknown = deployment
        .run_cli(&["tokens", "api-revoke", "no-such-token"])
        .await;
    assert_eq!(unknown.status.code(), Some(4), "{unknown:?}");
    let hostile = deployment
        .run_cli(&["tokens", "api-revoke", "../agents"])
        .await;
    assert_eq!(hostile.status.code(), Some(2), "{hostile:?}");

    // An enrolment token, revoked by the start of its hash, enrols nothing.
    let enrol = json_of(&deployment, &["tokens", "create", "--ttl", "10m"]).await;
    let enrol_token = enrol["token"].as_str().unwrap().to_owned();
    let tokens = json_of(&deployment, &["tokens", "list"]).await;
    let prefix = tokens[0]["token_hash_prefix"].as_str().unwrap().to_owned();
    let gone = json_of(&deployment, &["tokens", "revoke", &prefix[..8]]).await;
    assert_eq!(gone["token_hash_prefix"], prefix.as_str());
    let dir = tempfile::tempdir().unwrap();
    let attempt = cordon_agent::enroll::enroll(&cordon_agent::enroll::EnrollOptions {
        data_dir: dir.path().to_path_buf(),
        controller: deployment.agent_addr.to_string(),
        ca_fingerprint: deployment.ca_fingerprint.clone(),
        token: enrol_token,
    })
    .await;
    assert!(attempt.is_err(), "a revoked token enrolled an agent");
    // A used token is not revoked (the agent is), and a short prefix is refused.
    let agent = deployment.enroll_agent().await;
    let tokens = json_of(&deployment, &["tokens", "list"]).await;
    let used = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["used_by_agent"] == agent.id.as_str())
        .unwrap()["token_hash_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = deployment.run_cli(&["tokens", "revoke", &used]).await;
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains("revoke the agent"), "{out:?}");
    let out = deployment.run_cli(&["tokens", "revoke", "abc"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netstat_narrows_sockets_by_pid_port_and_state() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Online)
        .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (port_number, pid_number) = (listener.local_addr().unwrap().port(), std::process::id());
    let (port, pid) = (port_number.to_string(), pid_number.to_string());
    let sockets = |snapshot: &serde_json::Value| -> Vec<serde_json::Value> {
        snapshot["sockets"].as_array().cloned().unwrap_or_default()
    };

    // By port (no --wait needed: a filter waits for the answer).
    let by_port = json_of(
        &deployment,
        &["netstat", "--agent", &agent.id, "--port", &port],
    )
    .await;
    let found = sockets(&by_port);
    assert!(!found.is_empty(), "{by_port}");
    assert!(found
        .iter()
        .all(|s| s["local_port"] == port_number || s["remote_port"] == port_number));
    assert!(found
        .iter()
        .any(|s| s["state"] == "LISTEN" && s["pid"] == pid_number));

    // By pid and state, any case.
    let mine = json_of(
        &deployment,
        &[
            "netstat", "--agent", &agent.id, "--pid", &pid, "--state", "listen",
        ],
    )
    .await;
    let found = sockets(&mine);
    assert!(
        found.iter().any(|s| s["local_port"] == port_number),
        "{mine}"
    );
    assert!(found
        .iter()
        .all(|s| s["pid"] == pid_number && s["state"] == "LISTEN"));

    // A state nothing is in: no sockets, still the interfaces.
    let none = json_of(
        &deployment,
        &["netstat", "--agent", &agent.id, "--state", "NO-SUCH-STATE"],
    )
    .await;
    assert!(sockets(&none).is_empty(), "{none}");
    assert!(!none["interfaces"].as_array().unwrap().is_empty());
    // The table shows the same narrowing.
    let out = deployment
        .run_cli(&["netstat", "--agent", &agent.id, "--port", &port])
        .await;
    assert!(
        text(&out.stdout).contains(&format!("127.0.0.1:{port}")),
        "{out:?}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_command_starts_is_attached_to_the_incident_it_names() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    let alice = cordon_tests::generate_key(deployment.tmp.path(), "alice");
    agent.trust("alice", &alice.public_file, "kill", "1h");
    agent.start();
    deployment
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Online)
        .await;
    let incident = json_of(
        &deployment,
        &[
            "incidents",
            "create",
            "--title",
            "beacon",
            "--kind",
            "c2",
            "--agent",
            &agent.id,
        ],
    )
    .await;
    let incident_id = incident["id"].as_str().unwrap().to_owned();

    // A collection, a hunt and a signed kill, each with --incident.
    let task = json_of(
        &deployment,
        &["ps", "--agent", &agent.id, "--incident", &incident_id],
    )
    .await;
    let hunt = json_of(
        &deployment,
        &[
            "hunt",
            "--process-name",
            "no-such-process",
            "--incident",
            &incident_id,
        ],
    )
    .await;
    let mut victim = cordon_tests::Victim::spawn();
    let key = alice.file.to_str().unwrap();
    let pid = victim.pid_arg();
    let kill = json_of(
        &deployment,
        &[
            "kill",
            "--agent",
            &agent.id,
            "--pid",
            &pid,
            "--key",
            key,
            "--incident",
            &incident_id,
        ],
    )
    .await;
    assert!(victim.exit_within(Duration::from_secs(10)).is_some());
    let view = json_of(&deployment, &["incidents", "show", &incident_id]).await;
    let links: Vec<(String, String)> = view["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["ref_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, id) in [
        ("task", &task["id"]),
        ("hunt", &hunt["id"]),
        ("action", &kill["id"]),
    ] {
        let id = id
            .as_str()
            .unwrap_or_else(|| panic!("{kind} id in {task} {hunt} {kill}"));
        assert!(
            links.contains(&(kind.to_owned(), id.to_owned())),
            "{kind} {id}: {links:?}"
        );
    }

    // An incident that does not exist is refused before anything starts.
    let before = deployment
        .api()
        .get_json::<Vec<serde_json::Value>>("/api/v1/tasks?limit=1000")
        .await
        .unwrap()
        .len();
    let out = deployment
        .run_cli(&[
            "ps",
            "--agent",
            &agent.id,
            "--incident",
            "00000000-0000-4000-8000-000000000000",
        ])
        .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = deployment
        .run_cli(&["ps", "--agent", &agent.id, "--incident", "no-such-incident"])
        .await;
    assert_eq!(out.status.code(), Some(4), "not an id at all: {out:?}");
    let after = deployment
        .api()
        .get_json::<Vec<serde_json::Value>>("/api/v1/tasks?limit=1000")
        .await
        .unwrap()
        .len();
    assert_eq!(before, after, "no task was queued");
}

/// The shortest prefix of `id` that no other of `all` starts with.
fn unique_prefix<'a>(id: &'a str, all: &[String]) -> &'a str {
    (1..=id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|other| other.starts_with(p)).count() == 1)
        .unwrap_or(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn things_are_named_by_hostname_or_a_unique_prefix_and_ambiguity_lists_the_candidates() {
    let deployment = Deployment::start().await;
    let first = deployment.enroll_agent().await;
    let second = deployment.enroll_agent().await;
    let agents = json_of(&deployment, &["agents", "list"]).await;
    let hostname = agents[0]["hostname"].as_str().unwrap().to_owned();
    let ids: Vec<String> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();

    // Both agents run on this machine, so its hostname (in any case) names two: each is listed.
    let out = deployment
        .run_cli(&["agents", "show", &hostname.to_uppercase()])
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("names 2 agents")
            && stderr.contains(&first.id)
            && stderr.contains(&second.id),
        "{stderr}"
    );
    // A unique prefix of an id names the agent, for collection too.
    let prefix = unique_prefix(&first.id, &ids);
    let shown = json_of(&deployment, &["agents", "show", prefix]).await;
    assert_eq!(shown["id"], first.id.as_str());
    let task = json_of(&deployment, &["system", "--agent", &first.id[..13]]).await;
    assert_eq!(task["agent_id"], first.id.as_str());
    let task_id = task["id"].as_str().unwrap();
    let by_prefix = json_of(&deployment, &["tasks", "show", &task_id[..8]]).await;
    assert_eq!(by_prefix["id"], task_id);
    // Tables show the hostname next to the agent id.
    let out = deployment.run_cli(&["tasks", "list"]).await;
    assert!(out.status.success(), "{out:?}");
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(task_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        table.lines().next().unwrap().contains("HOSTNAME") && row.contains(&hostname),
        "{table}"
    );

    // Seventeen incidents: two of them share a first hex digit, so that digit is ambiguous.
    let api = deployment.api();
    let mut incidents = Vec::new();
    for n in 0..17 {
        let view: serde_json::Value = api
            .post_json(
                "/api/v1/incidents",
                serde_json::json!({ "title": format!("case {n}"), "kind": "malware" }),
            )
            .await
            .unwrap();
        incidents.push(view["id"].as_str().unwrap().to_owned());
    }
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| {
            incidents
                .iter()
                .filter(|i| i.starts_with(d.as_str()))
                .count()
                >= 2
        })
        .unwrap();
    let out = deployment.run_cli(&["incidents", "show", &digit]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    for id in incidents.iter().filter(|i| i.starts_with(digit.as_str())) {
        assert!(stderr.contains(id.as_str()), "{id} not listed: {stderr}");
    }
    assert!(
        stderr.contains("case "),
        "titles shown beside ids: {stderr}"
    );
    let one = &incidents[0];
    let shown = json_of(
        &deployment,
        &[
            "incidents",
            "show",
            &unique_prefix(one, &incidents).to_uppercase(),
        ],
    )
    .await;
    assert_eq!(shown["id"], one.as_str());
    // A prefix nothing starts with is not found, and so is text that cannot start an id.
    let unused = (0..=0xffff_u32)
        .map(|n| format!("{n:04x}"))
        .find(|p| !incidents.iter().any(|i| i.starts_with(p.as_str())))
        .unwrap();
    let out = deployment.run_cli(&["incidents", "show", &unused]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = deployment
        .run_cli(&["incidents", "show", "../agents"])
        .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text(&out.stderr).contains("hex digits"), "{out:?}");
}

//! File watch with a real agent: a file the test creates is reported through the API; the watch
//! survives a controller restart (changes made while it was down still arrive) and an agent
//! restart; bad paths get clear errors; stopping the watch stops the changes; the CLI starts,
//! follows, lists and stops watches.

use std::{path::Path, time::Duration};

use cordon_api::{
    agents::AgentStatus,
    tasks::TaskView,
    watches::{WatchEventView, WatchEventsPage, WatchStatus, WatchView},
};
use cordon_tests::{Api, Deployment};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn s(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

async fn watch_view(api: &Api, id: &str) -> WatchView {
    api.get_json(&format!("/api/v1/watches/{id}"))
        .await
        .expect("watch readable")
}

/// Waits until the watch's latest task is not `previous_task` and the watch is `status`.
async fn wait_for_watch(
    api: &Api,
    id: &str,
    status: WatchStatus,
    previous_task: Option<&str>,
) -> WatchView {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let view = watch_view(api, id).await;
        if view.status == status && view.task_id.as_deref() != previous_task {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch never became {status:?}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_events(api: &Api, id: &str) -> Vec<WatchEventView> {
    let page: WatchEventsPage = api
        .get_json(&format!("/api/v1/watches/{id}/events?after=0&limit=1000"))
        .await
        .expect("events readable");
    page.events
}

/// Waits for a change of `kind` to `path` and returns it.
async fn wait_for_change(api: &Api, id: &str, path: &Path, kind: &str) -> WatchEventView {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let events = all_events(api, id).await;
        if let Some(found) = events.iter().find(|e| e.path == s(path) && e.kind == kind) {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} change for {} within {DEADLINE:?}; got {events:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reports_changes_across_reconnects_until_it_is_stopped() {
    let mut deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let api = deployment.api();

    let created: WatchView = api
        .post_json(
            "/api/v1/watches",
            json!({ "agent_id": agent.id, "paths": [s(dir.path())] }),
        )
        .await
        .expect("watch created");
    assert_eq!(created.agent_id, agent.id);
    assert_eq!(created.paths, vec![s(dir.path())]);
    assert!(created.task_id.is_some(), "the view names its task");
    let id = created.id.clone();
    let started = wait_for_watch(&api, &id, WatchStatus::Active, None).await;

    let before = cordon_controller::now_ms();
    let first = dir.path().join("first.txt");
    std::fs::write(&first, b"hello").unwrap();
    let event = wait_for_change(&api, &id, &first, "created").await;
    assert!(event.changed_at_ms >= before - 1000, "{event:?}");
    assert!(
        event.received_at_ms >= event.changed_at_ms - 1000,
        "{event:?}"
    );

    // Polling: `after` the last id returns only what is new.
    let page: WatchEventsPage = api
        .get_json(&format!("/api/v1/watches/{id}/events?after=0"))
        .await
        .unwrap();
    assert!(!page.stopped);
    let again: WatchEventsPage = api
        .get_json(&format!(
            "/api/v1/watches/{id}/events?after={}",
            page.last_id
        ))
        .await
        .unwrap();
    assert!(again.events.is_empty(), "{again:?}");
    assert_eq!(again.last_id, page.last_id);

    // The controller goes away; a change made meanwhile waits on the agent and arrives later.
    deployment.stop_controller().await;
    let while_away = dir.path().join("while-away.txt");
    std::fs::write(&while_away, b"x").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    deployment.start_controller().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let api = deployment.api();
    wait_for_change(&api, &id, &while_away, "created").await;
    let after_reconnect = dir.path().join("after-reconnect.txt");
    std::fs::write(&after_reconnect, b"x").unwrap();
    wait_for_change(&api, &id, &after_reconnect, "created").await;

    // The agent restarts and loses its watches; the controller sends the watch again.
    let task_before = watch_view(&api, &id).await.task_id;
    assert!(task_before.is_some());
    agent.stop().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Offline)
        .await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let resent = wait_for_watch(&api, &id, WatchStatus::Active, task_before.as_deref()).await;
    assert_ne!(
        resent.task_id, started.task_id,
        "a new task started it again"
    );
    let after_restart = dir.path().join("after-restart.txt");
    std::fs::write(&after_restart, b"x").unwrap();
    wait_for_change(&api, &id, &after_restart, "created").await;
    std::fs::write(&after_restart, b"more").unwrap();
    wait_for_change(&api, &id, &after_restart, "modified").await;
    std::fs::remove_file(&after_restart).unwrap();
    wait_for_change(&api, &id, &after_restart, "removed").await;

    // Stopped: the agent is told, and nothing more is recorded.
    let stopped: WatchView = api
        .delete_json(&format!("/api/v1/watches/{id}"))
        .await
        .expect("stopped");
    assert_eq!(stopped.status, WatchStatus::Stopped);
    assert!(stopped.stopped_at_ms.is_some());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let tasks: Vec<TaskView> = api
            .get_json(&format!("/api/v1/tasks?agent_id={}", agent.id))
            .await
            .unwrap();
        let unwatch = tasks
            .iter()
            .find(|t| t.kind == "unwatch")
            .expect("unwatch task");
        if unwatch.state.as_str() == "done" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{unwatch:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = all_events(&api, &id).await.len();
    std::fs::write(dir.path().join("after-stop.txt"), b"x").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = all_events(&api, &id).await;
    assert_eq!(events.len(), count, "nothing after the stop: {events:?}");
    let page: WatchEventsPage = api
        .get_json(&format!("/api/v1/watches/{id}/events"))
        .await
        .unwrap();
    assert!(page.stopped);
    // Stopping twice changes nothing.
    let twice: WatchView = api
        .post_json(&format!("/api/v1/watches/{id}/stop"), json!({}))
        .await
        .unwrap();
    assert_eq!(twice.stopped_at_ms, stopped.stopped_at_ms);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_watch_requests_get_clear_errors() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let api = deployment.api();

    for (path, why) in [
        ("relative/dir", "absolute"),
        ("/tmp/../etc", ".."),
        ("/tmp/a\u{0}b", "NUL"),
    ] {
        let err = api
            .post_json::<WatchView>(
                "/api/v1/watches",
                json!({ "agent_id": agent.id, "paths": [path] }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status, 400, "{path:?}: {err:?}");
        let detail = err.body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{path:?}: {detail}");
    }
    let err = api
        .post_json::<WatchView>(
            "/api/v1/watches",
            json!({ "agent_id": agent.id, "paths": [] }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 400);
    let err = api
        .post_json::<WatchView>(
            "/api/v1/watches",
            json!({ "agent_id": "nobody", "paths": ["/tmp"] }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 404, "{err:?}");
    let err = api
        .get_json::<WatchView>("/api/v1/watches/no-such-watch")
        .await
        .unwrap_err();
    assert_eq!(err.status, 404);
    let err = api
        .get_json::<WatchEventsPage>("/api/v1/watches/no-such-watch/events")
        .await
        .unwrap_err();
    assert_eq!(err.status, 404);

    // A path that does not exist on the host: the agent refuses it and the watch says why.
    let created: WatchView = api
        .post_json(
            "/api/v1/watches",
            json!({ "agent_id": agent.id, "paths": ["/definitely/not/here"] }),
        )
        .await
        .unwrap();
    let failed = wait_for_watch(&api, &created.id, WatchStatus::Failed, None).await;
    let error = failed.error.expect("error shown");
    assert_eq!(error.code.as_str(), "not_found");
    assert!(error.message.contains("/definitely/not/here"), "{error:?}");

    // The CLI exits 4 for it, says why, and stops the watch it created.
    let out = deployment.cli(&["watch", "--agent", &agent.id, "/definitely/not/here"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let active: Vec<WatchView> = api
        .get_json(&format!(
            "/api/v1/watches?agent_id={}&active=true",
            agent.id
        ))
        .await
        .unwrap();
    assert_eq!(
        active.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        vec![created.id.as_str()],
        "the CLI stopped the watch it created; the API's stays, marked failed"
    );
    let out = deployment.cli(&["watch", "--agent", &agent.id, "not/absolute"]);
    assert_eq!(out.status.code(), Some(2));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_follows_lists_and_stops_a_watch() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();

    // `cordon watch` follows: one JSON line per change, until Ctrl-C.
    let watched = dir.path().to_str().unwrap();
    let mut follower = deployment.follow(&["watch", "--json", "--agent", &agent.id, watched]);
    let api = deployment.api();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let id = loop {
        let watches: Vec<WatchView> = api.get_json("/api/v1/watches").await.unwrap();
        if let Some(w) = watches.iter().find(|w| w.status == WatchStatus::Active) {
            break w.id.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{watches:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let file = dir.path().join("followed.txt");
    std::fs::write(&file, b"x").unwrap();
    let line = follower
        .line_where(DEADLINE, |l| l.contains("followed.txt"))
        .await;
    let event: WatchEventView = serde_json::from_str(&line).expect("a JSON object per line");
    assert_eq!(event.path, s(&file));
    assert_eq!(event.kind, "created");
    assert_eq!(event.watch_id, id);
    follower.interrupt();
    let (status, _) = follower.exit_within(DEADLINE).await;
    assert!(
        status.success(),
        "Ctrl-C is a normal end: {}",
        follower.stderr()
    );
    assert!(follower.stderr().contains("keeps recording"));

    // It keeps recording: `watches events` shows the change, and later ones too.
    let later = dir.path().join("later.txt");
    std::fs::write(&later, b"x").unwrap();
    wait_for_change(&api, &id, &later, "created").await;
    let out = deployment.cli(&["watches", "events", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("created") && l.ends_with(&s(&later))),
        "{table}"
    );

    // --no-follow prints the id and returns; list shows both watches.
    let other = tempfile::tempdir().unwrap();
    let out = deployment.cli(&[
        "watch",
        "--no-follow",
        "--agent",
        &agent.id,
        other.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.starts_with("watch "), "{printed}");
    let second = printed.split_whitespace().nth(1).unwrap().to_string();
    let out = deployment.cli(&["watches", "list", "--agent", &agent.id]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&id) && table.contains(&second), "{table}");

    let out = deployment.cli(&["watches", "stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    let out = deployment.cli(&["watches", "list", "--active", "--json"]);
    let active: Vec<WatchView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        active.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        vec![second.as_str()]
    );
    let out = deployment.cli(&["watches", "show", "no-such-watch"]);
    assert_eq!(out.status.code(), Some(4));
    agent.stop().await;
}

/// A started agent watching a new temporary directory: the agent, the directory, the watch
/// (active).
async fn watching_a_new_dir(
    deployment: &Deployment,
) -> (cordon_tests::TestAgent, tempfile::TempDir, WatchView) {
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let api = deployment.api();
    let created: WatchView = api
        .post_json(
            "/api/v1/watches",
            json!({ "agent_id": agent.id, "paths": [s(dir.path())] }),
        )
        .await
        .unwrap();
    wait_for_watch(&api, &created.id, WatchStatus::Active, None).await;
    (agent, dir, created)
}

/// Waits until an `unwatch` the controller queued by itself ran on `agent_id`.
async fn controller_unwatch_done(api: &Api, agent_id: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let tasks: Vec<TaskView> = api
            .get_json(&format!("/api/v1/tasks?agent_id={agent_id}"))
            .await
            .unwrap();
        if tasks.iter().any(|t| {
            t.kind == "unwatch" && t.state.as_str() == "done" && t.created_by == "controller"
        }) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{tasks:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reporting_for_a_watch_the_controller_stopped_is_told_to_stop_it() {
    let deployment = Deployment::start().await;
    let (mut agent, dir, created) = watching_a_new_dir(&deployment).await;
    let api = deployment.api();

    // Stopped behind the agent's back (as when its `unwatch` expired while it was away).
    let store = &deployment.controller().store;
    assert!(store
        .stop_watch(&created.id, "test", cordon_controller::now_ms())
        .await
        .unwrap());
    std::fs::write(dir.path().join("stale.txt"), b"x").unwrap();
    controller_unwatch_done(&api, &agent.id).await;
    assert!(
        all_events(&api, &created.id).await.is_empty(),
        "the change after the stop was not stored"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_reaches_its_change_limit_is_stopped_here_and_on_the_agent() {
    let deployment = Deployment::start().await;
    deployment
        .controller()
        .watch_change_limit
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let (mut agent, dir, created) = watching_a_new_dir(&deployment).await;
    let api = deployment.api();

    // A burst of changes: three are kept, then the watch stops.
    for n in 0..10 {
        std::fs::write(dir.path().join(format!("busy-{n}.txt")), b"x").unwrap();
    }
    let stopped = wait_for_watch(&api, &created.id, WatchStatus::Stopped, None).await;
    assert_eq!(stopped.changes, 3, "{stopped:?}");
    assert_eq!(
        stopped.stopped_by.as_deref(),
        Some(cordon_controller::store::STOPPED_AT_LIMIT)
    );
    // The agent is told to stop too.
    controller_unwatch_done(&api, &agent.id).await;
    std::fs::write(dir.path().join("after.txt"), b"x").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = all_events(&api, &created.id).await;
    assert_eq!(kept.len(), 3, "nothing stored past the limit: {kept:?}");
    let shown = deployment.run_cli(&["watches", "show", &created.id]).await;
    assert!(
        cordon_tests::text(&shown.stdout).contains("change limit reached"),
        "{shown:?}"
    );
    agent.stop().await;
}

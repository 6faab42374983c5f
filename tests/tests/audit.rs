//! The audit log end to end: state-changing API calls, enrolments and refused tokens land in the
//! hash chain; `cordon audit verify` passes on the untouched chain and names the entry after a
//! direct edit of the database; a change that cannot be audited is not made.

use cordon_api::{
    audit::{AuditPage, AuditVerifyView},
    tasks::TaskView,
    tokens::ApiTokenCreated,
};
use cordon_tests::Deployment;
use sha2::{Digest, Sha256};

/// The whole log, through the real CLI.
fn audit_entries(deployment: &Deployment) -> Vec<serde_json::Value> {
    let out = deployment.cli(&["--json", "audit", "list", "--limit", "1000"]);
    assert!(out.status.success(), "{out:?}");
    let page: AuditPage = serde_json::from_slice(&out.stdout).expect("audit list JSON");
    page.entries
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

/// The first entry with this action, target and outcome.
fn find<'a>(
    entries: &'a [serde_json::Value],
    action: &str,
    target: &str,
    outcome: &str,
) -> &'a serde_json::Value {
    entries
        .iter()
        .find(|e| e["action"] == action && e["target"] == target && e["outcome"] == outcome)
        .unwrap_or_else(|| {
            panic!(
                "no entry {action} {target} {outcome} in {}",
                serde_json::to_string_pretty(entries).unwrap()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_chained_and_a_direct_edit_is_caught() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let agent = deployment.enroll_agent().await;

    // An API token made through the CLI, then used to queue a task.
    let out = deployment.cli(&[
        "--json",
        "tokens",
        "api-create",
        "--role",
        "responder",
        "--name",
        "alice",
    ]);
    assert!(out.status.success(), "{out:?}");
    let alice: ApiTokenCreated = serde_json::from_slice(&out.stdout).unwrap();
    let task: TaskView = api
        .with_token(&alice.token)
        .post_json(
            "/api/v1/tasks",
            serde_json::json!({ "agent_id": agent.id, "task": { "type": "ping" } }),
        )
        .await
        .expect("responder queues a task");

    // Refused: a token nobody issued, and a role that does not cover the call.
    let bogus = "cordon_api_not-issued-by-anyone";
    let refused = api
        .with_token(bogus)
        .post_json::<serde_json::Value>(
            "/api/v1/enrollment-tokens",
            serde_json::json!({ "ttl_secs": 60 }),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, 401);
    let forbidden = api
        .with_token(&alice.token)
        .post_json::<serde_json::Value>(
            &format!("/api/v1/agents/{}/revoke", agent.id),
            serde_json::json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(forbidden.status, 403);

    let entries = audit_entries(&deployment);
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    // The enrolment token the helper made, as an attempt and its outcome.
    let attempt = find(&entries, "POST /api/v1/enrollment-tokens", "", "attempt");
    let created = find(&entries, "POST /api/v1/enrollment-tokens", "", "201");
    assert_eq!(created["detail"]["attempt"], attempt["seq"]);
    assert_eq!(created["actor"], "admin (created by init)");
    // The enrolment itself.
    let enrolled = find(&entries, "enrol", &agent.id, "ok");
    assert!(enrolled["actor"]
        .as_str()
        .unwrap()
        .starts_with("enrolment token "));
    // The API token, named by its id, with its role.
    let token_entry = find(&entries, "POST /api/v1/api-tokens", &alice.id, "201");
    assert_eq!(token_entry["detail"]["role"], "responder");
    assert_eq!(token_entry["detail"]["name"], "alice");
    // The task, by alice, naming the task and the agent.
    let task_entry = find(&entries, "POST /api/v1/tasks", &task.id, "201");
    assert_eq!(task_entry["actor"], "alice");
    assert_eq!(task_entry["detail"]["agent_id"], agent.id.as_str());
    // The refusals: the bad token by its hash prefix only, the missing role by name.
    let unauthenticated = find(&entries, "POST /api/v1/enrollment-tokens", "", "refused");
    assert_eq!(unauthenticated["actor"], "unauthenticated");
    let prefix = &hex::encode(Sha256::digest(bogus.as_bytes()))[..12];
    assert_eq!(unauthenticated["detail"]["token_hash_prefix"], prefix);
    let denied = find(
        &entries,
        "POST /api/v1/agents/{id}/revoke",
        &agent.id,
        "refused",
    );
    assert_eq!(denied["actor"], "alice");
    assert_eq!(denied["detail"]["status"], 403);
    // No token ever reaches the log.
    let all = serde_json::to_string(&entries).unwrap();
    for secret in [bogus, alice.token.as_str(), deployment.admin_token.as_str()] {
        assert!(!all.contains(secret), "a token is in the audit log");
    }

    // The table, and paging.
    let table = deployment.cli(&["audit", "list"]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("POST /api/v1/tasks") && table.contains("alice"),
        "{table}"
    );
    let tail = deployment.cli(&["--json", "audit", "list", "--after", "2", "--limit", "1"]);
    let tail: AuditPage = serde_json::from_slice(&tail.stdout).unwrap();
    assert_eq!(tail.entries.len(), 1);
    assert_eq!((tail.entries[0].seq, tail.last_seq), (3, 3));

    let verified = deployment.cli(&["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains(&format!("intact: {} entries", entries.len())),
        "{text}"
    );

    // Rewrite who queued the task, behind the controller's back.
    let edited = task_entry["seq"].as_i64().unwrap();
    let db = deployment.sqlite().await;
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?")
        .bind(edited)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    let broken = deployment.cli(&["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains(&format!("broken at entry {edited} (hash_mismatch)")),
        "{stderr}"
    );
    let json = deployment.cli(&["--json", "audit", "verify"]);
    assert_eq!(json.status.code(), Some(1));
    let first_line = String::from_utf8_lossy(&json.stdout);
    let report: AuditVerifyView = serde_json::Deserializer::from_str(&first_line)
        .into_iter()
        .next()
        .expect("a JSON report")
        .expect("the verify report");
    assert!(!report.ok);
    let link = report.first_broken.expect("a broken link");
    assert_eq!(link.seq, edited);
    assert_eq!(report.entries, edited - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_audited_is_not_made() {
    let deployment = Deployment::start().await;
    let api = deployment.api();
    let tokens_before: Vec<serde_json::Value> =
        api.get_json("/api/v1/enrollment-tokens").await.unwrap();

    // Make every audit append fail, as a full disk or a broken table would.
    let db = deployment.sqlite().await;
    sqlx::query(
        "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit log unwritable'); END",
    )
    .execute(&db)
    .await
    .unwrap();

    let refused = api
        .post_json::<serde_json::Value>(
            "/api/v1/enrollment-tokens",
            serde_json::json!({ "ttl_secs": 60 }),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "audit_unavailable");
    let tokens_after: Vec<serde_json::Value> =
        api.get_json("/api/v1/enrollment-tokens").await.unwrap();
    assert_eq!(tokens_after.len(), tokens_before.len(), "no token was made");
    // Reads are not audited and still work.
    assert!(api
        .get_json::<serde_json::Value>("/api/v1/agents")
        .await
        .is_ok());

    sqlx::query("DROP TRIGGER audit_refuses")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let _: serde_json::Value = api
        .post_json(
            "/api/v1/enrollment-tokens",
            serde_json::json!({ "ttl_secs": 60 }),
        )
        .await
        .expect("accepted again once the log can be written");
    let verified = deployment.cli(&["audit", "verify"]);
    assert!(verified.status.success(), "{verified:?}");
}

//! Roles: each API token role is refused (403, JSON error) what it may not do, and the refused
//! call changes nothing; admin may do all of it. Tokens come from `POST /api/v1/api-tokens` and
//! `cordon tokens api-create`.

use cordon_api::{
    agents::{AgentStatus, AgentView},
    tokens::ApiTokenCreated,
};
use cordon_tests::{Api, Deployment};
use serde_json::json;

/// A state-changing call some roles may not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    CreateTask,
    /// A collection a loaded (default) playbook lists: automation may queue it too.
    CreatePlaybookTask,
    CreateIncident,
    SendAlert,
    CreateEnrollmentToken,
    CreateApiToken,
    LabelAgent,
    RevokeAgent,
    ReadAudit,
    CreateWebhook,
}

impl Call {
    const ALL: [Call; 10] = [
        Call::CreateTask,
        Call::CreatePlaybookTask,
        Call::CreateIncident,
        Call::SendAlert,
        Call::CreateEnrollmentToken,
        Call::CreateApiToken,
        Call::LabelAgent,
        Call::ReadAudit,
        Call::CreateWebhook,
        // Last: it ends the agent the others act on.
        Call::RevokeAgent,
    ];

    /// Whether `role` may make the call: the design's role table.
    fn allowed_for(self, role: &str) -> bool {
        match self {
            Call::CreateTask | Call::CreateIncident => matches!(role, "responder" | "admin"),
            Call::CreatePlaybookTask => matches!(role, "responder" | "admin" | "automation"),
            Call::SendAlert => matches!(role, "automation" | "admin"),
            _ => role == "admin",
        }
    }

    async fn make(
        self,
        api: &Api,
        agent_id: &str,
    ) -> Result<serde_json::Value, (u16, serde_json::Value)> {
        let result = match self {
            Call::CreateTask => {
                api.post_json(
                    "/api/v1/tasks",
                    json!({ "agent_id": agent_id, "task": { "type": "ping" } }),
                )
                .await
            }
            Call::CreatePlaybookTask => {
                api.post_json(
                    "/api/v1/tasks",
                    json!({ "agent_id": agent_id, "task": { "type": "snapshot" } }),
                )
                .await
            }
            Call::CreateIncident => {
                api.post_json(
                    "/api/v1/incidents",
                    json!({ "title": "made by test", "kind": "malware", "agents": [agent_id] }),
                )
                .await
            }
            Call::SendAlert => {
                api.post_json(
                    "/api/v1/alerts",
                    json!({ "title": "sent by test", "kind": "malware",
                            "host": { "agent_id": agent_id } }),
                )
                .await
            }
            Call::CreateEnrollmentToken => {
                api.post_json("/api/v1/enrollment-tokens", json!({ "ttl_secs": 60 }))
                    .await
            }
            Call::CreateApiToken => {
                api.post_json(
                    "/api/v1/api-tokens",
                    json!({ "name": "made-by-test", "role": "admin" }),
                )
                .await
            }
            Call::LabelAgent => {
                api.put_json(
                    &format!("/api/v1/agents/{agent_id}/labels"),
                    json!({ "labels": ["env=test"] }),
                )
                .await
            }
            Call::RevokeAgent => {
                api.post_json(&format!("/api/v1/agents/{agent_id}/revoke"), json!({}))
                    .await
            }
            Call::ReadAudit => api.get_json("/api/v1/audit").await,
            Call::CreateWebhook => {
                // Nothing listens there: deliveries only fail, quietly, in the background.
                api.post_json(
                    "/api/v1/webhooks",
                    json!({ "name": "made-by-test", "url": "http://127.0.0.1:9/hook" }),
                )
                .await
            }
        };
        result.map_err(|failure| (failure.status, failure.body))
    }
}

/// What the refused calls could have changed, read with the admin token.
async fn state_of(admin: &Api, agent_id: &str) -> (usize, usize, usize, AgentView) {
    let tasks: Vec<serde_json::Value> = admin
        .get_json(&format!("/api/v1/tasks?agent_id={agent_id}"))
        .await
        .unwrap();
    let tokens: Vec<serde_json::Value> = admin.get_json("/api/v1/enrollment-tokens").await.unwrap();
    let agent: AgentView = admin
        .get_json(&format!("/api/v1/agents/{agent_id}"))
        .await
        .unwrap();
    let incidents: Vec<serde_json::Value> = admin.get_json("/api/v1/incidents").await.unwrap();
    (tasks.len(), tokens.len(), incidents.len(), agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_may_not_do() {
    let deployment = Deployment::start().await;
    let admin = deployment.api();
    let agent = deployment.enroll_agent().await;

    for role in ["viewer", "responder", "automation"] {
        let created: ApiTokenCreated = admin
            .post_json(
                "/api/v1/api-tokens",
                json!({ "name": format!("{role}-bot"), "role": role }),
            )
            .await
            .expect("admin creates API tokens");
        assert_eq!(created.role.as_str(), role);
        assert!(created.token.starts_with("cordon_api_"));
        let api = admin.with_token(&created.token);

        // Every role may read.
        let agents: Vec<AgentView> = api.get_json("/api/v1/agents").await.unwrap();
        assert_eq!(agents.len(), 1, "{role} reads agents");

        for call in Call::ALL {
            let before = state_of(&admin, &agent.id).await;
            let result = call.make(&api, &agent.id).await;
            if call.allowed_for(role) {
                assert!(result.is_ok(), "{role} may {call:?}: {result:?}");
                continue;
            }
            let (status, body) = result.expect_err(&format!("{role} must not {call:?}"));
            assert_eq!(status, 403, "{role} {call:?}: {body}");
            assert_eq!(body["error"], "forbidden", "{role} {call:?}: {body}");
            assert!(
                body["detail"].as_str().unwrap_or_default().contains(role),
                "{role} {call:?}: {body}"
            );
            let after = state_of(&admin, &agent.id).await;
            assert_eq!(
                (before.0, before.1, before.2),
                (after.0, after.1, after.2),
                "{role} {call:?} changed nothing"
            );
            assert_eq!(before.3.labels, after.3.labels);
            assert_ne!(after.3.status, AgentStatus::Revoked, "{role} {call:?}");
        }
    }

    // Admin may do all of it, revoking last.
    for call in Call::ALL {
        let result = call.make(&admin, &agent.id).await;
        assert!(result.is_ok(), "admin may {call:?}: {result:?}");
    }
    let (_, _, _, agent_view) = state_of(&admin, &agent.id).await;
    assert_eq!(agent_view.status, AgentStatus::Revoked);

    // Every refusal is in the audit log under the token's name.
    let page: serde_json::Value = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    let refused: Vec<(String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        refused.contains(&("viewer-bot".into(), "POST /api/v1/tasks".into())),
        "{refused:?}"
    );
    assert!(refused.contains(&(
        "automation-bot".into(),
        "POST /api/v1/agents/{id}/revoke".into()
    )));
    assert!(refused.contains(&("responder-bot".into(), "POST /api/v1/api-tokens".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_api_tokens_and_refuses_other_roles() {
    let deployment = Deployment::start().await;
    let out = deployment.cli(&[
        "tokens",
        "api-create",
        "--role",
        "viewer",
        "--name",
        "auditor",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(str::trim)
        .expect("the token is printed")
        .to_owned();
    assert!(text.contains("role:    viewer"), "{text}");
    assert!(text.contains("shown only now"), "{text}");

    // The viewer token reads, but may not make tokens: exit code 3, the server's reason.
    let viewer = deployment.api().with_token(&token);
    let _: Vec<AgentView> = viewer.get_json("/api/v1/agents").await.unwrap();
    let refused = deployment
        .cli_command(&token)
        .args([
            "tokens",
            "api-create",
            "--role",
            "admin",
            "--name",
            "escalate",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs the admin role"), "{stderr}");

    // A bad role is a usage error, before any request.
    let bad = deployment.cli(&["tokens", "api-create", "--role", "root", "--name", "x"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

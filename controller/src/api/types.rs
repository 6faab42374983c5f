//! Request and response bodies of the API, shared by the server and the `cordon` CLI.

pub use cordon_api::{
    agents::{AgentListQuery, AgentStatus, AgentView, Health, SetLabels},
    tasks::{CreateTask, TaskErrorView, TaskSpec, TaskView, DEFAULT_FETCH_LIMIT},
    tokens::{CreateEnrollmentToken, EnrollmentTokenCreated},
};

impl From<crate::store::TaskRecord> for TaskView {
    fn from(t: crate::store::TaskRecord) -> Self {
        let parse =
            |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string()));
        TaskView {
            error: match (t.error_code, t.error_message) {
                (Some(code), message) => Some(TaskErrorView {
                    code,
                    message: message.unwrap_or_default(),
                }),
                _ => None,
            },
            request: parse(&t.request),
            result: t.result.as_deref().map(parse),
            id: t.id,
            agent_id: t.agent_id,
            kind: t.kind,
            state: t.state,
            created_by: t.created_by,
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            sent_at_ms: t.sent_at_ms,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
        }
    }
}

//! Attaching tasks, hunts, actions and evidence to an incident.

use super::*;

impl Controller {
    /// Attaches an existing task, hunt, action or evidence (by SHA-256) to an incident, once.
    /// The agent it concerns becomes one of the incident's hosts. Returns false if it was
    /// attached already.
    pub async fn link_incident(
        &self,
        id: &str,
        kind: LinkKind,
        ref_id: &str,
        actor: &str,
    ) -> Result<bool, IncidentError> {
        self.incident(id).await?;
        let (summary, agent) =
            match kind {
                LinkKind::Task => {
                    let task =
                        self.store.get_task(ref_id).await?.ok_or_else(|| {
                            IncidentError::UnknownLinked("task", ref_id.to_owned())
                        })?;
                    (
                        format!("task {} on {}: {}", task.kind, task.agent_id, task.id),
                        Some(task.agent_id),
                    )
                }
                LinkKind::Hunt => {
                    let hunt =
                        self.store.get_hunt(ref_id).await?.ok_or_else(|| {
                            IncidentError::UnknownLinked("hunt", ref_id.to_owned())
                        })?;
                    (
                        format!("hunt {} across {} agents", hunt.id, hunt.agent_count),
                        None,
                    )
                }
                LinkKind::Action => {
                    let action =
                        self.store.get_action(ref_id).await?.ok_or_else(|| {
                            IncidentError::UnknownLinked("action", ref_id.to_owned())
                        })?;
                    (
                        format!(
                            "action {} on {} ({}): {}",
                            action.kind,
                            action.agent_id,
                            action.state.as_str(),
                            action.id
                        ),
                        Some(action.agent_id),
                    )
                }
                LinkKind::Evidence => {
                    let records = self.store.evidence_by_sha256(ref_id).await?;
                    let first = records.first().ok_or_else(|| {
                        IncidentError::UnknownLinked("evidence", ref_id.to_owned())
                    })?;
                    (
                        format!(
                            "evidence {} ({} bytes) from {}",
                            first.sha256, first.size, first.agent_id
                        ),
                        Some(first.agent_id.clone()),
                    )
                }
            };
        let now = now_ms();
        let link = IncidentLink {
            incident_id: id.to_owned(),
            kind,
            ref_id: ref_id.to_owned(),
            linked_at_ms: now,
            linked_by: actor.to_owned(),
        };
        let linked_entry = entry(
            actor,
            kind.as_str(),
            summary,
            serde_json::json!({ "kind": kind.as_str(), "id": ref_id }),
        );
        let linked = self.store.link_to_incident(&link, &linked_entry).await?;
        if linked {
            self.publish_incident(id, &linked_entry).await;
        }
        if let Some(agent) = agent {
            let added = self
                .store
                .add_incident_hosts(
                    id,
                    std::slice::from_ref(&agent),
                    &entry(
                        actor,
                        "hosts",
                        format!("hosts added: {agent}"),
                        serde_json::Value::Null,
                    ),
                )
                .await?;
            self.publish_hosts_added(id, &added, actor).await;
        }
        Ok(linked)
    }
}

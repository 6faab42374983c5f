//! Taking an alert in: read it, match its host, fingerprint it, and open or join an incident
//! with the alert stored in the same transaction.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{entry::ENTRY_KIND, fields, one_line, parse, AlertError, Source};
use crate::{
    incidents::{CreateIncident, MAX_TEXT_CHARS, MAX_TITLE_CHARS},
    state::Controller,
    store::{AlertIncident, AlertOutcome, NewAlert, NewSighting, NewTimelineEntry, Observed},
};
pub use cordon_api::alerts::Received;
use cordon_api::observables::SightingSource;

impl Controller {
    /// Takes an alert in (`format`, or detected): opens an incident for it, or joins the open
    /// one holding its fingerprint, storing the alert with it in one transaction.
    pub async fn receive_alert(
        &self,
        body: &[u8],
        format: Option<Source>,
        actor: &str,
    ) -> Result<Received, AlertError> {
        let alert = parse(body, format)?;
        let raw = std::str::from_utf8(body)
            .map_err(|e| AlertError::Format(format!("the alert is not UTF-8: {e}")))?;
        let raw_sha256 = hex::encode(Sha256::digest(body));
        let host = self.match_host(&alert.host).await?;
        let fingerprint = alert.fingerprint(&host);
        let hosts: Vec<String> = host.agent_id.iter().cloned().collect();
        let mut prepared = self
            .prepare_incident(
                CreateIncident {
                    title: one_line(&alert.title, MAX_TITLE_CHARS),
                    kind: alert.kind.clone(),
                    severity: Some(alert.severity.as_str().to_owned()),
                    description: alert
                        .description
                        .as_deref()
                        .map(|d| fields::bounded(&d.replace('\0', ""), MAX_TEXT_CHARS)),
                    agents: hosts.clone(),
                    labels: alert.labels.clone(),
                    assignee: None,
                    fingerprint: Some(fingerprint.clone()),
                },
                actor,
                None,
            )
            .await?;
        // The alert is received the moment its incident would open, so it sorts after
        // `created` on a new incident's timeline.
        let received_at_ms = prepared.incident.created_at_ms;
        let alert_id = uuid::Uuid::new_v4().to_string();
        let detail =
            alert.timeline_detail(&alert_id, &fingerprint, &host, received_at_ms, &raw_sha256);
        let entry = NewTimelineEntry {
            at_ms: received_at_ms,
            actor: actor.to_owned(),
            kind: ENTRY_KIND.to_owned(),
            summary: alert.summary(&host),
            detail: detail.clone(),
        };
        prepared.entries.push(entry.clone());
        prepared.incident.alert_count = 1;
        let hosts_entry = NewTimelineEntry {
            at_ms: received_at_ms,
            actor: actor.to_owned(),
            kind: "hosts".to_owned(),
            summary: String::new(),
            detail: Value::Null,
        };
        let record = NewAlert {
            id: alert_id.clone(),
            received_at_ms,
            source: alert.source.as_str().to_owned(),
            fingerprint: fingerprint.clone(),
            actor: actor.to_owned(),
            external_id: alert.external_id.clone(),
            agent_id: host.agent_id.clone(),
            detail,
            raw: raw.to_owned(),
            raw_sha256,
            rule: format!("{}:{}", alert.source.as_str(), alert.rule),
        };
        let observables = crate::observables::from_alert(&alert);
        let outcome = self
            .store
            .record_alert(
                &record,
                &entry,
                &hosts_entry,
                &AlertIncident {
                    incident: &prepared.incident,
                    hosts: &prepared.hosts,
                    entries: &prepared.entries,
                    stage_entry_id: &prepared.stage_entry_id,
                },
                &Observed {
                    items: &observables,
                    sighting: &NewSighting {
                        at_ms: received_at_ms,
                        source: SightingSource::Alert,
                        ref_id: Some(alert_id.clone()),
                        agent_id: host.agent_id.clone(),
                        actor: actor.to_owned(),
                    },
                },
            )
            .await?;
        let (incident_id, opened, hosts_added) = match outcome {
            AlertOutcome::Opened(id) => (id, true, prepared.hosts.clone()),
            AlertOutcome::Joined { incident_id, added } => (incident_id, false, added),
        };
        // After the commit: `incident.created` (with the alert) or `incident.alert_joined`.
        if let (true, Some(created)) = (opened, prepared.entries.first()) {
            let mut created = created.clone();
            if let Value::Object(detail) = &mut created.detail {
                detail.insert("alert".to_owned(), entry.detail.clone());
            }
            self.publish_incident(&incident_id, &created).await;
        } else {
            self.publish_incident(&incident_id, &entry).await;
            self.publish_hosts_added(&incident_id, &hosts_added, actor)
                .await;
        }
        let incident = self.incident(&incident_id).await?;
        let similar = self.similar_on_intake(&incident_id, opened, actor).await;
        tracing::info!(
            alert_id = %alert_id,
            incident_id = %incident_id,
            source = alert.source.as_str(),
            opened,
            agent_id = host.agent_id.as_deref().unwrap_or("-"),
            by = actor,
            "alert received"
        );
        Ok(Received {
            alert_id,
            incident_id,
            opened,
            outcome: if opened { "opened" } else { "joined" }.to_owned(),
            source: alert.source,
            fingerprint,
            title: incident.title,
            kind: alert.kind,
            severity: alert.severity.as_str().to_owned(),
            host,
            hosts_added,
            alert_count: incident.alert_count,
            similar,
        })
    }

    /// The incidents most like the one an alert opened, which also gets a `similar` timeline
    /// entry naming them. Looked for only when the alert opens an incident: every alert joining
    /// it again would otherwise repeat the search (the view and `…/similar` have it).
    async fn similar_on_intake(
        &self,
        incident_id: &str,
        opened: bool,
        actor: &str,
    ) -> Vec<cordon_api::similar::SimilarIncident> {
        if !opened {
            return Vec::new();
        }
        let similar = self.shown_similar(incident_id).await;
        if !similar.is_empty() {
            let entry = crate::similar::timeline_entry(&similar, actor);
            match self.store.append_timeline(incident_id, &entry).await {
                Ok(_) => self.publish_incident(incident_id, &entry).await,
                Err(e) => {
                    tracing::error!(%incident_id, error = %e, "cannot record similar incidents")
                }
            }
        }
        similar
    }
}

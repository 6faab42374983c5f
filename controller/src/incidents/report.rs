//! An incident's report, as JSON or Markdown: the summary (title, kind, severity, stage,
//! assignee, escalation, when it opened and closed, alerts, labels), the hosts with their
//! status now, the whole timeline, the evidence collected for it with its hashes and whether
//! it still verifies, the actions taken with who signed them and the agent's receipt (whose
//! signature is checked again here), and the containment still in force.
//!
//! Evidence is what the attached tasks stored ([`crate::store::Store::evidence_for_task`]) and
//! what was attached by hash. Actions are those attached, plus any that put in place
//! containment still in force on the hosts (a host isolated by hand is part of the story).
//!
//! The Markdown is meant to be pasted into tickets and rendered: everything that came from
//! people, alerts or agents (titles, comments, hostnames, paths, receipts) goes through
//! [`escape`], so a `|` or a line break cannot break a table, and no link, HTML or code span
//! can be injected.

use cordon_api::agents::AgentStatus;
use std::collections::{BTreeMap, BTreeSet};

use cordon_api::format::{time, what};

use super::{IncidentError, LinkKind};
use crate::{actions::view::ActionView, now_ms, state::Controller, store::EvidenceRecord};

pub use cordon_api::incidents::report::{
    IncidentReport, ReportAction, ReportEvidence, ReportHost, ReportReceipt, ReportSigner,
    ReportSummary,
};

impl Controller {
    /// Everything about an incident, for a report.
    pub async fn incident_report(&self, id: &str) -> Result<IncidentReport, IncidentError> {
        let incident = self.incident(id).await?;
        let generated_at_ms = now_ms();
        let links = self.store.incident_links(id).await?;
        let active_containment = self.active_containment(id).await?;

        let mut hosts = Vec::new();
        for host in self.store.incident_hosts(id).await? {
            let agent = self.store.get_agent(&host.agent_id).await?;
            let status = match &agent {
                None => None,
                Some(a) if a.revoked_at_ms.is_some() => Some(AgentStatus::Revoked),
                Some(_) if self.registry.session_info(&host.agent_id).is_some() => {
                    Some(AgentStatus::Online)
                }
                Some(_) => Some(AgentStatus::Offline),
            };
            hosts.push(ReportHost {
                hostname: agent.map(|a| a.hostname),
                status,
                agent_id: host.agent_id,
                added_at_ms: host.added_at_ms,
                added_by: host.added_by,
            });
        }

        // Evidence: what attached tasks stored, and what was attached by hash.
        let mut records: Vec<EvidenceRecord> = Vec::new();
        for link in &links {
            if link.kind == LinkKind::Task {
                records.extend(self.store.evidence_for_task(&link.ref_id).await?);
            } else if link.kind == LinkKind::Evidence {
                records.extend(self.store.evidence_by_sha256(&link.ref_id).await?);
            }
        }
        let mut seen = BTreeSet::new();
        records.retain(|r| seen.insert((r.sha256.clone(), r.task_id.clone())));
        records.sort_by(|a, b| {
            (a.received_at_ms, &a.sha256, &a.task_id).cmp(&(
                b.received_at_ms,
                &b.sha256,
                &b.task_id,
            ))
        });
        let mut verifications: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
        let mut evidence = Vec::new();
        for record in records {
            if !verifications.contains_key(&record.sha256) {
                let outcome = match self.verify_evidence(&record.sha256).await? {
                    Some(v) => (
                        v.ok,
                        v.checks
                            .into_iter()
                            .filter(|c| !c.ok)
                            .map(|c| format!("{}: {}", c.check, c.detail))
                            .collect(),
                    ),
                    None => (false, vec!["no record of this evidence".to_owned()]),
                };
                verifications.insert(record.sha256.clone(), outcome);
            }
            let (verified, verify_failures) = verifications
                .get(&record.sha256)
                .cloned()
                .unwrap_or_default();
            evidence.push(ReportEvidence {
                sha256: record.sha256,
                size: record.size,
                kind: record.kind,
                source_path: record.source_path,
                agent_id: record.agent_id,
                task_id: record.task_id,
                received_at_ms: record.received_at_ms,
                agent_public_key: record.agent_public_key,
                verified,
                verify_failures,
            });
        }

        // Actions: attached ones, and those behind containment still in force.
        let mut action_ids: Vec<String> = Vec::new();
        let attached = links
            .iter()
            .filter(|l| l.kind == LinkKind::Action)
            .map(|l| l.ref_id.clone());
        let containing = active_containment.iter().map(|c| c.action_id.clone());
        for action_id in attached.chain(containing) {
            if !action_ids.contains(&action_id) {
                action_ids.push(action_id);
            }
        }
        let mut actions = Vec::new();
        for action_id in action_ids {
            let Some(record) = self.store.get_action(&action_id).await? else {
                continue;
            };
            let view = ActionView::try_from(record)?;
            actions.push(self.report_action(view).await?);
        }
        actions.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));

        Ok(IncidentReport {
            generated_at_ms,
            summary: ReportSummary {
                closed: incident.stage.is_closed(),
                id: incident.id,
                title: incident.title,
                kind: incident.kind,
                severity: incident.severity,
                stage: incident.stage,
                description: incident.description,
                assignee: incident.assignee,
                tier: incident.tier,
                escalated_to: incident.escalated_to,
                opened_at_ms: incident.created_at_ms,
                opened_by: incident.created_by,
                closed_at_ms: incident.closed_at_ms,
                alert_count: incident.alert_count,
                labels: incident.labels,
                fingerprint: incident.fingerprint,
            },
            hosts,
            timeline: self.incident_timeline(id).await?,
            evidence,
            actions,
            active_containment,
            attached: links,
            observables: self.store.incident_observables(id).await?,
            similar: self.shown_similar(id).await,
        })
    }

    async fn report_action(&self, view: ActionView) -> Result<ReportAction, IncidentError> {
        let receipt = match &view.receipt {
            None => None,
            Some(receipt) => {
                let checked = match self.store.agent_signing_key(&view.agent_id).await? {
                    Some(pinned) => receipt.to_text().verify(&view.id, &view.agent_id, &pinned),
                    None => Err(format!("agent {} has no pinned signing key", view.agent_id)),
                };
                Some(ReportReceipt {
                    at_ms: receipt.at_ms,
                    before: receipt.before.clone(),
                    done: receipt.done.clone(),
                    after: receipt.after.clone(),
                    agent_public_key: receipt.agent_public_key.clone(),
                    signature_verified: checked.is_ok(),
                    verify_error: checked.err(),
                })
            }
        };
        Ok(ReportAction {
            what: what(&view.request.action),
            state: view.state,
            signers: view
                .signatures
                .iter()
                .map(|s| ReportSigner {
                    name: s.signer.clone(),
                    key_id: s.key_id.clone(),
                    added_by: s.added_by.clone(),
                })
                .collect(),
            receipt,
            error: view.error,
            id: view.id,
            agent_id: view.agent_id,
            kind: view.kind,
            created_by: view.created_by,
            created_at_ms: view.created_at_ms,
            finished_at_ms: view.finished_at_ms,
        })
    }
}

mod markdown;

pub use markdown::{escape, render_markdown};

#[cfg(test)]
mod tests;

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

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    containment::ActiveContainment, is_closed_stage, timeline::TimelineItem, IncidentError,
    LinkKind,
};
use crate::{
    actions::view::ActionView,
    api::types::{AgentStatus, TaskErrorView},
    cli::{actions::what, output::time},
    now_ms,
    state::Controller,
    store::{EvidenceRecord, IncidentLink},
};

/// A report as `GET /api/v1/incidents/{id}/report?format=json` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentReport {
    pub generated_at_ms: i64,
    pub summary: ReportSummary,
    pub hosts: Vec<ReportHost>,
    /// Oldest first.
    pub timeline: Vec<TimelineItem>,
    pub evidence: Vec<ReportEvidence>,
    pub actions: Vec<ReportAction>,
    /// Isolations and blocks in force on the hosts when the report was made.
    pub active_containment: Vec<ActiveContainment>,
    /// The tasks, hunts, actions and evidence attached.
    pub attached: Vec<IncidentLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSummary {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub severity: String,
    pub stage: String,
    /// Whether the stage is `closed` or `false_positive`.
    pub closed: bool,
    pub description: String,
    pub assignee: Option<String>,
    pub tier: i64,
    pub escalated_to: Option<String>,
    pub opened_at_ms: i64,
    pub opened_by: String,
    pub closed_at_ms: Option<i64>,
    pub alert_count: i64,
    pub labels: Vec<String>,
    pub fingerprint: Option<String>,
}

/// A host of the incident, as the controller sees it now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportHost {
    pub agent_id: String,
    /// None if the agent is no longer known.
    pub hostname: Option<String>,
    /// `online`, `offline`, `revoked`, or `unknown`.
    pub status: String,
    pub added_at_ms: i64,
    pub added_by: String,
}

/// One collection of evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportEvidence {
    pub sha256: String,
    pub size: i64,
    /// `file` or `snapshot`.
    pub kind: String,
    pub source_path: Option<String>,
    pub agent_id: String,
    pub task_id: String,
    pub received_at_ms: i64,
    /// Hex of the key the agent signed its manifest with.
    pub agent_public_key: String,
    /// Whether the stored bytes still hash to `sha256` and every manifest for them still
    /// verifies under its agent's pinned key, checked when the report was made.
    pub verified: bool,
    /// The checks that failed, if any.
    pub verify_failures: Vec<String>,
}

/// Who signed an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSigner {
    /// The name the agent's policy gives the key.
    pub name: String,
    pub key_id: String,
    /// The API token that added the signature.
    pub added_by: String,
}

/// The agent's receipt for an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportReceipt {
    pub at_ms: i64,
    /// What the agent found before acting (JSON text).
    pub before: String,
    pub done: String,
    /// What it saw after (JSON text).
    pub after: String,
    /// Hex of the agent's key that signed it.
    pub agent_public_key: String,
    /// Whether the signature verifies now under the key the controller pinned for the agent.
    pub signature_verified: bool,
    /// Why it does not, if it does not.
    pub verify_error: Option<String>,
}

/// A containment action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportAction {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    /// In a few words, e.g. "block 203.0.113.7 for 1h".
    pub what: String,
    /// pending, submitted, done, failed or expired.
    pub state: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub signers: Vec<ReportSigner>,
    pub receipt: Option<ReportReceipt>,
    pub error: Option<TaskErrorView>,
}

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
                None => "unknown",
                Some(a) if a.revoked_at_ms.is_some() => AgentStatus::Revoked.as_str(),
                Some(_) if self.registry.session_info(&host.agent_id).is_some() => {
                    AgentStatus::Online.as_str()
                }
                Some(_) => AgentStatus::Offline.as_str(),
            };
            hosts.push(ReportHost {
                hostname: agent.map(|a| a.hostname),
                status: status.to_owned(),
                agent_id: host.agent_id,
                added_at_ms: host.added_at_ms,
                added_by: host.added_by,
            });
        }

        // Evidence: what attached tasks stored, and what was attached by hash.
        let mut records: Vec<EvidenceRecord> = Vec::new();
        for link in &links {
            if link.kind == LinkKind::Task.as_str() {
                records.extend(self.store.evidence_for_task(&link.ref_id).await?);
            } else if link.kind == LinkKind::Evidence.as_str() {
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
            .filter(|l| l.kind == LinkKind::Action.as_str())
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
                closed: is_closed_stage(&incident.stage),
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
        })
    }

    async fn report_action(&self, view: ActionView) -> Result<ReportAction, IncidentError> {
        let receipt = match &view.receipt {
            None => None,
            Some(receipt) => {
                let checked = match self.store.agent_signing_key(&view.agent_id).await? {
                    Some(pinned) => receipt.verify(&view.id, &view.agent_id, &pinned),
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
            state: view.state.as_str().to_owned(),
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

/// Makes text from people, alerts or agents safe inside a Markdown table cell, heading, list
/// item or paragraph: backslashes and the characters that delimit cells, code spans, links,
/// emphasis and HTML are escaped; line breaks become `<br>`; other control characters spaces;
/// the controls that reorder or hide text (bidirectional overrides, zero-width marks) are
/// shown by name (`[U+202E]`); and bare links are defanged (`hxxps://`, `www[.]`, `a[@]b.c`)
/// so a renderer makes nothing clickable out of them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let mut chars = text.char_indices().peekable();
    let mut after_word = false;
    while let Some((i, c)) = chars.next() {
        let rest = &lower[i..];
        if !after_word && (rest.starts_with("http://") || rest.starts_with("https://")) {
            // `http` → `hxxp`: the `tt` is replaced, the rest goes on as usual.
            out.push(c);
            out.push_str("xx");
            chars.next();
            chars.next();
            after_word = true;
            continue;
        }
        if !after_word && rest.starts_with("www.") {
            out.push_str(&text[i..i + 3]);
            out.push_str("\\[.\\]");
            for _ in 0..3 {
                chars.next();
            }
            after_word = true;
            continue;
        }
        after_word = c.is_alphanumeric();
        match c {
            '@' if rest[1..]
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('.')) =>
            {
                out.push_str("\\[@\\]");
            }
            '\\' | '|' | '`' | '[' | ']' | '*' | '_' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {
                if chars.peek().map(|&(_, c)| c) != Some('\n') {
                    out.push_str("<br>");
                }
            }
            '\n' | '\u{2028}' | '\u{2029}' => out.push_str("<br>"),
            c if c.is_control() => out.push(' '),
            '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}' => {
                out.push_str(&format!("\\[U+{:04X}\\]", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// An identifier as inline code when it can be (hex, UUIDs), else escaped text.
fn code(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '/'))
    {
        format!("`{text}`")
    } else {
        escape(text)
    }
}

/// Text as an inline code span, outside tables only (GFM splits cells on a `|` even inside
/// code): literal, so nothing in it is markup. Text a span cannot hold is escaped instead.
fn code_span(text: &str) -> String {
    if !text.is_empty() && !text.contains('`') && !text.chars().any(char::is_control) {
        format!("`{text}`")
    } else {
        escape(text)
    }
}

fn or_dash(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => escape(t),
        _ => "—".to_owned(),
    }
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str(&format!("| {} |\n", headers.join(" | ")));
    out.push_str(&format!(
        "|{}\n",
        headers.iter().map(|_| " --- |").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
}

/// The report as Markdown (GitHub-flavoured: tables).
pub fn render_markdown(report: &IncidentReport) -> String {
    let s = &report.summary;
    let mut out = format!("# Incident report: {}\n\n", escape(&s.title));
    out.push_str(&format!(
        "Generated {} (all times UTC).\n\n",
        time(Some(report.generated_at_ms))
    ));

    out.push_str("## Summary\n\n");
    let escalation = match &s.escalated_to {
        Some(to) => format!("tier {} ({})", s.tier, escape(to)),
        None => format!("tier {}", s.tier),
    };
    let closed = match s.closed_at_ms {
        Some(at) => time(Some(at)),
        None if s.closed => "—".to_owned(),
        None => "open".to_owned(),
    };
    let labels = if s.labels.is_empty() {
        "—".to_owned()
    } else {
        s.labels
            .iter()
            .map(|l| escape(l))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        vec!["Id".into(), code(&s.id)],
        vec!["Kind".into(), escape(&s.kind)],
        vec!["Severity".into(), escape(&s.severity)],
        vec!["Stage".into(), escape(&s.stage)],
        vec!["Assignee".into(), or_dash(s.assignee.as_deref())],
        vec!["Escalation".into(), escalation],
        vec![
            "Opened".into(),
            format!("{} by {}", time(Some(s.opened_at_ms)), escape(&s.opened_by)),
        ],
        vec!["Closed".into(), closed],
        vec!["Alerts".into(), s.alert_count.to_string()],
        vec!["Labels".into(), labels],
    ];
    if let Some(fingerprint) = &s.fingerprint {
        rows.push(vec!["Alert fingerprint".into(), escape(fingerprint)]);
    }
    table(&mut out, &["Field", "Value"], &rows);
    if !s.description.trim().is_empty() {
        out.push_str("### Description\n\n");
        for line in s.description.lines() {
            out.push_str("> ");
            out.push_str(&escape_line_start(&escape(line)));
            out.push('\n');
        }
        out.push('\n');
    }

    out.push_str("## Hosts\n\n");
    if report.hosts.is_empty() {
        out.push_str("No hosts.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .hosts
            .iter()
            .map(|h| {
                vec![
                    code(&h.agent_id),
                    or_dash(h.hostname.as_deref()),
                    escape(&h.status),
                    format!("{} by {}", time(Some(h.added_at_ms)), escape(&h.added_by)),
                ]
            })
            .collect();
        table(&mut out, &["Agent", "Hostname", "Status", "Added"], &rows);
    }

    out.push_str("## Containment still active\n\n");
    if report.active_containment.is_empty() {
        out.push_str("None: no host is isolated and no block is in force.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .active_containment
            .iter()
            .map(|c| {
                vec![
                    code(&c.agent_id),
                    escape(&c.what),
                    if c.targets.is_empty() {
                        "—".to_owned()
                    } else {
                        c.targets
                            .iter()
                            .map(|t| escape(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    time(Some(c.until_ms)),
                    code(&c.action_id),
                ]
            })
            .collect();
        table(
            &mut out,
            &["Agent", "Measure", "Targets", "Until", "Action"],
            &rows,
        );
    }

    out.push_str("## Timeline\n\n");
    if report.timeline.is_empty() {
        out.push_str("Nothing recorded.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .timeline
            .iter()
            .map(|item| {
                vec![
                    time(Some(item.at_ms)),
                    escape(&item.actor),
                    escape(&item.kind),
                    escape(&item.summary),
                ]
            })
            .collect();
        table(&mut out, &["Time (UTC)", "Who", "Kind", "What"], &rows);
    }

    out.push_str("## Evidence\n\n");
    if report.evidence.is_empty() {
        out.push_str("No evidence collected.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .evidence
            .iter()
            .map(|e| {
                vec![
                    code(&e.sha256),
                    e.size.to_string(),
                    escape(&e.kind),
                    or_dash(e.source_path.as_deref()),
                    code(&e.agent_id),
                    code(&e.task_id),
                    time(Some(e.received_at_ms)),
                    if e.verified {
                        "yes".to_owned()
                    } else {
                        format!("**NO**: {}", escape(&e.verify_failures.join("; ")))
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SHA-256",
                "Bytes",
                "Kind",
                "Source",
                "Agent",
                "Task",
                "Received",
                "Verifies now",
            ],
            &rows,
        );
    }

    out.push_str("## Actions\n\n");
    if report.actions.is_empty() {
        out.push_str("No containment actions.\n\n");
    }
    for a in &report.actions {
        out.push_str(&format!(
            "### {} on {}: {}\n\n",
            escape(&a.what),
            code(&a.agent_id),
            escape(&a.state)
        ));
        out.push_str(&format!("- Action: {}\n", code(&a.id)));
        out.push_str(&format!(
            "- Created {} by {}; ended {}\n",
            time(Some(a.created_at_ms)),
            escape(&a.created_by),
            time(a.finished_at_ms)
        ));
        let signers = if a.signers.is_empty() {
            "nobody".to_owned()
        } else {
            a.signers
                .iter()
                .map(|s| format!("{} (key {})", escape(&s.name), code(&s.key_id)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!("- Signed by: {signers}\n"));
        if let Some(error) = &a.error {
            out.push_str(&format!(
                "- Error: {}: {}\n",
                escape(&error.code),
                escape(&error.message)
            ));
        }
        match &a.receipt {
            None => out.push_str("- Receipt: none\n"),
            Some(r) => {
                let verified = if r.signature_verified {
                    "signature verified".to_owned()
                } else {
                    format!(
                        "**signature NOT verified**: {}",
                        escape(r.verify_error.as_deref().unwrap_or("unknown"))
                    )
                };
                out.push_str(&format!(
                    "- Receipt {} signed by agent key {}: {verified}\n",
                    time(Some(r.at_ms)),
                    code(&r.agent_public_key)
                ));
                out.push_str(&format!("  - before: {}\n", code_span(&r.before)));
                out.push_str(&format!("  - done: {}\n", escape(&r.done)));
                out.push_str(&format!("  - after: {}\n", code_span(&r.after)));
            }
        }
        out.push('\n');
    }

    out.push_str("## Attached\n\n");
    if report.attached.is_empty() {
        out.push_str("Nothing attached.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .attached
            .iter()
            .map(|l| {
                vec![
                    escape(&l.kind),
                    code(&l.ref_id),
                    format!("{} by {}", time(Some(l.linked_at_ms)), escape(&l.linked_by)),
                ]
            })
            .collect();
        table(&mut out, &["Kind", "Id", "Attached"], &rows);
    }
    out
}

/// A line that would start a block (heading, list, quote, rule) if it began a paragraph line,
/// made plain (its input is already [`escape`]d).
fn escape_line_start(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with(['#', '-', '+', '=', '*', '_', '~']) {
        return format!("\\{trimmed}");
    }
    // An ordered list item: digits then `.` or `)`; escape the delimiter.
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && trimmed[digits..].starts_with(['.', ')']) {
        return format!("{}\\{}", &trimmed[..digits], &trimmed[digits..]);
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> IncidentReport {
        IncidentReport {
            generated_at_ms: 1_700_000_000_000,
            summary: ReportSummary {
                id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
                title: "beacon | from\nweb-1 [x](http://evil)".into(),
                kind: "c2".into(),
                severity: "high".into(),
                stage: "response".into(),
                closed: false,
                description: "line one | still one\n# not a heading\n1. not a list".into(),
                assignee: Some("alice".into()),
                tier: 2,
                escalated_to: Some("ir|team".into()),
                opened_at_ms: 1_700_000_000_000,
                opened_by: "wazuh".into(),
                closed_at_ms: None,
                alert_count: 3,
                labels: vec!["env=prod".into(), "a|b".into()],
                fingerprint: None,
            },
            hosts: vec![ReportHost {
                agent_id: "agent-1".into(),
                hostname: Some("web|1\r\nevil".into()),
                status: "online".into(),
                added_at_ms: 1_700_000_000_000,
                added_by: "alice".into(),
            }],
            timeline: vec![TimelineItem {
                at_ms: 1_700_000_001_000,
                actor: "bob".into(),
                kind: "comment".into(),
                summary: "saw `rm -rf` | then\nleft <script>alert(1)</script> \\| done".into(),
                detail: serde_json::Value::Null,
                entry_id: Some(4),
            }],
            evidence: vec![ReportEvidence {
                sha256: "ab".repeat(32),
                size: 12,
                kind: "file".into(),
                source_path: Some("/tmp/a|b\nc".into()),
                agent_id: "agent-1".into(),
                task_id: "task-1".into(),
                received_at_ms: 1_700_000_002_000,
                agent_public_key: "cd".repeat(32),
                verified: false,
                verify_failures: vec!["content hash: 12 bytes on disk hash to ff".into()],
            }],
            actions: vec![ReportAction {
                id: "act-1".into(),
                agent_id: "agent-1".into(),
                kind: "block".into(),
                what: "block 203.0.113.7 for 1h".into(),
                state: "done".into(),
                created_by: "alice".into(),
                created_at_ms: 1_700_000_003_000,
                finished_at_ms: Some(1_700_000_004_000),
                signers: vec![ReportSigner {
                    name: "alice|admin".into(),
                    key_id: "0123456789abcdef".into(),
                    added_by: "alice".into(),
                }],
                receipt: Some(ReportReceipt {
                    at_ms: 1_700_000_004_000,
                    before: "{\"blocked\":[]}".into(),
                    done: "blocked 203.0.113.7\nfor 1h".into(),
                    after: "{\"blocked\":[\"203.0.113.7\"]}".into(),
                    agent_public_key: "cd".repeat(32),
                    signature_verified: true,
                    verify_error: None,
                }),
                error: None,
            }],
            active_containment: vec![ActiveContainment {
                agent_id: "agent-1".into(),
                what: "blocked".into(),
                targets: vec!["203.0.113.7".into()],
                until_ms: 1_700_000_100_000,
                action_id: "act-1".into(),
            }],
            attached: vec![],
        }
    }

    /// The cells of a GFM table row, split as renderers split them: on pipes not escaped by a
    /// backslash (a backslash escapes the character after it, including another backslash).
    fn cells(row: &str) -> Vec<String> {
        let inner = row
            .trim()
            .strip_prefix('|')
            .and_then(|r| r.strip_suffix('|'))
            .unwrap_or_else(|| panic!("not a table row: {row:?}"));
        let mut cells = vec![String::new()];
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let last = cells.last_mut().unwrap();
                    last.push(c);
                    if let Some(next) = chars.next() {
                        last.push(next);
                    }
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
        }
        cells.into_iter().map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn escaping_neutralises_table_breakers_links_and_html() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("a\\|b"), "a\\\\\\|b");
        assert_eq!(
            escape("one\ntwo\r\nthree\rfour"),
            "one<br>two<br>three<br>four"
        );
        assert_eq!(escape("[x](http://e)"), "\\[x\\](hxxp://e)");
        // Bare links, emphasis and reordering controls.
        assert_eq!(
            escape("see https://evil.example/x and WWW.evil.example"),
            "see hxxps://evil.example/x and WWW\\[.\\]evil.example"
        );
        assert_eq!(
            escape("mail bob@evil.example now"),
            "mail bob\\[@\\]evil.example now"
        );
        assert_eq!(escape("root@host"), "root@host", "not an address");
        assert_eq!(
            escape("*bold* _it_ ~~gone~~"),
            "\\*bold\\* \\_it\\_ \\~\\~gone\\~\\~"
        );
        assert_eq!(
            escape("invoice\u{202e}fdp.exe"),
            "invoice\\[U+202E\\]fdp.exe"
        );
        assert_eq!(
            escape("shttp://x"),
            "shttp://x",
            "inside a word it is no link"
        );
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(escape("`code`"), "\\`code\\`");
        assert_eq!(escape("bell\u{7}esc\u{1b}"), "bell esc ");
        assert_eq!(escape("plain host-1.example"), "plain host-1.example");
        assert_eq!(code("abc-123"), "`abc-123`");
        assert_eq!(code("a`b"), "a\\`b");
    }

    #[test]
    fn every_table_row_keeps_its_columns_whatever_the_text() {
        let md = render_markdown(&report());
        let mut header_width = None;
        let mut tables = 0;
        for line in md.lines() {
            if !line.starts_with('|') {
                header_width = None;
                continue;
            }
            let width = cells(line).len();
            match header_width {
                None => {
                    header_width = Some(width);
                    tables += 1;
                }
                Some(w) => assert_eq!(width, w, "row breaks its table: {line:?}\n{md}"),
            }
        }
        // Summary, hosts, containment, timeline, evidence.
        assert_eq!(tables, 5, "{md}");
        // Nothing user-controlled starts a line of its own.
        for line in md.lines() {
            assert!(!line.starts_with("left"), "{line:?}");
            assert!(!line.starts_with("evil"), "{line:?}");
            assert!(!line.starts_with("# not"), "{line:?}");
            assert!(!line.starts_with("web-1"), "{line:?}");
        }
        assert!(!md.contains("<script>"), "{md}");
        // The link's brackets are escaped and the address defanged: it renders as text.
        assert!(!md.contains("[x](http"), "{md}");
        assert!(!md.contains("http://"), "{md}");
        assert!(md.contains("\\[x\\](hxxp://evil)"), "{md}");
    }

    #[test]
    fn the_markdown_says_what_a_reader_needs() {
        let md = render_markdown(&report());
        assert!(
            md.starts_with("# Incident report: beacon \\| from<br>web-1 \\[x\\](hxxp://evil)\n")
        );
        assert!(md.contains("| Escalation | tier 2 (ir\\|team) |"), "{md}");
        assert!(md.contains("| Labels | env=prod, a\\|b |"), "{md}");
        assert!(md.contains("> line one \\| still one\n> \\# not a heading\n> 1\\. not a list\n"));
        assert!(
            md.contains("| `agent-1` | web\\|1<br>evil | online | 2023-11-14 22:13:20Z by alice |")
        );
        assert!(md.contains(
            "| 2023-11-14 22:13:21Z | bob | comment | saw \\`rm -rf\\` \\| then<br>left &lt;script&gt;alert(1)&lt;/script&gt; \\\\\\| done |"
        ), "{md}");
        assert!(md.contains(&format!(
            "| `{}` | 12 | file | /tmp/a\\|b<br>c |",
            "ab".repeat(32)
        )));
        assert!(md.contains("**NO**: content hash: 12 bytes on disk hash to ff"));
        assert!(md.contains("### block 203.0.113.7 for 1h on `agent-1`: done"));
        assert!(md.contains("- Signed by: alice\\|admin (key `0123456789abcdef`)"));
        assert!(md.contains(": signature verified\n"));
        assert!(md.contains("  - done: blocked 203.0.113.7<br>for 1h\n"));
        assert!(md.contains("  - before: `{\"blocked\":[]}`\n"), "{md}");
        assert_eq!(code_span("a\nb"), "a<br>b");
        assert_eq!(code_span("<b>"), "`<b>`");
        assert_eq!(code_span("a`b"), "a\\`b");
        assert!(md.contains("| `agent-1` | blocked | 203.0.113.7 |"));
    }
}

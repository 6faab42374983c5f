//! `cordon incidents …`: open incidents by hand, list and show them (header, hosts, containment
//! still active, timeline), move them through the stages, assign, escalate, comment, add hosts,
//! attach tasks, hunts, actions and evidence, close them, and write their reports.
//!
//! A move the stage rules refuse (back to alert, closing early or with containment still
//! active without `--force --reason`) exits 1 and says which rule refused it and how to get
//! past it where one can; a viewer token exits 3; an unknown incident 4.

use std::{collections::HashMap, io::Write, os::unix::fs::OpenOptionsExt, path::PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use cordon_api::{
    agents::AgentView,
    incidents::{
        report::IncidentReport, ActiveContainment, AddHosts, Assign, Close, Comment,
        CreateIncident, Escalate, IncidentSummary, IncidentView, Link, LinkKind, MoveStage,
        SetSeverity, Stage, MAX_TIER,
    },
};

use cordon_api::lookup::LookupKind;

use crate::{client::Client, output, resolve, CliError};

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Incidents, most recently changed first.
    List {
        /// Only incidents in this stage (alert, assessment, collection, analysis, escalation,
        /// response, investigation, remediation, closed, false_positive).
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// Only incidents that are not closed or false positive.
        #[arg(long)]
        open: bool,
        /// Only incidents involving this agent (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// One incident: its header, hosts, containment still active, and the timeline.
    Show {
        /// The incident's id, or a unique prefix of it.
        id: String,
    },
    /// Open an incident by hand (it starts in the alert stage).
    #[command(
        after_help = "Example:\n  cordon incidents create --title 'beacon from web-1' --kind c2 \
                            --severity high --agent web-1 --label env=prod"
    )]
    Create {
        /// One line saying what happened.
        #[arg(long)]
        title: String,
        /// What kind of incident: malware, c2, brute_force, ransomware, or any word playbooks
        /// are written for (a-z, 0-9, '_', '-', '.').
        #[arg(long)]
        kind: String,
        /// low, medium (default), high or critical.
        #[arg(long)]
        severity: Option<String>,
        /// A host involved (hostname, agent id or id prefix); repeat for more.
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// A label, e.g. env=prod; repeat for more.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Who works on it.
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Move an incident to another stage.
    #[command(
        after_help = "Stages: alert → assessment → collection → analysis → escalation → \
                            response → investigation → remediation → closed, or false_positive.\n\
                            Open stages move freely, but never back to alert; false_positive only \
                            up to analysis; closed from remediation, or earlier with --force \
                            --reason; closing while containment is active needs --force --reason; \
                            a closed incident reopens into assessment only, with --reason."
    )]
    Stage {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The stage to move to.
        #[arg(value_parser = parse_stage)]
        stage: Stage,
        /// Why (kept on the timeline; needed with --force and to reopen).
        #[arg(long)]
        reason: Option<String>,
        /// Past the rules that can be overridden (closing early or with containment still
        /// active); needs --reason.
        #[arg(long)]
        force: bool,
    },
    /// Set who works on an incident, or clear it with --none.
    Assign {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The person (or queue) it is assigned to.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        user: Option<String>,
        /// Unassign it.
        #[arg(long)]
        none: bool,
    },
    /// Escalate an incident to a higher tier and, optionally, a team or role.
    Escalate {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The tier it goes to (1-5); default: one above the current.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=MAX_TIER))]
        tier: Option<i64>,
        /// The team or role taking it, e.g. ir-team or forensics.
        #[arg(long)]
        to: Option<String>,
        /// Why (kept on the timeline).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change an incident's severity (low, medium, high, critical).
    Severity {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// low, medium, high or critical.
        severity: String,
    },
    /// Add a comment to an incident's timeline.
    Comment {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The comment (quote it).
        text: String,
    },
    /// Close an incident (from remediation; earlier only with --force --reason), or mark it a
    /// false positive (up to analysis).
    Close {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// It was a false positive: nothing happened.
        #[arg(long)]
        false_positive: bool,
        /// Why (kept on the timeline; needed with --force).
        #[arg(long)]
        reason: Option<String>,
        /// Close early or with containment still active; needs --reason.
        #[arg(long)]
        force: bool,
    },
    /// Hosts of an incident.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Attach an existing task, hunt, action or evidence to an incident (its host joins the
    /// incident); what happens to it then shows on the timeline.
    Attach {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        what: AttachWhat,
    },
    /// The incident's report: summary, hosts, timeline, evidence with hashes (re-verified),
    /// actions with signers and verified receipts, containment still active.
    Report {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// markdown (default) or json (the default with --json).
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write the report to this file (never overwritten) instead of printing it.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Add hosts (agent ids or hostnames) to an incident.
    Add {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[arg(required = true)]
        agents: Vec<String>,
    },
}

/// Exactly one thing to attach.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AttachWhat {
    /// A task id or unique prefix (e.g. from `cordon ps --agent A`).
    #[arg(long)]
    pub task: Option<String>,
    /// A hunt id or unique prefix.
    #[arg(long)]
    pub hunt: Option<String>,
    /// A containment action id or unique prefix.
    #[arg(long)]
    pub action: Option<String>,
    /// Stored evidence, by SHA-256 or a unique prefix of it.
    #[arg(long)]
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    s.parse::<Stage>().map_err(|e| e.to_string())
}

/// `cordon incidents …`.
pub async fn run(
    client: &Client,
    command: IncidentsCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        IncidentsCommand::List {
            stage,
            open,
            agent,
            limit,
        } => {
            let mut path = format!("/api/v1/incidents?limit={limit}");
            if let Some(stage) = stage {
                path.push_str(&format!("&stage={stage}"));
            }
            if open {
                path.push_str("&open=true");
            }
            if let Some(agent) = agent {
                path.push_str(&format!(
                    "&agent_id={}",
                    resolve::agent(client, &agent).await?
                ));
            }
            let incidents: Vec<IncidentSummary> = client.get(&path).await?;
            if json {
                return Ok(output::json(&incidents));
            }
            if incidents.is_empty() {
                return Ok("no incidents\n".into());
            }
            let rows: Vec<Vec<String>> = incidents
                .iter()
                .map(|s| {
                    let i = &s.incident;
                    vec![
                        i.id.clone(),
                        i.stage.to_string(),
                        i.severity.to_string(),
                        plain(&i.kind),
                        shorten(&plain(&i.title), 48),
                        s.hosts.len().to_string(),
                        plain(i.assignee.as_deref().unwrap_or("-")),
                        i.tier.to_string(),
                        output::time(Some(i.updated_at_ms)),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID", "STAGE", "SEVERITY", "KIND", "TITLE", "HOSTS", "ASSIGNEE", "TIER",
                    "UPDATED",
                ],
                &rows,
            ))
        }
        IncidentsCommand::Show { id } => {
            let view: IncidentView = client
                .get(&format!(
                    "/api/v1/incidents/{}",
                    resolve::incident(client, &id).await?
                ))
                .await?;
            if json {
                return Ok(output::json(&view));
            }
            let agents: Vec<AgentView> = client.get("/api/v1/agents").await?;
            Ok(render_show(&view, &agents))
        }
        IncidentsCommand::Create {
            title,
            kind,
            severity,
            agents,
            labels,
            assignee,
            description,
        } => {
            let agents = resolve::agents(client, &agents).await?;
            let body = CreateIncident {
                title,
                kind,
                severity,
                description,
                agents,
                labels,
                assignee,
                fingerprint: None,
            };
            let view: IncidentView = client.post("/api/v1/incidents", &body).await?;
            Ok(if json {
                output::json(&view)
            } else {
                format!(
                    "{}follow it with: cordon incidents show {}\n",
                    header(&view),
                    view.incident.id
                )
            })
        }
        IncidentsCommand::Stage {
            id,
            stage,
            reason,
            force,
        } => move_to(client, &id, stage, reason, force, json).await,
        IncidentsCommand::Close {
            id,
            false_positive,
            reason,
            force,
        } => {
            let to = if false_positive {
                Stage::FalsePositive
            } else {
                Stage::Closed
            };
            let body = Close {
                resolution: Some(to.as_str().to_owned()),
                reason,
                force,
            };
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/close",
                        resolve::incident(client, &id).await?
                    ),
                    &body,
                )
                .await
                .map_err(|e| refused_move(e, &id, to))?;
            changed(
                &view,
                json,
                format!("incident {} is {}", view.incident.id, to),
            )
        }
        IncidentsCommand::Assign { id, user, none } => {
            let body = Assign {
                assignee: if none { None } else { user },
            };
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/assign",
                        resolve::incident(client, &id).await?
                    ),
                    &body,
                )
                .await?;
            let what = match &view.incident.assignee {
                Some(a) => format!("incident {} assigned to {}", view.incident.id, plain(a)),
                None => format!("incident {} unassigned", view.incident.id),
            };
            changed(&view, json, what)
        }
        IncidentsCommand::Escalate {
            id,
            tier,
            to,
            reason,
        } => {
            let body = Escalate { tier, to, reason };
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/escalate",
                        resolve::incident(client, &id).await?
                    ),
                    &body,
                )
                .await?;
            let mut what = format!(
                "incident {} escalated to tier {}",
                view.incident.id, view.incident.tier
            );
            if let Some(to) = &view.incident.escalated_to {
                what.push_str(&format!(" ({})", plain(to)));
            }
            changed(&view, json, what)
        }
        IncidentsCommand::Severity { id, severity } => {
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/severity",
                        resolve::incident(client, &id).await?
                    ),
                    &SetSeverity { severity },
                )
                .await?;
            let what = format!(
                "incident {} severity {}",
                view.incident.id, view.incident.severity
            );
            changed(&view, json, what)
        }
        IncidentsCommand::Comment { id, text } => {
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/comments",
                        resolve::incident(client, &id).await?
                    ),
                    &Comment { text },
                )
                .await?;
            let what = format!("comment added to incident {}", view.incident.id);
            changed(&view, json, what)
        }
        IncidentsCommand::Hosts(HostsCommand::Add { id, agents }) => {
            let id = resolve::incident(client, &id).await?;
            let agents = resolve::agents(client, &agents).await?;
            let before = client
                .get::<IncidentView>(&format!(
                    "/api/v1/incidents/{}",
                    resolve::incident(client, &id).await?
                ))
                .await?
                .hosts
                .len();
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/hosts",
                        resolve::incident(client, &id).await?
                    ),
                    &AddHosts { agents },
                )
                .await?;
            let what = format!(
                "incident {}: {} host(s) added, {} in all",
                view.incident.id,
                view.hosts.len().saturating_sub(before),
                view.hosts.len()
            );
            changed(&view, json, what)
        }
        IncidentsCommand::Attach { id, what } => {
            let (kind, ref_id) = match what {
                AttachWhat { task: Some(t), .. } => (LinkKind::Task, (LookupKind::Task, t)),
                AttachWhat { hunt: Some(h), .. } => (LinkKind::Hunt, (LookupKind::Hunt, h)),
                AttachWhat {
                    action: Some(a), ..
                } => (LinkKind::Action, (LookupKind::Action, a)),
                AttachWhat {
                    evidence: Some(e), ..
                } => (LinkKind::Evidence, (LookupKind::Evidence, e)),
                _ => {
                    return Err(CliError::Usage(
                        "give one of --task, --hunt, --action or --evidence".into(),
                    ))
                }
            };
            let ref_id = resolve::id(client, ref_id.0, &ref_id.1).await?;
            let view: IncidentView = client
                .post(
                    &format!(
                        "/api/v1/incidents/{}/links",
                        resolve::incident(client, &id).await?
                    ),
                    &Link {
                        kind,
                        id: ref_id.clone(),
                    },
                )
                .await?;
            let what = format!(
                "{} {} attached to incident {}",
                kind.as_str(),
                ref_id,
                view.incident.id
            );
            changed(&view, json, what)
        }
        IncidentsCommand::Report { id, format, out } => {
            let format = format.unwrap_or(if json {
                ReportFormat::Json
            } else {
                ReportFormat::Markdown
            });
            let id = resolve::incident(client, &id).await?;
            let base = format!("/api/v1/incidents/{id}/report");
            let text = match format {
                ReportFormat::Markdown => {
                    client.get_text(&format!("{base}?format=markdown")).await?
                }
                ReportFormat::Json => {
                    let report: IncidentReport = client.get(&format!("{base}?format=json")).await?;
                    let mut text = output::json(&report);
                    text.push('\n');
                    text
                }
            };
            let Some(out) = out else {
                return Ok(text);
            };
            write_new(&out, text.as_bytes())?;
            let format = match format {
                ReportFormat::Markdown => "markdown",
                ReportFormat::Json => "json",
            };
            Ok(if json {
                output::json(&serde_json::json!({
                    "incident_id": id,
                    "path": out,
                    "format": format,
                    "bytes": text.len(),
                }))
            } else {
                format!(
                    "report on incident {id} written to {} ({} bytes, {format})\n",
                    out.display(),
                    text.len()
                )
            })
        }
    }
}

async fn move_to(
    client: &Client,
    id: &str,
    to: Stage,
    reason: Option<String>,
    force: bool,
    json: bool,
) -> Result<String, CliError> {
    let body = MoveStage {
        stage: to.as_str().to_owned(),
        reason,
        force,
    };
    let view: IncidentView = client
        .post(
            &format!(
                "/api/v1/incidents/{}/stage",
                resolve::incident(client, id).await?
            ),
            &body,
        )
        .await
        .map_err(|e| refused_move(e, id, to))?;
    changed(
        &view,
        json,
        format!("incident {} moved to {to}", view.incident.id),
    )
}

/// A move the stage rules refused (409) says so, with the CLI's way past it where there is one.
fn refused_move(e: CliError, id: &str, to: Stage) -> CliError {
    let CliError::Other(message) = &e else {
        return e;
    };
    let Some(detail) = message
        .split_once("refused: ")
        .filter(|_| message.starts_with("409"))
        .map(|(_, d)| d)
    else {
        return e;
    };
    let mut text = format!("incident {id}: moving to {to} refused: {detail}");
    if detail.contains("force") {
        text.push_str(if to.is_closed() {
            "\n  (cordon incidents close ID --force --reason TEXT)"
        } else {
            "\n  (cordon incidents stage ID STAGE --force --reason TEXT)"
        });
    } else if detail.contains("reopen") {
        text.push_str("\n  (cordon incidents stage ID assessment --reason TEXT)");
    }
    CliError::Other(text)
}

/// What a change command prints: the incident (JSON) or one line.
fn changed(view: &IncidentView, json: bool, line: String) -> Result<String, CliError> {
    Ok(if json {
        output::json(view)
    } else {
        format!("{line}\n")
    })
}

/// Writes `bytes` to a new file; never overwrites.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    // Reports quote hosts, processes and alerts: readable by this user only.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CliError::Usage(format!(
                    "{} already exists; not overwriting it",
                    path.display()
                ))
            } else {
                CliError::Usage(format!("{}: {e}", path.display()))
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            CliError::Other(format!("writing {}: {e}", path.display()))
        })
}

/// Text from people, alerts or agents, safe on a terminal and in one line (see
/// [`output::escape`]).
fn plain(text: &str) -> String {
    output::escape(text).into_owned()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The incident's header lines.
fn header(view: &IncidentView) -> String {
    let i = &view.incident;
    let state = if i.stage.is_closed() {
        format!("{} at {}", i.stage, output::time(i.closed_at_ms))
    } else {
        i.stage.to_string()
    };
    let mut out = format!("incident {}: {}\n", i.id, plain(&i.title));
    out.push_str(&format!(
        "  kind {}, severity {}, stage {state}\n",
        plain(&i.kind),
        i.severity
    ));
    let mut escalation = format!("tier {}", i.tier);
    if let Some(to) = &i.escalated_to {
        escalation.push_str(&format!(" ({})", plain(to)));
    }
    out.push_str(&format!(
        "  assignee {}, {escalation}\n",
        plain(i.assignee.as_deref().unwrap_or("none"))
    ));
    out.push_str(&format!(
        "  opened {} by {}, updated {}, {} alert(s)\n",
        output::time(Some(i.created_at_ms)),
        plain(&i.created_by),
        output::time(Some(i.updated_at_ms)),
        i.alert_count
    ));
    if !i.labels.is_empty() {
        out.push_str(&format!(
            "  labels {}\n",
            i.labels
                .iter()
                .map(|l| plain(l))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (n, line) in i.description.lines().enumerate() {
        let lead = if n == 0 { "  description: " } else { "    " };
        out.push_str(&format!("{lead}{}\n", plain(line)));
    }
    out
}

fn render_show(view: &IncidentView, agents: &[AgentView]) -> String {
    let by_id: HashMap<&str, &AgentView> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = header(view);

    out.push_str("\nhosts:\n");
    if view.hosts.is_empty() {
        out.push_str("  none (cordon incidents hosts add ID AGENT…)\n");
    } else {
        let rows: Vec<Vec<String>> = view
            .hosts
            .iter()
            .map(|h| {
                let agent = by_id.get(h.agent_id.as_str());
                vec![
                    h.agent_id.clone(),
                    agent.map_or("-".into(), |a| plain(&a.hostname)),
                    agent.map_or("unknown", |a| a.status.as_str()).to_owned(),
                    output::time(Some(h.added_at_ms)),
                    plain(&h.added_by),
                ]
            })
            .collect();
        out.push_str(&output::table(
            &["AGENT", "HOSTNAME", "STATUS", "ADDED", "BY"],
            &rows,
        ));
    }

    out.push_str("\ncontainment still active:\n");
    if view.active_containment.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&containment_table(&view.active_containment, &by_id));
    }

    if !view.links.is_empty() {
        out.push_str("\nattached:\n");
        let rows: Vec<Vec<String>> = view
            .links
            .iter()
            .map(|l| {
                vec![
                    l.kind.as_str().to_owned(),
                    l.ref_id.clone(),
                    output::time(Some(l.linked_at_ms)),
                    plain(&l.linked_by),
                ]
            })
            .collect();
        out.push_str(&output::table(&["KIND", "ID", "ATTACHED", "BY"], &rows));
    }

    out.push_str("\ntimeline:\n");
    let rows: Vec<Vec<String>> = view
        .timeline
        .iter()
        .map(|t| {
            vec![
                output::time(Some(t.at_ms)),
                plain(&t.actor),
                t.kind.clone(),
                plain(&t.summary),
            ]
        })
        .collect();
    out.push_str(&output::table(&["TIME", "WHO", "KIND", "WHAT"], &rows));
    out
}

fn containment_table(active: &[ActiveContainment], agents: &HashMap<&str, &AgentView>) -> String {
    let rows: Vec<Vec<String>> = active
        .iter()
        .map(|c| {
            vec![
                c.agent_id.clone(),
                agents
                    .get(c.agent_id.as_str())
                    .map_or_else(|| "-".into(), |a| plain(&a.hostname)),
                c.what.clone(),
                if c.targets.is_empty() {
                    "-".into()
                } else {
                    c.targets.join(", ")
                },
                output::time(Some(c.until_ms)),
                c.action_id.clone(),
            ]
        })
        .collect();
    output::table(
        &["AGENT", "HOSTNAME", "WHAT", "TARGETS", "UNTIL", "ACTION"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_is_one_line_without_escapes() {
        assert_eq!(plain("a\nb\r\nc"), "a\\nb\\r\\nc");
        assert_eq!(plain("red\u{1b}[31m"), "red\\x1b[31m");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }

    #[test]
    fn refused_moves_name_the_rule_and_the_way_past_it() {
        let e = refused_move(
            CliError::Other(
                "409 Conflict: refused: closing from response skips remediation; move it to \
                 remediation first, or force it with a reason"
                    .into(),
            ),
            "i1",
            Stage::Closed,
        );
        let text = e.to_string();
        assert!(text.starts_with("incident i1: moving to closed refused: closing from response"));
        assert!(text.contains("--force --reason"), "{text}");
        assert_eq!(e.exit_code(), 1);
        // Anything else passes through untouched.
        let denied = refused_move(CliError::Denied("forbidden".into()), "i1", Stage::Closed);
        assert_eq!(denied.exit_code(), 3);
    }
}

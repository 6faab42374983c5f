//! `cordon incidents …`: open incidents by hand, list and show them (header, hosts, containment
//! still active, timeline), move them through the stages, assign, escalate, comment, add hosts,
//! attach tasks, hunts, actions and evidence, close them, and write their reports.
//!
//! A move the stage rules refuse (back to alert, closing early or with containment still
//! active without `--force --reason`) exits 1 and says which rule refused it and how to get
//! past it where one can; a viewer token exits 3; an unknown incident 4.

use std::{io::Write, os::unix::fs::OpenOptionsExt};

use cordon_api::{
    agents::AgentView,
    incidents::{
        report::IncidentReport, AddHosts, Assign, Close, Comment, CreateIncident, Escalate,
        IncidentSummary, IncidentView, Link, LinkKind, MoveStage, SetSeverity, Stage,
    },
};

use cordon_api::lookup::LookupKind;

use crate::{client::Client, output, resolve, CliError};

mod args;
mod render;
#[cfg(test)]
mod tests;

pub use args::{AttachWhat, ExportFormat, HostsCommand, IncidentsCommand, ReportFormat};
use render::{header, plain, render_show, shorten};

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
        IncidentsCommand::Similar {
            id,
            limit,
            noise_share,
        } => {
            let id = resolve::incident(client, &id).await?;
            let page: cordon_api::similar::SimilarPage = client
                .get(&format!(
                    "/api/v1/incidents/{id}/similar?limit={limit}&noise_share={noise_share}"
                ))
                .await?;
            Ok(if json {
                output::json(&page)
            } else {
                render::similar(&page)
            })
        }
        IncidentsCommand::Suggest { id } => {
            let id = resolve::incident(client, &id).await?;
            let page: cordon_api::suggest::SuggestPage = client
                .post(
                    &format!("/api/v1/incidents/{id}/suggest"),
                    &serde_json::json!({}),
                )
                .await?;
            Ok(if json {
                output::json(&page)
            } else {
                render::suggestions(&page)
            })
        }
        IncidentsCommand::Export { id, format, out } => {
            let id = resolve::incident(client, &id).await?;
            let name = match format {
                ExportFormat::Stix => "stix",
                ExportFormat::Misp => "misp",
            };
            let exported: serde_json::Value = client
                .get(&format!("/api/v1/incidents/{id}/export?format={name}"))
                .await?;
            let mut text = output::json(&exported);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let Some(out) = out else {
                return Ok(text);
            };
            write_new(&out, text.as_bytes())?;
            Ok(format!(
                "{name} export of incident {id} written to {}\n",
                out.display()
            ))
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

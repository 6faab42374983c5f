//! `cordon alerts send|list|show`: send an alert file the way a SIEM would (the bytes as they
//! are, so the stored payload's SHA-256 is the file's), and look at the alerts taken in.
//!
//! `send` needs an automation (or admin) token; a payload the controller refuses exits 2 with
//! the field it named.

use std::{io::Read, path::PathBuf};

use clap::{Subcommand, ValueEnum};

use cordon_api::{
    alerts::{AlertRecord, AlertView, Received, MAX_ALERT_BYTES},
    format::one_line,
};

use crate::{client::Client, output, CliError};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send an alert (JSON) from FILE, or from standard input with `-`: it opens an incident,
    /// or joins the open one with the same fingerprint.
    #[command(
        after_help = "Formats: generic (Cordon's own: title, kind, severity, host, …), wazuh \
                            (an alert from alerts.json or an integration), ecs (an Elastic \
                            Security alert). Detected from the content unless --format is given.\n\
                            Example:\n  cordon alerts send --format wazuh alert.json"
    )]
    Send {
        /// The alert's format; detected from the content when left out.
        #[arg(long, value_enum)]
        format: Option<AlertFormat>,
        /// The alert file, or `-` for standard input.
        file: PathBuf,
    },
    /// Alerts taken in, newest first.
    List {
        /// Only those of this incident.
        #[arg(long)]
        incident: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// One alert: how it was read, the incident it went to, and the payload as received.
    Show {
        /// The alert's id, or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlertFormat {
    Generic,
    Wazuh,
    Ecs,
}

impl AlertFormat {
    fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Generic => "generic",
            AlertFormat::Wazuh => "wazuh",
            AlertFormat::Ecs => "ecs",
        }
    }
}

/// Reads the alert, refusing more than the controller would take.
fn read_alert(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    let name = file.display().to_string();
    let limit = u64::try_from(MAX_ALERT_BYTES + 1).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    let read = if name == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
    if bytes.len() > MAX_ALERT_BYTES {
        return Err(CliError::Usage(format!(
            "{name} is larger than {MAX_ALERT_BYTES} bytes, the most the controller takes"
        )));
    }
    Ok(bytes)
}

/// `cordon alerts …`.
pub async fn run(client: &Client, command: AlertsCommand, json: bool) -> Result<String, CliError> {
    match command {
        AlertsCommand::Send { format, file } => {
            let bytes = read_alert(&file)?;
            let mut path = "/api/v1/alerts".to_owned();
            if let Some(format) = format {
                path.push_str(&format!("?format={}", format.as_str()));
            }
            let received: Received = client.post_raw(&path, bytes).await?;
            Ok(if json {
                output::json(&received)
            } else {
                render_received(&received)
            })
        }
        AlertsCommand::List { incident, limit } => {
            let mut path = format!("/api/v1/alerts?limit={limit}");
            if let Some(incident) = incident {
                path.push_str(&format!(
                    "&incident_id={}",
                    crate::resolve::incident(client, &incident).await?
                ));
            }
            let alerts: Vec<AlertRecord> = client.get(&path).await?;
            if json {
                return Ok(output::json(&alerts));
            }
            if alerts.is_empty() {
                return Ok("no alerts\n".into());
            }
            let rows: Vec<Vec<String>> = alerts.iter().map(row).collect();
            Ok(output::table(
                &[
                    "ID", "RECEIVED", "SOURCE", "SEVERITY", "KIND", "INCIDENT", "OUTCOME", "HOST",
                    "TITLE",
                ],
                &rows,
            ))
        }
        AlertsCommand::Show { id } => {
            let view: AlertView = client
                .get(&format!(
                    "/api/v1/alerts/{}",
                    crate::resolve::id(client, cordon_api::lookup::LookupKind::Alert, &id).await?
                ))
                .await?;
            Ok(if json {
                output::json(&view)
            } else {
                render_show(&view)
            })
        }
    }
}

/// A detail field as one safe line ("-" if absent).
fn text(value: &serde_json::Value, key: &str) -> String {
    match value.get(key) {
        Some(serde_json::Value::String(s)) => one_line(s, 200),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => one_line(&other.to_string(), 200),
    }
}

/// How the host shows: the matched agent, else the name the alert gave.
fn host(detail: &serde_json::Value) -> String {
    let host = detail.get("host").cloned().unwrap_or_default();
    match (
        text(&host, "agent_id"),
        text(&host, "hostname"),
        text(&host, "ip"),
    ) {
        (agent, _, _) if agent != "-" => agent,
        (_, name, _) if name != "-" => format!("{name} (unmatched)"),
        (_, _, ip) if ip != "-" => format!("{ip} (unmatched)"),
        _ => "-".to_owned(),
    }
}

fn row(alert: &AlertRecord) -> Vec<String> {
    let d = &alert.detail;
    vec![
        alert.id.clone(),
        output::time(Some(alert.received_at_ms)),
        alert.source.clone(),
        text(d, "severity"),
        text(d, "kind"),
        alert.incident_id.clone(),
        alert.outcome.clone(),
        host(d),
        one_line(&text(d, "title"), 48),
    ]
}

fn render_received(r: &Received) -> String {
    let mut out = if r.opened {
        format!("opened incident {} (alert {})\n", r.incident_id, r.alert_id)
    } else {
        format!(
            "joined incident {} (alert {}; {} alerts now)\n",
            r.incident_id, r.alert_id, r.alert_count
        )
    };
    out.push_str(&format!(
        "  {} {} {}: {}\n",
        r.source,
        r.severity,
        r.kind,
        one_line(&r.title, 200)
    ));
    match (&r.host.agent_id, r.host.candidates.as_slice()) {
        (Some(agent), _) => out.push_str(&format!(
            "  host: agent {agent} (matched by {})\n",
            r.host.matched_by.as_deref().unwrap_or("id")
        )),
        (None, []) => out.push_str(
            "  host: matches no enrolled agent (add one with: cordon incidents hosts add)\n",
        ),
        (None, many) => out.push_str(&format!(
            "  host: names several agents ({}); add the right one with: cordon incidents hosts add\n",
            many.join(", ")
        )),
    }
    out.push_str(&format!("  fingerprint: {}\n", r.fingerprint));
    out.push_str(&format!(
        "follow it with: cordon incidents show {}\n",
        r.incident_id
    ));
    out
}

fn render_show(view: &AlertView) -> String {
    let a = &view.alert;
    let d = &a.detail;
    let mut rows = vec![
        vec!["id".to_owned(), a.id.clone()],
        vec!["received".into(), output::time(Some(a.received_at_ms))],
        vec!["from".into(), one_line(&a.actor, 200)],
        vec!["source".into(), a.source.clone()],
        vec!["title".into(), text(d, "title")],
        vec!["rule".into(), text(d, "rule")],
        vec!["severity".into(), text(d, "severity")],
        vec!["kind".into(), text(d, "kind")],
        vec!["host".into(), host(d)],
        vec![
            "incident".into(),
            format!("{} ({})", a.incident_id, a.outcome),
        ],
        vec!["fingerprint".into(), a.fingerprint.clone()],
        vec![
            "external id".into(),
            one_line(a.external_id.as_deref().unwrap_or("-"), 200),
        ],
        vec!["payload sha256".into(), a.raw_sha256.clone()],
    ];
    for key in ["process", "file", "destination"] {
        if let Some(value) = d.get(key).filter(|v| !v.is_null()) {
            rows.push(vec![key.to_owned(), one_line(&value.to_string(), 300)]);
        }
    }
    let mut out = output::table(&["FIELD", "VALUE"], &rows);
    out.push_str("\npayload as received:\n");
    // Pretty JSON escapes every control character, so it is safe on a terminal.
    out.push_str(&output::json(&view.raw));
    out.push('\n');
    out
}

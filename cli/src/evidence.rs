//! Evidence commands: `cordon files fetch`, `cordon snapshot`, and `cordon evidence list | show
//! | get | verify`. Downloads are hashed on the way and checked against the stored hash.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use cordon_api::{
    evidence::{EvidenceView, SignedRecord, Verification},
    lookup::LookupKind,
    tasks::TaskSpec,
};

use crate::{
    client::Client,
    output,
    progress::human_bytes,
    tasks::{self, Target},
    CliError,
};

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Stored evidence, newest first.
    List {
        /// Only this agent's (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Every collection of these bytes, with its signed manifest.
    Show {
        /// The SHA-256, or a unique prefix of it (as `evidence list` prints).
        sha256: String,
    },
    /// Download stored bytes (the hash is checked after the download).
    Get {
        /// The SHA-256, or a unique prefix of it.
        sha256: String,
        /// Where to write them (never overwritten).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Re-check stored evidence on the controller: the bytes against their hash, and every
    /// manifest's signature against the agent's pinned key.
    Verify {
        /// SHA-256s (or unique prefixes) to verify.
        sha256: Vec<String>,
        /// Verify the newest 1,000 pieces of evidence.
        #[arg(long, conflicts_with = "sha256")]
        all: bool,
    },
}

/// Runs an evidence-producing task (fetch, snapshot); with `output`, also downloads the bytes.
pub async fn collect(
    client: &Client,
    target: &Target,
    spec: TaskSpec,
    output: Option<&Path>,
    json: bool,
) -> Result<String, CliError> {
    if let Some(out) = output {
        if out.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; choose another -o",
                out.display()
            )));
        }
    }
    let created = tasks::queue(client, target, spec).await?;
    if !target.wait && output.is_none() {
        return Ok(tasks::queued(&created, json));
    }
    let done = tasks::wait(client, &created.id).await?;
    let summary = tasks::finish(&done, json, render_collected)?;
    let Some(out) = output else {
        return Ok(summary);
    };
    let view: EvidenceView = done
        .result
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| CliError::Other("the task's result names no evidence".into()))?;
    download(client, &view.sha256, out).await?;
    Ok(if json {
        summary
    } else {
        format!("{summary}saved to {}\n", out.display())
    })
}

fn render_collected(value: serde_json::Value) -> Result<String, CliError> {
    let view: EvidenceView = serde_json::from_value(value)
        .map_err(|e| CliError::Other(format!("unexpected result: {e}")))?;
    Ok(output::table(&["FIELD", "VALUE"], &summary_rows(&view)))
}

fn summary_rows(view: &EvidenceView) -> Vec<Vec<String>> {
    let mut rows = vec![
        vec!["sha256".into(), view.sha256.clone()],
        vec![
            "size".into(),
            format!("{} ({})", view.size, human_bytes(view.size.max(0) as u64)),
        ],
        vec!["kind".into(), view.kind.clone()],
        vec!["agent".into(), view.agent_id.clone()],
        vec!["task".into(), view.task_id.clone()],
        vec!["received".into(), output::time(Some(view.received_at_ms))],
    ];
    if let Some(path) = &view.source_path {
        rows.push(vec!["path".into(), path.clone()]);
    }
    if let Some(problems) = view.manifest.get("problems").and_then(|p| p.as_array()) {
        for p in problems {
            rows.push(vec![
                "problem".into(),
                p.as_str().unwrap_or_default().into(),
            ]);
        }
    }
    rows
}

async fn download(client: &Client, sha256: &str, out: &Path) -> Result<(), CliError> {
    let (len, actual) = client
        .download(
            &format!("/api/v1/evidence/{sha256}"),
            out,
            &format!("download {}", &sha256[..12.min(sha256.len())]),
        )
        .await?;
    if actual != sha256 {
        let _ = std::fs::remove_file(out);
        return Err(CliError::Other(format!(
            "downloaded {len} bytes hash to {actual}, not {sha256}; file removed"
        )));
    }
    Ok(())
}

pub async fn run(
    client: &Client,
    command: EvidenceCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        EvidenceCommand::List { agent, limit } => {
            let mut path = format!("/api/v1/evidence?limit={limit}");
            if let Some(agent) = agent {
                let id = crate::resolve::agent(client, &agent).await?;
                path.push_str(&format!("&agent_id={id}"));
            }
            let list: Vec<EvidenceView> = client.get(&path).await?;
            if json {
                return Ok(output::json(&list));
            }
            let hosts = crate::resolve::Hostnames::fetch(client, !list.is_empty()).await?;
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|e| {
                    vec![
                        e.sha256[..16.min(e.sha256.len())].to_string(),
                        e.kind.clone(),
                        human_bytes(e.size.max(0) as u64),
                        e.agent_id.clone(),
                        hosts.of(&e.agent_id),
                        output::time(Some(e.received_at_ms)),
                        e.source_path.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "SHA256", "KIND", "SIZE", "AGENT", "HOSTNAME", "RECEIVED", "PATH",
                ],
                &rows,
            ))
        }
        EvidenceCommand::Show { sha256 } => {
            let sha256 = crate::resolve::id(client, LookupKind::Evidence, &sha256).await?;
            let records: Vec<SignedRecord> = client
                .get(&format!("/api/v1/evidence/{sha256}/manifest"))
                .await?;
            if json {
                return Ok(output::json(&records));
            }
            let mut out = String::new();
            for r in &records {
                let mut rows = summary_rows(&r.view);
                rows.push(vec!["agent key".into(), r.agent_public_key.clone()]);
                rows.push(vec!["signature".into(), r.signature.clone()]);
                out.push_str(&output::table(&["FIELD", "VALUE"], &rows));
                out.push('\n');
            }
            Ok(out)
        }
        EvidenceCommand::Get { sha256, output } => {
            if output.exists() {
                return Err(CliError::Usage(format!(
                    "{} already exists; choose another -o",
                    output.display()
                )));
            }
            let sha256 = crate::resolve::id(client, LookupKind::Evidence, &sha256).await?;
            download(client, &sha256, &output).await?;
            Ok(format!("saved {sha256} to {}\n", output.display()))
        }
        EvidenceCommand::Verify { sha256, all } => {
            let hashes = if all {
                let list: Vec<EvidenceView> = client.get("/api/v1/evidence?limit=1000").await?;
                let mut hashes: Vec<String> = list.into_iter().map(|e| e.sha256).collect();
                hashes.sort();
                hashes.dedup();
                hashes
            } else if sha256.is_empty() {
                return Err(CliError::Usage(
                    "name the evidence to verify (SHA-256 …) or pass --all".into(),
                ));
            } else {
                let mut whole = Vec::with_capacity(sha256.len());
                for text in &sha256 {
                    whole.push(crate::resolve::id(client, LookupKind::Evidence, text).await?);
                }
                whole
            };
            let mut results: Vec<Verification> = Vec::new();
            for sha in &hashes {
                results.push(
                    client
                        .get(&format!("/api/v1/evidence/{sha}/verify"))
                        .await?,
                );
            }
            let failed = results.iter().filter(|v| !v.ok).count();
            let text = if json {
                output::json(&results)
            } else {
                let mut rows = Vec::new();
                for v in &results {
                    for c in &v.checks {
                        rows.push(vec![
                            v.sha256[..16.min(v.sha256.len())].to_string(),
                            if c.ok { "ok" } else { "FAILED" }.to_string(),
                            c.check.clone(),
                            c.detail.clone(),
                        ]);
                    }
                }
                output::table(&["SHA256", "RESULT", "CHECK", "DETAIL"], &rows)
            };
            if failed > 0 {
                output::emit(&output::safe(&text, json))?;
                return Err(CliError::Other(format!(
                    "{failed} of {} pieces of evidence failed verification",
                    results.len()
                )));
            }
            Ok(text)
        }
    }
}

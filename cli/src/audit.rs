//! `cordon audit list|verify`: read the audit log and check its hash chain.

use clap::Subcommand;

use cordon_api::audit::{AuditPage, AuditVerifyView};

use crate::{client::Client, output, CliError};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries oldest first: seq, time, actor, action, target, outcome.
    List {
        /// Only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Walk the whole hash chain; exit 1 and name the first broken link if it was edited.
    Verify,
}

pub async fn run(client: &Client, command: AuditCommand, json: bool) -> Result<String, CliError> {
    match command {
        AuditCommand::List { after, limit } => {
            let page: AuditPage = client
                .get(&format!("/api/v1/audit?after={after}&limit={limit}"))
                .await?;
            if json {
                return Ok(output::json(&page));
            }
            let rows: Vec<Vec<String>> = page
                .entries
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        output::time(Some(e.at_ms)),
                        e.actor.clone(),
                        e.action.clone(),
                        if e.target.is_empty() {
                            "-".into()
                        } else {
                            e.target.clone()
                        },
                        e.outcome.clone(),
                    ]
                })
                .collect();
            Ok(output::table(
                &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"],
                &rows,
            ))
        }
        AuditCommand::Verify => {
            let report: AuditVerifyView = client.get("/api/v1/audit/verify").await?;
            let text = if json {
                output::json(&report)
            } else {
                render_verification(&report)
            };
            match &report.first_broken {
                None => Ok(text),
                Some(broken) => {
                    output::emit(&output::safe(&text, json))?;
                    Err(CliError::Other(format!(
                        "audit log chain broken at entry {} ({})",
                        broken.seq,
                        broken.reason.as_str()
                    )))
                }
            }
        }
    }
}

fn render_verification(report: &AuditVerifyView) -> String {
    let head = report
        .head
        .as_ref()
        .map_or_else(|| "-".to_owned(), |h| format!("{} {}", h.seq, h.hash));
    match &report.first_broken {
        None => format!(
            "audit log intact: {} entries\nhead: {head}\n",
            report.entries
        ),
        Some(broken) => format!(
            "AUDIT LOG BROKEN at entry {}: {}\n  {}\nintact before it: {} entries (last: {head})\n",
            broken.seq,
            broken.reason.as_str(),
            broken.detail,
            report.entries
        ),
    }
}

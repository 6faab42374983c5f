//! `cordon playbooks`: the playbooks in force (`list`, `show NAME`), and reloading them after an
//! edit (`reload`, admin). Files are checked where they live, on the controller host, with
//! `cordon-controller playbooks validate [DIR]`.

use clap::Subcommand;
use serde_json::Value;

use cordon_api::playbooks::{PlaybookList, PlaybookView};

use crate::{client::Client, output, CliError};

#[derive(Debug, Subcommand)]
pub enum PlaybooksCommand {
    /// The playbooks in force: name, incident kinds, stages.
    List,
    /// One playbook's steps, stage by stage.
    Show { name: String },
    /// Read the playbook files again (admin); on any error the ones in force stay.
    Reload,
}

/// `cordon playbooks list|show|reload`.
pub async fn run(
    client: &Client,
    command: PlaybooksCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        PlaybooksCommand::List => {
            let list: PlaybookList = client.get("/api/v1/playbooks").await?;
            Ok(if json {
                output::json(&list)
            } else {
                table(&list)
            })
        }
        PlaybooksCommand::Reload => {
            let list: PlaybookList = client
                .post("/api/v1/playbooks/reload", &serde_json::json!({}))
                .await?;
            Ok(if json {
                output::json(&list)
            } else {
                format!("reloaded from {}:\n{}", list.dir, table(&list))
            })
        }
        PlaybooksCommand::Show { name } => {
            let list: PlaybookList = client.get("/api/v1/playbooks").await?;
            let playbook = list
                .playbooks
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| CliError::NotFound(format!("no playbook {name}")))?;
            Ok(if json {
                output::json(&playbook)
            } else {
                show(&playbook)
            })
        }
    }
}

fn table(list: &PlaybookList) -> String {
    let rows: Vec<Vec<String>> = list
        .playbooks
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kinds.join(","),
                p.stages
                    .iter()
                    .filter_map(|s| s["stage"].as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                p.file.clone(),
            ]
        })
        .collect();
    output::table(&["NAME", "KINDS", "STAGES", "FILE"], &rows)
}

/// One step as `kind key=value …`, from its JSON (`tag` names the kind's field).
fn step(value: &Value, tag: &str) -> String {
    let Some(fields) = value.as_object() else {
        return value.to_string();
    };
    let mut out = fields
        .get(tag)
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    for (key, v) in fields.iter().filter(|(k, _)| k.as_str() != tag) {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        out.push_str(&format!(" {key}={text}"));
    }
    out
}

fn show(p: &PlaybookView) -> String {
    let mut out = format!(
        "{}\n  {}\n  kinds: {}\n  file:  {}\n",
        p.name,
        p.description,
        p.kinds.join(", "),
        p.file
    );
    for stage in &p.stages {
        out.push_str(&format!(
            "\non entering {}:\n",
            stage["stage"].as_str().unwrap_or("?")
        ));
        for c in stage["collect"].as_array().into_iter().flatten() {
            out.push_str(&format!("  collect  {}\n", step(c, "task")));
        }
        for h in stage["hunts"].as_array().into_iter().flatten() {
            let filters: Vec<String> = h["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| Some(format!("{}={}", f[0].as_str()?, f[1].as_str()?)))
                .collect();
            out.push_str(&format!(
                "  hunt     {} (for {} s{})\n",
                filters.join(" "),
                h["ttl_secs"],
                h["label"]
                    .as_str()
                    .map(|l| format!(", agents labelled {l}"))
                    .unwrap_or_default()
            ));
        }
        for proposal in stage["propose"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  propose  {} on {} host(s), valid {} s\n",
                step(&proposal["action"], "action"),
                proposal["hosts"].as_str().unwrap_or("?"),
                proposal["valid_for_secs"]
            ));
        }
    }
    out
}

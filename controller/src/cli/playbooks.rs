//! `cordon playbooks`: the playbooks in force (`list`, `show NAME`), reloading them after an
//! edit (`reload`, admin), and checking playbook files on this machine without a controller
//! (`validate [DIR]`, exit code 2 with every file:line at fault).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use crate::{
    api::playbooks::{PlaybookList, PlaybookView},
    cli::{client::Client, output, CliError},
    playbooks::load_dir,
};

/// Where `validate` looks when given no directory: the controller's default data dir.
pub const DEFAULT_DIR: &str = "/var/lib/cordon-controller/playbooks";

#[derive(Debug, Subcommand)]
pub enum PlaybooksCommand {
    /// The playbooks in force: name, incident kinds, stages.
    List,
    /// One playbook's steps, stage by stage.
    Show { name: String },
    /// Read the playbook files again (admin); on any error the ones in force stay.
    Reload,
    /// Check playbook files here, without a controller.
    Validate {
        /// Directory of `*.toml` playbooks.
        #[arg(default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// `cordon playbooks validate`: needs no controller.
pub fn validate(dir: &std::path::Path, json: bool) -> Result<String, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory of playbooks",
            dir.display()
        )));
    }
    let set = load_dir(dir).map_err(|e| CliError::Usage(format!("invalid playbooks:\n{e}")))?;
    if json {
        return Ok(output::json(&serde_json::json!({
            "ok": true,
            "dir": dir.display().to_string(),
            "playbooks": set.playbooks.iter().map(|p| &p.name).collect::<Vec<_>>(),
        })));
    }
    let names: Vec<&str> = set.playbooks.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "ok: {} playbooks in {} ({})\n",
        names.len(),
        dir.display(),
        names.join(", ")
    ))
}

/// `cordon playbooks list|show|reload`.
pub async fn run(
    client: &Client,
    command: PlaybooksCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        PlaybooksCommand::Validate { dir } => validate(&dir, json),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbooks::{defaults, PlaybookSet};

    #[test]
    fn validate_passes_the_defaults_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        defaults::install(dir.path()).unwrap();
        let ok = validate(dir.path(), false).unwrap();
        assert!(ok.starts_with("ok: 4 playbooks"), "{ok}");
        std::fs::write(
            dir.path().join("zz.toml"),
            "name = \"zz\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"memdump\" }]\n",
        )
        .unwrap();
        let err = validate(dir.path(), false).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("zz.toml:5: unknown task kind \"memdump\""),
            "{err}"
        );
    }

    #[test]
    fn show_lists_every_step() {
        let dir = tempfile::tempdir().unwrap();
        defaults::install(dir.path()).unwrap();
        let set: PlaybookSet = load_dir(dir.path()).unwrap();
        let view = PlaybookView::from(set.get("malware").unwrap());
        let text = show(&view);
        assert!(text.contains("on entering collection:"), "{text}");
        assert!(text.contains("collect  snapshot"), "{text}");
        assert!(
            text.contains("collect  file_hash path={alert.file.path}"),
            "{text}"
        );
        assert!(
            text.contains("hunt     file_sha256={alert.file.sha256} (for 3600 s)"),
            "{text}"
        );
        assert!(
            text.contains("propose  kill tree=false on alert host(s)"),
            "{text}"
        );
    }
}

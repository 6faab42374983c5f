//! `cordon observables`: an incident's typed values — add, list, set a verdict, remove.

use clap::{Subcommand, ValueEnum};
use cordon_api::observables::{
    AddObservable, ObservableAdded, ObservableType, ObservableView, UpdateObservable, Verdict,
};

use crate::{
    client::{path_segment, Client},
    output, resolve, CliError,
};

#[derive(Debug, Subcommand)]
pub enum ObservablesCommand {
    /// Add a value to an incident (validated and normalised for its type); a value already
    /// there gets a sighting, and the verdict if you give one.
    #[command(
        after_help = "Examples:\n  cordon observables add INCIDENT --type sha256 \
                            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
                            --verdict malicious\n  cordon observables add INCIDENT --type domain \
                            evil.example.org --agent web-01"
    )]
    Add {
        /// The incident: its id or a unique prefix.
        incident: String,
        /// ipv4, ipv6, cidr, domain, url, sha256, sha1, md5, file_path, file_name,
        /// process_name, command_line, user, hostname, email, port.
        #[arg(long = "type", value_parser = parse_type)]
        kind: ObservableType,
        value: String,
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        /// Never count it when incidents are compared (e.g. a shared proxy's address).
        #[arg(long)]
        ignore: bool,
        /// The host it was seen on (hostname, id or id prefix).
        #[arg(long)]
        agent: Option<String>,
    },
    /// An incident's observables, oldest first.
    List {
        incident: String,
        /// Only values of this type.
        #[arg(long = "type", value_parser = parse_type)]
        kind: Option<ObservableType>,
    },
    /// Change an observable's verdict, or whether it counts for similarity.
    Set {
        incident: String,
        /// The observable: its id, a unique prefix of it, or its value as listed.
        observable: String,
        #[arg(long, value_enum)]
        verdict: Option<VerdictArg>,
        /// Ignore it for similarity.
        #[arg(long, conflicts_with = "count")]
        ignore: bool,
        /// Count it for similarity again.
        #[arg(long)]
        count: bool,
    },
    /// Remove an observable and its sightings.
    Remove {
        incident: String,
        /// The observable: its id, a unique prefix of it, or its value as listed.
        observable: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VerdictArg {
    Malicious,
    Suspicious,
    Benign,
    Unknown,
}

impl From<VerdictArg> for Verdict {
    fn from(v: VerdictArg) -> Self {
        match v {
            VerdictArg::Malicious => Verdict::Malicious,
            VerdictArg::Suspicious => Verdict::Suspicious,
            VerdictArg::Benign => Verdict::Benign,
            VerdictArg::Unknown => Verdict::Unknown,
        }
    }
}

fn parse_type(text: &str) -> Result<ObservableType, String> {
    text.trim().to_ascii_lowercase().parse().map_err(|_| {
        format!(
            "unknown type {text:?}: expected one of {}",
            ObservableType::names()
        )
    })
}

fn base(incident: &str) -> Result<String, CliError> {
    Ok(format!(
        "/api/v1/incidents/{}/observables",
        path_segment(incident)?
    ))
}

pub async fn run(
    client: &Client,
    command: ObservablesCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        ObservablesCommand::Add {
            incident,
            kind,
            value,
            verdict,
            ignore,
            agent,
        } => {
            // Checked here first, with the controller's own rule, so a typo costs no round trip.
            kind.normalize(&value)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let incident = resolve::incident(client, &incident).await?;
            let agent = match agent {
                Some(a) => Some(resolve::agent(client, &a).await?),
                None => None,
            };
            let added: ObservableAdded = client
                .post(
                    &base(&incident)?,
                    &AddObservable {
                        kind,
                        value,
                        verdict: verdict.map(Verdict::from),
                        ignore_for_similarity: ignore.then_some(true),
                        agent,
                    },
                )
                .await?;
            if json {
                return Ok(output::json(&added));
            }
            let o = &added.observable;
            let what = if added.created { "added" } else { "seen again" };
            Ok(format!(
                "{what}: {} {} {} ({}, {} sightings)\n",
                short(&o.id),
                o.kind,
                output::escape(&o.value),
                o.verdict,
                o.sighting_count
            ))
        }
        ObservablesCommand::List { incident, kind } => {
            let incident = resolve::incident(client, &incident).await?;
            let mut listed: Vec<ObservableView> = client.get(&base(&incident)?).await?;
            if let Some(kind) = kind {
                listed.retain(|o| o.kind == kind);
            }
            if json {
                return Ok(output::json(&listed));
            }
            if listed.is_empty() {
                return Ok(format!("incident {incident} has no observables\n"));
            }
            Ok(table(&listed))
        }
        ObservablesCommand::Set {
            incident,
            observable,
            verdict,
            ignore,
            count,
        } => {
            if verdict.is_none() && !ignore && !count {
                return Err(CliError::Usage(
                    "nothing to change: give --verdict, --ignore or --count".into(),
                ));
            }
            let incident = resolve::incident(client, &incident).await?;
            let id = find(client, &incident, &observable).await?;
            let change = UpdateObservable {
                verdict: verdict.map(Verdict::from),
                ignore_for_similarity: match (ignore, count) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            let path = format!("{}/{}", base(&incident)?, path_segment(&id)?);
            let changed: ObservableView = client.patch(&path, &change).await?;
            Ok(if json {
                output::json(&changed)
            } else {
                table(std::slice::from_ref(&changed))
            })
        }
        ObservablesCommand::Remove {
            incident,
            observable,
        } => {
            let incident = resolve::incident(client, &incident).await?;
            let id = find(client, &incident, &observable).await?;
            let path = format!("{}/{}", base(&incident)?, path_segment(&id)?);
            let removed: ObservableView = client.delete(&path).await?;
            Ok(if json {
                output::json(&removed)
            } else {
                format!(
                    "removed {} {} {}\n",
                    short(&removed.id),
                    removed.kind,
                    output::escape(&removed.value)
                )
            })
        }
    }
}

/// The id of the observable `text` names on `incident`: its id, a unique id prefix, or its
/// value exactly as listed.
async fn find(client: &Client, incident: &str, text: &str) -> Result<String, CliError> {
    let listed: Vec<ObservableView> = client.get(&base(incident)?).await?;
    let text = text.trim();
    if let Some(o) = listed.iter().find(|o| o.id == text) {
        return Ok(o.id.clone());
    }
    let by_value: Vec<&ObservableView> = listed.iter().filter(|o| o.value == text).collect();
    let by_prefix: Vec<&ObservableView> = listed
        .iter()
        .filter(|o| !text.is_empty() && o.id.starts_with(&text.to_ascii_lowercase()))
        .collect();
    let candidates = if by_value.is_empty() {
        by_prefix
    } else {
        by_value
    };
    match candidates.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(CliError::NotFound(format!(
            "incident {incident} has no observable {}",
            output::escape(text)
        ))),
        many => Err(CliError::Usage(format!(
            "{} names several observables: {}",
            output::escape(text),
            many.iter()
                .map(|o| format!("{} ({} {})", short(&o.id), o.kind, output::escape(&o.value)))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn table(listed: &[ObservableView]) -> String {
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|o| {
            let mut value: String = o.value.chars().take(80).collect();
            if value.len() < o.value.len() {
                value.push('…');
            }
            vec![
                short(&o.id).to_owned(),
                o.kind.to_string(),
                value,
                o.verdict.to_string(),
                if o.ignore_for_similarity {
                    "ignored"
                } else {
                    ""
                }
                .to_owned(),
                o.sighting_count.to_string(),
                output::time(o.sightings.last().map(|s| s.at_ms)),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "TYPE",
            "VALUE",
            "VERDICT",
            "SIMILARITY",
            "SEEN",
            "LAST SEEN",
        ],
        &rows,
    )
}

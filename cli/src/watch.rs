//! `cordon watch --agent A PATH…` (start a file watch and follow its changes) and `cordon
//! watches list|show|events|stop`.
//!
//! Following polls the watch's events every second and prints one line per change (one JSON
//! object per line with `--json`) until Ctrl-C, which stops following, not the watch: it keeps
//! recording on the controller until `cordon watches stop ID`.

use std::time::Duration;

use clap::{Args, Subcommand};

use cordon_api::watches::{CreateWatch, WatchEventView, WatchEventsPage, WatchStatus, WatchView};

use cordon_api::lookup::LookupKind;

use crate::{
    client::Client,
    follow::{self, Backoff, Interrupt},
    output, resolve, CliError,
};

/// Time between polls while following.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Events asked for per poll.
const PAGE: i64 = 1000;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Agent: hostname, id, or a unique prefix of an id.
    #[arg(long)]
    pub agent: String,
    /// Absolute paths to watch; directories are watched with everything below them.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Print the watch id and return instead of following its changes.
    #[arg(long)]
    pub no_follow: bool,
    /// How long the watch may wait for an offline agent to start it, e.g. 10m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = crate::tokens::parse_duration_secs)]
    pub ttl: u64,
}

#[derive(Debug, Subcommand)]
pub enum WatchesCommand {
    /// Watches, newest first.
    List {
        /// Only this agent's (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        /// Only watches that are not stopped.
        #[arg(long)]
        active: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One watch: paths, status, and why it failed if it did.
    Show {
        /// The watch's id, or a unique prefix of it.
        id: String,
    },
    /// The changes a watch recorded, oldest first.
    Events {
        /// The watch's id, or a unique prefix of it.
        id: String,
        /// Only changes after this event id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Keep printing new changes until Ctrl-C (or until the watch is stopped).
        #[arg(long)]
        follow: bool,
    },
    /// Stop a watch (the agent stops watching; changes after this are not recorded).
    Stop {
        /// The watch's id, or a unique prefix of it.
        id: String,
    },
}

/// `cordon watch`.
pub async fn watch(client: &Client, args: WatchArgs, json: bool) -> Result<String, CliError> {
    let agent_id = resolve::agent(client, &args.agent).await?;
    let created: WatchView = client
        .post(
            "/api/v1/watches",
            &CreateWatch {
                agent_id,
                paths: args.paths,
                ttl_secs: Some(args.ttl),
            },
        )
        .await?;
    if args.no_follow {
        return Ok(if json {
            output::json(&created)
        } else {
            format!(
                "watch {} {} on agent {}; follow it with: cordon watches events {} --follow\n",
                created.id,
                created.status.as_str(),
                created.agent_id,
                created.id
            )
        });
    }
    eprintln!(
        "watch {} on agent {} ({}): {}\nCtrl-C stops following; the watch keeps recording until: cordon watches stop {}",
        created.id,
        created.agent_id,
        created.status.as_str(),
        created.paths.join(" "),
        created.id
    );
    follow(client, &created.id, 0, json, true).await
}

/// Prints a watch's changes after `after` as they arrive, until Ctrl-C or the watch stops,
/// through controller restarts. With `check_start`, also waits for the agent to start the
/// watch and fails (stopping the watch) if it could not.
async fn follow(
    client: &Client,
    id: &str,
    after: i64,
    json: bool,
    check_start: bool,
) -> Result<String, CliError> {
    // Set up before anything is printed, so an interrupt is never missed.
    let mut interrupted = Interrupt::new()?;
    tokio::select! {
        _ = interrupted.recv() => {
            eprintln!("stopped following; watch {id} keeps recording (cordon watches stop {id})");
            Ok(String::new())
        }
        followed = print_changes(client, id, after, json, check_start) => followed,
    }
}

/// [`follow`]'s loop: pages of changes, printed, until the watch is stopped and drained.
async fn print_changes(
    client: &Client,
    id: &str,
    mut after: i64,
    json: bool,
    mut check_start: bool,
) -> Result<String, CliError> {
    let mut backoff = Backoff::new();
    loop {
        if check_start {
            let watch: WatchView =
                follow::get(client, &format!("/api/v1/watches/{id}"), &mut backoff).await?;
            match watch.status {
                WatchStatus::Pending => {}
                WatchStatus::Active | WatchStatus::Stopped => check_start = false,
                WatchStatus::Failed => return Err(start_failed(client, &watch).await),
            }
        }
        let page: WatchEventsPage = follow::get(
            client,
            &format!("/api/v1/watches/{id}/events?after={after}&limit={PAGE}"),
            &mut backoff,
        )
        .await?;
        after = page.last_id;
        let full = i64::try_from(page.events.len()).unwrap_or(PAGE) >= PAGE;
        for event in &page.events {
            // One line per change, whatever the file's name holds.
            let line = if json {
                output::json_terminal(&serde_json::to_string(event).unwrap_or_default())
                    .into_owned()
            } else {
                output::escape(&event_line(event)).into_owned()
            };
            // The reader went away (e.g. piped into `head`): stop quietly.
            match output::emit(&format!("{line}\n")) {
                Err(CliError::OutputClosed) => return Ok(String::new()),
                other => other?,
            }
        }
        if page.stopped && page.events.is_empty() {
            eprintln!("watch {id} is stopped");
            return Ok(String::new());
        }
        if !full {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The agent could not start the watch: stop it (so it is not sent again at every reconnect)
/// and report why, with the exit code its error deserves.
async fn start_failed(client: &Client, watch: &WatchView) -> CliError {
    let _ = client
        .post::<_, WatchView>(
            &format!("/api/v1/watches/{}/stop", watch.id),
            &serde_json::json!({}),
        )
        .await;
    let (code, message) = watch
        .error
        .as_ref()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .unwrap_or(("failed", "the agent did not start it"));
    let text = format!("watch {} failed: {code}: {message}", watch.id);
    CliError::failed_with(watch.error.as_ref().map(|e| e.code), text)
}

/// One change as a line: time, kind, path.
pub fn event_line(event: &WatchEventView) -> String {
    format!(
        "{}  {:<8}  {}",
        output::time(Some(event.changed_at_ms)),
        event.kind,
        event.path
    )
}

/// `cordon watches …`.
pub async fn run(client: &Client, command: WatchesCommand, json: bool) -> Result<String, CliError> {
    match command {
        WatchesCommand::List {
            agent,
            active,
            limit,
        } => {
            let mut path = format!("/api/v1/watches?limit={limit}&active={active}");
            if let Some(agent) = agent {
                path.push_str(&format!(
                    "&agent_id={}",
                    resolve::agent(client, &agent).await?
                ));
            }
            let watches: Vec<WatchView> = client.get(&path).await?;
            if json {
                return Ok(output::json(&watches));
            }
            let hosts = resolve::Hostnames::fetch(client, !watches.is_empty()).await?;
            let rows: Vec<Vec<String>> = watches
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.agent_id.clone(),
                        hosts.of(&w.agent_id),
                        w.status.as_str().to_string(),
                        output::time(Some(w.created_at_ms)),
                        w.paths.join(" "),
                        w.error
                            .as_ref()
                            .map(|e| format!("{}: {}", e.code, e.message))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID", "AGENT", "HOSTNAME", "STATUS", "CREATED", "PATHS", "ERROR",
                ],
                &rows,
            ))
        }
        WatchesCommand::Show { id } => {
            let id = resolve::id(client, LookupKind::Watch, &id).await?;
            let w: WatchView = client.get(&format!("/api/v1/watches/{id}")).await?;
            if json {
                return Ok(output::json(&w));
            }
            let mut rows = vec![
                vec!["id".to_string(), w.id.clone()],
                vec!["agent".into(), w.agent_id.clone()],
                vec![
                    "host".into(),
                    resolve::Hostnames::fetch(client, true)
                        .await?
                        .of(&w.agent_id),
                ],
                vec!["status".into(), w.status.as_str().to_string()],
                vec![
                    "created".into(),
                    format!(
                        "{} by {}",
                        output::time(Some(w.created_at_ms)),
                        w.created_by
                    ),
                ],
                vec!["task".into(), w.task_id.clone().unwrap_or_default()],
                vec!["changes".into(), w.changes.to_string()],
            ];
            if let Some(at) = w.stopped_at_ms {
                rows.push(vec![
                    "stopped".into(),
                    format!(
                        "{} by {}",
                        output::time(Some(at)),
                        w.stopped_by.clone().unwrap_or_default()
                    ),
                ]);
            }
            if let Some(e) = &w.error {
                rows.push(vec!["error".into(), format!("{}: {}", e.code, e.message)]);
            }
            for p in &w.paths {
                rows.push(vec!["path".into(), p.clone()]);
            }
            Ok(output::table(&["FIELD", "VALUE"], &rows))
        }
        WatchesCommand::Events {
            id,
            after,
            follow: true,
        } => {
            let id = resolve::id(client, LookupKind::Watch, &id).await?;
            follow(client, &id, after, json, false).await
        }
        WatchesCommand::Events { id, after, .. } => {
            let id = resolve::id(client, LookupKind::Watch, &id).await?;
            let page: WatchEventsPage = client
                .get(&format!(
                    "/api/v1/watches/{id}/events?after={after}&limit={PAGE}"
                ))
                .await?;
            if json {
                return Ok(output::json(&page));
            }
            let rows: Vec<Vec<String>> = page
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        output::time(Some(e.changed_at_ms)),
                        e.kind.clone(),
                        e.path.clone(),
                    ]
                })
                .collect();
            let mut out = output::table(&["ID", "CHANGED", "KIND", "PATH"], &rows);
            if i64::try_from(page.events.len()).unwrap_or(PAGE) >= PAGE {
                out.push_str(&format!(
                    "(more: cordon watches events {id} --after {})\n",
                    page.last_id
                ));
            }
            Ok(out)
        }
        WatchesCommand::Stop { id } => {
            let id = resolve::id(client, LookupKind::Watch, &id).await?;
            let w: WatchView = client
                .post(
                    &format!("/api/v1/watches/{id}/stop"),
                    &serde_json::json!({}),
                )
                .await?;
            Ok(if json {
                output::json(&w)
            } else {
                format!("watch {} is {}\n", w.id, w.status.as_str())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_one_line_with_time_kind_and_path() {
        let event = WatchEventView {
            id: 7,
            watch_id: "w".into(),
            path: "/etc/passwd".into(),
            kind: "modified".into(),
            changed_at_ms: 0,
            received_at_ms: 5,
        };
        assert_eq!(
            event_line(&event),
            "1970-01-01 00:00:00Z  modified  /etc/passwd"
        );
    }
}

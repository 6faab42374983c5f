//! `cordon hunt …`: one collection across all agents (or those with a label), filtered on each
//! agent; with `--wait` a progress bar until every agent answered, then the agents that
//! matched. `cordon hunts show ID [--wait]` and `cordon hunts list` follow hunts later.
//!
//! A hunt that completes exits 0 whether or not anything matched (`--json` says what did);
//! bad filters or label exit 2, no agents to hunt on or an unknown hunt 4.

use std::{io::IsTerminal, time::Duration};

use clap::{Args, Subcommand};
use cordon_protocol::collect::FileKind;

use cordon_api::{
    hunts::{CreateHunt, HuntAgentResult, HuntQuerySpec, HuntView},
    lookup::LookupKind,
};

use crate::{
    client::Client,
    follow::{self, Backoff},
    output,
    progress::Progress,
    CliError,
};

/// How often the progress bar asks for news.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `cordon hunt`: the filters (every one given must hold on a host for it to match).
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// Processes with this name (kernel name, executable or argv[0] file name).
    #[arg(long)]
    pub process_name: Option<String>,
    /// Processes whose command line (arguments joined by spaces) contains this text.
    #[arg(long)]
    pub cmdline_contains: Option<String>,
    /// Processes running an executable with this SHA-256.
    #[arg(long)]
    pub exe_sha256: Option<String>,
    /// Sockets connected to this address or CIDR prefix (with process filters: owned by a
    /// matching process).
    #[arg(long)]
    pub remote_address: Option<String>,
    /// Sockets connected to this remote port.
    #[arg(long)]
    pub remote_port: Option<u16>,
    /// This file exists on the host.
    #[arg(long)]
    pub file_path: Option<String>,
    /// With --file-path: and has this SHA-256.
    #[arg(long, requires = "file_path")]
    pub file_sha256: Option<String>,
    /// Only agents carrying this label (key=value); every agent otherwise.
    #[arg(long)]
    pub label: Option<String>,
    /// How long agents that are offline are picked up when they return, e.g. 10m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = crate::tokens::parse_duration_secs)]
    pub ttl: u64,
    /// Block until every agent answered (or the hunt expired), showing progress; then print
    /// the agents that matched. Otherwise print the hunt id.
    #[arg(long)]
    pub wait: bool,
    /// Attach the hunt to this incident (checked before the hunt starts).
    #[arg(long)]
    pub incident: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum HuntsCommand {
    /// A hunt's progress and the agents that matched (or failed).
    Show {
        /// The id, or a unique prefix of it.
        id: String,
        /// Block until it completes, showing progress.
        #[arg(long)]
        wait: bool,
        /// List every targeted agent, not only those that matched or failed.
        #[arg(long)]
        all: bool,
    },
    /// Recent hunts, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Starts a hunt.
pub async fn run_hunt(client: &Client, args: HuntArgs, json: bool) -> Result<String, CliError> {
    let body = CreateHunt {
        query: HuntQuerySpec {
            process_name: args.process_name,
            exe_sha256: args.exe_sha256,
            cmdline_contains: args.cmdline_contains,
            remote_address: args.remote_address,
            remote_port: args.remote_port,
            file_path: args.file_path,
            file_sha256: args.file_sha256,
        },
        label: args.label,
        ttl_secs: Some(args.ttl),
    };
    let incident = crate::attach::check(client, args.incident.as_deref()).await?;
    let created: HuntView = client.post("/api/v1/hunts", &body).await?;
    crate::attach::attach(
        client,
        incident.as_deref(),
        cordon_api::incidents::LinkKind::Hunt,
        &created.id,
    )
    .await;
    if args.wait {
        let done = follow(client, &created).await?;
        return Ok(if json {
            output::json(&done)
        } else {
            render(&done, false)
        });
    }
    if json {
        return Ok(output::json(&created));
    }
    let p = &created.progress;
    Ok(format!(
        "hunt {} started on {} agents ({} sent now, {} queued for offline agents until {})\n\
         follow it with: cordon hunts show {} --wait\n",
        created.id,
        p.targeted,
        p.tasks.sent,
        p.tasks.queued,
        output::time(Some(created.expires_at_ms)),
        created.id
    ))
}

/// `cordon hunts show|list`.
pub async fn run_hunts(
    client: &Client,
    command: HuntsCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        HuntsCommand::Show { id, wait, all } => {
            let id = crate::resolve::id(client, LookupKind::Hunt, &id).await?;
            let view: HuntView = if wait {
                let first: HuntView = client
                    .get(&format!("/api/v1/hunts/{id}?results=none"))
                    .await?;
                follow(client, &first).await?
            } else {
                client.get(&format!("/api/v1/hunts/{id}")).await?
            };
            Ok(if json {
                output::json(&view)
            } else {
                render(&view, all)
            })
        }
        HuntsCommand::List { limit } => {
            let hunts: Vec<HuntView> = client.get(&format!("/api/v1/hunts?limit={limit}")).await?;
            Ok(if json {
                output::json(&hunts)
            } else {
                render_list(&hunts)
            })
        }
    }
}

/// Follows a hunt until it completes, with a progress bar when stderr is a terminal (otherwise
/// by long-polling); returns its final view with every agent's result.
async fn follow(client: &Client, hunt: &HuntView) -> Result<HuntView, CliError> {
    let interactive = std::io::stderr().is_terminal();
    let total = u64::try_from(hunt.progress.targeted).unwrap_or(0);
    let mut progress = Progress::items("hunt", total);
    let mut view = hunt.clone();
    let mut backoff = Backoff::new();
    while !view.progress.complete {
        if interactive {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let wait = if interactive { 0 } else { 60 };
        view = follow::get(
            client,
            &format!("/api/v1/hunts/{}?results=none&wait={wait}", hunt.id),
            &mut backoff,
        )
        .await?;
        progress.set(u64::try_from(view.progress.tasks.finished()).unwrap_or(0));
    }
    progress.finish();
    follow::get(client, &format!("/api/v1/hunts/{}", hunt.id), &mut backoff).await
}

/// A hunt for people: a summary line, the matches (one row each), then what failed.
pub fn render(view: &HuntView, all: bool) -> String {
    let p = &view.progress;
    let t = &p.tasks;
    let mut out = format!(
        "hunt {} ({}): {} of {} agents matched; done {}, failed {}, expired {}, cancelled {}",
        view.id,
        query_summary(view),
        p.matched.unwrap_or(0),
        p.targeted,
        t.done,
        t.failed,
        t.expired,
        t.cancelled
    );
    if p.complete {
        out.push_str(" (complete)\n");
    } else {
        out.push_str(&format!(
            "; still waiting: queued {}, sent {}, running {} (until {})\n",
            t.queued,
            t.sent,
            t.running,
            output::time(Some(view.expires_at_ms))
        ));
    }
    let results = view.results.as_deref().unwrap_or_default();
    let rows: Vec<Vec<String>> = results.iter().flat_map(match_rows).collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&output::table(
            &["AGENT", "HOSTNAME", "MATCH", "DETAIL"],
            &rows,
        ));
    }
    let others: Vec<Vec<String>> = results
        .iter()
        .filter(|r| r.matched != Some(true) && (all || r.error.is_some()))
        .map(|r| {
            vec![
                r.agent_id.clone(),
                r.hostname.clone(),
                r.state.as_str().to_string(),
                match (&r.error, r.matched) {
                    (Some(e), _) => format!("{}: {}", e.code, e.message),
                    (None, Some(false)) => "no match".into(),
                    (None, _) => "-".into(),
                },
            ]
        })
        .collect();
    if !others.is_empty() {
        out.push('\n');
        out.push_str(&output::table(
            &["AGENT", "HOSTNAME", "STATE", "OUTCOME"],
            &others,
        ));
    }
    out
}

/// One row per thing that matched on an agent.
fn match_rows(r: &HuntAgentResult) -> Vec<Vec<String>> {
    let Some(m) = r.matches.as_ref().filter(|_| r.matched == Some(true)) else {
        return Vec::new();
    };
    let row = |what: &str, detail: String| {
        vec![
            r.agent_id.clone(),
            r.hostname.clone(),
            what.to_string(),
            detail,
        ]
    };
    let mut rows = Vec::new();
    for s in &m.sockets {
        rows.push(row(
            "socket",
            format!(
                "{} {}:{} -> {}:{} {} pid {} {}",
                s.protocol,
                s.local_address,
                s.local_port,
                s.remote_address,
                s.remote_port,
                s.state,
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.process_name.as_deref().unwrap_or("")
            ),
        ));
    }
    for p in &m.processes {
        let command = if p.cmdline.is_empty() {
            format!("[{}]", p.name)
        } else {
            p.cmdline.join(" ")
        };
        let mut detail = format!(
            "pid {} {} {}",
            p.pid,
            p.user.as_deref().unwrap_or("-"),
            command.chars().take(100).collect::<String>()
        );
        if let Some(hash) = &p.exe_sha256 {
            detail.push_str(&format!(" sha256 {}", &hash[..16.min(hash.len())]));
        }
        rows.push(row("process", detail));
    }
    if let Some(f) = &m.file {
        let kind = match f.kind {
            FileKind::File => "file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "special file",
        };
        let mut detail = format!("{} {kind} {} bytes", f.path, f.size);
        if let Some(hash) = &f.sha256 {
            detail.push_str(&format!(" sha256 {hash}"));
        }
        rows.push(row("file", detail));
    }
    if m.truncated {
        rows.push(row("…", "more matched than one answer carries".into()));
    }
    rows
}

/// `process_name=sshd remote_port=443`.
fn query_summary(view: &HuntView) -> String {
    let q = &view.query;
    let mut parts: Vec<String> = [
        ("process_name", q.process_name.clone()),
        ("cmdline_contains", q.cmdline_contains.clone()),
        ("exe_sha256", q.exe_sha256.clone()),
        ("remote_address", q.remote_address.clone()),
        ("remote_port", q.remote_port.map(|p| p.to_string())),
        ("file_path", q.file_path.clone()),
        ("file_sha256", q.file_sha256.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if let Some(label) = &view.label {
        parts.push(format!("label {label}"));
    }
    parts.join(" ")
}

fn render_list(hunts: &[HuntView]) -> String {
    let rows: Vec<Vec<String>> = hunts
        .iter()
        .map(|h| {
            let t = &h.progress.tasks;
            vec![
                h.id.clone(),
                output::time(Some(h.created_at_ms)),
                h.created_by.clone(),
                h.progress.targeted.to_string(),
                t.done.to_string(),
                (t.failed + t.cancelled).to_string(),
                t.expired.to_string(),
                (t.queued + t.sent + t.running).to_string(),
                query_summary(h),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "CREATED", "BY", "AGENTS", "DONE", "FAILED", "EXPIRED", "PENDING", "QUERY",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_api::hunts::{HuntProgress, TaskCounts};
    use cordon_api::tasks::TaskState;
    use cordon_protocol::collect::{HuntFile, HuntMatches};

    fn view(results: Vec<HuntAgentResult>) -> HuntView {
        HuntView {
            id: "h1".into(),
            query: HuntQuerySpec {
                process_name: Some("sleep".into()),
                ..Default::default()
            },
            label: Some("env=prod".into()),
            created_by: "alice".into(),
            created_at_ms: 0,
            expires_at_ms: 0,
            progress: HuntProgress {
                targeted: 2,
                tasks: TaskCounts {
                    done: 1,
                    failed: 1,
                    ..Default::default()
                },
                matched: Some(1),
                complete: true,
                last_result_at_ms: None,
            },
            results: Some(results),
        }
    }

    #[test]
    fn matches_and_failures_are_tabulated() {
        let hit = HuntAgentResult {
            agent_id: "a1".into(),
            hostname: "web-01".into(),
            task_id: "t1".into(),
            state: TaskState::Done,
            matched: Some(true),
            matches: Some(HuntMatches {
                matched: true,
                collected_at_ms: 0,
                processes: vec![],
                sockets: vec![],
                file: Some(HuntFile {
                    path: "/etc/evil".into(),
                    kind: FileKind::File,
                    size: 3,
                    sha256: None,
                }),
                truncated: false,
            }),
            error: None,
            finished_at_ms: None,
        };
        let failed = HuntAgentResult {
            agent_id: "a2".into(),
            hostname: "db-01".into(),
            task_id: "t2".into(),
            state: TaskState::Failed,
            matched: None,
            matches: None,
            error: Some(cordon_api::tasks::TaskErrorView {
                code: cordon_api::tasks::TaskErrorCode::PermissionDenied,
                message: "/etc/evil: denied".into(),
            }),
            finished_at_ms: None,
        };
        let text = render(&view(vec![hit, failed]), false);
        assert!(
            text.starts_with("hunt h1 (process_name=sleep label env=prod): 1 of 2 agents matched"),
            "{text}"
        );
        assert!(text.contains("(complete)"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("a1") && l.contains("file") && l.contains("/etc/evil")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("a2") && l.contains("permission_denied")),
            "{text}"
        );
    }
}

//! Collection commands — `cordon ps`, `netstat`, `files …`, `system` — and `cordon tasks`.
//! Each collection queues a task; with `--wait` the CLI blocks until it ends and prints the
//! result, otherwise it prints the task id for `cordon tasks show ID --wait` later.

use clap::{Args, Subcommand};
use cordon_protocol::collect::{
    DirListing, FileHash, FileStat, ProcessDetail, ProcessList, SystemInfo,
};

use cordon_api::{
    incidents::LinkKind,
    lookup::LookupKind,
    tasks::{CreateTask, TaskSpec, TaskState, TaskView},
};

use crate::{
    client::Client,
    follow::{self, Backoff},
    output, CliError,
};

/// Options every collection command takes.
#[derive(Debug, Args)]
pub struct Target {
    /// Agent: hostname, id, or a unique prefix of an id.
    #[arg(long)]
    pub agent: String,
    /// Block until the task ends and print its result (otherwise print the task id).
    #[arg(long)]
    pub wait: bool,
    /// How long the task may wait for an offline agent, e.g. 10m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = crate::tokens::parse_duration_secs)]
    pub ttl: u64,
    /// Attach the task to this incident (checked before the task is queued).
    #[arg(long)]
    pub incident: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List a directory.
    Ls {
        #[command(flatten)]
        target: Target,
        path: String,
        /// Only names matching this glob (`*`, `?`, `[abc]`).
        #[arg(long)]
        glob: Option<String>,
        /// How deep to descend (0: the directory's own entries).
        #[arg(long, default_value_t = 0)]
        depth: u32,
        /// Most entries to return.
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
    /// Owner, mode, size and times of a path.
    Stat {
        #[command(flatten)]
        target: Target,
        path: String,
    },
    /// SHA-256 of a file.
    Hash {
        #[command(flatten)]
        target: Target,
        path: String,
    },
    /// Copy a file into the evidence store (hash checked end to end, manifest signed by the
    /// agent); with -o also download it here.
    Fetch {
        #[command(flatten)]
        target: Target,
        path: String,
        /// Also save the bytes to this file (implies --wait; never overwrites).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        /// Refuse files larger than this many bytes.
        #[arg(long, default_value_t = cordon_api::tasks::DEFAULT_FETCH_LIMIT)]
        max_bytes: u64,
        /// Sign the fetch with this key (default where the host requires signed reads:
        /// signing_key in the config file).
        #[arg(long, env = "CORDON_SIGNING_KEY")]
        key: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Show a task's state and, when done, its result.
    Show {
        /// The id, or a unique prefix of it.
        id: String,
        /// Block until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Recent tasks, newest first.
    List {
        /// Only this agent's (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a queued or running task.
    Cancel {
        /// The task's id, or a unique prefix of it.
        id: String,
    },
}

/// Queues a collection and, with `--wait`, prints its result.
pub async fn collect(
    client: &Client,
    target: &Target,
    task: TaskSpec,
    json: bool,
    render: Render,
) -> Result<String, CliError> {
    let created = queue(client, target, task).await?;
    if !target.wait {
        return Ok(queued(&created, json));
    }
    let done = wait(client, &created.id).await?;
    finish(&done, json, render)
}

/// Creates the task on the target agent.
pub(crate) async fn queue(
    client: &Client,
    target: &Target,
    task: TaskSpec,
) -> Result<TaskView, CliError> {
    let agent_id = crate::resolve::agent(client, &target.agent).await?;
    let incident = crate::attach::check(client, target.incident.as_deref()).await?;
    let created: TaskView = client
        .post(
            "/api/v1/tasks",
            &CreateTask {
                agent_id,
                task,
                ttl_secs: Some(target.ttl),
            },
        )
        .await?;
    crate::attach::attach(client, incident.as_deref(), LinkKind::Task, &created.id).await;
    Ok(created)
}

/// What to print for a task queued without `--wait`.
pub(crate) fn queued(created: &TaskView, json: bool) -> String {
    if json {
        output::json(created)
    } else {
        format!(
            "task {} {}; see it with: cordon tasks show {} --wait\n",
            created.id,
            created.state.as_str(),
            created.id
        )
    }
}

/// Waits (long-polling) until the task ends, through controller restarts.
pub(crate) async fn wait(client: &Client, id: &str) -> Result<TaskView, CliError> {
    let mut backoff = Backoff::new();
    let path = format!("/api/v1/tasks/{id}?wait=60");
    loop {
        let task: TaskView = follow::get(client, &path, &mut backoff).await?;
        if task.state.is_final() {
            return Ok(task);
        }
    }
}

/// Prints a finished task: its result through `render`, or its error (as a failure).
pub(crate) fn finish(task: &TaskView, json: bool, render: Render) -> Result<String, CliError> {
    if task.state != TaskState::Done {
        let error = task
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|| task.state.as_str().to_string());
        let message = format!("task {} {}: {error}", task.id, task.state.as_str());
        return Err(CliError::failed_with(
            task.error.as_ref().map(|e| e.code),
            message,
        ));
    }
    if json {
        return Ok(output::json(&task.result));
    }
    let value = task.result.clone().unwrap_or(serde_json::Value::Null);
    render(value)
}

/// Turns a task's JSON result into human output.
pub type Render = fn(serde_json::Value) -> Result<String, CliError>;

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, CliError> {
    serde_json::from_value(value).map_err(|e| CliError::Other(format!("unexpected result: {e}")))
}

pub fn render_processes(value: serde_json::Value) -> Result<String, CliError> {
    let list: ProcessList = parse(value)?;
    let rows: Vec<Vec<String>> = list
        .processes
        .iter()
        .map(|p| {
            let command = if p.cmdline.is_empty() {
                format!("[{}]", p.name)
            } else {
                p.cmdline.join(" ")
            };
            vec![
                p.pid.to_string(),
                p.ppid.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                p.user
                    .clone()
                    .or(p.uid.map(|u| u.to_string()))
                    .unwrap_or_else(|| "-".into()),
                output::time(Some(p.start_time_ms)),
                format!("{}", p.memory_bytes / 1024),
                format!("{:.1}", p.cpu_percent),
                p.exe_sha256
                    .clone()
                    .map(|h| h[..16.min(h.len())].to_string())
                    .unwrap_or_default(),
                command.chars().take(120).collect(),
            ]
        })
        .collect();
    Ok(output::table(
        &[
            "PID",
            "PPID",
            "USER",
            "STARTED",
            "RSS_KIB",
            "CPU%",
            "EXE_SHA256",
            "COMMAND",
        ],
        &rows,
    ))
}

pub fn render_process_detail(value: serde_json::Value) -> Result<String, CliError> {
    let d: ProcessDetail = parse(value)?;
    let p = &d.process;
    let mut rows = vec![
        vec!["pid".to_string(), p.pid.to_string()],
        vec![
            "ppid".into(),
            p.ppid.map(|v| v.to_string()).unwrap_or_default(),
        ],
        vec!["name".into(), p.name.clone()],
        vec!["exe".into(), p.exe.clone().unwrap_or_default()],
        vec!["cmdline".into(), p.cmdline.join(" ")],
        vec!["user".into(), p.user.clone().unwrap_or_default()],
        vec!["started".into(), output::time(Some(p.start_time_ms))],
        vec!["cwd".into(), d.cwd.clone().unwrap_or_default()],
        vec![
            "children".into(),
            d.children
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ],
    ];
    for f in &d.open_files {
        rows.push(vec!["open".into(), f.clone()]);
    }
    for e in d.environment.iter().flatten() {
        rows.push(vec!["env".into(), e.clone()]);
    }
    Ok(output::table(&["FIELD", "VALUE"], &rows))
}

pub fn render_system(value: serde_json::Value) -> Result<String, CliError> {
    let s: SystemInfo = parse(value)?;
    let mut rows = vec![
        vec!["hostname".to_string(), s.hostname],
        vec!["os".into(), s.os],
        vec!["kernel".into(), s.kernel],
        vec!["arch".into(), s.arch],
        vec!["booted".into(), output::time(Some(s.boot_time_ms))],
    ];
    for u in s.users {
        rows.push(vec![
            "user".into(),
            format!(
                "{} on {} from {} since {}",
                u.name,
                u.terminal,
                u.host,
                output::time(Some(u.login_time_ms))
            ),
        ]);
    }
    Ok(output::table(&["FIELD", "VALUE"], &rows))
}

pub fn render_stat(value: serde_json::Value) -> Result<String, CliError> {
    let s: FileStat = parse(value)?;
    let rows = vec![
        vec!["path".to_string(), s.path],
        vec!["kind".into(), format!("{:?}", s.kind).to_lowercase()],
        vec!["size".into(), s.size.to_string()],
        vec!["mode".into(), format!("{:o}", s.mode & 0o7777)],
        vec![
            "owner".into(),
            format!("{} ({})", s.owner.unwrap_or_default(), s.uid),
        ],
        vec![
            "group".into(),
            format!("{} ({})", s.group.unwrap_or_default(), s.gid),
        ],
        vec!["modified".into(), output::time(Some(s.modified_ms))],
        vec!["accessed".into(), output::time(Some(s.accessed_ms))],
        vec!["changed".into(), output::time(Some(s.changed_ms))],
        vec!["inode".into(), s.inode.to_string()],
        vec!["target".into(), s.symlink_target.unwrap_or_default()],
    ];
    Ok(output::table(&["FIELD", "VALUE"], &rows))
}

pub fn render_hash(value: serde_json::Value) -> Result<String, CliError> {
    let h: FileHash = parse(value)?;
    Ok(format!("{}  {}\n", h.sha256, h.path))
}

pub fn render_listing(value: serde_json::Value) -> Result<String, CliError> {
    let l: DirListing = parse(value)?;
    let rows: Vec<Vec<String>> = l
        .entries
        .iter()
        .map(|e| {
            vec![
                format!("{:?}", e.kind).to_lowercase(),
                format!("{:o}", e.mode & 0o7777),
                e.size.to_string(),
                output::time(Some(e.modified_ms)),
                e.path.clone(),
            ]
        })
        .collect();
    let mut out = output::table(&["KIND", "MODE", "SIZE", "MODIFIED", "PATH"], &rows);
    for p in &l.problems {
        out.push_str(&format!("problem: {}: {}\n", p.path, p.problem));
    }
    if l.truncated {
        out.push_str("(truncated: raise --limit to see more)\n");
    }
    Ok(out)
}

/// The renderer for a stored task kind.
pub fn renderer(kind: &str) -> Render {
    match kind {
        "processes" => render_processes,
        "process_detail" => render_process_detail,
        "network" => crate::netstat::render_network,
        "system" => render_system,
        "file_stat" => render_stat,
        "file_hash" => render_hash,
        "list_dir" => render_listing,
        _ => |v| Ok(output::json(&v)),
    }
}

pub async fn run_tasks(
    client: &Client,
    command: TasksCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        TasksCommand::Show { id, wait: block } => {
            let id = crate::resolve::id(client, LookupKind::Task, &id).await?;
            let task: TaskView = if block {
                wait(client, &id).await?
            } else {
                client.get(&format!("/api/v1/tasks/{id}")).await?
            };
            if task.state.is_final() {
                return finish(&task, json, renderer(&task.kind));
            }
            Ok(if json {
                output::json(&task)
            } else {
                format!(
                    "task {} is {} (agent {})\n",
                    task.id,
                    task.state.as_str(),
                    task.agent_id
                )
            })
        }
        TasksCommand::List { agent, limit } => {
            let path = match agent {
                Some(agent) => format!(
                    "/api/v1/tasks?agent_id={}&limit={limit}",
                    crate::resolve::agent(client, &agent).await?
                ),
                None => format!("/api/v1/tasks?limit={limit}"),
            };
            let tasks: Vec<TaskView> = client.get(&path).await?;
            if json {
                return Ok(output::json(&tasks));
            }
            let hosts = crate::resolve::Hostnames::fetch(client, !tasks.is_empty()).await?;
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.agent_id.clone(),
                        hosts.of(&t.agent_id),
                        t.kind.clone(),
                        t.state.as_str().to_string(),
                        output::time(Some(t.created_at_ms)),
                        t.error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID", "AGENT", "HOSTNAME", "KIND", "STATE", "CREATED", "ERROR",
                ],
                &rows,
            ))
        }
        TasksCommand::Cancel { id } => {
            let id = crate::resolve::id(client, LookupKind::Task, &id).await?;
            let task: TaskView = client
                .post(
                    &format!("/api/v1/tasks/{id}/cancel"),
                    &serde_json::json!({}),
                )
                .await?;
            Ok(if json {
                output::json(&task)
            } else {
                format!("task {} is {}\n", task.id, task.state.as_str())
            })
        }
    }
}

pub async fn run_files(
    client: &Client,
    command: FilesCommand,
    config_path: Option<std::path::PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    match command {
        FilesCommand::Ls {
            target,
            path,
            glob,
            depth,
            limit,
        } => {
            let spec = TaskSpec::ListDir {
                path,
                glob,
                max_depth: depth,
                max_entries: limit,
            };
            collect(client, &target, spec, json, render_listing).await
        }
        FilesCommand::Stat { target, path } => {
            collect(
                client,
                &target,
                TaskSpec::FileStat { path },
                json,
                render_stat,
            )
            .await
        }
        FilesCommand::Hash { target, path } => {
            collect(
                client,
                &target,
                TaskSpec::FileHash { path },
                json,
                render_hash,
            )
            .await
        }
        FilesCommand::Fetch {
            target,
            path,
            output,
            max_bytes,
            key,
        } => {
            let authorization = crate::signed_read::authorization(
                client,
                &target.agent,
                &path,
                key,
                target.ttl,
                config_path,
            )
            .await?;
            let spec = TaskSpec::FetchFile {
                path,
                max_bytes,
                authorization,
            };
            crate::evidence::collect(client, &target, spec, output.as_deref(), json).await
        }
    }
}

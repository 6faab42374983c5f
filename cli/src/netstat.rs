//! `cordon netstat`: an agent's TCP and UDP sockets with their owning processes, and its
//! interfaces; `--pid`, `--port` and `--state` narrow the sockets shown.

use clap::Args;
use cordon_api::tasks::{TaskSpec, TaskState};
use cordon_protocol::collect::{NetworkSnapshot, SocketInfo};

use crate::{
    client::Client,
    output,
    tasks::{self, Target},
    CliError,
};

#[derive(Debug, Args)]
pub struct NetstatArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only sockets of this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only sockets with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only sockets in this state, e.g. LISTEN, ESTABLISHED, UNCONN (any case).
    #[arg(long)]
    pub state: Option<String>,
}

impl NetstatArgs {
    fn filters(&self) -> bool {
        self.pid.is_some() || self.port.is_some() || self.state.is_some()
    }

    fn keeps(&self, socket: &SocketInfo) -> bool {
        self.pid.is_none_or(|pid| socket.pid == Some(pid))
            && self
                .port
                .is_none_or(|port| socket.local_port == port || socket.remote_port == port)
            && self
                .state
                .as_deref()
                .is_none_or(|state| socket.state.eq_ignore_ascii_case(state.trim()))
    }
}

/// Runs the collection; filters apply to its answer, so they wait for it.
pub async fn run(client: &Client, args: NetstatArgs, json: bool) -> Result<String, CliError> {
    let created = tasks::queue(client, &args.target, TaskSpec::Network).await?;
    if !args.target.wait && !args.filters() {
        return Ok(tasks::queued(&created, json));
    }
    let done = tasks::wait(client, &created.id).await?;
    if done.state != TaskState::Done {
        return tasks::finish(&done, json, render_network);
    }
    let mut snapshot: NetworkSnapshot = tasks::parse(done.result.clone().unwrap_or_default())?;
    snapshot.sockets.retain(|s| args.keeps(s));
    if json {
        return Ok(output::json(&snapshot));
    }
    Ok(table(&snapshot))
}

/// A network snapshot as tables: sockets, then interfaces.
pub fn render_network(value: serde_json::Value) -> Result<String, CliError> {
    Ok(table(&tasks::parse(value)?))
}

fn table(n: &NetworkSnapshot) -> String {
    let endpoint = |addr: &str, port: u16| {
        if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }
    };
    let rows: Vec<Vec<String>> = n
        .sockets
        .iter()
        .map(|s| {
            vec![
                format!("{}{}", s.protocol, if s.family == 6 { "6" } else { "" }),
                endpoint(&s.local_address, s.local_port),
                endpoint(&s.remote_address, s.remote_port),
                s.state.clone(),
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.process_name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = output::table(
        &["PROTO", "LOCAL", "REMOTE", "STATE", "PID", "PROCESS"],
        &rows,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = n
        .interfaces
        .iter()
        .map(|i| vec![i.name.clone(), i.mac.clone(), i.addresses.join(", ")])
        .collect();
    out.push_str(&output::table(&["INTERFACE", "MAC", "ADDRESSES"], &rows));
    out
}

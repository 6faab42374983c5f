//! Containment actions: kill, quarantine/restore, block/unblock, isolate/release. One module
//! each. They run only after [`crate::policy`] has verified the signed envelope; each returns
//! what it found before, what it did, and what it sees after, which the agent signs as the
//! receipt. Safety rails (pid 1, the agent itself, protected processes and paths, the
//! controller's address) are enforced here, whatever was signed.

pub mod firewall;
pub mod kill;
pub mod quarantine;

use std::{path::PathBuf, sync::Arc};

use cordon_protocol::{
    action::Action,
    message::{TaskError, TaskErrorCode},
};

use crate::policy::Policy;

/// What an action needs to know about the agent it runs in.
#[derive(Debug, Clone)]
pub struct ActEnv {
    /// The agent's data directory (vault, firewall state, journal live under it).
    pub data_dir: PathBuf,
    pub agent_id: String,
    /// `HOST:PORT` the agent dials: never blocked, always reachable during isolation.
    pub controller: String,
    /// This agent's process id: never killed.
    pub agent_pid: u32,
    pub policy: Arc<Policy>,
}

/// The state before, what was done, and the state after, as the receipt reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub before: serde_json::Value,
    pub done: String,
    pub after: serde_json::Value,
}

/// Runs a verified action. Blocking (signals, file moves, nft): call from a blocking thread.
pub fn run(action: &Action, env: &ActEnv) -> Result<Outcome, TaskError> {
    match action {
        Action::Kill {
            pid,
            start_time_ms,
            tree,
        } => kill::kill(*pid, *start_time_ms, *tree, env),
        Action::Quarantine { path } => quarantine::quarantine(path, env),
        Action::Restore { quarantine_id } => quarantine::restore(quarantine_id, env),
        Action::Block { targets, ttl_secs } => firewall::block(targets, *ttl_secs, env),
        Action::Unblock { targets } => firewall::unblock(targets, env),
        Action::Isolate { ttl_secs } => firewall::isolate(*ttl_secs, env),
        Action::Release => firewall::release(env),
        Action::Terminate {
            pid,
            start_time_ms,
            grace_secs,
        } => kill::terminate(*pid, *start_time_ms, *grace_secs, env),
        Action::Fetch { path } => Err(TaskError {
            code: TaskErrorCode::InvalidInput,
            message: format!(
                "a signed fetch of {path} is not an action to run: its signature goes with the \
                 fetch task (cordon files fetch --key)"
            ),
        }),
    }
}

/// A refusal by a safety rail: no signature overrides it.
pub(crate) fn refused_by_rail(message: impl Into<String>) -> TaskError {
    TaskError {
        code: TaskErrorCode::PolicyDenied,
        message: message.into(),
    }
}

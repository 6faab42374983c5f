//! Playbooks: what the controller does by itself when an incident enters a stage.
//!
//! A playbook is a TOML file in `DATA_DIR/playbooks/` ([`load`] reads and checks them, naming
//! the file and line of anything wrong). For the incident kinds it names (or `*`) and a stage,
//! it lists the collections to queue at once on the incident's hosts, the hunts to start across
//! the fleet, and the containment actions to propose. A proposal is an action stored `pending`
//! with no signature, for a responder to sign with `cordon approve`; where the agent's reported
//! policy trusts the controller's automation key for that action on its own, the controller
//! signs it and it runs at once ([`propose`]).
//!
//! The runner ([`runner`]) works through the stage entries the store keeps as a to-do list
//! (one row per stage entered, written with the move). Every step gets an id derived from the
//! stage entry, the playbook, the step and the host ([`step_id`]), and a step whose id exists
//! already is not made again: a controller restarted half-way through a playbook finishes it
//! without repeating anything. Defaults for malware, C2, brute force and ransomware are
//! written by `init` when missing ([`defaults`]).

pub mod defaults;
pub mod kill;
pub mod load;
pub mod propose;
pub mod runner;
mod steps;
pub mod template;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::incidents::Stage;
pub use load::{load_dir, parse_file, PlaybookError, PlaybookErrors};
pub use template::Template;

/// The directory inside a data dir that holds playbooks.
pub const DIR_NAME: &str = "playbooks";
/// A playbook's `kinds` entry matching every incident kind.
pub const ANY_KIND: &str = "*";

/// One checked playbook file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    /// Incident kinds it is for; `*` for any.
    pub kinds: Vec<String>,
    /// The file it was read from.
    pub file: PathBuf,
    pub stages: Vec<StagePlan>,
}

impl Playbook {
    /// Whether it is written for incidents of `kind`.
    pub fn matches_kind(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == ANY_KIND || k == kind)
    }

    /// Its steps for `stage`, if it has any.
    pub fn plan(&self, stage: Stage) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == stage)
    }
}

/// What a playbook does when an incident enters one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePlan {
    pub stage: Stage,
    pub collect: Vec<Collect>,
    pub hunts: Vec<HuntPlan>,
    pub propose: Vec<Proposal>,
}

/// A collection queued on each of the incident's hosts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Collect {
    Snapshot,
    Processes {
        hash_exes: bool,
    },
    ProcessDetail {
        pid: Template,
    },
    Network,
    System,
    Inventory,
    FileStat {
        path: Template,
    },
    FileHash {
        path: Template,
    },
    FetchFile {
        path: Template,
        max_bytes: u64,
    },
    ListDir {
        path: Template,
        glob: Option<String>,
        max_depth: u32,
        max_entries: u32,
    },
}

impl Collect {
    /// The task kind's stored name (as [`cordon_protocol::message::TaskKind::name`] gives it).
    pub fn task_name(&self) -> &'static str {
        match self {
            Collect::Snapshot => "snapshot",
            Collect::Processes { .. } => "processes",
            Collect::ProcessDetail { .. } => "process_detail",
            Collect::Network => "network",
            Collect::System => "system",
            Collect::Inventory => "inventory",
            Collect::FileStat { .. } => "file_stat",
            Collect::FileHash { .. } => "file_hash",
            Collect::FetchFile { .. } => "fetch_file",
            Collect::ListDir { .. } => "list_dir",
        }
    }
}

/// A hunt started across the fleet (or the agents with a label).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HuntPlan {
    /// Filter name (a field of [`crate::hunts::HuntQuerySpec`]) and its value.
    pub filters: Vec<(String, Template)>,
    pub label: Option<String>,
    pub ttl_secs: u64,
}

/// Which hosts a proposal is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostScope {
    /// The host the alert names.
    Alert,
    /// Every host of the incident.
    All,
}

/// A containment action to propose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub action: ProposedAction,
    pub hosts: HostScope,
    /// How long the proposal may wait for approval (clamped to what the agent's policy lets
    /// its signers give).
    pub valid_for_secs: u64,
}

/// The action of a proposal, with what it is filled from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ProposedAction {
    /// The alert's process (by pid, else by executable, name and command line), bound to the
    /// start time a fresh listing on the host reports.
    Kill {
        tree: bool,
    },
    Quarantine {
        path: Template,
    },
    Block {
        targets: Vec<Template>,
        ttl_secs: u64,
    },
    Isolate {
        ttl_secs: u64,
    },
}

impl ProposedAction {
    pub fn name(&self) -> &'static str {
        match self {
            ProposedAction::Kill { .. } => "kill",
            ProposedAction::Quarantine { .. } => "quarantine",
            ProposedAction::Block { .. } => "block",
            ProposedAction::Isolate { .. } => "isolate",
        }
    }
}

/// The playbooks loaded now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaybookSet {
    pub playbooks: Vec<Playbook>,
}

impl PlaybookSet {
    /// The playbooks for an incident of `kind` entering `stage`, with their steps there.
    pub fn matching(&self, kind: &str, stage: Stage) -> Vec<(&Playbook, &StagePlan)> {
        self.playbooks
            .iter()
            .filter(|p| p.matches_kind(kind))
            .filter_map(|p| p.plan(stage).map(|plan| (p, plan)))
            .collect()
    }

    /// Whether some playbook collects with this task kind (automation tokens may queue those).
    pub fn collects(&self, task_name: &str) -> bool {
        self.playbooks
            .iter()
            .flat_map(|p| &p.stages)
            .flat_map(|s| &s.collect)
            .any(|c| c.task_name() == task_name)
    }

    pub fn get(&self, name: &str) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| p.name == name)
    }
}

/// The controller's playbooks and the runner's wake-up call.
#[derive(Debug)]
pub struct Playbooks {
    dir: PathBuf,
    current: RwLock<Arc<PlaybookSet>>,
    wake: tokio::sync::Notify,
}

impl Playbooks {
    /// Loads every playbook in `dir` (none if it does not exist).
    pub fn load(dir: &Path) -> Result<Self, PlaybookErrors> {
        let set = load_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(set)),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Where they are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PlaybookSet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the directory again; on any error the set in force stays.
    pub fn reload(&self) -> Result<Arc<PlaybookSet>, PlaybookErrors> {
        let set = Arc::new(load_dir(&self.dir)?);
        match self.current.write() {
            Ok(mut current) => *current = set.clone(),
            Err(poisoned) => *poisoned.into_inner() = set.clone(),
        }
        tracing::info!(dir = %self.dir.display(), playbooks = set.playbooks.len(), "playbooks reloaded");
        Ok(set)
    }

    /// Tells the runner that a stage was entered (it also looks every few seconds).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The id of one step of a playbook run: the same stage entry, playbook, step and host always
/// give the same id, so a step already made is found, not made again, after a restart. Shaped
/// as a UUID (version 8, from SHA-256) so it fits wherever a task, hunt or action id goes.
pub fn step_id(stage_entry_id: &str, playbook: &str, step: &str, host: &str) -> uuid::Uuid {
    let mut hash = Sha256::new();
    for part in [
        "cordon-playbook-step-v1",
        stage_entry_id,
        playbook,
        step,
        host,
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_are_deterministic_and_distinct() {
        let a = step_id("entry-1", "malware", "collect.0", "agent-1");
        assert_eq!(a, step_id("entry-1", "malware", "collect.0", "agent-1"));
        assert_eq!(a.get_version_num(), 8);
        for other in [
            step_id("entry-2", "malware", "collect.0", "agent-1"),
            step_id("entry-1", "c2", "collect.0", "agent-1"),
            step_id("entry-1", "malware", "collect.1", "agent-1"),
            step_id("entry-1", "malware", "collect.0", "agent-2"),
            // The separator keeps "ab"+"c" apart from "a"+"bc".
            step_id("entry-1", "malwarec", "ollect.0", "agent-1"),
        ] {
            assert_ne!(a, other);
        }
    }
}

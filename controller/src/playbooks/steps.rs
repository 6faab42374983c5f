//! The steps of a playbook stage as written (collections, hunts, proposals) and how each is
//! checked: the task kind or action exists, it has the fields it needs and none it does not
//! take, durations read and are within bounds, and every template names a known alert field.
//! Errors carry the line of the value at fault ([`Checker`]).

use cordon_api::tasks::DEFAULT_FETCH_LIMIT;
use std::{ops::Range, path::Path};

use serde::Deserialize;
use toml::Spanned;

use super::{
    load::{line_of, PlaybookError, DEFAULT_BLOCK_TTL_SECS, DEFAULT_VALID_FOR_SECS},
    template::Template,
    Collect, HostScope, HuntPlan, Proposal, ProposedAction,
};
use crate::{actions::check::MAX_LIFETIME_MS, hunts::DEFAULT_HUNT_TTL, tasks::MAX_TASK_TTL};
use cordon_api::format::parse_duration_secs;

/// Default size limit of a playbook's file fetch.
const DEFAULT_PLAYBOOK_FETCH_LIMIT: u64 = 256 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCollect {
    task: Spanned<String>,
    path: Option<Spanned<String>>,
    pid: Option<Spanned<String>>,
    hash_exes: Option<Spanned<bool>>,
    max_bytes: Option<Spanned<u64>>,
    glob: Option<Spanned<String>>,
    max_depth: Option<Spanned<u32>>,
    max_entries: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHunt {
    process_name: Option<Spanned<String>>,
    exe_sha256: Option<Spanned<String>>,
    cmdline_contains: Option<Spanned<String>>,
    remote_address: Option<Spanned<String>>,
    /// A number, or a template such as `"{alert.destination.port}"`.
    remote_port: Option<Spanned<toml::Value>>,
    file_path: Option<Spanned<String>>,
    file_sha256: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPropose {
    action: Spanned<String>,
    path: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    ttl: Option<Spanned<String>>,
    tree: Option<Spanned<bool>>,
    hosts: Option<Spanned<String>>,
    valid_for: Option<Spanned<String>>,
}

/// Collects the errors of one file, each with its line.
pub(super) struct Checker<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub errors: Vec<PlaybookError>,
}

impl Checker<'_> {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(PlaybookError {
            file: self.file.to_path_buf(),
            line: Some(line_of(self.text, span.start)),
            message: message.into(),
        });
    }

    fn template(&mut self, what: &str, value: &Spanned<String>) -> Option<Template> {
        match Template::parse(value.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(value.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    /// A duration such as `30m`, at most `max_secs`.
    fn duration(&mut self, what: &str, value: &Spanned<String>, max_secs: u64) -> Option<u64> {
        match parse_duration_secs(value.get_ref()) {
            Ok(secs) if secs <= max_secs => Some(secs),
            Ok(_) => {
                self.error(
                    value.span(),
                    format!(
                        "{what} {:?} is longer than the {} days allowed",
                        value.get_ref(),
                        max_secs / 86_400
                    ),
                );
                None
            }
            Err(e) => {
                self.error(value.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    /// Refuses a field the step does not take.
    fn unused<T>(&mut self, field: &Option<Spanned<T>>, name: &str, step: &str) {
        if let Some(value) = field {
            self.error(value.span(), format!("{step} takes no `{name}`"));
        }
    }
}

const TASKS: &str = "snapshot, processes, process_detail, network (or sockets, netstat), system, \
                     inventory, file_stat, file_hash, fetch_file, list_dir";

pub(super) fn collect(check: &mut Checker<'_>, raw: &Spanned<RawCollect>) -> Option<Collect> {
    let step = raw.get_ref();
    let name = step.task.get_ref().as_str();
    let what = format!("task {name}");
    let needs_path = matches!(name, "file_stat" | "file_hash" | "fetch_file" | "list_dir");
    let path = match (&step.path, needs_path) {
        (Some(path), true) => Some(check.template(&format!("{what}: path"), path)?),
        (None, true) => {
            check.error(raw.span(), format!("{what} needs a `path`"));
            return None;
        }
        (_, false) => {
            check.unused(&step.path, "path", &what);
            None
        }
    };
    if name != "process_detail" {
        check.unused(&step.pid, "pid", &what);
    }
    if name != "processes" {
        check.unused(&step.hash_exes, "hash_exes", &what);
    }
    if name != "fetch_file" {
        check.unused(&step.max_bytes, "max_bytes", &what);
    }
    if name != "list_dir" {
        check.unused(&step.glob, "glob", &what);
        check.unused(&step.max_depth, "max_depth", &what);
        check.unused(&step.max_entries, "max_entries", &what);
    }
    Some(match name {
        "snapshot" => Collect::Snapshot,
        "processes" => Collect::Processes {
            hash_exes: step.hash_exes.as_ref().is_some_and(|h| *h.get_ref()),
        },
        "process_detail" => match &step.pid {
            Some(pid) => Collect::ProcessDetail {
                pid: check.template(&format!("{what}: pid"), pid)?,
            },
            None => {
                check.error(
                    raw.span(),
                    format!("{what} needs a `pid`, e.g. \"{{alert.process.pid}}\""),
                );
                return None;
            }
        },
        "network" | "sockets" | "netstat" => Collect::Network,
        "system" => Collect::System,
        "inventory" => Collect::Inventory,
        "file_stat" => Collect::FileStat { path: path? },
        "file_hash" => Collect::FileHash { path: path? },
        "fetch_file" => {
            let max_bytes = step
                .max_bytes
                .as_ref()
                .map_or(DEFAULT_PLAYBOOK_FETCH_LIMIT, |m| *m.get_ref());
            if max_bytes == 0 || max_bytes > DEFAULT_FETCH_LIMIT {
                let span = step.max_bytes.as_ref().map_or(raw.span(), Spanned::span);
                check.error(
                    span,
                    format!("{what}: max_bytes must be between 1 and {DEFAULT_FETCH_LIMIT}"),
                );
                return None;
            }
            Collect::FetchFile {
                path: path?,
                max_bytes,
            }
        }
        "list_dir" => Collect::ListDir {
            path: path?,
            glob: step.glob.as_ref().map(|g| g.get_ref().clone()),
            max_depth: step.max_depth.as_ref().map_or(0, |d| *d.get_ref()),
            max_entries: step.max_entries.as_ref().map_or(10_000, |m| *m.get_ref()),
        },
        other => {
            check.error(
                step.task.span(),
                format!("unknown task kind {other:?}: expected one of {TASKS}"),
            );
            return None;
        }
    })
}

pub(super) fn hunt(check: &mut Checker<'_>, raw: &Spanned<RawHunt>) -> Option<HuntPlan> {
    let step = raw.get_ref();
    let before = check.errors.len();
    let mut filters = Vec::new();
    for (name, value) in [
        ("process_name", &step.process_name),
        ("exe_sha256", &step.exe_sha256),
        ("cmdline_contains", &step.cmdline_contains),
        ("remote_address", &step.remote_address),
        ("file_path", &step.file_path),
        ("file_sha256", &step.file_sha256),
    ] {
        if let Some(value) = value {
            if let Some(t) = check.template(&format!("hunt {name}"), value) {
                filters.push((name.to_owned(), t));
            }
        }
    }
    if let Some(port) = &step.remote_port {
        let text = match port.get_ref() {
            toml::Value::Integer(n) if (1..=65_535).contains(n) => Some(n.to_string()),
            toml::Value::String(s) => Some(s.clone()),
            _ => None,
        };
        match text.map(|t| Template::parse(&t)) {
            Some(Ok(t)) => filters.push(("remote_port".to_owned(), t)),
            Some(Err(e)) => check.error(port.span(), format!("hunt remote_port: {e}")),
            None => check.error(
                port.span(),
                "hunt remote_port must be a port (1-65535) or a template such as \"{alert.destination.port}\"",
            ),
        }
    }
    if filters.is_empty() && check.errors.len() == before {
        check.error(
            raw.span(),
            "a hunt needs at least one filter (process_name, exe_sha256, cmdline_contains, \
             remote_address, remote_port, file_path, file_sha256)",
        );
    }
    let label = step.label.as_ref().and_then(|label| {
        match crate::hunts::check_label_selector(label.get_ref()) {
            Ok(()) => Some(label.get_ref().clone()),
            Err(e) => {
                check.error(label.span(), format!("hunt {e}"));
                None
            }
        }
    });
    let ttl_secs = match &step.ttl {
        Some(ttl) => check.duration("hunt ttl", ttl, MAX_TASK_TTL.as_secs())?,
        None => DEFAULT_HUNT_TTL.as_secs(),
    };
    (check.errors.len() == before).then_some(HuntPlan {
        filters,
        label,
        ttl_secs,
    })
}

pub(super) fn propose(check: &mut Checker<'_>, raw: &Spanned<RawPropose>) -> Option<Proposal> {
    let step = raw.get_ref();
    let name = step.action.get_ref().as_str();
    let what = format!("proposal {name}");
    let before = check.errors.len();
    let max_secs = u64::try_from(MAX_LIFETIME_MS / 1000).unwrap_or(u64::MAX);
    let action = match name {
        "kill" => {
            check.unused(&step.path, "path", &what);
            check.unused(&step.targets, "targets", &what);
            check.unused(&step.ttl, "ttl", &what);
            ProposedAction::Kill {
                tree: step.tree.as_ref().is_some_and(|t| *t.get_ref()),
            }
        }
        "quarantine" => {
            check.unused(&step.targets, "targets", &what);
            check.unused(&step.ttl, "ttl", &what);
            check.unused(&step.tree, "tree", &what);
            let path = match &step.path {
                Some(path) => check.template(&format!("{what}: path"), path)?,
                None => Template::parse("{alert.file.path}").ok()?,
            };
            ProposedAction::Quarantine { path }
        }
        "block" => {
            check.unused(&step.path, "path", &what);
            check.unused(&step.tree, "tree", &what);
            let targets = match &step.targets {
                Some(targets) if targets.get_ref().is_empty() => {
                    check.error(targets.span(), format!("{what}: targets is empty"));
                    return None;
                }
                Some(targets) => targets
                    .get_ref()
                    .iter()
                    .filter_map(|t| check.template(&format!("{what}: target"), t))
                    .collect(),
                None => vec![Template::parse("{alert.destination.ip}").ok()?],
            };
            let ttl_secs = match &step.ttl {
                Some(ttl) => check.duration(&format!("{what}: ttl"), ttl, max_secs)?,
                None => DEFAULT_BLOCK_TTL_SECS,
            };
            ProposedAction::Block { targets, ttl_secs }
        }
        "isolate" => {
            check.unused(&step.path, "path", &what);
            check.unused(&step.targets, "targets", &what);
            check.unused(&step.tree, "tree", &what);
            let Some(ttl) = &step.ttl else {
                check.error(
                    raw.span(),
                    format!("{what} needs a `ttl` (how long the host stays cut off, e.g. \"1h\")"),
                );
                return None;
            };
            ProposedAction::Isolate {
                ttl_secs: check.duration(&format!("{what}: ttl"), ttl, max_secs)?,
            }
        }
        "restore" | "unblock" | "release" => {
            check.error(
                step.action.span(),
                format!("action {name:?} undoes containment; a playbook proposes only kill, quarantine, block or isolate"),
            );
            return None;
        }
        other => {
            check.error(
                step.action.span(),
                format!("unknown action {other:?}: expected kill, quarantine, block or isolate"),
            );
            return None;
        }
    };
    let hosts = match &step.hosts {
        None if matches!(
            action,
            ProposedAction::Kill { .. } | ProposedAction::Quarantine { .. }
        ) =>
        {
            HostScope::Alert
        }
        None => HostScope::All,
        Some(hosts) => match hosts.get_ref().as_str() {
            "alert" => HostScope::Alert,
            "all" => HostScope::All,
            other => {
                check.error(
                    hosts.span(),
                    format!("{what}: hosts {other:?}: expected \"alert\" (the host the alert names) or \"all\" (every host of the incident)"),
                );
                return None;
            }
        },
    };
    if matches!(action, ProposedAction::Kill { .. }) && hosts == HostScope::All {
        if let Some(h) = &step.hosts {
            check.error(
                h.span(),
                "proposal kill: the alert's process runs on the alert's host; hosts must be \"alert\"",
            );
        }
    }
    let valid_for_secs = match &step.valid_for {
        Some(v) => check.duration(&format!("{what}: valid_for"), v, max_secs)?,
        None => DEFAULT_VALID_FOR_SECS,
    };
    (check.errors.len() == before).then_some(Proposal {
        action,
        hosts,
        valid_for_secs,
    })
}

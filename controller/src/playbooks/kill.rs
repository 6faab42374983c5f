//! The process a playbook's kill targets: the alert names it (pid, name, executable,
//! command line), a fresh listing on the host (a task attached to the incident) says whether
//! it still runs and when it started — what binds the kill, so a recycled pid is never hit.
//! With a pid, that process is proposed only if it is still the program the alert names;
//! without one, every process matching what the alert gives, up to [`MAX_KILL_MATCHES`].

use std::time::Duration;

use cordon_protocol::{
    collect::{ProcessDetail, ProcessInfo, ProcessList},
    message::TaskKind,
};
use serde_json::Value;

use super::runner::{Interrupted, RunContext};
use crate::{state::Controller, store::TaskState, tasks::TaskError};

/// How long a kill proposal waits for the process listing it is based on.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(60);
/// How long that listing may wait for its agent.
const LOOKUP_TTL: Duration = Duration::from_secs(300);
/// Most processes one kill step proposes to kill (when the alert names no pid).
pub const MAX_KILL_MATCHES: usize = 5;

/// The process an alert names, as far as it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedProcess {
    pub pid: Option<u32>,
    pub name: Option<String>,
    pub executable: Option<String>,
    pub command_line: Option<String>,
}

impl WantedProcess {
    /// From the alert's timeline detail (`process`).
    pub fn from_alert(alert: &Value) -> Self {
        let process = &alert["process"];
        let text = |key: &str| {
            process[key]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Self {
            pid: process["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            name: text("name"),
            executable: text("executable"),
            command_line: text("command_line"),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn describe(&self) -> String {
        [
            self.name.clone(),
            self.executable.clone(),
            self.command_line.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ")
    }

    /// Whether `p` is the process the alert names (by pid when it gives one).
    fn same(&self, p: &ProcessInfo) -> bool {
        let base = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
        let exe_ok = self
            .executable
            .as_deref()
            .is_some_and(|e| p.exe.as_deref() == Some(e) || base(e) == p.name);
        let name_ok = self
            .name
            .as_deref()
            .is_some_and(|n| p.name == n || p.exe.as_deref().map(base).as_deref() == Some(n));
        let cmdline_ok = self
            .command_line
            .as_deref()
            .is_none_or(|c| p.cmdline.join(" ").contains(c));
        let named = self.executable.is_some() || self.name.is_some();
        (!named || exe_ok || name_ok) && cmdline_ok
    }
}

/// The processes a kill targets, from a listing: the alert's pid (if it is still the
/// process the alert names), else every process matching its executable, name and command
/// line (at most [`MAX_KILL_MATCHES`]).
pub fn pick(
    processes: Vec<ProcessInfo>,
    wanted: &WantedProcess,
) -> Result<Vec<ProcessInfo>, String> {
    if let Some(pid) = wanted.pid {
        let Some(p) = processes.into_iter().find(|p| p.pid == pid) else {
            return Err(format!("pid {pid} is not running"));
        };
        if !wanted.same(&p) {
            return Err(format!(
                "pid {pid} is now {} ({}), not the alert's {}; not proposing",
                p.name,
                p.exe.as_deref().unwrap_or("?"),
                wanted.describe()
            ));
        }
        return Ok(vec![p]);
    }
    let found: Vec<ProcessInfo> = processes.into_iter().filter(|p| wanted.same(p)).collect();
    match found.len() {
        0 => Err(format!("no running process matches {}", wanted.describe())),
        n if n > MAX_KILL_MATCHES => Err(format!(
            "{n} processes match {}; more than {MAX_KILL_MATCHES}, so none is proposed",
            wanted.describe()
        )),
        _ => Ok(found),
    }
}

impl Controller {
    /// The processes a kill step targets on `host`, from a fresh listing there.
    pub(crate) async fn kill_targets(
        &self,
        ctx: &RunContext<'_>,
        step: &str,
        host: &str,
    ) -> Result<Result<Vec<ProcessInfo>, String>, Interrupted> {
        let wanted = WantedProcess::from_alert(&ctx.alert);
        if wanted.is_empty() {
            return Ok(Err("the alert names no process".into()));
        }
        let lookup = ctx.step_id(&format!("{step}.lookup"), host);
        if self.store.get_task(&lookup).await?.is_none() && !self.registry.is_online(host) {
            return Ok(Err(format!(
                "agent {host} is offline: a kill is bound to the process's start time, which \
                 needs a fresh listing; once it is back, kill by hand (cordon kill)"
            )));
        }
        let kind = match wanted.pid {
            Some(pid) => TaskKind::ProcessDetail {
                pid,
                environment: false,
            },
            None => TaskKind::Processes { hash_exes: false },
        };
        if let Err(why) = self
            .ensure_task(ctx, &lookup, host, kind, LOOKUP_TTL)
            .await?
        {
            return Ok(Err(why));
        }
        let task = match self.wait_for_task(&lookup, LOOKUP_WAIT).await {
            Ok(task) => task,
            Err(TaskError::Store(e)) => return Err(e.into()),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let result = match (task.state, task.result) {
            (TaskState::Done, Some(result)) => result,
            (state, _) if !state.is_final() => {
                return Ok(Err(format!(
                    "the process listing on {host} did not finish within {} s",
                    LOOKUP_WAIT.as_secs()
                )))
            }
            (state, _) => {
                return Ok(Err(format!(
                    "the process listing on {host} {}: {}",
                    state.as_str(),
                    task.error_message.unwrap_or_default()
                )))
            }
        };
        let processes = if wanted.pid.is_some() {
            serde_json::from_str::<ProcessDetail>(&result).map(|d| vec![d.process])
        } else {
            serde_json::from_str::<ProcessList>(&result).map(|l| l.processes)
        };
        Ok(match processes {
            Ok(processes) => pick(processes, &wanted),
            Err(e) => Err(format!("the process listing on {host} is unreadable: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, name: &str, exe: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: Some(1),
            name: name.into(),
            exe: Some(exe.into()),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            uid: Some(0),
            user: None,
            start_time_ms: 1_700_000_000_000 + i64::from(pid),
            memory_bytes: 0,
            cpu_percent: 0.0,
            exe_sha256: None,
        }
    }

    fn listing() -> Vec<ProcessInfo> {
        vec![
            process(10, "sleep", "/usr/bin/sleep", &["sleep", "600.1234"]),
            process(11, "sleep", "/usr/bin/sleep", &["sleep", "5"]),
            process(12, "bash", "/usr/bin/bash", &["bash"]),
        ]
    }

    #[test]
    fn a_kill_targets_the_alerts_pid_only_if_it_is_still_that_process() {
        let wanted = WantedProcess {
            pid: Some(10),
            name: Some("sleep".into()),
            ..Default::default()
        };
        let found = pick(listing(), &wanted).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].start_time_ms, 1_700_000_000_010);

        let recycled = WantedProcess {
            pid: Some(12),
            executable: Some("/tmp/dropper".into()),
            ..Default::default()
        };
        let err = pick(listing(), &recycled).unwrap_err();
        assert!(err.contains("pid 12 is now bash"), "{err}");
        let gone = WantedProcess {
            pid: Some(99),
            ..Default::default()
        };
        assert_eq!(pick(listing(), &gone).unwrap_err(), "pid 99 is not running");
    }

    #[test]
    fn without_a_pid_a_kill_matches_exe_name_and_command_line() {
        let by_cmdline = WantedProcess {
            executable: Some("/usr/bin/sleep".into()),
            command_line: Some("sleep 600.1234".into()),
            ..Default::default()
        };
        let found = pick(listing(), &by_cmdline).unwrap();
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), [10]);
        let by_name = WantedProcess {
            name: Some("sleep".into()),
            ..Default::default()
        };
        assert_eq!(pick(listing(), &by_name).unwrap().len(), 2);
        let none = WantedProcess {
            name: Some("nc".into()),
            ..Default::default()
        };
        assert!(pick(listing(), &none)
            .unwrap_err()
            .contains("no running process"));
        let many: Vec<ProcessInfo> = (0..9)
            .map(|i| process(100 + i, "sleep", "/usr/bin/sleep", &["sleep"]))
            .collect();
        assert!(pick(many, &by_name)
            .unwrap_err()
            .contains("none is proposed"));
    }

    #[test]
    fn the_alerts_process_is_read_from_its_entry() {
        let alert = serde_json::json!({"process": {"pid": 4242, "name": "sleep",
            "executable": null, "command_line": " "}});
        assert_eq!(
            WantedProcess::from_alert(&alert),
            WantedProcess {
                pid: Some(4242),
                name: Some("sleep".into()),
                ..Default::default()
            }
        );
        assert!(WantedProcess::from_alert(&Value::Null).is_empty());
    }
}

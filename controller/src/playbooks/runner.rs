//! The playbook runner: works through the stages incidents entered (the store's
//! `stage_entries` with `playbook_state = pending`), runs the matching playbooks' steps, and
//! marks each entry done with what ran, what was proposed and what could not be done.
//!
//! Once, however often the controller stops: each step's id comes from [`super::step_id`], and
//! a step whose task, hunt or action exists already is taken as made (and only linked to the
//! incident again, which is idempotent). The playbook's timeline entry is written once per
//! stage entry and playbook, and the stage entry is marked done last. A run cut short by a
//! shutdown or a store error leaves the entry pending; the next pass finishes it. A step that
//! cannot run — the alert lacks what it needs, the agent is offline or unknown, its policy
//! trusts no key for the action — is written to the timeline with the reason, never dropped.

use std::{collections::HashSet, time::Duration};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{template::TemplateError, Collect, HuntPlan, Playbook, StagePlan};
use crate::{
    alerts::{one_line, ENTRY_KIND},
    hunts::{HuntError, HuntQuerySpec},
    incidents::{IncidentError, LinkKind, Stage},
    now_ms,
    state::{Controller, Shared},
    store::{incidents::PLAYBOOK_DONE, IncidentRecord, NewTimelineEntry, StageEntry, StoreError},
    tasks::{TaskError, DEFAULT_TASK_TTL},
};

/// How often pending stage entries are looked for when nothing wakes the runner.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Most stage entries read per pass.
const BATCH: i64 = 32;
/// Most stage entries run at once (a kill proposal may wait for a process listing).
const MAX_CONCURRENT_RUNS: usize = 8;
/// Longest summary line on the timeline.
const MAX_SUMMARY_CHARS: usize = 2000;
/// The timeline entry kind of a playbook run.
pub const TIMELINE_KIND: &str = "playbook";

/// Why a run stopped before marking its entry done: it is retried on the next pass.
#[derive(Debug, thiserror::Error)]
#[error("playbook run interrupted: {0}")]
pub struct Interrupted(#[from] pub StoreError);

/// What one step did, for the timeline and the stage entry's detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepOutcome {
    /// `collect.0`, `hunt.1`, `propose.0`, …
    pub step: String,
    /// The agent it concerned, if one.
    pub host: Option<String>,
    /// e.g. `snapshot`, `hunt`, `kill`.
    pub what: String,
    /// `queued`, `started`, `proposed`, `submitted` (signed by the automation key), or
    /// `skipped` (with a reason).
    pub outcome: String,
    /// The task, hunt or action made (or found made already).
    pub id: Option<String>,
    /// A few words a responder reads (what to approve, or why nothing was done).
    pub note: Option<String>,
}

impl StepOutcome {
    pub(crate) fn skipped(step: &str, host: Option<&str>, what: &str, why: String) -> Self {
        Self {
            step: step.to_owned(),
            host: host.map(str::to_owned),
            what: what.to_owned(),
            outcome: "skipped".into(),
            id: None,
            note: Some(why),
        }
    }

    fn describe(&self) -> String {
        let on = self
            .host
            .as_deref()
            .map(|h| format!(" on {h}"))
            .unwrap_or_default();
        match (self.outcome.as_str(), &self.note) {
            ("skipped", Some(why)) => format!("could not {}{on}: {why}", self.what),
            (outcome, Some(note)) => format!("{outcome} {}{on} ({note})", self.what),
            (outcome, None) => format!(
                "{outcome} {}{on}{}",
                self.what,
                self.id
                    .as_deref()
                    .map(|id| format!(": {id}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Everything one playbook run needs to know about its stage entry.
pub(crate) struct RunContext<'a> {
    pub entry: &'a StageEntry,
    pub incident: &'a IncidentRecord,
    pub playbook: &'a Playbook,
    /// The latest alert's timeline detail, or Null.
    pub alert: Value,
    /// The incident's hosts (agent ids).
    pub hosts: Vec<String>,
}

impl RunContext<'_> {
    pub fn actor(&self) -> String {
        format!("playbook:{}", self.playbook.name)
    }

    pub fn step_id(&self, step: &str, host: &str) -> String {
        super::step_id(&self.entry.id, &self.playbook.name, step, host).to_string()
    }
}

/// Runs until `shutdown`: pending stage entries are picked up at once when woken (a stage
/// move), else every [`POLL_INTERVAL`]. Runs in flight at shutdown are dropped mid-step;
/// their entries stay pending and are finished after the restart.
pub async fn run(controller: Shared, shutdown: CancellationToken) {
    let mut running: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        while let Some(done) = running.try_join_next() {
            match done {
                Ok(id) => {
                    in_flight.remove(&id);
                }
                Err(e) => tracing::error!(error = %e, "a playbook run panicked"),
            }
        }
        // A panicked run never returned its id; forget all when nothing runs.
        if running.is_empty() {
            in_flight.clear();
        }
        match controller.store.pending_stage_entries(BATCH).await {
            Ok(entries) => {
                for entry in entries {
                    if running.len() >= MAX_CONCURRENT_RUNS {
                        break;
                    }
                    if !in_flight.insert(entry.id.clone()) {
                        continue;
                    }
                    let controller = controller.clone();
                    running.spawn(async move {
                        if let Err(e) = controller.run_stage_entry(&entry).await {
                            tracing::warn!(incident_id = %entry.incident_id, stage_entry = %entry.id, error = %e, "playbook run will be retried");
                            // Not at once: a store that just failed needs a moment.
                            tokio::time::sleep(POLL_INTERVAL).await;
                        }
                        entry.id
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read pending stage entries"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                running.shutdown().await;
                return;
            }
            _ = controller.playbooks.woken() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            Some(Ok(id)) = running.join_next(), if !running.is_empty() => {
                in_flight.remove(&id);
            }
        }
    }
}

impl Controller {
    /// Runs the playbooks for one stage entry and marks it done.
    pub async fn run_stage_entry(&self, entry: &StageEntry) -> Result<(), Interrupted> {
        let Some(incident) = self.store.get_incident(&entry.incident_id).await? else {
            self.store
                .set_stage_entry_state(
                    &entry.id,
                    PLAYBOOK_DONE,
                    &serde_json::json!({ "error": "the incident no longer exists" }),
                )
                .await?;
            return Ok(());
        };
        let stage: Stage = entry.stage;
        let set = self.playbooks.current();
        let matching = set.matching(&incident.kind, stage);
        let mut ran = Vec::new();
        if !matching.is_empty() {
            let alert = self.latest_alert(&incident.id).await?;
            let hosts: Vec<String> = self
                .store
                .incident_hosts(&incident.id)
                .await?
                .into_iter()
                .map(|h| h.agent_id)
                .collect();
            for (playbook, plan) in matching {
                let ctx = RunContext {
                    entry,
                    incident: &incident,
                    playbook,
                    alert: alert.clone(),
                    hosts: hosts.clone(),
                };
                let steps = self.run_plan(&ctx, plan).await?;
                self.record_run(&ctx, stage, &steps).await?;
                ran.push(serde_json::json!({ "playbook": playbook.name, "steps": steps }));
            }
        }
        self.store
            .set_stage_entry_state(
                &entry.id,
                PLAYBOOK_DONE,
                &serde_json::json!({ "playbooks": ran }),
            )
            .await?;
        Ok(())
    }

    /// Every step of one playbook's plan, in order: collections, hunts, proposals.
    async fn run_plan(
        &self,
        ctx: &RunContext<'_>,
        plan: &StagePlan,
    ) -> Result<Vec<StepOutcome>, Interrupted> {
        let mut out = Vec::new();
        for (i, collect) in plan.collect.iter().enumerate() {
            let step = format!("collect.{i}");
            out.extend(self.collect_step(ctx, &step, collect).await?);
        }
        for (i, hunt) in plan.hunts.iter().enumerate() {
            let step = format!("hunt.{i}");
            out.push(self.hunt_step(ctx, &step, hunt).await?);
        }
        for (i, proposal) in plan.propose.iter().enumerate() {
            let step = format!("propose.{i}");
            out.extend(self.propose_step(ctx, &step, proposal).await?);
        }
        Ok(out)
    }

    /// The detail of the incident's latest alert entry (what templates read), or Null.
    async fn latest_alert(&self, incident_id: &str) -> Result<Value, StoreError> {
        let entries = self
            .store
            .incident_timeline(incident_id, 0, crate::incidents::timeline::MAX_ENTRIES)
            .await?;
        Ok(entries
            .into_iter()
            .rev()
            .find(|e| e.kind == ENTRY_KIND)
            .map(|e| e.detail)
            .unwrap_or(Value::Null))
    }

    async fn collect_step(
        &self,
        ctx: &RunContext<'_>,
        step: &str,
        collect: &Collect,
    ) -> Result<Vec<StepOutcome>, Interrupted> {
        let what = collect.task_name();
        let kind = match task_kind(collect, &ctx.alert) {
            Ok(kind) => kind,
            Err(e) => return Ok(vec![StepOutcome::skipped(step, None, what, e.to_string())]),
        };
        if ctx.hosts.is_empty() {
            return Ok(vec![StepOutcome::skipped(
                step,
                None,
                what,
                "the incident has no hosts; add one (cordon incidents hosts add)".into(),
            )]);
        }
        let mut out = Vec::new();
        for host in &ctx.hosts {
            let id = ctx.step_id(step, host);
            out.push(
                match self
                    .ensure_task(ctx, &id, host, kind.clone(), DEFAULT_TASK_TTL)
                    .await?
                {
                    Ok(()) => StepOutcome {
                        step: step.to_owned(),
                        host: Some(host.clone()),
                        what: what.to_owned(),
                        outcome: "queued".into(),
                        id: Some(id),
                        note: None,
                    },
                    Err(why) => StepOutcome::skipped(step, Some(host), what, why),
                },
            );
        }
        Ok(out)
    }

    /// Makes task `id` unless it exists, and attaches it to the incident. The inner error is
    /// why it could not be made (for the timeline).
    pub(crate) async fn ensure_task(
        &self,
        ctx: &RunContext<'_>,
        id: &str,
        host: &str,
        kind: cordon_protocol::message::TaskKind,
        ttl: Duration,
    ) -> Result<Result<(), String>, Interrupted> {
        if self.store.get_task(id).await?.is_none() {
            match self
                .create_task_with_id(id.to_owned(), host, kind, ttl, &ctx.actor())
                .await
            {
                Ok(_) => {}
                Err(TaskError::Store(e)) if e.is_duplicate() => {}
                Err(TaskError::Store(e)) => return Err(e.into()),
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        self.attach(ctx, LinkKind::Task, id).await
    }

    /// Links something made by the playbook to the incident (once).
    pub(crate) async fn attach(
        &self,
        ctx: &RunContext<'_>,
        kind: LinkKind,
        id: &str,
    ) -> Result<Result<(), String>, Interrupted> {
        match self
            .link_incident(&ctx.incident.id, kind, id, &ctx.actor())
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(IncidentError::Store(e)) => Err(e.into()),
            Err(e) => Ok(Err(format!("cannot attach {} {id}: {e}", kind.as_str()))),
        }
    }

    async fn hunt_step(
        &self,
        ctx: &RunContext<'_>,
        step: &str,
        plan: &HuntPlan,
    ) -> Result<StepOutcome, Interrupted> {
        let query = match hunt_query(plan, &ctx.alert) {
            Ok(query) => query,
            Err(why) => return Ok(StepOutcome::skipped(step, None, "hunt", why)),
        };
        let id = ctx.step_id(step, "");
        if self.store.get_hunt(&id).await?.is_none() {
            match self
                .create_hunt_with_id(
                    id.clone(),
                    query.into(),
                    plan.label.clone(),
                    Duration::from_secs(plan.ttl_secs),
                    &ctx.actor(),
                )
                .await
            {
                Ok(_) => {}
                Err(HuntError::Store(e)) if e.is_duplicate() => {}
                Err(HuntError::Store(e)) => return Err(e.into()),
                Err(e) => return Ok(StepOutcome::skipped(step, None, "hunt", e.to_string())),
            }
        }
        if let Err(why) = self.attach(ctx, LinkKind::Hunt, &id).await? {
            return Ok(StepOutcome::skipped(step, None, "hunt", why));
        }
        Ok(StepOutcome {
            step: step.to_owned(),
            host: None,
            what: "hunt".into(),
            outcome: "started".into(),
            id: Some(id),
            note: Some(describe_filters(plan, &ctx.alert)),
        })
    }

    /// Writes the playbook's timeline entry for this stage entry, unless an earlier, cut-short
    /// run already did.
    async fn record_run(
        &self,
        ctx: &RunContext<'_>,
        stage: Stage,
        steps: &[StepOutcome],
    ) -> Result<(), Interrupted> {
        let written = self
            .store
            .incident_timeline(&ctx.incident.id, 0, crate::incidents::timeline::MAX_ENTRIES)
            .await?
            .into_iter()
            .any(|e| {
                e.kind == TIMELINE_KIND
                    && e.detail["stage_entry_id"] == ctx.entry.id.as_str()
                    && e.detail["playbook"] == ctx.playbook.name.as_str()
            });
        if written {
            return Ok(());
        }
        let parts: Vec<String> = steps.iter().map(StepOutcome::describe).collect();
        let summary = one_line(
            &format!(
                "playbook {} ({stage}): {}",
                ctx.playbook.name,
                if parts.is_empty() {
                    "nothing to do".to_owned()
                } else {
                    parts.join("; ")
                }
            ),
            MAX_SUMMARY_CHARS,
        );
        let entry = NewTimelineEntry {
            at_ms: now_ms(),
            actor: ctx.actor(),
            kind: TIMELINE_KIND.into(),
            summary,
            detail: serde_json::json!({
                "playbook": ctx.playbook.name,
                "file": ctx.playbook.file,
                "stage": stage.as_str(),
                "stage_entry_id": ctx.entry.id,
                "steps": steps,
            }),
        };
        self.append_incident_timeline(&ctx.incident.id, &entry)
            .await?;
        tracing::info!(incident_id = %ctx.incident.id, playbook = %ctx.playbook.name, %stage, steps = steps.len(), "playbook ran");
        Ok(())
    }
}

/// The task a collection step queues, filled from the alert.
fn task_kind(
    collect: &Collect,
    alert: &Value,
) -> Result<cordon_protocol::message::TaskKind, TemplateError> {
    use cordon_protocol::message::{ListDirRequest, TaskKind};
    Ok(match collect {
        Collect::Snapshot => TaskKind::Snapshot,
        Collect::Processes { hash_exes } => TaskKind::Processes {
            hash_exes: *hash_exes,
        },
        Collect::ProcessDetail { pid } => {
            let text = pid.render(alert)?;
            TaskKind::ProcessDetail {
                pid: text
                    .trim()
                    .parse()
                    .map_err(|_| TemplateError::Missing("alert.process.pid"))?,
                environment: false,
            }
        }
        Collect::Network => TaskKind::Network,
        Collect::System => TaskKind::System,
        Collect::Inventory => TaskKind::Inventory,
        Collect::FileStat { path } => TaskKind::FileStat {
            path: path.render(alert)?,
        },
        Collect::FileHash { path } => TaskKind::FileHash {
            path: path.render(alert)?,
        },
        // Playbooks run unattended: on a host that requires signed reads the agent refuses
        // this, naming the rule, and a responder fetches by hand.
        Collect::FetchFile { path, max_bytes } => TaskKind::FetchFile {
            path: path.render(alert)?,
            max_bytes: *max_bytes,
            authorization: None,
        },
        Collect::ListDir {
            path,
            glob,
            max_depth,
            max_entries,
        } => TaskKind::ListDir(ListDirRequest {
            path: path.render(alert)?,
            glob: glob.clone(),
            max_depth: *max_depth,
            max_entries: *max_entries,
        }),
    })
}

/// A hunt's query, filled from the alert.
fn hunt_query(plan: &HuntPlan, alert: &Value) -> Result<HuntQuerySpec, String> {
    let mut fields = serde_json::Map::new();
    for (name, template) in &plan.filters {
        let text = template.render(alert).map_err(|e| e.to_string())?;
        let value = if name == "remote_port" {
            let port: u16 = text
                .trim()
                .parse()
                .map_err(|_| format!("remote_port {text:?} is not a port"))?;
            Value::from(port)
        } else {
            Value::from(text)
        };
        fields.insert(name.clone(), value);
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| format!("hunt query: {e}"))
}

fn describe_filters(plan: &HuntPlan, alert: &Value) -> String {
    plan.filters
        .iter()
        .map(|(name, t)| format!("{name}={}", t.render(alert).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::playbooks::Template;

    #[test]
    fn collections_and_hunts_fill_from_the_alert() {
        let alert = json!({"file": {"path": "/tmp/x", "sha256": null},
                           "destination": {"ip": "203.0.113.9", "port": 8443}});
        let hash = Collect::FileHash {
            path: Template::parse("{alert.file.path}").unwrap(),
        };
        assert_eq!(
            task_kind(&hash, &alert).unwrap(),
            cordon_protocol::message::TaskKind::FileHash {
                path: "/tmp/x".into()
            }
        );
        let missing = task_kind(&hash, &Value::Null).unwrap_err();
        assert_eq!(missing.to_string(), "the alert gives no alert.file.path");

        let plan = HuntPlan {
            filters: vec![
                (
                    "remote_address".into(),
                    Template::parse("{alert.destination.ip}").unwrap(),
                ),
                (
                    "remote_port".into(),
                    Template::parse("{alert.destination.port}").unwrap(),
                ),
            ],
            label: None,
            ttl_secs: 60,
        };
        let query = hunt_query(&plan, &alert).unwrap();
        assert_eq!(query.remote_address.as_deref(), Some("203.0.113.9"));
        assert_eq!(query.remote_port, Some(8443));
        assert!(hunt_query(&plan, &Value::Null)
            .unwrap_err()
            .contains("alert.destination.ip"));
    }

    #[test]
    fn outcomes_read_as_one_line() {
        let skipped = StepOutcome::skipped(
            "collect.1",
            Some("agent-1"),
            "file_hash",
            "the alert gives no alert.file.path".into(),
        );
        assert_eq!(
            skipped.describe(),
            "could not file_hash on agent-1: the alert gives no alert.file.path"
        );
        let queued = StepOutcome {
            step: "collect.0".into(),
            host: Some("agent-1".into()),
            what: "snapshot".into(),
            outcome: "queued".into(),
            id: Some("t1".into()),
            note: None,
        };
        assert_eq!(queued.describe(), "queued snapshot on agent-1: t1");
    }
}

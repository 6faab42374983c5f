//! Hunts: one collection across every agent, or every agent carrying a label, with the filters
//! evaluated on each agent (what "match" means is in [`cordon_protocol::hunt`]).
//!
//! A hunt is stored with one ordinary task per targeted agent, all in one transaction; the tasks
//! of connected agents are handed straight to their sessions, without a store round trip each.
//! Tasks of offline agents wait in the store like any other task and are sent when the agent
//! returns, until the hunt's expiry (the tasks' TTL). Progress and per-agent results are read
//! back from those tasks.

use cordon_api::tasks::TaskErrorCode;
use cordon_api::tasks::TaskErrorView;
use std::time::Duration;

use cordon_protocol::{
    collect::HuntMatches,
    message::{ControllerMessage, HuntQuery, Task, TaskKind},
};
use thiserror::Error;

use crate::{
    now_ms,
    state::Controller,
    store::{HuntRecord, HuntTarget, HuntTaskRow, NewHunt, StoreError, TaskCounts, TaskState},
    tasks::MAX_TASK_TTL,
};
pub use cordon_api::hunts::{CreateHunt, HuntAgentResult, HuntProgress, HuntQuerySpec, HuntView};

/// How long a hunt picks up agents that are offline, unless asked otherwise.
pub const DEFAULT_HUNT_TTL: Duration = Duration::from_secs(3600);
/// Longest label selector (as long as a label).
const MAX_SELECTOR_LEN: usize = 64;
/// While waiting for a hunt, the pause after a wake-up before counting again: thousands of
/// results arriving together then cost a few recounts, not thousands.
const RECOUNT_PAUSE: Duration = Duration::from_millis(50);

/// Why a hunt could not be created or read.
#[derive(Debug, Error)]
pub enum HuntError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NoAgents(String),
    #[error("no hunt {0}")]
    UnknownHunt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which agents a hunt's view lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFilter {
    None,
    Matched,
    All,
}

/// Checks a label selector: `key=value`, in the characters labels may hold.
pub fn check_label_selector(selector: &str) -> Result<(), HuntError> {
    let ok = selector.len() <= MAX_SELECTOR_LEN
        && selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:=/".contains(c))
        && selector
            .split_once('=')
            .is_some_and(|(key, value)| !key.is_empty() && !value.is_empty());
    if ok {
        Ok(())
    } else {
        Err(HuntError::Invalid(format!(
            "label {:?}: expected key=value (1-{MAX_SELECTOR_LEN} characters from a-z, A-Z, \
             0-9 and -_.:=/), e.g. env=prod",
            selector.chars().take(80).collect::<String>()
        )))
    }
}

impl Controller {
    /// Creates a hunt: one task per non-revoked agent (carrying `label`, if given), sent at once
    /// to connected agents and kept queued for the others until `ttl` passes.
    pub async fn create_hunt(
        &self,
        query: HuntQuery,
        label: Option<String>,
        ttl: Duration,
        created_by: &str,
    ) -> Result<HuntView, HuntError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.create_hunt_with_id(id, query, label, ttl, created_by)
            .await
    }

    /// [`Controller::create_hunt`] with the caller's id (playbooks derive theirs, so a hunt
    /// is never started twice); an id already taken fails in the store.
    pub async fn create_hunt_with_id(
        &self,
        id: String,
        query: HuntQuery,
        label: Option<String>,
        ttl: Duration,
        created_by: &str,
    ) -> Result<HuntView, HuntError> {
        cordon_protocol::hunt::validate(&query).map_err(|e| HuntError::Invalid(e.0))?;
        if let Some(label) = &label {
            check_label_selector(label)?;
        }
        if ttl.is_zero() || ttl > MAX_TASK_TTL {
            return Err(HuntError::Invalid(format!(
                "hunt lifetime must be between 1 s and {} days",
                MAX_TASK_TTL.as_secs() / 86_400
            )));
        }
        let started = std::time::Instant::now();
        let agents: Vec<String> = self
            .store
            .hunt_candidates()
            .await?
            .into_iter()
            .filter(|(_, labels)| label.as_ref().is_none_or(|l| labels.contains(l)))
            .map(|(id, _)| id)
            .collect();
        if agents.is_empty() {
            return Err(HuntError::NoAgents(match &label {
                Some(label) => format!("no agent (not revoked) carries label {label}"),
                None => "no agents enrolled (or all revoked)".into(),
            }));
        }
        let encode = |e: serde_json::Error| HuntError::Invalid(format!("cannot encode: {e}"));
        let kind = TaskKind::Hunt(query.clone());
        let request = serde_json::to_string(&kind).map_err(encode)?;
        let now = now_ms();
        let hunt = NewHunt {
            id,
            query: serde_json::to_string(&query).map_err(encode)?,
            label,
            created_by: created_by.to_string(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        let targets: Vec<HuntTarget> = agents
            .into_iter()
            .map(|agent_id| HuntTarget {
                task_id: uuid::Uuid::new_v4().to_string(),
                sent: self.registry.is_online(&agent_id),
                agent_id,
            })
            .collect();
        let chosen = started.elapsed();
        self.store.create_hunt(&hunt, &request, &targets).await?;
        let stored = started.elapsed();

        let mut sent = 0usize;
        for target in targets.iter().filter(|t| t.sent) {
            let message = ControllerMessage::Task(Task {
                task_id: target.task_id.clone(),
                deadline_ms: hunt.expires_at_ms,
                kind: kind.clone(),
            });
            match self.registry.send(&target.agent_id, message) {
                Ok(()) => sent += 1,
                // Gone or saturated since it was chosen: back to the queue, which the sweeper
                // delivers when it can.
                Err(e) => {
                    tracing::debug!(task_id = %target.task_id, agent_id = %target.agent_id, error = %e, "hunt task stays queued");
                    if let Err(e) = self.store.requeue_task(&target.task_id).await {
                        tracing::warn!(task_id = %target.task_id, error = %e, "cannot requeue hunt task");
                    }
                }
            }
        }
        tracing::info!(
            hunt_id = %hunt.id,
            agents = targets.len(),
            sent,
            label = ?hunt.label,
            by = created_by,
            kind = kind.name(),
            select_ms = chosen.as_millis(),
            store_ms = (stored - chosen).as_millis(),
            dispatch_ms = (started.elapsed() - stored).as_millis(),
            "hunt started"
        );
        // From what was just written rather than read back: under a large fleet the answers
        // are already streaming in, and the caller only needs the id and where it started.
        let counts = TaskCounts {
            sent: i64::try_from(sent).unwrap_or(i64::MAX),
            queued: i64::try_from(targets.len() - sent).unwrap_or(i64::MAX),
            ..TaskCounts::default()
        };
        let record = HuntRecord {
            agent_count: i64::try_from(targets.len()).unwrap_or(i64::MAX),
            id: hunt.id,
            query: hunt.query,
            label: hunt.label,
            created_by: hunt.created_by,
            created_at_ms: hunt.created_at_ms,
            expires_at_ms: hunt.expires_at_ms,
        };
        view(record, counts)
    }

    /// A hunt's progress and, as `filter` asks, its per-agent results.
    pub async fn hunt_view(&self, id: &str, filter: ResultsFilter) -> Result<HuntView, HuntError> {
        let record = self
            .store
            .get_hunt(id)
            .await?
            .ok_or_else(|| HuntError::UnknownHunt(id.to_string()))?;
        let rows = self.store.hunt_tasks(id).await?;
        let mut counts = TaskCounts::default();
        let mut matched = 0;
        let mut last_result_at_ms = None;
        let mut results = Vec::new();
        for row in rows {
            counts.add(row.state, 1);
            last_result_at_ms = last_result_at_ms.max(row.finished_at_ms);
            let result = agent_result(row);
            if result.matched == Some(true) {
                matched += 1;
            }
            let keep = match filter {
                ResultsFilter::None => false,
                ResultsFilter::Matched => result.matched == Some(true),
                ResultsFilter::All => true,
            };
            if keep {
                results.push(result);
            }
        }
        let mut view = view(record, counts)?;
        view.progress.matched = Some(matched);
        view.progress.last_result_at_ms = last_result_at_ms;
        view.results = (filter != ResultsFilter::None).then_some(results);
        Ok(view)
    }

    /// The newest hunts with their task counts.
    pub async fn list_hunts(&self, limit: i64) -> Result<Vec<HuntView>, HuntError> {
        let records = self.store.list_hunts(limit).await?;
        let mut counts = self.store.recent_hunt_counts(limit).await?;
        records
            .into_iter()
            .map(|record| {
                let c = counts.remove(&record.id).unwrap_or_default();
                view(record, c)
            })
            .collect()
    }

    /// Waits until every task of the hunt has ended or `timeout` passes, then returns its view.
    pub async fn wait_for_hunt(
        &self,
        id: &str,
        timeout: Duration,
        filter: ResultsFilter,
    ) -> Result<HuntView, HuntError> {
        let mut events = self.task_events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // A stopping controller answers at once, so its shutdown is not held open.
        let stopping = self.events.closing();
        if self.store.get_hunt(id).await?.is_none() {
            return Err(HuntError::UnknownHunt(id.to_string()));
        }
        loop {
            let counts = self.store.hunt_counts(id).await?;
            if counts.finished() >= counts.total()
                || tokio::time::Instant::now() >= deadline
                || stopping.is_cancelled()
            {
                break;
            }
            // Any task's end wakes us (the channel does not say whose), and so does each second:
            // events can be missed when the channel lags, and expiry happens in the sweeper.
            let wake = tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            );
            tokio::select! {
                _ = events.recv() => {}
                _ = wake => {}
                _ = stopping.cancelled() => continue,
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RECOUNT_PAUSE))
                .await;
        }
        self.hunt_view(id, filter).await
    }
}

fn view(record: HuntRecord, counts: TaskCounts) -> Result<HuntView, HuntError> {
    let query: HuntQuery =
        serde_json::from_str(&record.query).map_err(|source| StoreError::Json {
            what: "hunt query",
            source,
        })?;
    Ok(HuntView {
        progress: HuntProgress {
            targeted: record.agent_count,
            complete: counts.finished() >= counts.total(),
            tasks: counts,
            matched: None,
            last_result_at_ms: None,
        },
        id: record.id,
        query: query.into(),
        label: record.label,
        created_by: record.created_by,
        created_at_ms: record.created_at_ms,
        expires_at_ms: record.expires_at_ms,
        results: None,
    })
}

/// One agent's task as a hunt result: its answer parsed, or why there is none.
fn agent_result(row: HuntTaskRow) -> HuntAgentResult {
    let mut error = row.error_code.map(|code| TaskErrorView {
        code,
        message: row.error_message.unwrap_or_default(),
    });
    let (matched, matches) = match (row.state, row.result.as_deref()) {
        (TaskState::Done, Some(json)) => match serde_json::from_str::<HuntMatches>(json) {
            Ok(m) if m.matched => (Some(true), Some(m)),
            Ok(_) => (Some(false), None),
            Err(e) => {
                error = Some(TaskErrorView {
                    code: TaskErrorCode::InvalidResult,
                    message: format!("the agent's answer is not a hunt result: {e}"),
                });
                (None, None)
            }
        },
        _ => (None, None),
    };
    HuntAgentResult {
        agent_id: row.agent_id,
        hostname: row.hostname,
        task_id: row.task_id,
        state: row.state,
        matched,
        matches,
        error,
        finished_at_ms: row.finished_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_are_key_equals_value() {
        assert!(check_label_selector("env=prod").is_ok());
        assert!(check_label_selector("team/web=a-b_c.d:e").is_ok());
        for bad in [
            "env",
            "=prod",
            "env=",
            "env = prod",
            "é=1",
            &"k=".repeat(40),
        ] {
            let err = check_label_selector(bad).unwrap_err();
            assert!(err.to_string().contains("key=value"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_query_fields_are_refused() {
        let err = serde_json::from_str::<CreateHunt>(
            r#"{"query": {"proces_name": "sshd"}, "label": "env=prod"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("proces_name"), "{err}");
        let ok: CreateHunt =
            serde_json::from_str(r#"{"query": {"remote_port": 443}, "ttl_secs": 60}"#).unwrap();
        assert_eq!(HuntQuery::from(ok.query).remote_port, Some(443));
    }

    fn row(state: TaskState, result: Option<&str>) -> HuntTaskRow {
        HuntTaskRow {
            task_id: "t".into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            state,
            result: result.map(Into::into),
            error_code: None,
            error_message: None,
            finished_at_ms: None,
        }
    }

    #[test]
    fn answers_are_read_as_matched_or_not() {
        let hit = r#"{"matched":true,"collected_at_ms":1,"processes":[],"sockets":[],
            "file":{"path":"/x","kind":"file","size":1,"sha256":null},"truncated":false}"#;
        let r = agent_result(row(TaskState::Done, Some(hit)));
        assert_eq!(r.matched, Some(true));
        assert_eq!(r.matches.unwrap().file.unwrap().path, "/x");
        let miss = hit.replace("true", "false");
        let r = agent_result(row(TaskState::Done, Some(&miss)));
        assert_eq!((r.matched, r.matches.is_none()), (Some(false), true));
        let r = agent_result(row(TaskState::Done, Some("{\"pong\":true}")));
        assert_eq!(r.matched, None);
        assert_eq!(r.error.unwrap().code, TaskErrorCode::InvalidResult);
        let r = agent_result(row(TaskState::Queued, None));
        assert_eq!((r.matched, r.error.is_none()), (None, true));
    }
}

//! Incidents: the incident itself, the hosts involved, what is attached to it, its stored
//! timeline, and the stages it entered (the playbook runner's to-do list).
//!
//! Every change to an incident is one transaction that also appends its timeline entry, so the
//! timeline never misses or invents a change. Stage moves are conditional on the stage the
//! caller checked the move against (`WHERE stage = $from`), so two responders moving the same
//! incident at once cannot both succeed on a stale view. Entering a stage (including the first,
//! `alert`) inserts a `stage_entries` row in the same transaction; the playbook runner marks it
//! done, so a playbook runs once per stage entered, however often the controller restarts.

use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use super::{db_err, parse_stored, touched, Store, StoreError};
pub(crate) mod writes;

pub use cordon_api::incidents::{
    IncidentHost, IncidentLink, IncidentRecord, StageEntry, TimelineEntry,
};
pub(crate) use writes::{
    add_hosts, apply_change, insert_entry, insert_incident_parts, insert_incident_row,
    open_by_fingerprint,
};

/// An incident to create.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub severity: String,
    /// The stage it starts in (normally `alert`).
    pub stage: String,
    pub description: String,
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    /// The alert fingerprint it was opened for; one open incident per fingerprint.
    pub fingerprint: Option<String>,
    /// Alerts folded into it so far (1 when an alert opens it).
    pub alert_count: i64,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// A timeline entry to append.
#[derive(Debug, Clone)]
pub struct NewTimelineEntry {
    pub at_ms: i64,
    /// Who did it: a token name, `controller`, `playbook:NAME`, an agent id.
    pub actor: String,
    /// What kind of entry, e.g. `created`, `stage`, `comment`, `assigned`, `alert`.
    pub kind: String,
    /// One line a human reads.
    pub summary: String,
    /// The details, as JSON.
    pub detail: serde_json::Value,
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only those in this stage.
    pub stage: Option<String>,
    /// Only those not closed or false positive.
    pub open_only: bool,
    /// Only those involving this agent.
    pub agent_id: Option<String>,
    pub limit: i64,
}

/// How creating an incident went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// An open incident already holds this fingerprint (its id).
    FingerprintTaken(String),
}

/// A field change, checked by the caller, applied with its timeline entry.
#[derive(Debug, Clone)]
pub enum IncidentChange {
    /// Move from `from` (as the caller saw it) to `to`; `closed` sets `closed_at` and frees the
    /// fingerprint, reopening clears `closed_at`. Records a stage entry with this id.
    Stage {
        from: String,
        to: String,
        closes: bool,
        entry_id: String,
    },
    Assignee(Option<String>),
    Escalation {
        tier: i64,
        to: Option<String>,
    },
    Severity(String),
    /// Another alert joined: bumps `alert_count`.
    AlertJoined,
    /// Only the timeline entry (a comment, a link, a note).
    Nothing,
}

/// Stages after which an incident is over; its fingerprint is free for a new one.
pub const CLOSED_STAGES: [&str; 2] = ["closed", "false_positive"];

/// A playbook state meaning "not handled yet".
pub const PLAYBOOK_PENDING: &str = "pending";
/// A playbook state meaning "handled".
pub const PLAYBOOK_DONE: &str = "done";

const COLUMNS: &str = "id, title, kind, severity, stage, description, assignee, tier, \
    escalated_to, labels, fingerprint, alert_count, created_at, created_by, updated_at, closed_at";
const STAGE_COLUMNS: &str =
    "id, incident_id, stage, entered_at, entered_by, playbook_state, playbook_detail";

fn json_text(what: &'static str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Json { what, source })
}

impl Store {
    /// Creates an incident with its hosts, its timeline entries (`created`, and for example the
    /// alert that opened it) and its first stage entry, all or nothing. An open incident holding the same fingerprint wins: nothing is
    /// written and its id is returned, for the caller to join instead.
    pub async fn create_incident(
        &self,
        incident: &NewIncident,
        hosts: &[String],
        entries: &[NewTimelineEntry],
        stage_entry_id: &str,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.begin_write("begin incident creation").await?;
        if let Some(fingerprint) = &incident.fingerprint {
            if let Some(existing) = open_by_fingerprint(&mut tx, fingerprint).await? {
                tx.rollback()
                    .await
                    .map_err(db_err("roll back incident creation"))?;
                return Ok(CreateOutcome::FingerprintTaken(existing));
            }
        }
        if let Err(e) = insert_incident_row(&mut tx, incident).await? {
            // Another controller opened one for this fingerprint between our check and insert.
            if let Some(fingerprint) = &incident.fingerprint {
                drop(tx);
                if let Some(existing) = self.open_incident_by_fingerprint(fingerprint).await? {
                    return Ok(CreateOutcome::FingerprintTaken(existing));
                }
            }
            return Err(db_err("insert incident")(e));
        }
        insert_incident_parts(&mut tx, incident, hosts, entries, stage_entry_id).await?;
        tx.commit()
            .await
            .map_err(db_err("commit incident creation"))?;
        Ok(CreateOutcome::Created)
    }

    /// The open incident holding `fingerprint`, if any.
    pub async fn open_incident_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM incidents WHERE open_fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("find incident by fingerprint"))
    }

    pub async fn get_incident(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read incident"))?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// Most recently changed first.
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM incidents WHERE ($1 = '' OR stage = $1) \
             AND ($2 = 0 OR stage NOT IN ('closed', 'false_positive')) \
             AND ($3 = '' OR id IN (SELECT incident_id FROM incident_hosts WHERE agent_id = $3)) \
             ORDER BY updated_at DESC, id LIMIT $4"
        ))
        .bind(filter.stage.clone().unwrap_or_default())
        .bind(i64::from(filter.open_only))
        .bind(filter.agent_id.clone().unwrap_or_default())
        .bind(filter.limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list incidents"))?;
        rows.iter().map(incident_from_row).collect()
    }

    /// Applies `change` and appends `entry`, in one transaction. False when the incident is
    /// unknown or, for a stage move, no longer in the stage the caller checked against.
    pub async fn change_incident(
        &self,
        id: &str,
        change: &IncidentChange,
        entry: &NewTimelineEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin incident change").await?;
        if !apply_change(&mut tx, id, change, entry).await? {
            tx.rollback()
                .await
                .map_err(db_err("roll back incident change"))?;
            return Ok(false);
        }
        tx.commit()
            .await
            .map_err(db_err("commit incident change"))?;
        Ok(true)
    }

    /// Adds hosts (agents already known to exist) with one timeline entry; hosts already on
    /// the incident are skipped. Returns the ids newly added (no entry is written if none).
    /// The entry's summary and detail name only the hosts newly added.
    pub async fn add_incident_hosts(
        &self,
        id: &str,
        agent_ids: &[String],
        entry: &NewTimelineEntry,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write("begin adding incident hosts").await?;
        let added = add_hosts(&mut tx, id, agent_ids, entry).await?;
        tx.commit().await.map_err(db_err("commit incident hosts"))?;
        Ok(added)
    }

    pub async fn incident_hosts(&self, id: &str) -> Result<Vec<IncidentHost>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, added_at, added_by FROM incident_hosts WHERE incident_id = $1 \
             ORDER BY added_at, agent_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read incident hosts"))?;
        rows.iter()
            .map(|row| {
                let get = || db_err("read incident host");
                Ok(IncidentHost {
                    agent_id: row.try_get("agent_id").map_err(get())?,
                    added_at_ms: row.try_get("added_at").map_err(get())?,
                    added_by: row.try_get("added_by").map_err(get())?,
                })
            })
            .collect()
    }

    /// Attaches a task, hunt, action or evidence to an incident, with its timeline entry.
    /// False if it was attached already (nothing written).
    pub async fn link_to_incident(
        &self,
        link: &IncidentLink,
        entry: &NewTimelineEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin incident link").await?;
        let present: Option<String> = sqlx::query_scalar(
            "SELECT ref_id FROM incident_links WHERE incident_id = $1 AND kind = $2 \
             AND ref_id = $3",
        )
        .bind(&link.incident_id)
        .bind(link.kind.as_str())
        .bind(&link.ref_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("read incident link"))?;
        if present.is_some() {
            tx.rollback()
                .await
                .map_err(db_err("roll back incident link"))?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO incident_links (incident_id, kind, ref_id, linked_at, linked_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&link.incident_id)
        .bind(link.kind.as_str())
        .bind(&link.ref_id)
        .bind(link.linked_at_ms)
        .bind(&link.linked_by)
        .execute(&mut *tx)
        .await
        .map_err(db_err("insert incident link"))?;
        insert_entry(&mut tx, &link.incident_id, entry).await?;
        sqlx::query("UPDATE incidents SET updated_at = $2 WHERE id = $1")
            .bind(&link.incident_id)
            .bind(entry.at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err("update incident"))?;
        tx.commit().await.map_err(db_err("commit incident link"))?;
        Ok(true)
    }

    /// What is attached to an incident, oldest first.
    pub async fn incident_links(&self, id: &str) -> Result<Vec<IncidentLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT incident_id, kind, ref_id, linked_at, linked_by FROM incident_links \
             WHERE incident_id = $1 ORDER BY linked_at, kind, ref_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read incident links"))?;
        rows.iter().map(link_from_row).collect()
    }

    /// The incidents something is attached to.
    pub async fn incidents_linked_to(
        &self,
        kind: &str,
        ref_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT incident_id FROM incident_links WHERE kind = $1 AND ref_id = $2 \
             ORDER BY incident_id",
        )
        .bind(kind)
        .bind(ref_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read links to incident"))
    }

    /// Appends one entry (and touches `updated_at`). False for an unknown incident.
    pub async fn append_timeline(
        &self,
        id: &str,
        entry: &NewTimelineEntry,
    ) -> Result<bool, StoreError> {
        self.change_incident(id, &IncidentChange::Nothing, entry)
            .await
    }

    /// Stored timeline entries after `after`, oldest first.
    pub async fn incident_timeline(
        &self,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, incident_id, at_ms, actor, kind, summary, detail FROM incident_timeline \
             WHERE incident_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read incident timeline"))?;
        rows.iter()
            .map(|row| {
                let get = || db_err("read incident timeline entry");
                let detail: String = row.try_get("detail").map_err(get())?;
                Ok(TimelineEntry {
                    id: row.try_get("id").map_err(get())?,
                    incident_id: row.try_get("incident_id").map_err(get())?,
                    at_ms: row.try_get("at_ms").map_err(get())?,
                    actor: row.try_get("actor").map_err(get())?,
                    kind: row.try_get("kind").map_err(get())?,
                    summary: row.try_get("summary").map_err(get())?,
                    detail: serde_json::from_str(&detail).map_err(|source| StoreError::Json {
                        what: "timeline detail",
                        source,
                    })?,
                })
            })
            .collect()
    }

    /// Stages entered whose playbook has not been handled, oldest first.
    pub async fn pending_stage_entries(&self, limit: i64) -> Result<Vec<StageEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STAGE_COLUMNS} FROM stage_entries WHERE playbook_state = $1 \
             ORDER BY entered_at, id LIMIT $2"
        ))
        .bind(PLAYBOOK_PENDING)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read pending stage entries"))?;
        rows.iter().map(stage_entry_from_row).collect()
    }

    /// Every stage an incident entered, oldest first.
    pub async fn stage_entries(&self, incident_id: &str) -> Result<Vec<StageEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STAGE_COLUMNS} FROM stage_entries WHERE incident_id = $1 \
             ORDER BY entered_at, id"
        ))
        .bind(incident_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read stage entries"))?;
        rows.iter().map(stage_entry_from_row).collect()
    }

    /// Records how a stage entry's playbook went (`state` e.g. `done`). False if it was
    /// already marked so.
    pub async fn set_stage_entry_state(
        &self,
        id: &str,
        state: &str,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE stage_entries SET playbook_state = $2, playbook_detail = $3 \
             WHERE id = $1 AND playbook_state <> $2",
        )
        .bind(id)
        .bind(state)
        .bind(json_text("playbook detail", detail)?)
        .execute(self.pool())
        .await
        .map_err(db_err("update stage entry"))?;
        Ok(touched(&result))
    }
}

fn incident_from_row(row: &AnyRow) -> Result<IncidentRecord, StoreError> {
    let get = || db_err("read incident");
    let labels: String = row.try_get("labels").map_err(get())?;
    Ok(IncidentRecord {
        id: row.try_get("id").map_err(get())?,
        title: row.try_get("title").map_err(get())?,
        kind: row.try_get("kind").map_err(get())?,
        severity: parse_stored(
            "incident severity",
            &row.try_get::<String, _>("severity").map_err(get())?,
        )?,
        stage: parse_stored(
            "incident stage",
            &row.try_get::<String, _>("stage").map_err(get())?,
        )?,
        description: row.try_get("description").map_err(get())?,
        assignee: row.try_get("assignee").map_err(get())?,
        tier: row.try_get("tier").map_err(get())?,
        escalated_to: row.try_get("escalated_to").map_err(get())?,
        labels: serde_json::from_str(&labels).map_err(|source| StoreError::Json {
            what: "incident labels",
            source,
        })?,
        fingerprint: row.try_get("fingerprint").map_err(get())?,
        alert_count: row.try_get("alert_count").map_err(get())?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        created_by: row.try_get("created_by").map_err(get())?,
        updated_at_ms: row.try_get("updated_at").map_err(get())?,
        closed_at_ms: row.try_get("closed_at").map_err(get())?,
    })
}

fn link_from_row(row: &AnyRow) -> Result<IncidentLink, StoreError> {
    let get = || db_err("read incident link");
    Ok(IncidentLink {
        incident_id: row.try_get("incident_id").map_err(get())?,
        kind: parse_stored(
            "incident link kind",
            &row.try_get::<String, _>("kind").map_err(get())?,
        )?,
        ref_id: row.try_get("ref_id").map_err(get())?,
        linked_at_ms: row.try_get("linked_at").map_err(get())?,
        linked_by: row.try_get("linked_by").map_err(get())?,
    })
}

fn stage_entry_from_row(row: &AnyRow) -> Result<StageEntry, StoreError> {
    let get = || db_err("read stage entry");
    Ok(StageEntry {
        id: row.try_get("id").map_err(get())?,
        incident_id: row.try_get("incident_id").map_err(get())?,
        stage: parse_stored(
            "stage entry stage",
            &row.try_get::<String, _>("stage").map_err(get())?,
        )?,
        entered_at_ms: row.try_get("entered_at").map_err(get())?,
        entered_by: row.try_get("entered_by").map_err(get())?,
        playbook_state: row.try_get("playbook_state").map_err(get())?,
        playbook_detail: row
            .try_get::<Option<String>, _>("playbook_detail")
            .map_err(get())?
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{backend_tests, enrolled_agent};

    fn entry(at_ms: i64, kind: &str) -> NewTimelineEntry {
        NewTimelineEntry {
            at_ms,
            actor: "alice".into(),
            kind: kind.into(),
            summary: kind.into(),
            detail: serde_json::json!({}),
        }
    }

    fn incident(id: &str, fingerprint: Option<&str>) -> NewIncident {
        NewIncident {
            id: id.into(),
            title: "t".into(),
            kind: "malware".into(),
            severity: "high".into(),
            stage: "alert".into(),
            description: String::new(),
            assignee: None,
            labels: vec!["x".into()],
            fingerprint: fingerprint.map(str::to_owned),
            alert_count: 1,
            created_at_ms: 1_000,
            created_by: "alice".into(),
        }
    }

    async fn one_open_incident_per_fingerprint(store: &Store) {
        enrolled_agent(store, "a1", 500).await;
        let agent = "a1".to_owned();
        let created = store
            .create_incident(
                &incident("i1", Some("fp")),
                std::slice::from_ref(&agent),
                &[entry(1_000, "created")],
                "s1",
            )
            .await
            .unwrap();
        assert_eq!(created, CreateOutcome::Created);
        let again = store
            .create_incident(
                &incident("i2", Some("fp")),
                &[],
                &[entry(1_001, "created")],
                "s2",
            )
            .await
            .unwrap();
        assert_eq!(again, CreateOutcome::FingerprintTaken("i1".into()));
        assert!(store.get_incident("i2").await.unwrap().is_none());
        assert_eq!(store.incident_hosts("i1").await.unwrap().len(), 1);

        // Closing frees the fingerprint; the closed incident keeps it for the record.
        let close = IncidentChange::Stage {
            from: "alert".into(),
            to: "closed".into(),
            closes: true,
            entry_id: "s3".into(),
        };
        assert!(store
            .change_incident("i1", &close, &entry(2_000, "stage"))
            .await
            .unwrap());
        let closed = store.get_incident("i1").await.unwrap().unwrap();
        assert_eq!(closed.stage, "closed");
        assert_eq!(closed.closed_at_ms, Some(2_000));
        assert_eq!(closed.fingerprint.as_deref(), Some("fp"));
        let reopened = store
            .create_incident(
                &incident("i3", Some("fp")),
                &[],
                &[entry(3_000, "created")],
                "s4",
            )
            .await
            .unwrap();
        assert_eq!(reopened, CreateOutcome::Created);
    }

    async fn stage_moves_are_conditional_and_recorded(store: &Store) {
        store
            .create_incident(&incident("i1", None), &[], &[entry(1_000, "created")], "s1")
            .await
            .unwrap();
        let stale = IncidentChange::Stage {
            from: "assessment".into(),
            to: "collection".into(),
            closes: false,
            entry_id: "s2".into(),
        };
        assert!(!store
            .change_incident("i1", &stale, &entry(1_100, "stage"))
            .await
            .unwrap());
        let fresh = IncidentChange::Stage {
            from: "alert".into(),
            to: "collection".into(),
            closes: false,
            entry_id: "s2".into(),
        };
        assert!(store
            .change_incident("i1", &fresh, &entry(1_200, "stage"))
            .await
            .unwrap());
        let timeline = store.incident_timeline("i1", 0, 100).await.unwrap();
        let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["created", "stage"]);
        let stages: Vec<String> = store
            .pending_stage_entries(10)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.stage.to_string())
            .collect();
        assert_eq!(stages, ["alert", "collection"]);
        assert!(store
            .set_stage_entry_state("s2", PLAYBOOK_DONE, &serde_json::json!({"ran": 1}))
            .await
            .unwrap());
        assert!(!store
            .set_stage_entry_state("s2", PLAYBOOK_DONE, &serde_json::json!({}))
            .await
            .unwrap());
        assert_eq!(store.pending_stage_entries(10).await.unwrap().len(), 1);
    }

    async fn links_and_hosts_are_added_once(store: &Store) {
        enrolled_agent(store, "a1", 500).await;
        enrolled_agent(store, "a2", 500).await;
        let (a, b) = ("a1".to_owned(), "a2".to_owned());
        store
            .create_incident(
                &incident("i1", None),
                std::slice::from_ref(&a),
                &[entry(1_000, "created")],
                "s1",
            )
            .await
            .unwrap();
        let added = store
            .add_incident_hosts(
                "i1",
                &[a.clone(), b.clone(), b.clone()],
                &entry(1_100, "hosts"),
            )
            .await
            .unwrap();
        assert_eq!(added, vec![b]);
        // The entry names only the host newly added.
        let hosts_entry = store.incident_timeline("i1", 0, 100).await.unwrap();
        assert_eq!(hosts_entry[1].summary, "hosts added: a2");
        let link = IncidentLink {
            incident_id: "i1".into(),
            kind: cordon_api::incidents::LinkKind::Task,
            ref_id: "t1".into(),
            linked_at_ms: 1_200,
            linked_by: "alice".into(),
        };
        assert!(store
            .link_to_incident(&link, &entry(1_200, "task"))
            .await
            .unwrap());
        assert!(!store
            .link_to_incident(&link, &entry(1_300, "task"))
            .await
            .unwrap());
        assert_eq!(store.incident_links("i1").await.unwrap(), vec![link]);
        assert_eq!(
            store.incidents_linked_to("task", "t1").await.unwrap(),
            vec!["i1".to_owned()]
        );
        let filter = IncidentFilter {
            agent_id: Some(a),
            open_only: true,
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.list_incidents(&filter).await.unwrap().len(), 1);
        // created, hosts, task: the refused second link wrote nothing.
        assert_eq!(
            store.incident_timeline("i1", 0, 100).await.unwrap().len(),
            3
        );
    }

    backend_tests!(
        one_open_incident_per_fingerprint,
        stage_moves_are_conditional_and_recorded,
        links_and_hosts_are_added_once,
    );
}

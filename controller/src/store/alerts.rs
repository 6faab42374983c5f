//! Alerts taken in by `POST /api/v1/alerts`: each one stored with the incident it opened or
//! joined, in the same transaction as that incident change, so there is never an alert row
//! without its incident change, nor an incident change without its alert row.
//!
//! Which of the two happens is decided inside the transaction: an open incident holding the
//! alert's fingerprint is joined (`alert_count` + 1, hosts added, the alert's timeline entry);
//! otherwise a new incident is opened with the alert as its first timeline entry after
//! `created`. Two controllers racing on the same new fingerprint meet at the unique
//! open-fingerprint index: the loser's insert fails, and it starts again and joins.

use serde::Deserialize;
use sqlx::{any::AnyRow, Row};

use super::{
    db_err,
    incidents::{
        add_hosts, apply_change, insert_incident_parts, insert_incident_row, open_by_fingerprint,
    },
    IncidentChange, NewIncident, NewTimelineEntry, Store, StoreError,
};
pub use cordon_api::alerts::AlertRecord;

/// How many times an alert is tried again after losing a race for a new fingerprint.
const RACE_RETRIES: usize = 3;
/// Most agents one host-matching query returns.
pub const MAX_CANDIDATES: i64 = 100;
/// Most of an alert's addresses looked up.
pub const MAX_CANDIDATE_IPS: usize = 8;

/// An agent that may be an alert's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCandidate {
    pub id: String,
    pub hostname: String,
    /// The interface addresses its inventory reports.
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
struct Addresses {
    #[serde(default)]
    addresses: Vec<String>,
}

/// An alert to record.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub id: String,
    pub received_at_ms: i64,
    /// `generic`, `wazuh` or `ecs`.
    pub source: String,
    pub fingerprint: String,
    /// Who sent it (the API token's name).
    pub actor: String,
    /// The sender's own id for the alert (Wazuh `id`, `kibana.alert.uuid`), if it had one.
    pub external_id: Option<String>,
    /// The agent the alert's host was matched to.
    pub agent_id: Option<String>,
    /// The alert as mapped (the timeline entry's detail).
    pub detail: serde_json::Value,
    /// The payload exactly as received.
    pub raw: String,
    pub raw_sha256: String,
    /// `source:rule`, what incidents sharing a rule are found by.
    pub rule: String,
}

/// What recording an alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    /// It opened this incident.
    Opened(String),
    /// It joined this open incident; these hosts were newly added to it.
    Joined {
        incident_id: String,
        added: Vec<String>,
    },
}

/// The alert's incident, if it opens one: everything [`Store::create_incident`] writes.
#[derive(Debug, Clone)]
pub struct AlertIncident<'a> {
    /// Its `fingerprint` must be the alert's.
    pub incident: &'a NewIncident,
    pub hosts: &'a [String],
    /// `created` and the alert's entry.
    pub entries: &'a [NewTimelineEntry],
    pub stage_entry_id: &'a str,
}

/// The values an alert named, recorded on the incident it opens or joins (see
/// [`super::observables`]).
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub items: &'a [super::NewObservable],
    pub sighting: &'a super::NewSighting,
}

pub const OPENED: &str = "opened";
pub const JOINED: &str = "joined";

const COLUMNS: &str = "id, received_at, source, fingerprint, incident_id, outcome, actor, \
    external_id, agent_id, detail, raw_sha256";

impl Store {
    /// Records `alert`: joins the open incident holding its fingerprint (with `entry` on its
    /// timeline and `hosts` added, noted by `hosts_entry`), or opens `open`; with the alert
    /// row, all in one transaction.
    pub async fn record_alert(
        &self,
        alert: &NewAlert,
        entry: &NewTimelineEntry,
        hosts_entry: &NewTimelineEntry,
        open: &AlertIncident<'_>,
        observed: &Observed<'_>,
    ) -> Result<AlertOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.begin_write("begin recording an alert").await?;
            let outcome = match open_by_fingerprint(&mut tx, &alert.fingerprint).await? {
                Some(incident_id) => {
                    if !apply_change(&mut tx, &incident_id, &IncidentChange::AlertJoined, entry)
                        .await?
                    {
                        return Err(StoreError::InvalidData {
                            what: "incident",
                            detail: format!("incident {incident_id} vanished while joined"),
                        });
                    }
                    let added = add_hosts(&mut tx, &incident_id, open.hosts, hosts_entry).await?;
                    AlertOutcome::Joined { incident_id, added }
                }
                None => {
                    if let Err(e) = insert_incident_row(&mut tx, open.incident).await? {
                        // Another writer opened an incident for this fingerprint since we
                        // looked (PostgreSQL; SQLite's write lock rules that out): start again
                        // and join it. The failed transaction is rolled back on drop.
                        drop(tx);
                        if attempt <= RACE_RETRIES
                            && self
                                .open_incident_by_fingerprint(&alert.fingerprint)
                                .await?
                                .is_some()
                        {
                            continue;
                        }
                        return Err(db_err("insert incident for an alert")(e));
                    }
                    insert_incident_parts(
                        &mut tx,
                        open.incident,
                        open.hosts,
                        open.entries,
                        open.stage_entry_id,
                    )
                    .await?;
                    AlertOutcome::Opened(open.incident.id.clone())
                }
            };
            let (incident_id, label) = match &outcome {
                AlertOutcome::Opened(id) => (id, OPENED),
                AlertOutcome::Joined { incident_id, .. } => (incident_id, JOINED),
            };
            insert_alert(&mut tx, alert, incident_id, label).await?;
            super::observables::record(&mut tx, incident_id, observed.items, observed.sighting)
                .await?;
            tx.commit().await.map_err(db_err("commit an alert"))?;
            return Ok(outcome);
        }
    }

    /// Agents not revoked that may be the host an alert names: host name equal (ignoring
    /// case) to `hostname` or to its short name, or starting with `hostname.`; or reporting
    /// one of `ips` (canonical text) among their addresses. A generous first cut (at most
    /// [`MAX_CANDIDATES`] per query): the caller decides which really match.
    pub async fn alert_host_candidates(
        &self,
        hostname: Option<&str>,
        ips: &[String],
    ) -> Result<Vec<HostCandidate>, StoreError> {
        let mut rows = Vec::new();
        if let Some(name) = hostname.map(str::to_lowercase).filter(|n| !n.is_empty()) {
            let short = name.split('.').next().unwrap_or_default().to_owned();
            let (short, longer) = if short == name {
                (String::new(), format!("{name}.%"))
            } else {
                (short, String::new())
            };
            rows.extend(
                sqlx::query(
                    "SELECT id, hostname, inventory FROM agents WHERE revoked_at IS NULL AND \
                     (LOWER(hostname) = $1 OR ($2 <> '' AND LOWER(hostname) = $2) \
                     OR ($3 <> '' AND LOWER(hostname) LIKE $3)) ORDER BY id LIMIT $4",
                )
                .bind(&name)
                .bind(short)
                .bind(longer)
                .bind(MAX_CANDIDATES)
                .fetch_all(self.pool())
                .await
                .map_err(db_err("find agents by host name"))?,
            );
        }
        for ip in ips.iter().take(MAX_CANDIDATE_IPS) {
            rows.extend(
                sqlx::query(
                    "SELECT id, hostname, inventory FROM agents WHERE revoked_at IS NULL AND \
                     inventory LIKE $1 ORDER BY id LIMIT $2",
                )
                .bind(format!("%\"{ip}\"%"))
                .bind(MAX_CANDIDATES)
                .fetch_all(self.pool())
                .await
                .map_err(db_err("find agents by address"))?,
            );
        }
        let mut out: Vec<HostCandidate> = Vec::new();
        for row in &rows {
            let get = || db_err("read agent");
            let id: String = row.try_get("id").map_err(get())?;
            if out.iter().any(|c| c.id == id) {
                continue;
            }
            let inventory: Option<String> = row.try_get("inventory").map_err(get())?;
            out.push(HostCandidate {
                id,
                hostname: row.try_get("hostname").map_err(get())?,
                // Only the addresses are wanted; an inventory that will not decode has none.
                addresses: inventory
                    .and_then(|json| serde_json::from_str::<Addresses>(&json).ok())
                    .map(|a| a.addresses)
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    pub async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM alerts WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read alert"))?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// The payload of alert `id` exactly as received.
    pub async fn alert_raw(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT raw FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read alert payload"))
    }

    /// Alerts, newest first; only those of `incident_id` when given.
    pub async fn list_alerts(
        &self,
        incident_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM alerts WHERE ($1 = '' OR incident_id = $1) \
             ORDER BY received_at DESC, id LIMIT $2"
        ))
        .bind(incident_id.unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }
}

async fn insert_alert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    alert: &NewAlert,
    incident_id: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    let detail = serde_json::to_string(&alert.detail).map_err(|source| StoreError::Json {
        what: "alert detail",
        source,
    })?;
    sqlx::query(
        "INSERT INTO alerts (id, received_at, source, fingerprint, incident_id, outcome, actor, \
         external_id, agent_id, detail, raw, raw_sha256, rule) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&alert.id)
    .bind(alert.received_at_ms)
    .bind(&alert.source)
    .bind(&alert.fingerprint)
    .bind(incident_id)
    .bind(outcome)
    .bind(&alert.actor)
    .bind(alert.external_id.clone())
    .bind(alert.agent_id.clone())
    .bind(detail)
    .bind(&alert.raw)
    .bind(&alert.raw_sha256)
    .bind(&alert.rule)
    .execute(&mut **tx)
    .await
    .map_err(db_err("insert alert"))?;
    Ok(())
}

fn alert_from_row(row: &AnyRow) -> Result<AlertRecord, StoreError> {
    let get = || db_err("read alert");
    let detail: String = row.try_get("detail").map_err(get())?;
    Ok(AlertRecord {
        id: row.try_get("id").map_err(get())?,
        received_at_ms: row.try_get("received_at").map_err(get())?,
        source: row.try_get("source").map_err(get())?,
        fingerprint: row.try_get("fingerprint").map_err(get())?,
        incident_id: row.try_get("incident_id").map_err(get())?,
        outcome: row.try_get("outcome").map_err(get())?,
        actor: row.try_get("actor").map_err(get())?,
        external_id: row.try_get("external_id").map_err(get())?,
        agent_id: row.try_get("agent_id").map_err(get())?,
        detail: serde_json::from_str(&detail).map_err(|source| StoreError::Json {
            what: "alert detail",
            source,
        })?,
        raw_sha256: row.try_get("raw_sha256").map_err(get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{backend_tests, enrolled_agent};

    fn entry(kind: &str) -> NewTimelineEntry {
        NewTimelineEntry {
            at_ms: 1_000,
            actor: "siem".into(),
            kind: kind.into(),
            summary: kind.into(),
            detail: serde_json::json!({"k": kind}),
        }
    }

    fn incident(id: &str, fingerprint: &str) -> NewIncident {
        NewIncident {
            id: id.into(),
            title: "t".into(),
            kind: "malware".into(),
            severity: "high".into(),
            stage: "alert".into(),
            description: String::new(),
            assignee: None,
            labels: vec![],
            fingerprint: Some(fingerprint.into()),
            alert_count: 1,
            created_at_ms: 1_000,
            created_by: "siem".into(),
        }
    }

    fn alert(id: &str, fingerprint: &str) -> NewAlert {
        NewAlert {
            id: id.into(),
            received_at_ms: 1_000,
            source: "wazuh".into(),
            fingerprint: fingerprint.into(),
            actor: "siem".into(),
            external_id: Some("ext".into()),
            agent_id: None,
            detail: serde_json::json!({"alert_id": id}),
            raw: "{\"rule\": {}}".into(),
            raw_sha256: "00".repeat(32),
            rule: "generic:r".into(),
        }
    }

    /// Records alert `alert_id` with `fingerprint`, opening incident `incident_id` (with
    /// `hosts`) if none is open for it.
    async fn record(
        store: &Store,
        alert_id: &str,
        fingerprint: &str,
        incident_id: &str,
        hosts: &[String],
    ) -> Result<AlertOutcome, StoreError> {
        let new = incident(incident_id, fingerprint);
        let entries = [entry("created"), entry("alert")];
        let stage = format!("stage-{incident_id}");
        store
            .record_alert(
                &alert(alert_id, fingerprint),
                &entry("alert"),
                &entry("hosts"),
                &AlertIncident {
                    incident: &new,
                    hosts,
                    entries: &entries,
                    stage_entry_id: &stage,
                },
                &Observed {
                    items: &[],
                    sighting: &crate::store::NewSighting {
                        at_ms: 1,
                        source: cordon_api::observables::SightingSource::Alert,
                        ref_id: Some(alert_id.into()),
                        agent_id: None,
                        actor: "siem".into(),
                    },
                },
            )
            .await
    }

    async fn an_alert_opens_then_joins(store: &Store) {
        enrolled_agent(store, "a1", 500).await;
        enrolled_agent(store, "a2", 500).await;
        let outcome = record(store, "al1", "fp", "i1", &["a1".to_owned()])
            .await
            .unwrap();
        assert_eq!(outcome, AlertOutcome::Opened("i1".into()));
        let outcome = record(
            store,
            "al2",
            "fp",
            "i2",
            &["a1".to_owned(), "a2".to_owned()],
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            AlertOutcome::Joined {
                incident_id: "i1".into(),
                added: vec!["a2".into()]
            }
        );
        assert!(store.get_incident("i2").await.unwrap().is_none());
        let i1 = store.get_incident("i1").await.unwrap().unwrap();
        assert_eq!(i1.alert_count, 2);
        let kinds: Vec<String> = store
            .incident_timeline("i1", 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["created", "alert", "alert", "hosts"]);
        let alerts = store.list_alerts(Some("i1"), 10).await.unwrap();
        assert_eq!(alerts.len(), 2);
        let first = store.get_alert("al1").await.unwrap().unwrap();
        assert_eq!(first.outcome, OPENED);
        assert_eq!(first.incident_id, "i1");
        assert_eq!(first.detail, serde_json::json!({"alert_id": "al1"}));
        assert_eq!(
            store.get_alert("al2").await.unwrap().unwrap().outcome,
            JOINED
        );
        assert_eq!(
            store.alert_raw("al1").await.unwrap().as_deref(),
            Some("{\"rule\": {}}")
        );
        assert!(store
            .list_alerts(Some("nope"), 10)
            .await
            .unwrap()
            .is_empty());

        // Once closed, the fingerprint opens a new incident.
        let close = IncidentChange::Stage {
            from: "alert".into(),
            to: "closed".into(),
            closes: true,
            entry_id: "s-close".into(),
        };
        assert!(store
            .change_incident("i1", &close, &entry("stage"))
            .await
            .unwrap());
        let outcome = record(store, "al3", "fp", "i3", &[]).await.unwrap();
        assert_eq!(outcome, AlertOutcome::Opened("i3".into()));
    }

    async fn nothing_is_half_written(store: &Store) {
        record(store, "al1", "fp", "i1", &[]).await.unwrap();
        // The same alert id again: the alert row fails, so the join is undone too.
        assert!(record(store, "al1", "fp", "i2", &[]).await.is_err());
        let i1 = store.get_incident("i1").await.unwrap().unwrap();
        assert_eq!(i1.alert_count, 1);
        assert_eq!(
            store.incident_timeline("i1", 0, 100).await.unwrap().len(),
            2
        );
        // And a new incident is not left behind without its alert.
        assert!(record(store, "al1", "other", "i3", &[]).await.is_err());
        assert!(store.get_incident("i3").await.unwrap().is_none());
        assert!(store.stage_entries("i3").await.unwrap().is_empty());
        assert_eq!(store.list_alerts(None, 10).await.unwrap().len(), 1);
    }

    async fn racing_alerts_share_one_incident(store: &Store) {
        let (a, b, c, d) = tokio::join!(
            record(store, "al1", "fp", "i1", &[]),
            record(store, "al2", "fp", "i2", &[]),
            record(store, "al3", "fp", "i3", &[]),
            record(store, "al4", "fp", "i4", &[]),
        );
        let outcomes = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
        let opened = outcomes
            .iter()
            .filter(|o| matches!(o, AlertOutcome::Opened(_)))
            .count();
        assert_eq!(opened, 1, "{outcomes:?}");
        let open = store
            .open_incident_by_fingerprint("fp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .get_incident(&open)
                .await
                .unwrap()
                .unwrap()
                .alert_count,
            4
        );
        assert_eq!(store.list_alerts(Some(&open), 10).await.unwrap().len(), 4);
    }

    async fn host_candidates_by_name_and_address(store: &Store) {
        use cordon_protocol::inventory::Inventory;
        for (id, hostname, address) in [
            ("a1", "web-01.corp.example", "10.0.0.5"),
            ("a2", "WEB-02", "10.0.0.6"),
            ("a3", "db-01", "fd00::7"),
        ] {
            enrolled_agent(store, id, 500).await;
            let inventory = Inventory {
                hostname: hostname.into(),
                addresses: vec![address.into()],
                ..Default::default()
            };
            store.agent_connected(id, &inventory, 600).await.unwrap();
        }
        let ids = |found: Vec<HostCandidate>| -> Vec<String> {
            found.into_iter().map(|c| c.id).collect()
        };
        let found = store
            .alert_host_candidates(Some("web-01"), &[])
            .await
            .unwrap();
        assert_eq!(ids(found), ["a1"]);
        let found = store
            .alert_host_candidates(Some("web-02.corp.example"), &[])
            .await
            .unwrap();
        assert_eq!(ids(found), ["a2"]);
        let found = store
            .alert_host_candidates(None, &["fd00::7".to_owned()])
            .await
            .unwrap();
        assert_eq!(found[0].addresses, ["fd00::7"]);
        assert_eq!(ids(found), ["a3"]);
        store.revoke_agent("a3", 700).await.unwrap();
        assert!(store
            .alert_host_candidates(Some("db-01"), &["fd00::7".to_owned()])
            .await
            .unwrap()
            .is_empty());
    }

    backend_tests!(
        an_alert_opens_then_joins,
        nothing_is_half_written,
        racing_alerts_share_one_incident,
        host_candidates_by_name_and_address,
    );
}

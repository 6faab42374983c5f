//! Observables of incidents and their sightings.
//!
//! One row per (incident, type, value), keyed by `value_key` (SHA-256 of type and value: a
//! command line may be far longer than an index entry may be), and one row per sighting.
//! `sightings` counts them so a view need not. Values arrive normalised
//! ([`cordon_api::observables::ObservableType::normalize`]).

use std::collections::HashMap;

use cordon_api::observables::{
    ObservableType, ObservableView, SightingSource, SightingView, Verdict, MAX_PER_INCIDENT,
    MAX_SIGHTINGS_SHOWN,
};
use sha2::{Digest, Sha256};
use sqlx::{any::AnyRow, Any, Row, Transaction};

use super::{
    db_err, incidents::writes::apply_change, parse_stored, touched, IncidentChange,
    NewTimelineEntry, Store, StoreError,
};

/// A value to record on an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObservable {
    pub kind: ObservableType,
    /// Normalised.
    pub value: String,
    /// Set on a new observable (else `unknown`) and, when given, on an existing one.
    pub verdict: Option<Verdict>,
    pub ignore_for_similarity: Option<bool>,
}

/// Where and when the values of one write were seen.
#[derive(Debug, Clone)]
pub struct NewSighting {
    pub at_ms: i64,
    pub source: SightingSource,
    pub ref_id: Option<String>,
    pub agent_id: Option<String>,
    pub actor: String,
}

/// What recording one value did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: String,
    pub created: bool,
}

/// The key of a value within its incident.
pub fn value_key(kind: ObservableType, value: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_str().as_bytes());
    hash.update([0]);
    hash.update(value.as_bytes());
    hex::encode(hash.finalize())
}

/// Records `items` on `incident_id` inside `tx`, each with one sighting. An incident already
/// holding [`MAX_PER_INCIDENT`] observables takes sightings of those it has but no new ones
/// (they are left out of the answer).
pub(crate) async fn record(
    tx: &mut Transaction<'static, Any>,
    incident_id: &str,
    items: &[NewObservable],
    sighting: &NewSighting,
) -> Result<Vec<Recorded>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    if items.is_empty() {
        return Ok(out);
    }
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM observables WHERE incident_id = $1")
        .bind(incident_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err("count observables"))?;
    let mut room = MAX_PER_INCIDENT.saturating_sub(held);
    for item in items {
        let key = value_key(item.kind, &item.value);
        let mut existing = find(tx, incident_id, &key).await?;
        let mut created = false;
        if existing.is_none() && room > 0 {
            // A writer on another connection may add the same value meanwhile (PostgreSQL):
            // then this insert does nothing, and the value is theirs to share.
            let id = uuid::Uuid::new_v4().to_string();
            let inserted = sqlx::query(
                "INSERT INTO observables (id, incident_id, kind, value, value_key, verdict, \
                 ignored, added_by, added_at, updated_at, sightings) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1) \
                 ON CONFLICT (incident_id, value_key) DO NOTHING",
            )
            .bind(&id)
            .bind(incident_id)
            .bind(item.kind.as_str())
            .bind(&item.value)
            .bind(&key)
            .bind(item.verdict.unwrap_or_default().as_str())
            .bind(i64::from(item.ignore_for_similarity.unwrap_or(false)))
            .bind(&sighting.actor)
            .bind(sighting.at_ms)
            .execute(&mut **tx)
            .await
            .map_err(db_err("insert observable"))?;
            if touched(&inserted) {
                room -= 1;
                created = true;
                existing = Some(id);
            } else {
                existing = find(tx, incident_id, &key).await?;
            }
        }
        let Some(id) = existing else {
            // No room for a new one.
            continue;
        };
        if !created {
            let updated = sqlx::query(
                "UPDATE observables SET sightings = sightings + 1, updated_at = $2, \
                 verdict = COALESCE($3, verdict), ignored = COALESCE($4, ignored) \
                 WHERE id = $1",
            )
            .bind(&id)
            .bind(sighting.at_ms)
            .bind(item.verdict.map(Verdict::as_str))
            .bind(item.ignore_for_similarity.map(i64::from))
            .execute(&mut **tx)
            .await
            .map_err(db_err("update observable"))?;
            if !touched(&updated) {
                // Removed meanwhile: nothing to add a sighting to.
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO observable_sightings (id, observable_id, at, source, ref_id, agent_id, \
             actor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&id)
        .bind(sighting.at_ms)
        .bind(sighting.source.as_str())
        .bind(&sighting.ref_id)
        .bind(&sighting.agent_id)
        .bind(&sighting.actor)
        .execute(&mut **tx)
        .await
        .map_err(db_err("insert sighting"))?;
        out.push(Recorded { id, created });
    }
    Ok(out)
}

async fn find(
    tx: &mut Transaction<'static, Any>,
    incident_id: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT id FROM observables WHERE incident_id = $1 AND value_key = $2")
        .bind(incident_id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err("find observable"))
}

const COLUMNS: &str = "id, incident_id, kind, value, verdict, ignored, added_by, added_at, \
    updated_at, sightings";

impl Store {
    /// Records `items` on `incident_id` with one sighting each, and `entry` on its timeline,
    /// in one transaction. `None` for an unknown incident.
    pub async fn record_observables(
        &self,
        incident_id: &str,
        items: &[NewObservable],
        sighting: &NewSighting,
        entry: &NewTimelineEntry,
    ) -> Result<Option<Vec<Recorded>>, StoreError> {
        let mut tx = self.begin_write("begin recording observables").await?;
        if !apply_change(&mut tx, incident_id, &IncidentChange::Nothing, entry).await? {
            return Ok(None);
        }
        let recorded = record(&mut tx, incident_id, items, sighting).await?;
        if recorded.is_empty() && !items.is_empty() {
            // Nothing was recorded (the incident is full): its entry is not kept either.
            tx.rollback()
                .await
                .map_err(db_err("roll back recording observables"))?;
            return Ok(Some(recorded));
        }
        tx.commit()
            .await
            .map_err(db_err("commit recording observables"))?;
        Ok(Some(recorded))
    }

    /// An incident's observables, oldest first, each with its newest sightings.
    pub async fn incident_observables(
        &self,
        incident_id: &str,
    ) -> Result<Vec<ObservableView>, StoreError> {
        self.observables_where("incident_id = $1", &[incident_id])
            .await
    }

    /// One observable of an incident, with its newest sightings.
    pub async fn get_observable(
        &self,
        incident_id: &str,
        id: &str,
    ) -> Result<Option<ObservableView>, StoreError> {
        Ok(self
            .observables_where("incident_id = $1 AND id = $2", &[incident_id, id])
            .await?
            .into_iter()
            .next())
    }

    /// The observables `filter` selects (over `observables`, binding `binds`), each with at
    /// most [`MAX_SIGHTINGS_SHOWN`] of its newest sightings, cut in SQL.
    async fn observables_where(
        &self,
        filter: &str,
        binds: &[&str],
    ) -> Result<Vec<ObservableView>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM observables WHERE {filter} ORDER BY added_at, id");
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(db_err("read observables"))?;
        let mut views = rows
            .iter()
            .map(observable_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let sql = format!(
            "SELECT observable_id, at, source, ref_id, agent_id, actor FROM ( \
             SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.observable_id \
             ORDER BY s.at DESC, s.id) AS n FROM observable_sightings s \
             WHERE s.observable_id IN (SELECT id FROM observables WHERE {filter})) w \
             WHERE n <= {MAX_SIGHTINGS_SHOWN} ORDER BY at, observable_id"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let sightings = query
            .fetch_all(self.pool())
            .await
            .map_err(db_err("read sightings"))?;
        let mut by_observable: HashMap<String, Vec<SightingView>> = HashMap::new();
        for row in &sightings {
            let id: String = row.try_get("observable_id").map_err(get())?;
            by_observable
                .entry(id)
                .or_default()
                .push(sighting_from_row(row)?);
        }
        for view in &mut views {
            view.sightings = by_observable.remove(&view.id).unwrap_or_default();
        }
        Ok(views)
    }

    /// Sets the verdict and the ignore flag (those given), with `entry` on the incident's
    /// timeline. False for an unknown observable.
    pub async fn update_observable(
        &self,
        incident_id: &str,
        id: &str,
        verdict: Option<Verdict>,
        ignore_for_similarity: Option<bool>,
        entry: &NewTimelineEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin changing an observable").await?;
        // The incident row first, as every other writer of its observables takes it.
        if !apply_change(&mut tx, incident_id, &IncidentChange::Nothing, entry).await? {
            return Ok(false);
        }
        let result = sqlx::query(
            "UPDATE observables SET verdict = COALESCE($3, verdict), \
             ignored = COALESCE($4, ignored), updated_at = $5 \
             WHERE incident_id = $1 AND id = $2",
        )
        .bind(incident_id)
        .bind(id)
        .bind(verdict.map(Verdict::as_str))
        .bind(ignore_for_similarity.map(i64::from))
        .bind(entry.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err("update observable"))?;
        if !touched(&result) {
            return Ok(false);
        }
        tx.commit()
            .await
            .map_err(db_err("commit changing an observable"))?;
        Ok(true)
    }

    /// Removes an observable and its sightings, with `entry` on the incident's timeline. False
    /// for an unknown one.
    pub async fn remove_observable(
        &self,
        incident_id: &str,
        id: &str,
        entry: &NewTimelineEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin removing an observable").await?;
        if !apply_change(&mut tx, incident_id, &IncidentChange::Nothing, entry).await? {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM observable_sightings WHERE observable_id IN \
             (SELECT id FROM observables WHERE incident_id = $1 AND id = $2)",
        )
        .bind(incident_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("remove sightings"))?;
        let result = sqlx::query("DELETE FROM observables WHERE incident_id = $1 AND id = $2")
            .bind(incident_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("remove observable"))?;
        if !touched(&result) {
            return Ok(false);
        }
        tx.commit()
            .await
            .map_err(db_err("commit removing an observable"))?;
        Ok(true)
    }
}

fn get() -> impl FnOnce(sqlx::Error) -> StoreError {
    db_err("read observable row")
}

fn observable_from_row(row: &AnyRow) -> Result<ObservableView, StoreError> {
    let kind: String = row.try_get("kind").map_err(get())?;
    let verdict: String = row.try_get("verdict").map_err(get())?;
    let ignored: i64 = row.try_get("ignored").map_err(get())?;
    Ok(ObservableView {
        id: row.try_get("id").map_err(get())?,
        incident_id: row.try_get("incident_id").map_err(get())?,
        kind: parse_stored("observable type", &kind)?,
        value: row.try_get("value").map_err(get())?,
        verdict: parse_stored("observable verdict", &verdict)?,
        ignore_for_similarity: ignored != 0,
        added_by: row.try_get("added_by").map_err(get())?,
        added_at_ms: row.try_get("added_at").map_err(get())?,
        updated_at_ms: row.try_get("updated_at").map_err(get())?,
        sightings: Vec::new(),
        sighting_count: row.try_get("sightings").map_err(get())?,
    })
}

fn sighting_from_row(row: &AnyRow) -> Result<SightingView, StoreError> {
    let source: String = row.try_get("source").map_err(get())?;
    Ok(SightingView {
        at_ms: row.try_get("at").map_err(get())?,
        source: parse_stored("sighting source", &source)?,
        ref_id: row.try_get("ref_id").map_err(get())?,
        agent_id: row.try_get("agent_id").map_err(get())?,
        actor: row.try_get("actor").map_err(get())?,
    })
}

#[cfg(test)]
mod tests;

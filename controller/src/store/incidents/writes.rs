//! The writes an incident change is made of, each inside the caller's transaction, so that a
//! change, its timeline entry and its audit entry commit together; alert intake uses the same
//! ones to open or join an incident.

use sqlx::{Any, Transaction};

use super::*;

/// Applies `change` and appends `entry` inside `tx` (see [`Store::change_incident`]). False when
/// the incident is unknown or, for a stage move, no longer in the stage checked against; the
/// caller then rolls back.
pub(crate) async fn apply_change(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    change: &IncidentChange,
    entry: &NewTimelineEntry,
) -> Result<bool, StoreError> {
    let now = entry.at_ms;
    let query = match change {
        IncidentChange::Stage {
            from, to, closes, ..
        } => {
            let reopen = CLOSED_STAGES.contains(&from.as_str()) && !closes;
            let sql = if *closes {
                "UPDATE incidents SET stage = $3, updated_at = $2, closed_at = $2, \
                 open_fingerprint = NULL WHERE id = $1 AND stage = $4"
            } else if reopen {
                // A reopened incident takes its fingerprint back unless a newer one has it.
                "UPDATE incidents SET stage = $3, updated_at = $2, closed_at = NULL, \
                 open_fingerprint = CASE WHEN fingerprint IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM incidents o WHERE o.open_fingerprint = incidents.fingerprint) \
                 THEN fingerprint ELSE NULL END WHERE id = $1 AND stage = $4"
            } else {
                "UPDATE incidents SET stage = $3, updated_at = $2 WHERE id = $1 AND stage = $4"
            };
            sqlx::query(sql).bind(id).bind(now).bind(to).bind(from)
        }
        IncidentChange::Assignee(assignee) => {
            sqlx::query("UPDATE incidents SET assignee = $3, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(assignee.clone())
        }
        IncidentChange::Escalation { tier, to } => sqlx::query(
            "UPDATE incidents SET tier = $3, escalated_to = $4, updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(*tier)
        .bind(to.clone()),
        IncidentChange::Severity(severity) => {
            sqlx::query("UPDATE incidents SET severity = $3, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(severity)
        }
        IncidentChange::AlertJoined => sqlx::query(
            "UPDATE incidents SET alert_count = alert_count + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now),
        IncidentChange::Nothing => {
            sqlx::query("UPDATE incidents SET updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
        }
    };
    let result = query
        .execute(&mut **tx)
        .await
        .map_err(db_err("update incident"))?;
    if !touched(&result) {
        return Ok(false);
    }
    insert_entry(tx, id, entry).await?;
    if let IncidentChange::Stage { to, entry_id, .. } = change {
        insert_stage_entry(tx, entry_id, id, to, now, &entry.actor).await?;
    }
    Ok(true)
}

/// [`Store::add_incident_hosts`] inside `tx`.
pub(crate) async fn add_hosts(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    agent_ids: &[String],
    entry: &NewTimelineEntry,
) -> Result<Vec<String>, StoreError> {
    let mut added = Vec::new();
    for agent_id in agent_ids {
        let present: Option<String> = sqlx::query_scalar(
            "SELECT agent_id FROM incident_hosts WHERE incident_id = $1 AND agent_id = $2",
        )
        .bind(id)
        .bind(agent_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err("read incident host"))?;
        if present.is_none() && !added.contains(agent_id) {
            insert_host(tx, id, agent_id, entry.at_ms, &entry.actor).await?;
            added.push(agent_id.clone());
        }
    }
    if !added.is_empty() {
        let mut entry = entry.clone();
        entry.summary = format!("hosts added: {}", added.join(", "));
        entry.detail = serde_json::json!({ "agents": added });
        insert_entry(tx, id, &entry).await?;
        sqlx::query("UPDATE incidents SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(entry.at_ms)
            .execute(&mut **tx)
            .await
            .map_err(db_err("update incident"))?;
    }
    Ok(added)
}

/// Inserts the incident's own row inside `tx`. The error is sqlx's own, so a caller can tell
/// (by looking again) whether the unique open-fingerprint index refused it; on PostgreSQL the
/// transaction is then unusable.
pub(crate) async fn insert_incident_row(
    tx: &mut Transaction<'static, Any>,
    incident: &NewIncident,
) -> Result<Result<(), sqlx::Error>, StoreError> {
    let open_fingerprint = incident
        .fingerprint
        .as_ref()
        .filter(|_| !CLOSED_STAGES.contains(&incident.stage.as_str()));
    let inserted = sqlx::query(
        "INSERT INTO incidents (id, title, kind, severity, stage, description, assignee, \
         tier, escalated_to, labels, fingerprint, open_fingerprint, alert_count, created_at, \
         created_by, updated_at, closed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, NULL, $8, $9, $10, $11, $12, $13, $12, NULL)",
    )
    .bind(&incident.id)
    .bind(&incident.title)
    .bind(&incident.kind)
    .bind(&incident.severity)
    .bind(&incident.stage)
    .bind(&incident.description)
    .bind(incident.assignee.clone())
    .bind(json_text("incident labels", &incident.labels)?)
    .bind(incident.fingerprint.clone())
    .bind(open_fingerprint.cloned())
    .bind(incident.alert_count)
    .bind(incident.created_at_ms)
    .bind(&incident.created_by)
    .execute(&mut **tx)
    .await;
    Ok(inserted.map(|_| ()))
}

/// After [`insert_incident_row`]: the hosts, timeline entries and first stage entry.
pub(crate) async fn insert_incident_parts(
    tx: &mut Transaction<'static, Any>,
    incident: &NewIncident,
    hosts: &[String],
    entries: &[NewTimelineEntry],
    stage_entry_id: &str,
) -> Result<(), StoreError> {
    for agent_id in hosts {
        insert_host(
            tx,
            &incident.id,
            agent_id,
            incident.created_at_ms,
            &incident.created_by,
        )
        .await?;
    }
    for entry in entries {
        insert_entry(tx, &incident.id, entry).await?;
    }
    insert_stage_entry(
        tx,
        stage_entry_id,
        &incident.id,
        &incident.stage,
        incident.created_at_ms,
        &incident.created_by,
    )
    .await
}

pub(crate) async fn open_by_fingerprint(
    tx: &mut Transaction<'static, Any>,
    fingerprint: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT id FROM incidents WHERE open_fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err("find incident by fingerprint"))
}

pub(crate) async fn insert_host(
    tx: &mut Transaction<'static, Any>,
    incident_id: &str,
    agent_id: &str,
    at_ms: i64,
    by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_hosts (incident_id, agent_id, added_at, added_by) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(incident_id)
    .bind(agent_id)
    .bind(at_ms)
    .bind(by)
    .execute(&mut **tx)
    .await
    .map_err(db_err("insert incident host"))?;
    Ok(())
}

pub(crate) async fn insert_entry(
    tx: &mut Transaction<'static, Any>,
    incident_id: &str,
    entry: &NewTimelineEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_timeline (incident_id, at_ms, actor, kind, summary, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(incident_id)
    .bind(entry.at_ms)
    .bind(&entry.actor)
    .bind(&entry.kind)
    .bind(&entry.summary)
    .bind(json_text("timeline detail", &entry.detail)?)
    .execute(&mut **tx)
    .await
    .map_err(db_err("insert timeline entry"))?;
    Ok(())
}

pub(crate) async fn insert_stage_entry(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    incident_id: &str,
    stage: &str,
    at_ms: i64,
    by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stage_entries (id, incident_id, stage, entered_at, entered_by, \
         playbook_state, playbook_detail) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(id)
    .bind(incident_id)
    .bind(stage)
    .bind(at_ms)
    .bind(by)
    .bind(PLAYBOOK_PENDING)
    .execute(&mut **tx)
    .await
    .map_err(db_err("insert stage entry"))?;
    Ok(())
}

//! File watches and the changes agents report for them.
//!
//! A watch belongs to one agent and runs until it is stopped; `task_id` names the latest
//! `Watch` task sent for it (the first, or a re-send after the agent reconnected). Changes are
//! stored only for a watch of the agent that reports them and, once the watch is stopped, only
//! if they happened before it was; event ids only grow, so a client pages with `after=`. Each
//! watch counts the changes it stored; one that reaches its limit is stopped by the controller
//! (a watch on a busy directory must not fill the store).

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::{db_err, touched, Store, StoreError};

/// A watch to create.
#[derive(Debug, Clone)]
pub struct NewWatch {
    pub id: String,
    pub agent_id: String,
    pub paths: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// A stored watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    pub id: String,
    pub agent_id: String,
    pub paths: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
    /// The latest `Watch` task sent for it.
    pub task_id: Option<String>,
    pub stopped_at_ms: Option<i64>,
    pub stopped_by: Option<String>,
    /// Changes stored for it.
    #[serde(default)]
    pub changes: i64,
}

/// What storing a batch of changes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoredChanges {
    /// For each change, whether it was kept.
    pub kept: Vec<bool>,
    /// Watches this batch took to their change limit, now stopped.
    pub limit_reached: Vec<String>,
}

/// Who a watch stopped at its change limit is stopped by.
pub const STOPPED_AT_LIMIT: &str = "controller (change limit reached)";

/// A change an agent reported.
#[derive(Debug, Clone)]
pub struct NewWatchEvent {
    pub watch_id: String,
    pub agent_id: String,
    pub path: String,
    /// "created", "modified", "removed" or "renamed".
    pub kind: String,
    /// When the agent saw it.
    pub changed_at_ms: i64,
    pub received_at_ms: i64,
}

/// A stored change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventRecord {
    pub id: i64,
    pub watch_id: String,
    pub agent_id: String,
    pub path: String,
    pub kind: String,
    pub changed_at_ms: i64,
    pub received_at_ms: i64,
}

const WATCH_COLUMNS: &str =
    "id, agent_id, paths, created_at, created_by, task_id, stopped_at, stopped_by, changes";
const EVENT_COLUMNS: &str = "id, watch_id, agent_id, path, kind, changed_at, received_at";

impl Store {
    pub async fn insert_watch(&self, watch: &NewWatch) -> Result<(), StoreError> {
        let paths = serde_json::to_string(&watch.paths).map_err(|source| StoreError::Json {
            what: "watch paths",
            source,
        })?;
        sqlx::query(
            "INSERT INTO watches (id, agent_id, paths, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&watch.id)
        .bind(&watch.agent_id)
        .bind(paths)
        .bind(watch.created_at_ms)
        .bind(&watch.created_by)
        .execute(self.pool())
        .await
        .map_err(db_err("insert watch"))?;
        Ok(())
    }

    pub async fn get_watch(&self, id: &str) -> Result<Option<WatchRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WATCH_COLUMNS} FROM watches WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err("read watch"))?;
        row.as_ref().map(watch_from_row).transpose()
    }

    /// Newest first, optionally for one agent and only the running ones.
    pub async fn list_watches(
        &self,
        agent_id: Option<&str>,
        active_only: bool,
        limit: i64,
    ) -> Result<Vec<WatchRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WATCH_COLUMNS} FROM watches WHERE ($1 = '' OR agent_id = $1) \
             AND ($2 = 0 OR stopped_at IS NULL) ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(agent_id.unwrap_or(""))
        .bind(i64::from(active_only))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list watches"))?;
        rows.iter().map(watch_from_row).collect()
    }

    /// An agent's running watches, oldest first (to send again when it reconnects).
    pub async fn active_watches(&self, agent_id: &str) -> Result<Vec<WatchRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WATCH_COLUMNS} FROM watches WHERE agent_id = $1 AND stopped_at IS NULL \
             ORDER BY created_at, id"
        ))
        .bind(agent_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read active watches"))?;
        rows.iter().map(watch_from_row).collect()
    }

    /// Records the latest `Watch` task sent for a watch.
    pub async fn set_watch_task(&self, id: &str, task_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE watches SET task_id = $2 WHERE id = $1")
            .bind(id)
            .bind(task_id)
            .execute(self.pool())
            .await
            .map_err(db_err("record watch task"))?;
        Ok(touched(&result))
    }

    /// Marks a running watch stopped. False if it is unknown or already stopped.
    pub async fn stop_watch(&self, id: &str, by: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE watches SET stopped_at = $2, stopped_by = $3 \
             WHERE id = $1 AND stopped_at IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .bind(by)
        .execute(self.pool())
        .await
        .map_err(db_err("stop watch"))?;
        Ok(touched(&result))
    }

    /// Stores a batch of changes in one transaction. A change is kept only for the reporting
    /// agent's own watch, not after the watch was stopped, and while the watch has stored
    /// fewer than `limit`; a watch that reaches `limit` is stopped (at `now_ms`, by
    /// [`STOPPED_AT_LIMIT`]).
    pub async fn insert_watch_events(
        &self,
        events: &[NewWatchEvent],
        limit: i64,
        now_ms: i64,
    ) -> Result<StoredChanges, StoreError> {
        let mut stored = StoredChanges::default();
        if events.is_empty() {
            return Ok(stored);
        }
        let mut tx = self.begin_write("begin storing watch events").await?;
        let mut counted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        for event in events {
            let counts = sqlx::query(
                "UPDATE watches SET changes = changes + 1 WHERE id = $1 AND agent_id = $2 \
                 AND (stopped_at IS NULL OR stopped_at >= $3) AND changes < $4",
            )
            .bind(&event.watch_id)
            .bind(&event.agent_id)
            .bind(event.changed_at_ms)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db_err("count watch event"))?;
            let kept = touched(&counts);
            if kept {
                sqlx::query(
                    "INSERT INTO watch_events (watch_id, agent_id, path, kind, changed_at, \
                     received_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&event.watch_id)
                .bind(&event.agent_id)
                .bind(&event.path)
                .bind(&event.kind)
                .bind(event.changed_at_ms)
                .bind(event.received_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err("store watch event"))?;
                counted.insert(&event.watch_id);
            }
            stored.kept.push(kept);
        }
        for watch_id in counted {
            let stopped = sqlx::query(
                "UPDATE watches SET stopped_at = $1, stopped_by = $2 \
                 WHERE id = $3 AND stopped_at IS NULL AND changes >= $4",
            )
            .bind(now_ms)
            .bind(STOPPED_AT_LIMIT)
            .bind(watch_id)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db_err("stop watch at its change limit"))?;
            if touched(&stopped) {
                stored.limit_reached.push(watch_id.to_owned());
            }
        }
        tx.commit().await.map_err(db_err("commit watch events"))?;
        Ok(stored)
    }

    /// A watch's changes with ids above `after`, oldest first, at most `limit`.
    pub async fn watch_events(
        &self,
        watch_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<WatchEventRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM watch_events WHERE watch_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(watch_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read watch events"))?;
        rows.iter().map(event_from_row).collect()
    }
}

fn watch_from_row(row: &AnyRow) -> Result<WatchRecord, StoreError> {
    let get = || db_err("read watch");
    let paths: String = row.try_get("paths").map_err(get())?;
    Ok(WatchRecord {
        id: row.try_get("id").map_err(get())?,
        agent_id: row.try_get("agent_id").map_err(get())?,
        paths: serde_json::from_str(&paths).map_err(|source| StoreError::Json {
            what: "watch paths",
            source,
        })?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        created_by: row.try_get("created_by").map_err(get())?,
        task_id: row.try_get("task_id").map_err(get())?,
        stopped_at_ms: row.try_get("stopped_at").map_err(get())?,
        stopped_by: row.try_get("stopped_by").map_err(get())?,
        changes: row.try_get("changes").map_err(get())?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<WatchEventRecord, StoreError> {
    let get = || db_err("read watch event");
    Ok(WatchEventRecord {
        id: row.try_get("id").map_err(get())?,
        watch_id: row.try_get("watch_id").map_err(get())?,
        agent_id: row.try_get("agent_id").map_err(get())?,
        path: row.try_get("path").map_err(get())?,
        kind: row.try_get("kind").map_err(get())?,
        changed_at_ms: row.try_get("changed_at").map_err(get())?,
        received_at_ms: row.try_get("received_at").map_err(get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{backend_tests, enrolled_agent};

    const NOW: i64 = 1_700_000_000_000;

    fn watch(id: &str, agent_id: &str, at: i64) -> NewWatch {
        NewWatch {
            id: id.into(),
            agent_id: agent_id.into(),
            paths: vec!["/etc".into(), "/srv/app dir".into()],
            created_at_ms: at,
            created_by: "alice".into(),
        }
    }

    fn change(watch_id: &str, agent_id: &str, path: &str, at: i64) -> NewWatchEvent {
        NewWatchEvent {
            watch_id: watch_id.into(),
            agent_id: agent_id.into(),
            path: path.into(),
            kind: "created".into(),
            changed_at_ms: at,
            received_at_ms: at + 5,
        }
    }

    async fn watches_are_created_listed_and_stopped(store: &Store) {
        enrolled_agent(store, "a1", NOW).await;
        enrolled_agent(store, "a2", NOW).await;
        store.insert_watch(&watch("w1", "a1", NOW)).await.unwrap();
        store
            .insert_watch(&watch("w2", "a1", NOW + 1))
            .await
            .unwrap();
        store
            .insert_watch(&watch("w3", "a2", NOW + 2))
            .await
            .unwrap();
        let w1 = store.get_watch("w1").await.unwrap().unwrap();
        assert_eq!(w1.paths, vec!["/etc", "/srv/app dir"]);
        assert_eq!(w1.created_by, "alice");
        assert_eq!(w1.task_id, None);
        assert!(store.get_watch("nope").await.unwrap().is_none());

        assert!(store.set_watch_task("w1", "t1").await.unwrap());
        assert!(!store.set_watch_task("nope", "t1").await.unwrap());
        assert_eq!(
            store
                .get_watch("w1")
                .await
                .unwrap()
                .unwrap()
                .task_id
                .as_deref(),
            Some("t1")
        );

        let ids = |v: Vec<WatchRecord>| v.into_iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_watches(None, false, 10).await.unwrap()),
            vec!["w3", "w2", "w1"],
            "newest first"
        );
        assert_eq!(
            ids(store.list_watches(Some("a1"), false, 10).await.unwrap()),
            vec!["w2", "w1"]
        );
        assert_eq!(
            ids(store.list_watches(None, false, 1).await.unwrap()),
            vec!["w3"]
        );

        assert!(store.stop_watch("w1", "bob", NOW + 10).await.unwrap());
        assert!(
            !store.stop_watch("w1", "bob", NOW + 11).await.unwrap(),
            "stops once"
        );
        let w1 = store.get_watch("w1").await.unwrap().unwrap();
        assert_eq!(w1.stopped_at_ms, Some(NOW + 10));
        assert_eq!(w1.stopped_by.as_deref(), Some("bob"));
        assert_eq!(ids(store.active_watches("a1").await.unwrap()), vec!["w2"]);
        assert_eq!(
            ids(store.list_watches(Some("a1"), true, 10).await.unwrap()),
            vec!["w2"]
        );
    }

    async fn events_are_kept_only_for_the_agents_own_running_watch(store: &Store) {
        enrolled_agent(store, "a1", NOW).await;
        enrolled_agent(store, "a2", NOW).await;
        store.insert_watch(&watch("w1", "a1", NOW)).await.unwrap();
        let stored = store
            .insert_watch_events(
                &[
                    change("w1", "a1", "/etc/one", NOW + 1),
                    change("w1", "a2", "/etc/intruder", NOW + 2),
                    change("unknown", "a1", "/etc/two", NOW + 3),
                    change("w1", "a1", "/etc/three", NOW + 4),
                ],
                LIMIT,
                NOW + 5,
            )
            .await
            .unwrap();
        assert_eq!(stored.kept, vec![true, false, false, true]);
        assert!(stored.limit_reached.is_empty());
        assert_eq!(
            store.insert_watch_events(&[], LIMIT, NOW).await.unwrap(),
            StoredChanges::default()
        );

        store.stop_watch("w1", "bob", NOW + 10).await.unwrap();
        let stored = store
            .insert_watch_events(
                &[
                    change("w1", "a1", "/etc/before-stop", NOW + 9),
                    change("w1", "a1", "/etc/after-stop", NOW + 11),
                ],
                LIMIT,
                NOW + 12,
            )
            .await
            .unwrap();
        assert_eq!(
            stored.kept,
            vec![true, false],
            "a change seen before the stop still counts"
        );
        assert_eq!(store.get_watch("w1").await.unwrap().unwrap().changes, 3);

        let all = store.watch_events("w1", 0, 100).await.unwrap();
        let paths: Vec<&str> = all.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["/etc/one", "/etc/three", "/etc/before-stop"]);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
        assert_eq!(all[0].kind, "created");
        assert_eq!(all[0].changed_at_ms, NOW + 1);
        assert_eq!(all[0].received_at_ms, NOW + 6);
        assert_eq!(all[0].agent_id, "a1");

        let page = store.watch_events("w1", all[0].id, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].path, "/etc/three");
        let rest = store.watch_events("w1", all[2].id, 100).await.unwrap();
        assert!(rest.is_empty());
    }

    const LIMIT: i64 = 1000;

    async fn a_watch_is_stopped_at_its_change_limit(store: &Store) {
        enrolled_agent(store, "a1", NOW).await;
        store.insert_watch(&watch("w1", "a1", NOW)).await.unwrap();
        store.insert_watch(&watch("w2", "a1", NOW)).await.unwrap();
        let stored = store
            .insert_watch_events(
                &[
                    change("w1", "a1", "/tmp/1", NOW + 1),
                    change("w2", "a1", "/var/1", NOW + 1),
                    change("w1", "a1", "/tmp/2", NOW + 2),
                    change("w1", "a1", "/tmp/3", NOW + 3),
                ],
                2,
                NOW + 5,
            )
            .await
            .unwrap();
        assert_eq!(stored.kept, vec![true, true, true, false]);
        assert_eq!(stored.limit_reached, vec!["w1"]);
        let w1 = store.get_watch("w1").await.unwrap().unwrap();
        assert_eq!(w1.changes, 2);
        assert_eq!(w1.stopped_at_ms, Some(NOW + 5));
        assert_eq!(w1.stopped_by.as_deref(), Some(STOPPED_AT_LIMIT));
        let w2 = store.get_watch("w2").await.unwrap().unwrap();
        assert_eq!((w2.changes, w2.stopped_at_ms), (1, None));
        // Nothing more is kept, even a change seen before the stop.
        let stored = store
            .insert_watch_events(&[change("w1", "a1", "/tmp/4", NOW + 4)], 2, NOW + 6)
            .await
            .unwrap();
        assert_eq!(stored.kept, vec![false]);
        assert!(stored.limit_reached.is_empty(), "stopped once");
        assert_eq!(store.watch_events("w1", 0, 100).await.unwrap().len(), 2);
    }

    backend_tests!(
        watches_are_created_listed_and_stopped,
        events_are_kept_only_for_the_agents_own_running_watch,
        a_watch_is_stopped_at_its_change_limit
    );
}

//! Outgoing webhooks and their delivery outbox.
//!
//! A webhook is a URL, a shared secret (for the HMAC signature on each delivery) and the event
//! kinds it wants. Removing one only disables it (`disabled_at`), so its delivery history stays
//! readable. Every event a webhook wants becomes a `webhook_deliveries` row before anything is
//! sent: the rows are the outbox the delivery worker works through, so a delivery survives a
//! controller restart. A worker *claims* a due row by moving its `next_attempt_at` forward
//! (a lease, conditional on the value it read), so several controller replicas sharing one
//! database never send the same attempt twice at once; a worker that dies mid-send leaves the
//! lease to run out, and the row is tried again.

use sqlx::{any::AnyRow, Row};

use super::{db_err, touched, Store, StoreError};
pub use cordon_api::webhooks::{DeliveryRecord, DeliveryState, WebhookRecord};

/// A webhook to create.
#[derive(Clone)]
pub struct NewWebhook {
    pub id: String,
    pub name: String,
    pub url: String,
    /// The HMAC key. Never logged, never returned after creation.
    pub secret: String,
    /// Event kind patterns (`incident.*`, `task.done`, `*`).
    pub events: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
}

impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

/// An enabled webhook and the event kinds it wants: what the publisher matches events against.
#[derive(Clone)]
pub struct WebhookTarget {
    pub id: String,
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("id", &self.id)
            .field("events", &self.events)
            .finish()
    }
}

/// A delivery to queue: one event for one webhook.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_kind: String,
    /// The exact JSON body that will be sent (and signed).
    pub body: String,
    pub created_at_ms: i64,
}

/// A delivery a worker has claimed and now sends.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_kind: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("event_kind", &self.event_kind)
            .field("attempts", &self.attempts)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered { status: i64 },
    /// Failed; try again at `next_attempt_at_ms`.
    Retry {
        status: Option<i64>,
        error: String,
        next_attempt_at_ms: i64,
    },
    /// Failed for the last time.
    Failed { status: Option<i64>, error: String },
}

const WEBHOOK_COLUMNS: &str =
    "id, name, url, events, created_at, created_by, disabled_at, disabled_by";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_kind, state, attempts, \
    next_attempt_at, last_status, last_error, created_at, delivered_at";

/// Why a delivery to a removed webhook was given up.
pub const REMOVED_ERROR: &str = "the webhook was removed";

fn events_json(events: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(events).map_err(|source| StoreError::Json {
        what: "webhook events",
        source,
    })
}

fn events_from(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json {
        what: "webhook events",
        source,
    })
}

impl Store {
    pub async fn insert_webhook(&self, webhook: &NewWebhook) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhooks (id, name, url, secret, events, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&webhook.id)
        .bind(&webhook.name)
        .bind(&webhook.url)
        .bind(&webhook.secret)
        .bind(events_json(&webhook.events)?)
        .bind(webhook.created_at_ms)
        .bind(&webhook.created_by)
        .execute(self.pool())
        .await
        .map_err(db_err("insert webhook"))?;
        Ok(())
    }

    /// Webhooks, oldest first; disabled ones only when asked for.
    pub async fn list_webhooks(
        &self,
        include_disabled: bool,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ($1 = 1 OR disabled_at IS NULL) \
             ORDER BY created_at, id"
        ))
        .bind(i64::from(include_disabled))
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list webhooks"))?;
        rows.iter().map(webhook_from_row).collect()
    }

    pub async fn get_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err("read webhook"))?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// How many webhooks are enabled.
    pub async fn count_enabled_webhooks(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE disabled_at IS NULL")
            .fetch_one(self.pool())
            .await
            .map_err(db_err("count webhooks"))
    }

    /// Disables a webhook and gives up its pending deliveries, in one transaction. False if
    /// it is unknown or disabled already.
    pub async fn disable_webhook(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin disabling webhook").await?;
        let result = sqlx::query(
            "UPDATE webhooks SET disabled_at = $2, disabled_by = $3 \
             WHERE id = $1 AND disabled_at IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(db_err("disable webhook"))?;
        if !touched(&result) {
            tx.rollback()
                .await
                .map_err(db_err("roll back disabling webhook"))?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'failed', last_error = $2 \
             WHERE webhook_id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(REMOVED_ERROR)
        .execute(&mut *tx)
        .await
        .map_err(db_err("give up deliveries of a removed webhook"))?;
        tx.commit()
            .await
            .map_err(db_err("commit disabling webhook"))?;
        Ok(true)
    }

    /// Enabled webhooks with what they want, for matching events.
    pub async fn webhook_targets(&self) -> Result<Vec<WebhookTarget>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, events FROM webhooks WHERE disabled_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read webhook targets"))?;
        rows.iter()
            .map(|row| {
                let get = || db_err("read webhook target");
                let events: String = row.try_get("events").map_err(get())?;
                Ok(WebhookTarget {
                    id: row.try_get("id").map_err(get())?,
                    events: events_from(&events)?,
                })
            })
            .collect()
    }

    /// Queues deliveries (due at once), all or none. A delivery for a webhook that is no
    /// longer enabled (removed on another controller since this one last looked) is skipped.
    pub async fn queue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .begin_write("begin queueing webhook deliveries")
            .await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_kind, body, \
                 state, attempts, next_attempt_at, created_at) \
                 SELECT $1, id, $3, $4, $5, 'pending', 0, $6, $6 FROM webhooks \
                 WHERE id = $2 AND disabled_at IS NULL",
            )
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.event_id)
            .bind(&d.event_kind)
            .bind(&d.body)
            .bind(d.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err("queue webhook delivery"))?;
        }
        tx.commit()
            .await
            .map_err(db_err("commit webhook deliveries"))?;
        Ok(())
    }

    /// Claims up to `limit` deliveries due at `now_ms`, leasing each until `lease_until_ms`:
    /// no other worker takes them before then. A delivery whose webhook is disabled is never
    /// claimed (disabling gives its pending deliveries up).
    pub async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.webhook_id, d.event_kind, d.body, d.attempts, d.next_attempt_at, \
             w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND w.disabled_at IS NULL \
             ORDER BY d.next_attempt_at, d.id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read due webhook deliveries"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = || db_err("read due webhook delivery");
            let due_at: i64 = row.try_get("next_attempt_at").map_err(get())?;
            let delivery = ClaimedDelivery {
                id: row.try_get("id").map_err(get())?,
                webhook_id: row.try_get("webhook_id").map_err(get())?,
                event_kind: row.try_get("event_kind").map_err(get())?,
                body: row.try_get("body").map_err(get())?,
                attempts: row.try_get("attempts").map_err(get())?,
                url: row.try_get("url").map_err(get())?,
                secret: row.try_get("secret").map_err(get())?,
            };
            let result = sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $2 \
                 WHERE id = $1 AND state = 'pending' AND next_attempt_at = $3",
            )
            .bind(&delivery.id)
            .bind(lease_until_ms)
            .bind(due_at)
            .execute(self.pool())
            .await
            .map_err(db_err("claim webhook delivery"))?;
            // Not touched: another worker claimed it first.
            if touched(&result) {
                claimed.push(delivery);
            }
        }
        Ok(claimed)
    }

    /// Gives back a claimed delivery that was not attempted (the worker is stopping): it is
    /// due at `now_ms` again instead of when its lease runs out. False if it changed meanwhile.
    pub async fn release_delivery(
        &self,
        id: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $3 \
             WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2",
        )
        .bind(id)
        .bind(lease_until_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err("release webhook delivery"))?;
        Ok(touched(&result))
    }

    /// Records one attempt at a pending delivery. False if it is no longer pending (the
    /// webhook was removed meanwhile).
    pub async fn record_delivery_attempt(
        &self,
        id: &str,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let query = match outcome {
            AttemptOutcome::Delivered { status } => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, \
                 last_status = $2, last_error = NULL, delivered_at = $3 \
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(*status)
            .bind(now_ms),
            AttemptOutcome::Retry {
                status,
                error,
                next_attempt_at_ms,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, \
                 last_error = $3, next_attempt_at = $4 WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(*status)
            .bind(error)
            .bind(*next_attempt_at_ms),
            AttemptOutcome::Failed { status, error } => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'failed', attempts = attempts + 1, \
                 last_status = $2, last_error = $3 WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(*status)
            .bind(error),
        };
        let result = query
            .execute(self.pool())
            .await
            .map_err(db_err("record webhook delivery attempt"))?;
        Ok(touched(&result))
    }

    /// A webhook's deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list webhook deliveries"))?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err("read webhook delivery"))?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// When the next pending delivery of an enabled webhook is due, if any.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d \
             JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND w.disabled_at IS NULL",
        )
        .fetch_one(self.pool())
        .await
        .map_err(db_err("read next webhook delivery"))
    }

    /// Deletes finished (delivered or failed) deliveries created before `before_ms`.
    pub async fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < $1",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await
        .map_err(db_err("prune webhook deliveries"))?;
        Ok(result.rows_affected())
    }
}

fn webhook_from_row(row: &AnyRow) -> Result<WebhookRecord, StoreError> {
    let get = || db_err("read webhook row");
    let events: String = row.try_get("events").map_err(get())?;
    Ok(WebhookRecord {
        id: row.try_get("id").map_err(get())?,
        name: row.try_get("name").map_err(get())?,
        url: row.try_get("url").map_err(get())?,
        events: events_from(&events)?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        created_by: row.try_get("created_by").map_err(get())?,
        disabled_at_ms: row.try_get("disabled_at").map_err(get())?,
        disabled_by: row.try_get("disabled_by").map_err(get())?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord, StoreError> {
    let get = || db_err("read webhook delivery row");
    let state: String = row.try_get("state").map_err(get())?;
    Ok(DeliveryRecord {
        id: row.try_get("id").map_err(get())?,
        webhook_id: row.try_get("webhook_id").map_err(get())?,
        event_id: row.try_get("event_id").map_err(get())?,
        event_kind: row.try_get("event_kind").map_err(get())?,
        state: super::parse_stored("webhook delivery state", &state)?,
        attempts: row.try_get("attempts").map_err(get())?,
        next_attempt_at_ms: row.try_get("next_attempt_at").map_err(get())?,
        last_status: row.try_get("last_status").map_err(get())?,
        last_error: row.try_get("last_error").map_err(get())?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        delivered_at_ms: row.try_get("delivered_at").map_err(get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    const NOW: i64 = 1_700_000_000_000;

    fn webhook(id: &str, at: i64) -> NewWebhook {
        NewWebhook {
            id: id.into(),
            name: format!("hook {id}"),
            url: format!("https://example.invalid/{id}"),
            secret: format!("secret-{id}"),
            events: vec!["incident.*".into(), "task.done".into()],
            created_at_ms: at,
            created_by: "alice".into(),
        }
    }

    fn delivery(id: &str, webhook_id: &str, at: i64) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            webhook_id: webhook_id.into(),
            event_id: format!("event-{id}"),
            event_kind: "incident.created".into(),
            body: format!("{{\"id\":\"event-{id}\"}}"),
            created_at_ms: at,
        }
    }

    async fn webhooks_are_created_listed_and_disabled(store: &Store) {
        store.insert_webhook(&webhook("w1", NOW)).await.unwrap();
        store.insert_webhook(&webhook("w2", NOW + 1)).await.unwrap();
        let listed = store.list_webhooks(false).await.unwrap();
        assert_eq!(
            listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
            ["w1", "w2"]
        );
        assert_eq!(listed[0].events, ["incident.*", "task.done"]);
        assert_eq!(listed[0].created_by, "alice");
        assert_eq!(listed[0].disabled_at_ms, None);
        assert_eq!(store.count_enabled_webhooks().await.unwrap(), 2);
        let targets = store.webhook_targets().await.unwrap();
        assert_eq!(targets.len(), 2);
        assert!(!format!("{targets:?}").contains("secret-w1"));

        assert!(store.disable_webhook("w1", "bob", NOW + 5).await.unwrap());
        assert!(!store.disable_webhook("w1", "bob", NOW + 6).await.unwrap());
        assert!(!store.disable_webhook("nope", "bob", NOW + 6).await.unwrap());
        let w1 = store.get_webhook("w1").await.unwrap().unwrap();
        assert_eq!(w1.disabled_at_ms, Some(NOW + 5));
        assert_eq!(w1.disabled_by.as_deref(), Some("bob"));
        assert_eq!(store.list_webhooks(false).await.unwrap().len(), 1);
        assert_eq!(store.list_webhooks(true).await.unwrap().len(), 2);
        assert_eq!(
            store
                .webhook_targets()
                .await
                .unwrap()
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>(),
            ["w2"]
        );
        assert_eq!(store.count_enabled_webhooks().await.unwrap(), 1);
        assert!(store.get_webhook("nope").await.unwrap().is_none());
    }

    async fn deliveries_are_claimed_once_and_retried(store: &Store) {
        store.insert_webhook(&webhook("w1", NOW)).await.unwrap();
        store
            .queue_deliveries(&[delivery("d1", "w1", NOW), delivery("d2", "w1", NOW + 1)])
            .await
            .unwrap();
        assert_eq!(store.next_delivery_due().await.unwrap(), Some(NOW));
        // Nothing is due before it was queued.
        assert!(store
            .claim_due_deliveries(NOW - 1, NOW + 30_000, 10)
            .await
            .unwrap()
            .is_empty());
        let claimed = store
            .claim_due_deliveries(NOW + 1, NOW + 30_000, 10)
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d1", "d2"]
        );
        assert_eq!(claimed[0].secret, "secret-w1");
        assert_eq!(claimed[0].url, "https://example.invalid/w1");
        assert_eq!(claimed[0].attempts, 0);
        assert_eq!(claimed[0].body, "{\"id\":\"event-d1\"}");
        assert!(!format!("{claimed:?}").contains("secret-w1"));
        // Leased: a second worker gets nothing until the lease runs out.
        assert!(store
            .claim_due_deliveries(NOW + 2, NOW + 30_000, 10)
            .await
            .unwrap()
            .is_empty());
        // Released (a stopping worker): due again at once.
        assert!(store
            .release_delivery("d2", NOW + 30_000, NOW + 3)
            .await
            .unwrap());
        let released = store
            .claim_due_deliveries(NOW + 3, NOW + 30_000, 10)
            .await
            .unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].id, "d2");

        let retry = AttemptOutcome::Retry {
            status: Some(500),
            error: "HTTP 500".into(),
            next_attempt_at_ms: NOW + 1_000,
        };
        assert!(store
            .record_delivery_attempt("d1", &retry, NOW + 10)
            .await
            .unwrap());
        let d1 = store.get_delivery("d1").await.unwrap().unwrap();
        assert_eq!(d1.state, DeliveryState::Pending);
        assert_eq!(d1.attempts, 1);
        assert_eq!(d1.last_status, Some(500));
        assert_eq!(d1.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(d1.next_attempt_at_ms, NOW + 1_000);
        assert_eq!(store.next_delivery_due().await.unwrap(), Some(NOW + 1_000));

        let again = store
            .claim_due_deliveries(NOW + 1_000, NOW + 31_000, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        assert!(store
            .record_delivery_attempt(
                "d1",
                &AttemptOutcome::Delivered { status: 204 },
                NOW + 1_001
            )
            .await
            .unwrap());
        let d1 = store.get_delivery("d1").await.unwrap().unwrap();
        assert_eq!(d1.state, DeliveryState::Delivered);
        assert_eq!(d1.attempts, 2);
        assert_eq!(d1.last_status, Some(204));
        assert_eq!(d1.last_error, None);
        assert_eq!(d1.delivered_at_ms, Some(NOW + 1_001));
        // Settled: a late attempt changes nothing.
        assert!(!store
            .record_delivery_attempt(
                "d1",
                &AttemptOutcome::Delivered { status: 200 },
                NOW + 2_000
            )
            .await
            .unwrap());

        let failed = AttemptOutcome::Failed {
            status: None,
            error: "connection refused".into(),
        };
        assert!(store
            .record_delivery_attempt("d2", &failed, NOW + 20)
            .await
            .unwrap());
        let listed = store.webhook_deliveries("w1", 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d2", "d1"]
        );
        assert_eq!(listed[0].state, DeliveryState::Failed);
        assert_eq!(listed[0].last_status, None);
        assert_eq!(store.next_delivery_due().await.unwrap(), None);

        assert_eq!(store.prune_deliveries(NOW + 1).await.unwrap(), 1);
        assert_eq!(store.webhook_deliveries("w1", 10).await.unwrap().len(), 1);
    }

    async fn removing_a_webhook_gives_up_its_deliveries(store: &Store) {
        store.insert_webhook(&webhook("w1", NOW)).await.unwrap();
        store
            .queue_deliveries(&[delivery("d1", "w1", NOW)])
            .await
            .unwrap();
        assert!(store.disable_webhook("w1", "bob", NOW + 1).await.unwrap());
        // Queued by a controller that has not seen the removal yet: not kept.
        store
            .queue_deliveries(&[delivery("d2", "w1", NOW + 2)])
            .await
            .unwrap();
        assert!(store.get_delivery("d2").await.unwrap().is_none());
        assert!(store
            .claim_due_deliveries(NOW + 5, NOW + 30_000, 10)
            .await
            .unwrap()
            .is_empty());
        let d1 = store.get_delivery("d1").await.unwrap().unwrap();
        assert_eq!(d1.state, DeliveryState::Failed);
        assert_eq!(d1.last_error.as_deref(), Some(REMOVED_ERROR));
        assert_eq!(store.next_delivery_due().await.unwrap(), None);
    }

    backend_tests!(
        webhooks_are_created_listed_and_disabled,
        deliveries_are_claimed_once_and_retried,
        removing_a_webhook_gives_up_its_deliveries,
    );
}

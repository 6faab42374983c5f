//! Agents and their certificates: enrolment (which consumes a one-time token), session state,
//! labels, and revocation (which feeds the CRL).

use cordon_protocol::{action::PolicySummary, inventory::Inventory};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{db_err, touched, Store, StoreError};

/// An enrolled agent as the controller knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's id (also its certificate's subject).
    pub id: String,
    /// Host name: from enrolment, then from the latest inventory.
    pub hostname: String,
    /// When the agent enrolled, ms since the Unix epoch.
    pub enrolled_at_ms: i64,
    /// When the controller last heard from the agent.
    pub last_seen_at_ms: Option<i64>,
    /// Whether a session is open now (as far as this store knows).
    pub connected: bool,
    /// When the agent was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// Host facts from the agent's latest hello.
    pub inventory: Option<Inventory>,
    /// Operator-assigned labels, used to target hunts.
    pub labels: Vec<String>,
}

/// An agent about to be enrolled.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// The id the controller assigned.
    pub id: String,
    /// The host name the agent reported when enrolling.
    pub hostname: String,
    /// Enrolment time, ms since the Unix epoch.
    pub enrolled_at_ms: i64,
}

/// The certificate issued to an agent at enrolment.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Issue time, ms since the Unix epoch.
    pub issued_at_ms: i64,
    /// End of validity, ms since the Unix epoch.
    pub not_after_ms: i64,
}

/// Why an enrolment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    /// No token with that hash exists.
    #[error("unknown enrolment token")]
    UnknownToken,
    /// The token's expiry has passed.
    #[error("enrolment token has expired")]
    ExpiredToken,
    /// The token enrolled an agent already.
    #[error("enrolment token was already used")]
    TokenAlreadyUsed,
}

/// Why [`Store::enroll_agent`] failed. Either way, nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token was refused; tell the enrolling agent why.
    #[error(transparent)]
    Refused(#[from] EnrollRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const AGENT_COLUMNS: &str =
    "id, hostname, enrolled_at, last_seen_at, connected, revoked_at, inventory, labels";

/// An agent's latest presence: when it was last seen, and whether its session has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    pub seen_at_ms: i64,
    pub gone: bool,
}

impl Store {
    /// In one transaction: consumes the enrolment token (only if it exists, is unused and has
    /// not expired at `now_ms`), inserts the agent and its certificate. On any refusal or error
    /// nothing is written, so the token stays usable.
    pub async fn enroll_agent(
        &self,
        token_hash: &str,
        now_ms: i64,
        agent: &NewAgent,
        cert: &NewCertificate,
    ) -> Result<(), EnrollError> {
        let mut tx = self.begin_write("begin enrolment").await?;
        // The conditional update is the single point where two agents racing for one token are
        // told apart: only one of them can turn used_at from NULL.
        let consumed = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $2, used_by_agent = $3 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(&agent.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err("consume enrolment token"))?;
        if !touched(&consumed) {
            let row = sqlx::query(
                "SELECT used_at, expires_at FROM enrollment_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("look up enrolment token"))?;
            let refusal = match row {
                None => EnrollRefusal::UnknownToken,
                Some(row) => {
                    let used_at: Option<i64> = row
                        .try_get("used_at")
                        .map_err(db_err("read enrolment token"))?;
                    if used_at.is_some() {
                        EnrollRefusal::TokenAlreadyUsed
                    } else {
                        EnrollRefusal::ExpiredToken
                    }
                }
            };
            tx.rollback().await.map_err(db_err("roll back enrolment"))?;
            return Err(refusal.into());
        }

        sqlx::query("INSERT INTO agents (id, hostname, enrolled_at) VALUES ($1, $2, $3)")
            .bind(&agent.id)
            .bind(&agent.hostname)
            .bind(agent.enrolled_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err("insert agent"))?;
        sqlx::query(
            "INSERT INTO certificates (serial, agent_id, issued_at, not_after) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&cert.serial)
        .bind(&agent.id)
        .bind(cert.issued_at_ms)
        .bind(cert.not_after_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err("insert certificate"))?;
        tx.commit().await.map_err(db_err("commit enrolment"))?;
        Ok(())
    }

    /// Every agent, ordered by host name then id.
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY hostname, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list agents"))?;
        rows.iter().map(agent_from_row).collect()
    }

    /// The agent with `id`, if there is one.
    pub async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("get agent"))?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Records an established session: connected, seen now, with its inventory; the host name
    /// follows the inventory's when that is not empty.
    pub async fn agent_connected(
        &self,
        id: &str,
        inventory: &Inventory,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(inventory).map_err(|source| StoreError::Json {
            what: "agent inventory",
            source,
        })?;
        let hostname = Some(inventory.hostname.as_str()).filter(|h| !h.is_empty());
        let result = sqlx::query(
            "UPDATE agents SET connected = 1, last_seen_at = $2, inventory = $3, \
             hostname = COALESCE($4, hostname) WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .bind(json)
        .bind(hostname.map(str::to_owned))
        .execute(&self.pool)
        .await
        .map_err(db_err("record agent connection"))?;
        require_agent(&result, id)
    }

    /// Replaces the containment policy in an agent's stored inventory, keeping the rest (the
    /// agent reported a change mid-session). A compare-and-set on the stored text, so a hello
    /// storing a whole inventory at the same moment is never half overwritten: the later
    /// write wins whole. `AgentNotFound` for an unknown agent.
    pub async fn set_agent_action_policy(
        &self,
        id: &str,
        policy: &PolicySummary,
    ) -> Result<(), StoreError> {
        const OP: &str = "update agent policy";
        for _ in 0..5 {
            let row = sqlx::query("SELECT inventory FROM agents WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err(OP))?;
            let Some(row) = row else {
                return Err(StoreError::AgentNotFound { id: id.to_owned() });
            };
            let stored: Option<String> = column(&row, "inventory")?;
            let mut inventory: Inventory = stored
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            inventory.action_policy = policy.clone();
            let json = serde_json::to_string(&inventory).map_err(|source| StoreError::Json {
                what: "agent inventory",
                source,
            })?;
            let result = sqlx::query(
                "UPDATE agents SET inventory = $2 WHERE id = $1 \
                 AND (inventory = $3 OR (inventory IS NULL AND $3 IS NULL))",
            )
            .bind(id)
            .bind(json)
            .bind(stored)
            .execute(&self.pool)
            .await
            .map_err(db_err(OP))?;
            if touched(&result) {
                return Ok(());
            }
        }
        Err(StoreError::InvalidData {
            what: "agent inventory",
            detail: format!("agent {id}'s inventory kept changing while its policy was updated"),
        })
    }

    /// Records many agents' presence in one transaction: each one's last-seen time, and for
    /// those whose session ended (`gone`), that they are disconnected. Unknown ids are skipped.
    pub async fn record_presence(
        &self,
        batch: &[(String, PresenceChange)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("begin presence update").await?;
        for (id, p) in batch {
            let sql = if p.gone {
                "UPDATE agents SET connected = 0, last_seen_at = $2 WHERE id = $1"
            } else {
                "UPDATE agents SET last_seen_at = $2 WHERE id = $1"
            };
            sqlx::query(sql)
                .bind(id)
                .bind(p.seen_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err("record agent presence"))?;
        }
        tx.commit().await.map_err(db_err("commit presence update"))
    }

    /// Marks every agent disconnected (sessions do not survive a controller restart); returns
    /// how many were marked connected.
    pub async fn mark_all_disconnected(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("UPDATE agents SET connected = 0 WHERE connected <> 0")
            .execute(&self.pool)
            .await
            .map_err(db_err("mark agents disconnected"))?;
        Ok(result.rows_affected())
    }

    /// Revokes the agent and every certificate it holds, keeping earlier revocation times.
    /// Returns false if there is no such agent.
    pub async fn revoke_agent(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin revocation").await?;
        // COALESCE rather than `AND revoked_at IS NULL` so the row still counts as found when
        // it was revoked before.
        let agent =
            sqlx::query("UPDATE agents SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err("revoke agent"))?;
        if !touched(&agent) {
            tx.rollback()
                .await
                .map_err(db_err("roll back revocation"))?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE certificates SET revoked_at = $2 WHERE agent_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err("revoke agent certificates"))?;
        tx.commit().await.map_err(db_err("commit revocation"))?;
        Ok(true)
    }

    /// Every revoked certificate as (serial in lowercase hex, revocation time in ms), for the
    /// CRL, ordered by serial.
    pub async fn revoked_serials(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL \
             ORDER BY serial",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list revoked certificates"))?;
        rows.iter()
            .map(|row| {
                let serial = row
                    .try_get("serial")
                    .map_err(db_err("read revoked certificate"))?;
                let revoked_at = row
                    .try_get("revoked_at")
                    .map_err(db_err("read revoked certificate"))?;
                Ok((serial, revoked_at))
            })
            .collect()
    }

    /// Replaces the agent's labels. Returns false if there is no such agent.
    pub async fn set_agent_labels(&self, id: &str, labels: &[String]) -> Result<bool, StoreError> {
        let json = serde_json::to_string(labels).map_err(|source| StoreError::Json {
            what: "agent labels",
            source,
        })?;
        let result = sqlx::query("UPDATE agents SET labels = $2 WHERE id = $1")
            .bind(id)
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(db_err("set agent labels"))?;
        Ok(touched(&result))
    }
}

fn require_agent(result: &sqlx::any::AnyQueryResult, id: &str) -> Result<(), StoreError> {
    if touched(result) {
        Ok(())
    } else {
        Err(StoreError::AgentNotFound { id: id.to_owned() })
    }
}

fn agent_from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let id: String = column(row, "id")?;
    let inventory: Option<String> = column(row, "inventory")?;
    let labels: String = column(row, "labels")?;
    let connected: i64 = column(row, "connected")?;
    Ok(AgentRecord {
        hostname: column(row, "hostname")?,
        enrolled_at_ms: column(row, "enrolled_at")?,
        last_seen_at_ms: column(row, "last_seen_at")?,
        connected: connected != 0,
        revoked_at_ms: column(row, "revoked_at")?,
        // Inventory is informational and replaced at the next connection; one that no longer
        // decodes (say, written by another version) must not hide the agent from listings.
        inventory: inventory.and_then(|json| match serde_json::from_str(&json) {
            Ok(inventory) => Some(inventory),
            Err(error) => {
                tracing::warn!(agent_id = %id, %error, "ignoring undecodable stored inventory");
                None
            }
        }),
        labels: serde_json::from_str(&labels).map_err(|source| StoreError::Json {
            what: "agent labels",
            source,
        })?,
        id,
    })
}

fn column<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(db_err("read agent"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;
    use crate::store::NewEnrollmentToken;

    const NOW: i64 = 1_700_000_000_000;
    const HOUR: i64 = 3_600_000;

    async fn add_token(store: &Store, hash: &str, expires_at_ms: i64) {
        store
            .create_enrollment_token(&NewEnrollmentToken {
                token_hash: hash.to_owned(),
                created_at_ms: NOW - HOUR,
                expires_at_ms,
                created_by: "admin".to_owned(),
                note: None,
            })
            .await
            .unwrap();
    }

    fn agent(id: &str, hostname: &str) -> NewAgent {
        NewAgent {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            enrolled_at_ms: NOW,
        }
    }

    fn cert(serial: &str) -> NewCertificate {
        NewCertificate {
            serial: serial.to_owned(),
            issued_at_ms: NOW,
            not_after_ms: NOW + 24 * HOUR,
        }
    }

    async fn token_used_at(store: &Store, hash: &str) -> Option<i64> {
        let tokens = store.list_enrollment_tokens().await.unwrap();
        let prefix: String = hash.chars().take(12).collect();
        let token = tokens.iter().find(|t| t.token_hash_prefix == prefix);
        token.unwrap().used_at_ms
    }

    async fn enrolment_token_is_single_use(store: &Store) {
        add_token(store, "aaaa", NOW + HOUR).await;
        store
            .enroll_agent("aaaa", NOW, &agent("a1", "web-01"), &cert("01"))
            .await
            .unwrap();
        let err = store
            .enroll_agent("aaaa", NOW + 1, &agent("a2", "web-02"), &cert("02"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EnrollError::Refused(EnrollRefusal::TokenAlreadyUsed)),
            "{err}"
        );
        assert_eq!(err.to_string(), "enrolment token was already used");
        let agents = store.list_agents().await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].id, "a1");
        assert_eq!(agents[0].hostname, "web-01");
        assert_eq!(agents[0].enrolled_at_ms, NOW);
        assert!(!agents[0].connected);
        assert_eq!(token_used_at(store, "aaaa").await, Some(NOW));
    }

    async fn racing_enrolments_use_a_token_once(store: &Store) {
        add_token(store, "race", NOW + HOUR).await;
        let (agent1, cert1) = (agent("r1", "h1"), cert("11"));
        let (agent2, cert2) = (agent("r2", "h2"), cert("12"));
        let (a, b) = tokio::join!(
            store.enroll_agent("race", NOW, &agent1, &cert1),
            store.enroll_agent("race", NOW, &agent2, &cert2),
        );
        let refused = [&a, &b]
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(EnrollError::Refused(EnrollRefusal::TokenAlreadyUsed))
                )
            })
            .count();
        assert_eq!(refused, 1, "{a:?} {b:?}");
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        assert_eq!(store.list_agents().await.unwrap().len(), 1);
    }

    async fn expired_and_unknown_tokens_write_nothing(store: &Store) {
        add_token(store, "old", NOW).await;
        let err = store
            .enroll_agent("old", NOW, &agent("a1", "h"), &cert("01"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EnrollError::Refused(EnrollRefusal::ExpiredToken)),
            "{err}"
        );
        assert_eq!(err.to_string(), "enrolment token has expired");
        let err = store
            .enroll_agent("nope", NOW, &agent("a1", "h"), &cert("01"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EnrollError::Refused(EnrollRefusal::UnknownToken)),
            "{err}"
        );
        assert_eq!(err.to_string(), "unknown enrolment token");
        assert!(store.list_agents().await.unwrap().is_empty());
        assert!(store.revoked_serials().await.unwrap().is_empty());
        assert_eq!(token_used_at(store, "old").await, None);
    }

    async fn failed_enrolment_leaves_token_usable(store: &Store) {
        add_token(store, "first", NOW + HOUR).await;
        add_token(store, "second", NOW + HOUR).await;
        store
            .enroll_agent("first", NOW, &agent("dup", "h1"), &cert("01"))
            .await
            .unwrap();
        // Same agent id again: the insert fails, so the token must not be consumed.
        let err = store
            .enroll_agent("second", NOW, &agent("dup", "h2"), &cert("02"))
            .await
            .unwrap_err();
        assert!(matches!(err, EnrollError::Store(_)), "{err}");
        assert_eq!(token_used_at(store, "second").await, None);
        store
            .enroll_agent("second", NOW, &agent("other", "h2"), &cert("02"))
            .await
            .unwrap();
    }

    async fn session_state_is_tracked(store: &Store) {
        add_token(store, "t", NOW + HOUR).await;
        store
            .enroll_agent("t", NOW, &agent("a1", "enrolled-name"), &cert("01"))
            .await
            .unwrap();
        let inventory = Inventory {
            hostname: "db-01".to_owned(),
            os: "Debian GNU/Linux 12".to_owned(),
            addresses: vec!["10.0.0.5".to_owned()],
            ..Inventory::default()
        };
        store
            .agent_connected("a1", &inventory, NOW + 1)
            .await
            .unwrap();
        let a = store.get_agent("a1").await.unwrap().unwrap();
        assert!(a.connected);
        assert_eq!(a.last_seen_at_ms, Some(NOW + 1));
        assert_eq!(a.hostname, "db-01");
        assert_eq!(a.inventory.as_ref(), Some(&inventory));

        let seen = |at, gone| PresenceChange {
            seen_at_ms: at,
            gone,
        };
        store
            .record_presence(&[("a1".into(), seen(NOW + 2, false))])
            .await
            .unwrap();
        let a = store.get_agent("a1").await.unwrap().unwrap();
        assert!(a.connected);
        assert_eq!(a.last_seen_at_ms, Some(NOW + 2));

        // An empty host name in a later hello keeps the one we have.
        let blank = Inventory::default();
        store.agent_connected("a1", &blank, NOW + 3).await.unwrap();
        assert_eq!(
            store.get_agent("a1").await.unwrap().unwrap().hostname,
            "db-01"
        );

        store
            .record_presence(&[
                ("a1".into(), seen(NOW + 4, true)),
                ("ghost".into(), seen(NOW + 4, true)),
            ])
            .await
            .unwrap();
        let a = store.get_agent("a1").await.unwrap().unwrap();
        assert!(!a.connected);
        assert_eq!(a.last_seen_at_ms, Some(NOW + 4));

        store
            .agent_connected("a1", &inventory, NOW + 5)
            .await
            .unwrap();
        assert_eq!(store.mark_all_disconnected().await.unwrap(), 1);
        assert!(!store.get_agent("a1").await.unwrap().unwrap().connected);
        assert_eq!(store.mark_all_disconnected().await.unwrap(), 0);

        assert!(store.get_agent("ghost").await.unwrap().is_none());
    }

    async fn agents_are_listed_by_hostname(store: &Store) {
        for (i, (id, host)) in [("z", "b-host"), ("y", "a-host"), ("x", "b-host")]
            .into_iter()
            .enumerate()
        {
            let hash = format!("tok{i}");
            add_token(store, &hash, NOW + HOUR).await;
            store
                .enroll_agent(&hash, NOW, &agent(id, host), &cert(&format!("0{i}")))
                .await
                .unwrap();
        }
        let ids: Vec<String> = store
            .list_agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["y", "x", "z"]);
    }

    async fn revocation_feeds_the_crl(store: &Store) {
        add_token(store, "t1", NOW + HOUR).await;
        add_token(store, "t2", NOW + HOUR).await;
        store
            .enroll_agent("t1", NOW, &agent("bad", "h1"), &cert("0abc"))
            .await
            .unwrap();
        store
            .enroll_agent("t2", NOW, &agent("good", "h2"), &cert("0def"))
            .await
            .unwrap();
        assert!(store.revoke_agent("bad", NOW + 10).await.unwrap());
        // Revoking again keeps the first time.
        assert!(store.revoke_agent("bad", NOW + 20).await.unwrap());
        assert!(!store.revoke_agent("ghost", NOW).await.unwrap());

        let bad = store.get_agent("bad").await.unwrap().unwrap();
        assert_eq!(bad.revoked_at_ms, Some(NOW + 10));
        let good = store.get_agent("good").await.unwrap().unwrap();
        assert_eq!(good.revoked_at_ms, None);
        assert_eq!(
            store.revoked_serials().await.unwrap(),
            [("0abc".to_owned(), NOW + 10)]
        );
    }

    async fn labels_round_trip(store: &Store) {
        add_token(store, "t", NOW + HOUR).await;
        store
            .enroll_agent("t", NOW, &agent("a1", "h"), &cert("01"))
            .await
            .unwrap();
        assert!(store
            .get_agent("a1")
            .await
            .unwrap()
            .unwrap()
            .labels
            .is_empty());
        let labels = vec!["prod".to_owned(), "pci \"zone\"".to_owned()];
        assert!(store.set_agent_labels("a1", &labels).await.unwrap());
        assert_eq!(store.get_agent("a1").await.unwrap().unwrap().labels, labels);
        assert!(!store.set_agent_labels("ghost", &labels).await.unwrap());
    }

    async fn a_policy_change_keeps_the_rest_of_the_inventory(store: &Store) {
        use cordon_protocol::action::{ActionKind, SignerSummary};
        add_token(store, "t", NOW + HOUR).await;
        store
            .enroll_agent("t", NOW, &agent("a1", "h"), &cert("01"))
            .await
            .unwrap();
        let policy = PolicySummary {
            signers: vec![SignerSummary {
                name: "alice".into(),
                key_id: "00112233".into(),
                actions: vec![ActionKind::Kill],
                max_ttl_secs: 600,
            }],
            required_signers: vec![(ActionKind::Kill, 2)],
            signed_reads: true,
        };
        // Before any hello: an inventory that is nothing but the policy.
        store.set_agent_action_policy("a1", &policy).await.unwrap();
        let a = store.get_agent("a1").await.unwrap().unwrap();
        assert_eq!(a.inventory.unwrap().action_policy, policy);

        let inventory = Inventory {
            hostname: "db-01".to_owned(),
            ..Inventory::default()
        };
        store.agent_connected("a1", &inventory, NOW).await.unwrap();
        store.set_agent_action_policy("a1", &policy).await.unwrap();
        let stored = store.get_agent("a1").await.unwrap().unwrap().inventory;
        let stored = stored.unwrap();
        assert_eq!(stored.hostname, "db-01");
        assert_eq!(stored.action_policy, policy);
        assert!(matches!(
            store.set_agent_action_policy("ghost", &policy).await,
            Err(StoreError::AgentNotFound { .. })
        ));
    }

    backend_tests!(
        a_policy_change_keeps_the_rest_of_the_inventory,
        enrolment_token_is_single_use,
        racing_enrolments_use_a_token_once,
        expired_and_unknown_tokens_write_nothing,
        failed_enrolment_leaves_token_usable,
        session_state_is_tracked,
        agents_are_listed_by_hostname,
        revocation_feeds_the_crl,
        labels_round_trip,
    );
}

//! Enrolment tokens (one-time secrets that let a new agent obtain a certificate) and API bearer
//! tokens with roles. Only hashes of the secrets are stored; callers hash before calling.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{db_err, touched, Store, StoreError};
pub use cordon_api::tokens::{ApiTokenRecord, EnrollmentTokenRecord, ParseRoleError, Role};

/// How many hex characters of a token hash are shown to people: enough to tell tokens apart,
/// too few to matter if leaked.
const DISPLAY_PREFIX_LEN: usize = 12;

/// An enrolment token about to be stored.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    /// Hash of the secret token, hex.
    pub token_hash: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The token is refused from this time on.
    pub expires_at_ms: i64,
    /// Who created it (API token name or user).
    pub created_by: String,
    /// Free text, e.g. which host it is meant for.
    pub note: Option<String>,
}

impl Store {
    /// Stores a new enrolment token.
    pub async fn create_enrollment_token(&self, t: &NewEnrollmentToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at, created_by, note) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.token_hash)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .bind(&t.created_by)
        .bind(t.note.clone())
        .execute(&self.pool)
        .await
        .map_err(db_err("insert enrolment token"))?;
        Ok(())
    }

    /// Every enrolment token, newest first.
    pub async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT token_hash, created_at, expires_at, created_by, note, used_at, used_by_agent \
             FROM enrollment_tokens ORDER BY created_at DESC, token_hash",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list enrolment tokens"))?;
        rows.iter()
            .map(|row| {
                let hash: String = column(row, "token_hash", "read enrolment token")?;
                Ok(EnrollmentTokenRecord {
                    token_hash_prefix: hash.chars().take(DISPLAY_PREFIX_LEN).collect(),
                    created_at_ms: column(row, "created_at", "read enrolment token")?,
                    expires_at_ms: column(row, "expires_at", "read enrolment token")?,
                    created_by: column(row, "created_by", "read enrolment token")?,
                    note: column(row, "note", "read enrolment token")?,
                    used_at_ms: column(row, "used_at", "read enrolment token")?,
                    used_by_agent: column(row, "used_by_agent", "read enrolment token")?,
                })
            })
            .collect()
    }

    /// Stores a new API token.
    pub async fn create_api_token(
        &self,
        id: &str,
        token_hash: &str,
        name: &str,
        role: Role,
        created_at_ms: i64,
        expires_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, token_hash, name, role, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(token_hash)
        .bind(name)
        .bind(role.as_str())
        .bind(created_at_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err("insert API token"))?;
        Ok(())
    }

    /// The API token with this hash, only if it is neither revoked nor expired at `now_ms`.
    pub async fn find_api_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ApiTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("find API token"))?;
        row.as_ref().map(api_token_from_row).transpose()
    }

    /// Revokes the API token `id` (keeping an earlier revocation time). Returns false if there is
    /// no such token.
    pub async fn revoke_api_token(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err("revoke API token"))?;
        Ok(touched(&result))
    }

    /// Every API token (never its hash), newest first.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens \
             ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("list API tokens"))?;
        rows.iter().map(api_token_from_row).collect()
    }

    /// The API token `id`, revoked or not.
    pub async fn get_api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("read API token"))?;
        row.as_ref().map(api_token_from_row).transpose()
    }

    /// Ends the life of the one unused enrolment token whose hash starts with `prefix` (as
    /// listings show it): it expires now, so it can enrol nothing.
    pub async fn revoke_enrollment_token(
        &self,
        prefix: &str,
        now_ms: i64,
    ) -> Result<EnrollmentRevocation, StoreError> {
        let matching: Vec<EnrollmentTokenRecord> = self
            .list_enrollment_tokens()
            .await?
            .into_iter()
            .filter(|t| t.token_hash_prefix.starts_with(prefix))
            .collect();
        let token = match matching.as_slice() {
            [] => return Ok(EnrollmentRevocation::NotFound),
            [one] => one.clone(),
            many => {
                return Ok(EnrollmentRevocation::Ambiguous(
                    many.iter().map(|t| t.token_hash_prefix.clone()).collect(),
                ))
            }
        };
        if token.used_at_ms.is_some() {
            return Ok(EnrollmentRevocation::AlreadyUsed(token));
        }
        // The prefix is of the hash's hex; LIKE on it matches what the listing matched.
        let result = sqlx::query(
            "UPDATE enrollment_tokens SET expires_at = $2 \
             WHERE token_hash LIKE $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(format!("{}%", token.token_hash_prefix))
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err("revoke enrolment token"))?;
        if touched(&result) {
            return Ok(EnrollmentRevocation::Revoked(EnrollmentTokenRecord {
                expires_at_ms: now_ms,
                ..token
            }));
        }
        // Nothing changed: it expired already, or it enrolled an agent since it was listed.
        let now = self
            .list_enrollment_tokens()
            .await?
            .into_iter()
            .find(|t| t.token_hash_prefix == token.token_hash_prefix)
            .unwrap_or(token);
        Ok(if now.used_at_ms.is_some() {
            EnrollmentRevocation::AlreadyUsed(now)
        } else {
            EnrollmentRevocation::Revoked(now)
        })
    }

    /// How many API tokens were ever created, revoked and expired ones included (so revoking
    /// every token does not look like a fresh installation).
    pub async fn count_api_tokens(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("count API tokens"))
    }
}

/// How revoking an enrolment token went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentRevocation {
    /// It can enrol nothing now (it may have expired already).
    Revoked(EnrollmentTokenRecord),
    NotFound,
    /// Several tokens' hashes start so: these.
    Ambiguous(Vec<String>),
    /// It enrolled an agent already: revoke the agent instead.
    AlreadyUsed(EnrollmentTokenRecord),
}

fn api_token_from_row(row: &AnyRow) -> Result<ApiTokenRecord, StoreError> {
    const OP: &str = "read API token";
    let role: String = column(row, "role", OP)?;
    Ok(ApiTokenRecord {
        id: column(row, "id", OP)?,
        name: column(row, "name", OP)?,
        role: role
            .parse()
            .map_err(|e: ParseRoleError| StoreError::InvalidData {
                what: "API token role",
                detail: e.to_string(),
            })?,
        created_at_ms: column(row, "created_at", OP)?,
        expires_at_ms: column(row, "expires_at", OP)?,
        revoked_at_ms: column(row, "revoked_at", OP)?,
    })
}

fn column<'r, T>(row: &'r AnyRow, name: &str, op: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(db_err(op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn roles_allow_what_the_design_says() {
        use Role::*;
        let allowed = |holder: Role| -> Vec<Role> {
            Role::ALL
                .into_iter()
                .filter(|&n| holder.allows(n))
                .collect()
        };
        assert_eq!(allowed(Admin), [Viewer, Responder, Admin, Automation]);
        assert_eq!(allowed(Responder), [Viewer, Responder]);
        assert_eq!(allowed(Automation), [Viewer, Automation]);
        assert_eq!(allowed(Viewer), [Viewer]);
    }

    #[test]
    fn roles_parse_and_serialize_lowercase() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown role `root`: expected one of viewer, responder, admin, automation"
        );
        assert!("Admin".parse::<Role>().is_err());
    }

    async fn enrolment_tokens_list_newest_first_without_full_hash(store: &Store) {
        let hash_old = "0123456789abcdef0123456789abcdef";
        let hash_new = "fedcba9876543210fedcba9876543210";
        for (hash, created) in [(hash_old, NOW - 10), (hash_new, NOW)] {
            store
                .create_enrollment_token(&NewEnrollmentToken {
                    token_hash: hash.to_owned(),
                    created_at_ms: created,
                    expires_at_ms: created + 1000,
                    created_by: "admin".to_owned(),
                    note: (hash == hash_new).then(|| "for web-07".to_owned()),
                })
                .await
                .unwrap();
        }
        let tokens = store.list_enrollment_tokens().await.unwrap();
        let prefixes: Vec<&str> = tokens
            .iter()
            .map(|t| t.token_hash_prefix.as_str())
            .collect();
        assert_eq!(prefixes, ["fedcba987654", "0123456789ab"]);
        assert_eq!(tokens[0].note.as_deref(), Some("for web-07"));
        assert_eq!(tokens[0].expires_at_ms, NOW + 1000);
        assert_eq!(tokens[1].note, None);
        assert_eq!(tokens[1].used_at_ms, None);
        assert_eq!(tokens[1].used_by_agent, None);
    }

    async fn api_token_lookup_respects_expiry_and_revocation(store: &Store) {
        assert_eq!(store.count_api_tokens().await.unwrap(), 0);
        store
            .create_api_token("t1", "hash-forever", "ci", Role::Automation, NOW, None)
            .await
            .unwrap();
        store
            .create_api_token(
                "t2",
                "hash-brief",
                "alice",
                Role::Responder,
                NOW,
                Some(NOW + 100),
            )
            .await
            .unwrap();
        assert_eq!(store.count_api_tokens().await.unwrap(), 2);

        let found = store
            .find_api_token("hash-forever", NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, "t1");
        assert_eq!(found.name, "ci");
        assert_eq!(found.role, Role::Automation);
        assert_eq!(found.expires_at_ms, None);
        let json = serde_json::to_string(&found).unwrap();
        assert!(!json.contains("hash-forever"), "{json}");

        let brief = store.find_api_token("hash-brief", NOW + 99).await.unwrap();
        assert_eq!(brief.map(|t| t.role), Some(Role::Responder));
        assert!(store
            .find_api_token("hash-brief", NOW + 100)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .find_api_token("no-such", NOW)
            .await
            .unwrap()
            .is_none());

        assert!(store.revoke_api_token("t1", NOW + 1).await.unwrap());
        assert!(store
            .find_api_token("hash-forever", NOW + 2)
            .await
            .unwrap()
            .is_none());
        assert!(!store.revoke_api_token("ghost", NOW).await.unwrap());
        // Revoked tokens still count: revoking everything is not a fresh install.
        assert_eq!(store.count_api_tokens().await.unwrap(), 2);

        // A token hash is unique.
        let err = store
            .create_api_token("t3", "hash-brief", "bob", Role::Viewer, NOW, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Database { .. }), "{err}");
    }

    async fn enrolment_tokens_are_revoked_by_an_unambiguous_prefix(store: &Store) {
        for (hash, at) in [
            ("abcdef0001", NOW),
            ("abcdef0002", NOW + 1),
            ("9999990000", NOW + 2),
        ] {
            store
                .create_enrollment_token(&NewEnrollmentToken {
                    token_hash: hash.into(),
                    created_at_ms: at,
                    expires_at_ms: NOW + 60_000,
                    created_by: "admin".into(),
                    note: None,
                })
                .await
                .unwrap();
        }
        let ambiguous = store
            .revoke_enrollment_token("abcdef", NOW + 5)
            .await
            .unwrap();
        assert_eq!(
            ambiguous,
            EnrollmentRevocation::Ambiguous(vec!["abcdef0002".into(), "abcdef0001".into()])
        );
        let missing = store
            .revoke_enrollment_token("777777", NOW + 5)
            .await
            .unwrap();
        assert_eq!(missing, EnrollmentRevocation::NotFound);
        let EnrollmentRevocation::Revoked(gone) = store
            .revoke_enrollment_token("abcdef0001", NOW + 5)
            .await
            .unwrap()
        else {
            panic!("not revoked")
        };
        assert_eq!(gone.expires_at_ms, NOW + 5);
        // Only that one: the other with the same start still lives.
        let tokens = store.list_enrollment_tokens().await.unwrap();
        let left: Vec<(&str, i64)> = tokens
            .iter()
            .map(|t| (t.token_hash_prefix.as_str(), t.expires_at_ms))
            .collect();
        assert!(left.contains(&("abcdef0002", NOW + 60_000)), "{left:?}");
        assert!(left.contains(&("abcdef0001", NOW + 5)), "{left:?}");
    }

    backend_tests!(
        enrolment_tokens_list_newest_first_without_full_hash,
        api_token_lookup_respects_expiry_and_revocation,
        enrolment_tokens_are_revoked_by_an_unambiguous_prefix,
    );
}

//! Enrolment tokens (`/api/v1/enrollment-tokens`) and API tokens (`/api/v1/api-tokens`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime in seconds (at most 30 days).
    pub ttl_secs: u64,
    #[serde(default)]
    pub note: Option<String>,
}

/// The one time an enrolment token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentTokenCreated {
    pub token: String,
    pub expires_at_ms: i64,
    /// SHA-256 fingerprint of the CA, for `cordon-agent enroll --ca-fingerprint`.
    pub ca_fingerprint: String,
}

/// An enrolment token as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentTokenRecord {
    /// The first characters of the token's hash, for display only.
    pub token_hash_prefix: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Expiry time, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// Free text given at creation.
    pub note: Option<String>,
    /// When it enrolled an agent, if it did.
    pub used_at_ms: Option<i64>,
    /// The agent it enrolled, if any.
    pub used_by_agent: Option<String>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only access.
    Viewer,
    /// Runs collections and proposes and submits responses.
    Responder,
    /// Everything, including token and agent management.
    Admin,
    /// Machine clients: opens incidents from alerts, and queues the collections a loaded
    /// playbook lists (and no other).
    Automation,
}

impl Role {
    /// Every role, in the order they are listed to users.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Responder, Role::Admin, Role::Automation];

    /// The role's name as stored and as written in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
            Role::Automation => "automation",
        }
    }

    /// Whether a holder of this role may do something that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Responder => matches!(needed, Role::Responder | Role::Viewer),
            Role::Automation => matches!(needed, Role::Automation | Role::Viewer),
            Role::Viewer => needed == Role::Viewer,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of viewer, responder, admin, automation")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| ParseRoleError(s.to_owned()))
    }
}

/// An API token as the API sees it; never carries the hash.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiTokenRecord {
    /// The token's id (public, used to revoke it).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Expiry time, if any.
    pub expires_at_ms: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<i64>,
}

/// `POST /api/v1/api-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// Who or what holds it; shown as the actor in the audit log.
    pub name: String,
    pub role: Role,
    /// Lifetime; without it the token lasts until revoked.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// The answer: the only time the token itself is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiTokenCreated {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub token: String,
    pub expires_at_ms: Option<i64>,
}

crate::eq_name!(Role);

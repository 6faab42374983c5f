//! `cordon tokens create|list|revoke`: one-time enrolment tokens; `cordon tokens
//! api-create|api-list|api-revoke`: API tokens with a role.

use clap::Subcommand;

use cordon_api::tokens::{
    ApiTokenCreated, ApiTokenRecord, CreateApiToken, CreateEnrollmentToken, EnrollmentTokenCreated,
    EnrollmentTokenRecord, Role,
};

use crate::{
    client::{path_segment, Client},
    output, CliError,
};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a one-time enrolment token and print the `cordon-agent enroll` line to use it.
    Create {
        /// Lifetime, e.g. 10m, 1h, 7d (at most 30d).
        #[arg(long, default_value = "1h", value_parser = parse_duration_secs)]
        ttl: u64,
        /// A note for the operator (e.g. which host it is for).
        #[arg(long)]
        note: Option<String>,
    },
    /// List enrolment tokens (hash prefixes only; tokens are never stored).
    List,
    /// Revoke an unused enrolment token by the start of its hash (as `list` shows it): it
    /// expires now and can enrol nothing.
    Revoke {
        /// At least 6 hex digits of the token's hash.
        prefix: String,
    },
    /// Create an API token with a role and print it (shown this once; only its hash is kept).
    ApiCreate {
        /// viewer, responder, admin or automation.
        #[arg(long)]
        role: Role,
        /// Who or what will hold it; the audit log names it as the actor.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 12h, 90d (at most 365d); without it the token lasts until revoked.
        #[arg(long, value_parser = parse_duration_secs)]
        ttl: Option<u64>,
    },
    /// List API tokens: id, name, role, expiry and revocation (never the tokens).
    ApiList,
    /// Revoke an API token by id: from now on it is refused.
    ApiRevoke {
        /// The token's id, as `api-list` shows it.
        id: String,
    },
}

pub async fn run(client: &Client, command: TokensCommand, json: bool) -> Result<String, CliError> {
    match command {
        TokensCommand::Create { ttl, note } => {
            let created: EnrollmentTokenCreated = client
                .post(
                    "/api/v1/enrollment-tokens",
                    &CreateEnrollmentToken {
                        ttl_secs: ttl,
                        note,
                    },
                )
                .await?;
            if json {
                return Ok(output::json(&created));
            }
            Ok(format!(
                "token:          {}\nexpires:        {}\nca fingerprint: {}\n\nenrol a host with:\n  cordon-agent enroll --controller HOST:PORT --ca-fingerprint {} --token {}\n",
                created.token,
                output::time(Some(created.expires_at_ms)),
                created.ca_fingerprint,
                created.ca_fingerprint,
                created.token
            ))
        }
        TokensCommand::ApiCreate { role, name, ttl } => {
            let created: ApiTokenCreated = client
                .post(
                    "/api/v1/api-tokens",
                    &CreateApiToken {
                        name,
                        role,
                        ttl_secs: ttl,
                    },
                )
                .await?;
            if json {
                return Ok(output::json(&created));
            }
            Ok(format!(
                "token:   {}\nid:      {}\nname:    {}\nrole:    {}\nexpires: {}\n\nThe token is shown only now; the controller keeps its hash.\n",
                created.token,
                created.id,
                created.name,
                created.role,
                created
                    .expires_at_ms
                    .map_or_else(|| "never (until revoked)".to_owned(), |ms| output::time(Some(ms))),
            ))
        }
        TokensCommand::Revoke { prefix } => {
            let token: EnrollmentTokenRecord = client
                .post(
                    &format!(
                        "/api/v1/enrollment-tokens/{}/revoke",
                        path_segment(&prefix)?
                    ),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                return Ok(output::json(&token));
            }
            Ok(format!(
                "enrolment token {} revoked: it can enrol nothing (expired {})\n",
                token.token_hash_prefix,
                output::time(Some(token.expires_at_ms))
            ))
        }
        TokensCommand::ApiList => {
            let tokens: Vec<ApiTokenRecord> = client.get("/api/v1/api-tokens").await?;
            if json {
                return Ok(output::json(&tokens));
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.role.to_string(),
                        output::time(Some(t.created_at_ms)),
                        t.expires_at_ms
                            .map_or_else(|| "never".to_owned(), |ms| output::time(Some(ms))),
                        output::time(t.revoked_at_ms),
                    ]
                })
                .collect();
            Ok(output::table(
                &["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"],
                &rows,
            ))
        }
        TokensCommand::ApiRevoke { id } => {
            let token: ApiTokenRecord = client
                .post(
                    &format!("/api/v1/api-tokens/{}/revoke", path_segment(&id)?),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                return Ok(output::json(&token));
            }
            Ok(format!(
                "API token {} ({}, {}) revoked at {}\n",
                token.id,
                token.name,
                token.role,
                output::time(token.revoked_at_ms)
            ))
        }
        TokensCommand::List => {
            let tokens: Vec<EnrollmentTokenRecord> =
                client.get("/api/v1/enrollment-tokens").await?;
            if json {
                return Ok(output::json(&tokens));
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.token_hash_prefix.clone(),
                        output::time(Some(t.created_at_ms)),
                        output::time(Some(t.expires_at_ms)),
                        t.used_by_agent.clone().unwrap_or_else(|| "-".into()),
                        t.note.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(output::table(
                &["HASH", "CREATED", "EXPIRES", "USED BY", "NOTE"],
                &rows,
            ))
        }
    }
}

pub use cordon_api::format::parse_duration_secs;

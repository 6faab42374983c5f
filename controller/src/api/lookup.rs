//! `GET /api/v1/lookup/{kind}?q=…`: what a hostname or an id prefix may mean (viewer).

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use cordon_api::lookup::{id_prefix, Lookup, LookupKind, LookupQuery, MAX_MATCHES, MAX_QUERY};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::Role,
};

#[utoipa::path(
    get,
    path = "/api/v1/lookup/{kind}",
    operation_id = "lookup",
    tag = "lookup",
    summary = "The ids a hostname or an id prefix may mean",
    description = "Needs a token with the viewer role (or one that includes it). `kind` is one \
                   of agent, incident, action, task, hunt, watch, alert, evidence. `q` is the \
                   first characters of an id (of a SHA-256 for evidence), or for agents a \
                   hostname in any case; exact hostname matches come first. Clients use it to \
                   accept what tables print and to list the candidates of an ambiguous prefix.",
    params(("kind" = cordon_api::lookup::LookupKind, Path, description = "What to look up"), LookupQuery),
    responses(
        (status = 200, description = "Done (no match is an empty list)", body = cordon_api::lookup::Lookup),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn lookup(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Json<Lookup>, ApiError> {
    caller.require(Role::Viewer)?;
    let kind: LookupKind = kind.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "cannot look up {:?}: expected one of {}",
            cordon_api::format::bounded(&kind, 40),
            LookupKind::names()
        ))
    })?;
    let Query(query) = query?;
    let q = query.q.trim();
    if q.is_empty() || q.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!(
            "q: expected 1 to {MAX_QUERY} characters, got {}",
            q.len()
        )));
    }
    let prefix = id_prefix(kind, q);
    let hostname = (kind == LookupKind::Agent).then_some(q);
    if prefix.is_none() && hostname.is_none() {
        return Err(ApiError::bad_request(format!(
            "q={:?}: a {kind} {} is made of hex digits{}",
            cordon_api::format::bounded(q, 80),
            kind.key(),
            if kind == LookupKind::Evidence {
                ""
            } else {
                " and -"
            }
        )));
    }
    let mut matches = state
        .store
        .lookup(kind, prefix.as_deref(), hostname, MAX_MATCHES + 1)
        .await?;
    let more = matches.len() > MAX_MATCHES;
    matches.truncate(MAX_MATCHES);
    Ok(Json(Lookup {
        kind,
        query: q.to_lowercase(),
        matches,
        more,
    }))
}

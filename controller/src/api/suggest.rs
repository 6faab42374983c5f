//! `POST /api/v1/incidents/{id}/suggest`: propose again what worked on similar past incidents.

use axum::{
    extract::{Path, State},
    Json,
};
use cordon_api::suggest::SuggestPage;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::Role,
};

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/suggest",
    operation_id = "incidents_suggest",
    tag = "incidents",
    summary = "Propose the responses that worked on similar past incidents",
    description = "Needs a token with the responder role (or one that includes it). Learns only \
                   from similar incidents closed and never reopened; each response becomes a \
                   pending action on this incident's hosts, attached to it, awaiting a \
                   responder's own signature (cordon approve). Nothing is signed or run. \
                   Suggesting again proposes nothing twice.",
    params(("id" = String, Path, description = "The incident's id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::suggest::SuggestPage),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn suggest(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SuggestPage>, ApiError> {
    caller.require(Role::Responder)?;
    Ok(Json(state.suggest_responses(&id, &caller.name).await?))
}

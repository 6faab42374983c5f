//! `GET /api/v1/incidents/{id}/similar`: the incidents most like one, why, how they ended and
//! what containment worked there.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use cordon_api::similar::{SimilarPage, DEFAULT_NOISE_SHARE, MAX_SIMILAR};
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::Role,
};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SimilarQuery {
    /// How many (default 10, at most 50).
    #[serde(default)]
    limit: Option<usize>,
    /// Share of all incidents above which a shared thing is noise (default 0.05).
    #[serde(default)]
    noise_share: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}/similar",
    operation_id = "incidents_similar",
    tag = "incidents",
    summary = "The incidents most like this one, with the reasons, how they ended and what worked",
    description = "Needs a token with the viewer role (or one that includes it). Shared \
                   observables (not benign, not ignored), hosts and alert rules count by how rare \
                   they are across all incidents; same kind and time apart add a little.",
    params(("id" = String, Path, description = "The incident's id"), SimilarQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::similar::SimilarPage),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn similar(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<SimilarQuery>, QueryRejection>,
) -> Result<Json<SimilarPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(10);
    if !(1..=MAX_SIMILAR).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} must be 1 to {MAX_SIMILAR}"
        )));
    }
    let share = query.noise_share.unwrap_or(DEFAULT_NOISE_SHARE);
    Ok(Json(state.similar_incidents(&id, limit, share).await?))
}

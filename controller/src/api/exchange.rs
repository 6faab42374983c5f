//! `GET /api/v1/incidents/{id}/export?format=stix|misp`: an incident's observables as a STIX 2.1
//! bundle or a MISP event.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    exchange::Format,
    store::Role,
};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `stix` (a STIX 2.1 bundle, the default) or `misp` (a MISP event).
    #[serde(default)]
    format: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}/export",
    operation_id = "incidents_export",
    tag = "incidents",
    summary = "An incident's observables as a STIX 2.1 bundle or a MISP event",
    description = "Needs a token with the viewer role (or one that includes it). STIX: \
                   observed-data for every observable, an indicator with its pattern and a \
                   sighting for each malicious or suspicious one, grouped under the incident. \
                   MISP: one attribute per observable, to_ids for malicious ones.",
    params(("id" = String, Path, description = "The incident's id"), ExportQuery),
    responses(
        (status = 200, description = "The bundle or event, as the format defines it", body = Object),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let format: Format = query.format.as_deref().unwrap_or("stix").parse()?;
    Ok(Json(state.export_incident(&id, format).await?))
}

//! `/api/v1/incidents/{id}/observables`: an incident's typed values (addresses, hashes, paths,
//! names…), what they were judged, and where they were seen.

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    Json,
};
use cordon_api::observables::{AddObservable, ObservableAdded, ObservableView, UpdateObservable};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::Role,
};

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}/observables",
    operation_id = "observables_list",
    tag = "incidents",
    summary = "An incident's observables, oldest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The incident's id")),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::observables::ObservableView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ObservableView>>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.incident_observables(&id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/observables",
    operation_id = "observables_add",
    tag = "incidents",
    summary = "Add an observable to an incident",
    description = "Needs a token with the responder role (or one that includes it). The value is \
                   validated and normalised for its type; a value already on the incident gets a \
                   sighting (and the verdict, if one is given) instead.",
    params(("id" = String, Path, description = "The incident's id")),
    request_body = cordon_api::observables::AddObservable,
    responses(
        (status = 201, description = "Added", body = cordon_api::observables::ObservableAdded),
        (status = 200, description = "Already there: a sighting was added", body = cordon_api::observables::ObservableAdded),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<AddObservable>, JsonRejection>,
) -> Result<(StatusCode, Json<ObservableAdded>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let added = state.add_observable(&id, body, &caller.name).await?;
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(added)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/incidents/{id}/observables/{observable_id}",
    operation_id = "observables_update",
    tag = "incidents",
    summary = "Change an observable's verdict or whether it counts for similarity",
    description = "Needs a token with the responder role (or one that includes it).",
    params(
        ("id" = String, Path, description = "The incident's id"),
        ("observable_id" = String, Path, description = "The observable's id"),
    ),
    request_body = cordon_api::observables::UpdateObservable,
    responses(
        (status = 200, description = "Done", body = cordon_api::observables::ObservableView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, observable_id)): Path<(String, String)>,
    body: Result<Json<UpdateObservable>, JsonRejection>,
) -> Result<Json<ObservableView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    Ok(Json(
        state
            .update_observable(&id, &observable_id, body, &caller.name)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/incidents/{id}/observables/{observable_id}",
    operation_id = "observables_remove",
    tag = "incidents",
    summary = "Remove an observable and its sightings",
    description = "Needs a token with the responder role (or one that includes it). Answers with \
                   the observable as it was.",
    params(
        ("id" = String, Path, description = "The incident's id"),
        ("observable_id" = String, Path, description = "The observable's id"),
    ),
    responses(
        (status = 200, description = "Removed", body = cordon_api::observables::ObservableView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, observable_id)): Path<(String, String)>,
) -> Result<Json<ObservableView>, ApiError> {
    caller.require(Role::Responder)?;
    Ok(Json(
        state
            .remove_observable(&id, &observable_id, &caller.name)
            .await?,
    ))
}

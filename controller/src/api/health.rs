//! `GET /api/v1/health`: no token needed, so load balancers and scripts can probe it.

use axum::{extract::State, Json};
use cordon_api::agents::Health;

use crate::api::AppState;

#[utoipa::path(
    get,
    path = "/api/v1/health",
    operation_id = "health_health",
    tag = "health",
    summary = "Whether the controller answers (no token needed)",
    description = "Needs no token.",
    responses(
        (status = 200, description = "Done", body = cordon_api::agents::Health),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        agents_online: state.registry.online_count(),
    })
}

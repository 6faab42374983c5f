//! `GET /api/v1/health`: no token needed, so load balancers and scripts can probe it.

use axum::{extract::State, Json};

use crate::api::{types::Health, AppState};

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        agents_online: state.registry.online_count(),
    })
}

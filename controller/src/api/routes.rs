//! Every route of `/api/v1`, and the OpenAPI document generated from the same annotations:
//! a handler reaches the router only through [`routes!`], which also puts it in the document,
//! so the two cannot drift.

use std::sync::LazyLock;

use axum::{http::header, response::IntoResponse};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    actions, agents, alerts, api_tokens, audit, events, evidence, exchange, health, hunts,
    incidents, lookup, observables, playbooks, similar, suggest, tasks, tokens, watches, webhooks,
    AppState,
};

/// The document's fixed parts; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cordon API",
        description = "The controller's HTTPS API: agents, collection, evidence, hunts, signed \
                       containment, incidents, alerts, playbooks, webhooks, audit and live \
                       events. Send `Authorization: Bearer TOKEN`; each route names the role \
                       it needs. Times are milliseconds since the Unix epoch, durations \
                       seconds, byte strings lowercase hex.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    components(schemas(cordon_api::error::ErrorBody)),
)]
struct ApiDoc;

/// The `bearer` security scheme every route but the health check and this document uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`cordon_api_…`)"))
                    .build(),
            ),
        );
    }
}

/// Every route but the two public ones may also answer 5XX (the store unreachable, say), with
/// the same error body.
struct ServerErrors;

impl Modify for ServerErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{content::ContentBuilder, response::ResponseBuilder, Ref, RefOr};
        let answer = ResponseBuilder::new()
            .description("The controller could not do it now (e.g. its store is unreachable)")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if op.security.is_some() {
                    op.responses
                        .responses
                        .insert("5XX".into(), RefOr::T(answer.clone()));
                }
            }
        }
    }
}

/// The routes and their document, before state and middleware.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(health::health))
        .routes(routes!(agents::list))
        .routes(routes!(agents::show))
        .routes(routes!(agents::revoke))
        .routes(routes!(agents::set_labels))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::show))
        .routes(routes!(tasks::cancel))
        .routes(routes!(actions::submit, actions::list))
        .routes(routes!(actions::automation))
        .routes(routes!(actions::show))
        .routes(routes!(actions::approve))
        .routes(routes!(hunts::create, hunts::list))
        .routes(routes!(hunts::show))
        .routes(routes!(alerts::receive, alerts::list))
        .routes(routes!(alerts::show))
        .routes(routes!(alerts::raw))
        .routes(routes!(incidents::create, incidents::list))
        .routes(routes!(incidents::show))
        .routes(routes!(incidents::stage))
        .routes(routes!(incidents::close))
        .routes(routes!(incidents::assign))
        .routes(routes!(incidents::escalate))
        .routes(routes!(incidents::severity))
        .routes(routes!(incidents::comment))
        .routes(routes!(incidents::add_hosts))
        .routes(routes!(incidents::link))
        .routes(routes!(incidents::report))
        .routes(routes!(observables::list, observables::add))
        .routes(routes!(observables::update, observables::remove))
        .routes(routes!(similar::similar))
        .routes(routes!(suggest::suggest))
        .routes(routes!(exchange::export))
        .routes(routes!(playbooks::list))
        .routes(routes!(playbooks::reload))
        .routes(routes!(evidence::list))
        .routes(routes!(evidence::content))
        .routes(routes!(evidence::manifests))
        .routes(routes!(evidence::verify))
        .routes(routes!(watches::create, watches::list))
        .routes(routes!(watches::show, watches::stop))
        .routes(routes!(watches::stop_by_post))
        .routes(routes!(watches::events))
        .routes(routes!(api_tokens::create, api_tokens::list))
        .routes(routes!(api_tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(events::stream))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::show, webhooks::remove))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::test))
        .routes(routes!(lookup::lookup))
}

/// The OpenAPI 3.1 document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_routes().split_for_parts().1;
    // After the merge: the handlers' paths are only there now.
    ServerErrors.modify(&mut document);
    document
}

/// The document as served and as written to `docs/openapi.json`: pretty JSON, one trailing
/// newline.
pub fn openapi_text() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

static DOCUMENT: LazyLock<String> = LazyLock::new(openapi_text);

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "health",
    summary = "This document",
    description = "Needs no token.",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_the_one_the_controller_serves() {
        let committed = include_str!("../../../docs/openapi.json");
        assert!(
            committed == openapi_text(),
            "docs/openapi.json is out of date: run \
             `cargo run -p cordon-controller -- openapi --out docs/openapi.json` and commit it"
        );
    }

    #[test]
    fn every_operation_has_a_unique_id_a_tag_and_an_error_answer() {
        let doc = openapi();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("delete", &item.delete),
            ] {
                let Some(op) = op else { continue };
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(ids.insert(id.clone()), "{method} {path}: id {id:?} twice");
                assert!(op.tags.as_ref().is_some_and(|t| !t.is_empty()), "{path}");
                let public = path == "/api/v1/health" || path == "/api/v1/openapi.json";
                assert_eq!(op.security.is_none(), public, "{method} {path}: security");
                if !public {
                    assert!(
                        op.responses.responses.contains_key("4XX"),
                        "{method} {path}: no error answer"
                    );
                }
            }
        }
    }
}

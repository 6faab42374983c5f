//! Every JSON answer the end-to-end tests get from the API is checked against the OpenAPI
//! document the controller serves: the route and method must be documented, the status listed,
//! and the body valid under the documented schema. So the document cannot drift from what the
//! controller really sends.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use serde_json::{json, Value};

/// The document, as the controller generates it.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(cordon_controller::api::routes::openapi()).expect("document as JSON")
});

/// Properties the document leaves free-form (a task's result, an event's data, a receipt's
/// before and after): what hosts and agents put there is theirs, so only the typed fields
/// around them are held to carrying no JSON text.
static FREE_FORM: LazyLock<std::collections::BTreeSet<String>> = LazyLock::new(|| {
    let mut names = std::collections::BTreeSet::new();
    let schemas = DOCUMENT["components"]["schemas"].as_object();
    for schema in schemas.into_iter().flat_map(|s| s.values()) {
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let typed = property.get("$ref").is_some()
                || property.get("properties").is_some()
                || property.get("oneOf").is_some()
                || property.get("enum").is_some()
                || property.get("items").is_some()
                || property["type"].as_str().is_some_and(|t| t != "object")
                || property["type"]
                    .as_array()
                    .is_some_and(|ts| !ts.iter().any(|t| t == "object"));
            if !typed {
                names.insert(name.clone());
            }
        }
    }
    names
});

/// Validators compiled so far, by (method, path template, status key).
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Default::default);

/// The documented path template `path` (no query) falls under, and its operation for `method`.
fn operation(method: &str, path: &str) -> Option<(&'static str, &'static Value)> {
    let paths = DOCUMENT["paths"].as_object()?;
    let wanted: Vec<&str> = path.split('/').collect();
    paths.iter().find_map(|(template, item)| {
        let parts: Vec<&str> = template.split('/').collect();
        let fits = parts.len() == wanted.len()
            && parts
                .iter()
                .zip(&wanted)
                .all(|(t, w)| (t.starts_with('{') && t.ends_with('}') && !w.is_empty()) || t == w);
        let op = item.get(method.to_ascii_lowercase())?;
        fits.then_some((template.as_str(), op))
    })
}

/// Panics unless `body`, answered with `status` to `method path`, is what the document says.
pub fn check(method: &str, path: &str, status: u16, body: &Value) {
    let path = path.split('?').next().unwrap_or(path);
    let Some((template, op)) = operation(method, path) else {
        // Only "no such route" or "not that method" may come from outside the document, and
        // as an error body like any other.
        assert!(
            status == 404 || status == 405,
            "{method} {path}: not in the OpenAPI document, yet answered {status}: {body}"
        );
        if status == 404 {
            validate(
                "error",
                &json!({ "$ref": "#/components/schemas/ErrorBody" }),
                method,
                path,
                status,
                body,
            );
        }
        return;
    };
    let responses = &op["responses"];
    let exact = status.to_string();
    let range = format!("{}XX", status / 100);
    let (key, response) = match (responses.get(&exact), responses.get(&range)) {
        (Some(r), _) => (exact, r),
        (None, Some(r)) => (range, r),
        (None, None) => panic!(
            "{method} {template}: answered {status}, which the document does not list: {body}"
        ),
    };
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        return;
    };
    if let Some(at) = json_in_a_string(body, "") {
        panic!("{method} {path} ({status}): {at} holds JSON text inside a string: {body:#}");
    }
    validate(
        &format!("{method} {template} {key}"),
        schema,
        method,
        path,
        status,
        body,
    );
}

/// Panics unless `body` is valid under `schema` (whose references are into the document).
fn validate(cache_key: &str, schema: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let validator = {
        let mut cache = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(cache_key.to_owned())
            .or_insert_with(|| {
                let root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "allOf": [schema],
                    "components": DOCUMENT["components"],
                });
                Arc::new(
                    jsonschema::validator_for(&root)
                        .unwrap_or_else(|e| panic!("{cache_key}: schema does not compile: {e}")),
                )
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("at {}: {e}", e.instance_path))
        .take(10)
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} ({status}) does not match the documented schema:\n{}\nbody: {body:#}",
        errors.join("\n")
    );
}

/// Where in `value` a string holds a JSON object or array as text, if anywhere: an API answer
/// carries JSON as JSON.
pub fn json_in_a_string(value: &Value, at: &str) -> Option<String> {
    match value {
        Value::String(text) => {
            let trimmed = text.trim_start();
            let looks = trimmed.starts_with('{') || trimmed.starts_with('[');
            let parses = looks
                && serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object() || v.is_array());
            parses.then(|| format!("`{at}`"))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| json_in_a_string(v, &format!("{at}/{i}"))),
        Value::Object(fields) => fields
            .iter()
            .filter(|(k, _)| !FREE_FORM.contains(k.as_str()))
            .find_map(|(k, v)| json_in_a_string(v, &format!("{at}/{k}"))),
        _ => None,
    }
}

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

/// The document made strict for checking answers: an object schema that lists its properties
/// allows no others (`unevaluatedProperties: false`), so a field the controller sends but the
/// document does not name fails. A schema that is one part of an `allOf` is left open (its
/// siblings add the rest) and the `allOf` that joins them is closed instead.
static STRICT: LazyLock<Value> = LazyLock::new(|| {
    let mut document = DOCUMENT.clone();
    let mut parts = std::collections::BTreeSet::new();
    collect_all_of_parts(&document, &mut parts);
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            let open = parts.contains(&format!("#/components/schemas/{name}"));
            close(schema, open);
        }
    }
    document
});

/// Every `$ref` that is a direct part of an `allOf`.
fn collect_all_of_parts(value: &Value, parts: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for part in fields
                .get("allOf")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = part.get("$ref").and_then(Value::as_str) {
                    parts.insert(r.to_string());
                }
            }
            fields.values().for_each(|v| collect_all_of_parts(v, parts));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_all_of_parts(v, parts)),
        _ => {}
    }
}

/// Closes `schema` and the schemas inside it (see [`STRICT`]); `open` leaves this one open.
fn close(schema: &mut Value, open: bool) {
    let Some(fields) = schema.as_object_mut() else {
        return;
    };
    let joins = fields.contains_key("allOf");
    let listed = fields.contains_key("properties") || joins;
    let decided =
        fields.contains_key("additionalProperties") || fields.contains_key("unevaluatedProperties");
    if listed && !decided && !open {
        fields.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (key, child) in fields.iter_mut() {
        match (key.as_str(), child) {
            ("allOf", Value::Array(parts)) => parts.iter_mut().for_each(|p| close(p, true)),
            ("oneOf" | "anyOf" | "prefixItems", Value::Array(parts)) => {
                parts.iter_mut().for_each(|p| close(p, false))
            }
            ("properties", Value::Object(properties)) => {
                properties.values_mut().for_each(|p| close(p, false))
            }
            ("items" | "additionalProperties", child) => close(child, false),
            _ => {}
        }
    }
}

/// The document's component schema `name`.
pub fn component(name: &str) -> &'static Value {
    resolve(&format!("#/components/schemas/{name}"))
}

/// `reference` (`#/components/schemas/X`) in the document.
fn resolve(reference: &str) -> &'static Value {
    DOCUMENT
        .pointer(reference.trim_start_matches('#'))
        .unwrap_or_else(|| panic!("the document has no {reference}"))
}

/// Whether `schema` says nothing about what it holds (a task's result, an event's data, a
/// receipt's before and after): what hosts and agents put there is theirs.
fn free_form(schema: &Value) -> bool {
    let says = [
        "$ref",
        "properties",
        "items",
        "enum",
        "allOf",
        "oneOf",
        "anyOf",
        "const",
    ]
    .iter()
    .any(|k| schema.get(*k).is_some())
        || schema
            .get("additionalProperties")
            .is_some_and(Value::is_object);
    let typed = match schema.get("type") {
        Some(Value::String(t)) => t != "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t != "object" && t != "null"),
        _ => false,
    };
    !says && !typed
}

/// The schemas `schema` gives property `name` (through `$ref`, `allOf`, `oneOf`, `anyOf` and
/// `additionalProperties`).
fn property_schemas(schema: &'static Value, name: &str, out: &mut Vec<&'static Value>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return property_schemas(resolve(r), name, out);
    }
    if let Some(p) = schema.pointer(&format!(
        "/properties/{}",
        name.replace('~', "~0").replace('/', "~1")
    )) {
        out.push(p);
    } else if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        out.push(extra);
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            property_schemas(part, name, out);
        }
    }
}

/// The schemas `schema` gives the items of an array.
fn item_schemas(schema: &'static Value, out: &mut Vec<&'static Value>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return item_schemas(resolve(r), out);
    }
    if let Some(items) = schema.get("items") {
        out.push(items);
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            item_schemas(part, out);
        }
    }
}

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
    if let Some(at) = json_in_a_string(schema, body) {
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
                    "components": STRICT["components"],
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

/// Where in `value` (an answer documented by `schema`) a string holds a JSON object or array as
/// text, if anywhere: an API answer carries JSON as JSON. Parts the document leaves free-form
/// are the hosts' own and are not looked into; the gate is the schema of each part, not its
/// name, so a free-form `result` in one answer never excuses a typed `result` in another.
pub fn json_in_a_string(schema: &'static Value, value: &Value) -> Option<String> {
    let mut at = String::new();
    find_json_text(&[schema], value, &mut at)
}

fn find_json_text(schemas: &[&'static Value], value: &Value, at: &mut String) -> Option<String> {
    // Some schema of this part says what it holds: then it is held to it.
    let resolved: Vec<&'static Value> = schemas
        .iter()
        .map(|s| match s.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve(r),
            None => s,
        })
        .collect();
    if resolved.is_empty() || resolved.iter().all(|s| free_form(s)) {
        return None;
    }
    match value {
        Value::String(text) => {
            let trimmed = text.trim_start();
            let looks = trimmed.starts_with('{') || trimmed.starts_with('[');
            let parses = looks
                && serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object() || v.is_array());
            parses.then(|| format!("`{at}`"))
        }
        Value::Array(items) => {
            let mut inner = Vec::new();
            resolved.iter().for_each(|s| item_schemas(s, &mut inner));
            items.iter().enumerate().find_map(|(i, v)| {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                let found = find_json_text(&inner, v, at);
                at.truncate(len);
                found
            })
        }
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let mut inner = Vec::new();
            resolved
                .iter()
                .for_each(|s| property_schemas(s, k, &mut inner));
            let len = at.len();
            at.push('/');
            at.push_str(k);
            let found = find_json_text(&inner, v, at);
            at.truncate(len);
            found
        }),
        _ => None,
    }
}

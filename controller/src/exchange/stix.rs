//! An incident's observables as a STIX 2.1 bundle: one identity (Cordon), a grouping for the
//! incident, a cyber-observable object per value (ids are UUIDv5 of the object's
//! id-contributing properties, as the specification asks, so the same value is the same object
//! in every export), observed-data per observable with its sighting counts and times, and for
//! each malicious or suspicious one an indicator with its STIX pattern and a sighting of it.

use cordon_api::{
    incidents::IncidentRecord,
    observables::{ObservableType, ObservableView, Verdict},
};
use serde_json::{json, Map, Value};

/// The namespace STIX 2.1 fixes for cyber-observable ids (section 2.9).
const SCO_NAMESPACE: uuid::Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");
/// Cordon's own namespace for the ids of the objects it makes (identity, grouping, …).
const CORDON_NAMESPACE: uuid::Uuid = uuid::uuid!("6f0c2f4e-3b1d-5a7e-9c2d-2b8e4f1a7c90");

/// RFC 3339 with milliseconds, as STIX timestamps are written.
fn stamp(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// The id of an object Cordon makes: UUIDv4-shaped (as STIX asks of domain objects) but
/// derived from what it is, so exporting twice gives the same ids.
fn cordon_id(kind: &str, parts: &[&str]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(CORDON_NAMESPACE.as_bytes());
    for part in std::iter::once(kind).chain(parts.iter().copied()) {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.finalize()[..16]);
    format!(
        "{kind}--{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

/// A cyber-observable object and its id: `kind--uuidv5(canonical JSON of its contributing
/// properties)`.
fn sco(kind: &str, contributing: Value, mut rest: Map<String, Value>) -> Value {
    // serde_json's map is sorted by key: this is the canonical form for flat objects.
    let name = contributing.to_string();
    let id = format!(
        "{kind}--{}",
        uuid::Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes())
    );
    let mut object = Map::new();
    object.insert("type".into(), json!(kind));
    object.insert("spec_version".into(), json!("2.1"));
    object.insert("id".into(), json!(id));
    if let Value::Object(fields) = contributing {
        object.extend(fields);
    }
    object.append(&mut rest);
    Value::Object(object)
}

/// A string inside a STIX pattern: quoted, with `'` and `\` escaped.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn split_path(path: &str) -> (String, String) {
    match path.rfind(['/', '\\']) {
        Some(0) => (path[..1].to_owned(), path[1..].to_owned()),
        Some(i) => (path[..i].to_owned(), path[i + 1..].to_owned()),
        None => (String::new(), path.to_owned()),
    }
}

/// The objects a value is observed as (the first is the one it is), and the pattern an
/// indicator for it carries.
fn observed(o: &ObservableView) -> (Vec<Value>, String) {
    let v = o.value.as_str();
    let value = |kind: &str| sco(kind, json!({ "value": v }), Map::new());
    let hashes = |name: &str| {
        (
            vec![sco("file", json!({ "hashes": { name: v } }), Map::new())],
            format!("[file:hashes.{} = {}]", quoted(name), quoted(v)),
        )
    };
    match o.kind {
        ObservableType::Ipv4 => (
            vec![value("ipv4-addr")],
            format!("[ipv4-addr:value = {}]", quoted(v)),
        ),
        ObservableType::Ipv6 => (
            vec![value("ipv6-addr")],
            format!("[ipv6-addr:value = {}]", quoted(v)),
        ),
        ObservableType::Cidr => {
            let kind = if v.contains(':') {
                "ipv6-addr"
            } else {
                "ipv4-addr"
            };
            (
                vec![value(kind)],
                format!("[{kind}:value ISSUBSET {}]", quoted(v)),
            )
        }
        ObservableType::Domain | ObservableType::Hostname => (
            vec![value("domain-name")],
            format!("[domain-name:value = {}]", quoted(v)),
        ),
        ObservableType::Url => (vec![value("url")], format!("[url:value = {}]", quoted(v))),
        ObservableType::Email => (
            vec![value("email-addr")],
            format!("[email-addr:value = {}]", quoted(v)),
        ),
        ObservableType::Sha256 => hashes("SHA-256"),
        ObservableType::Sha1 => hashes("SHA-1"),
        ObservableType::Md5 => hashes("MD5"),
        ObservableType::FileName => (
            vec![sco("file", json!({ "name": v }), Map::new())],
            format!("[file:name = {}]", quoted(v)),
        ),
        ObservableType::FilePath => {
            let (dir, name) = split_path(v);
            let directory = sco("directory", json!({ "path": dir }), Map::new());
            // The parent directory contributes to a file's id: /tmp/x.sh and /opt/x.sh differ.
            let file = sco(
                "file",
                json!({ "name": name, "parent_directory_ref": directory["id"] }),
                Map::new(),
            );
            (
                vec![file, directory],
                format!(
                    "[file:name = {} AND file:parent_directory_ref.path = {}]",
                    quoted(&name),
                    quoted(&dir)
                ),
            )
        }
        ObservableType::ProcessName => {
            let image = sco("file", json!({ "name": v }), Map::new());
            let mut rest = Map::new();
            rest.insert("image_ref".into(), image["id"].clone());
            // A process has no id-contributing properties: its id is Cordon's, per value.
            let mut process = sco("process", json!({}), rest);
            process["id"] = json!(cordon_id("process", &["name", v]));
            (
                vec![process, image],
                format!("[process:image_ref.name = {}]", quoted(v)),
            )
        }
        ObservableType::CommandLine => {
            let mut rest = Map::new();
            rest.insert("command_line".into(), json!(v));
            let mut process = sco("process", json!({}), rest);
            process["id"] = json!(cordon_id("process", &["command_line", v]));
            (
                vec![process],
                format!("[process:command_line = {}]", quoted(v)),
            )
        }
        ObservableType::User => (
            vec![sco(
                "user-account",
                json!({ "account_login": v }),
                Map::new(),
            )],
            format!("[user-account:account_login = {}]", quoted(v)),
        ),
        ObservableType::Port => {
            // STIX has no port object, and a flow needs an endpoint: the port is the flow's
            // destination port, to an address the incident does not know (0.0.0.0/0).
            let anywhere = sco("ipv4-addr", json!({ "value": "0.0.0.0/0" }), Map::new());
            let contributing = json!({
                "dst_port": v.parse::<u16>().unwrap_or(0),
                "dst_ref": anywhere["id"],
                "protocols": ["tcp"],
            });
            let flow = sco("network-traffic", contributing, Map::new());
            (
                vec![flow, anywhere],
                format!("[network-traffic:dst_port = {v}]"),
            )
        }
    }
}

/// The STIX 2.1 bundle for `incident` and its observables, as of `now_ms`.
pub fn bundle(incident: &IncidentRecord, observables: &[ObservableView], now_ms: i64) -> Value {
    let identity_id = cordon_id("identity", &["cordon"]);
    let created = stamp(incident.created_at_ms);
    let modified = stamp(incident.updated_at_ms.max(incident.created_at_ms));
    let mut objects = vec![json!({
        "type": "identity", "spec_version": "2.1", "id": identity_id,
        "created": stamp(0), "modified": stamp(0),
        "name": "Cordon", "identity_class": "system",
    })];
    let mut refs: Vec<Value> = Vec::new();
    let mut scos: Vec<Value> = Vec::new();
    let mut sco_ids = std::collections::HashSet::new();
    for o in observables {
        let (objects_of, pattern) = observed(o);
        // The listed sightings are the newest only: the first was when it was added.
        let first = o.added_at_ms;
        let last = o
            .sightings
            .last()
            .map_or(o.updated_at_ms, |s| s.at_ms)
            .max(first);
        let observed_id = cordon_id("observed-data", &[&incident.id, &o.id]);
        objects.push(json!({
            "type": "observed-data", "spec_version": "2.1", "id": observed_id,
            "created_by_ref": identity_id,
            "created": stamp(o.added_at_ms), "modified": stamp(o.updated_at_ms.max(o.added_at_ms)),
            "first_observed": stamp(first), "last_observed": stamp(last),
            "number_observed": o.sighting_count.max(1),
            "object_refs": objects_of.iter().map(|x| x["id"].clone()).collect::<Vec<_>>(),
        }));
        refs.push(json!(observed_id));
        if matches!(o.verdict, Verdict::Malicious | Verdict::Suspicious) {
            let indicator_id = cordon_id("indicator", &[&incident.id, &o.id]);
            let kind = match o.verdict {
                Verdict::Malicious => "malicious-activity",
                _ => "anomalous-activity",
            };
            objects.push(json!({
                "type": "indicator", "spec_version": "2.1", "id": indicator_id,
                "created_by_ref": identity_id,
                "created": stamp(o.added_at_ms), "modified": stamp(o.updated_at_ms.max(o.added_at_ms)),
                "name": format!("{} {}", o.kind, o.value.chars().take(200).collect::<String>()),
                "description": format!("{} in Cordon incident {} ({}), seen {} time(s)",
                    o.verdict, incident.id, incident.title, o.sighting_count),
                "indicator_types": [kind],
                "pattern": pattern, "pattern_type": "stix", "valid_from": stamp(o.added_at_ms),
            }));
            objects.push(json!({
                "type": "sighting", "spec_version": "2.1",
                "id": cordon_id("sighting", &[&incident.id, &o.id]),
                "created_by_ref": identity_id,
                "created": stamp(o.added_at_ms), "modified": stamp(o.updated_at_ms.max(o.added_at_ms)),
                "first_seen": stamp(first), "last_seen": stamp(last),
                "count": o.sighting_count.max(1),
                "sighting_of_ref": indicator_id,
                "observed_data_refs": [observed_id],
            }));
            refs.push(json!(indicator_id));
        }
        for object in objects_of {
            if sco_ids.insert(object["id"].as_str().unwrap_or_default().to_owned()) {
                scos.push(object);
            }
        }
    }
    let mut grouping = json!({
        "type": "grouping", "spec_version": "2.1",
        "id": cordon_id("grouping", &[&incident.id]),
        "created_by_ref": identity_id,
        "created": created, "modified": modified,
        "name": incident.title, "context": "suspicious-activity",
        "description": format!("Cordon incident {} ({}, {}, {})", incident.id, incident.kind,
            incident.severity.as_str(), incident.stage.as_str()),
        "object_refs": refs,
    });
    if refs_empty(&grouping) {
        // A grouping must refer to something: the identity, when nothing was observed.
        grouping["object_refs"] = json!([identity_id]);
    }
    objects.push(grouping);
    objects.extend(scos);
    json!({
        "type": "bundle",
        "id": cordon_id("bundle", &[&incident.id, &now_ms.to_string()]),
        "objects": objects,
    })
}

fn refs_empty(grouping: &Value) -> bool {
    grouping["object_refs"].as_array().is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_quote_what_they_hold() {
        assert_eq!(quoted(r"it's C:\x"), r"'it\'s C:\\x'");
        assert_eq!(split_path("/tmp/x.sh"), ("/tmp".into(), "x.sh".into()));
        assert_eq!(split_path("/x"), ("/".into(), "x".into()));
        assert_eq!(split_path("C:\\a\\b.exe"), ("C:\\a".into(), "b.exe".into()));
    }

    #[test]
    fn files_of_one_name_in_two_directories_are_two_objects() {
        let view = |value: &str| ObservableView {
            id: value.into(),
            incident_id: "i".into(),
            kind: ObservableType::FilePath,
            value: value.into(),
            verdict: Verdict::Unknown,
            ignore_for_similarity: false,
            added_by: "a".into(),
            added_at_ms: 0,
            updated_at_ms: 0,
            sightings: vec![],
            sighting_count: 1,
        };
        let (a, _) = observed(&view("/tmp/x.sh"));
        let (b, _) = observed(&view("/opt/x.sh"));
        assert_ne!(a[0]["id"], b[0]["id"]);
    }

    #[test]
    fn the_same_value_is_the_same_object() {
        let a = sco("ipv4-addr", json!({ "value": "192.0.2.7" }), Map::new());
        let b = sco("ipv4-addr", json!({ "value": "192.0.2.7" }), Map::new());
        assert_eq!(a["id"], b["id"]);
        assert!(a["id"].as_str().unwrap().starts_with("ipv4-addr--"));
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z");
    }
}

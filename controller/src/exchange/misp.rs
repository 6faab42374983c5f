//! An incident's observables as a MISP event (the JSON `/events/add` takes and MISP exports):
//! one attribute per observable, of the MISP type and category that fit it, `to_ids` for
//! malicious ones, the verdict in its comment.

use cordon_api::{
    incidents::{IncidentRecord, Severity, Stage},
    observables::{ObservableType, ObservableView, Verdict},
};
use serde_json::{json, Value};

/// MISP's attribute type and category for a value.
fn attribute_type(kind: ObservableType) -> (&'static str, &'static str) {
    match kind {
        ObservableType::Ipv4 | ObservableType::Ipv6 | ObservableType::Cidr => {
            ("ip-dst", "Network activity")
        }
        ObservableType::Domain => ("domain", "Network activity"),
        ObservableType::Hostname => ("hostname", "Network activity"),
        ObservableType::Url => ("url", "Network activity"),
        ObservableType::Port => ("port", "Network activity"),
        ObservableType::Email => ("email-src", "Payload delivery"),
        ObservableType::Sha256 => ("sha256", "Payload delivery"),
        ObservableType::Sha1 => ("sha1", "Payload delivery"),
        ObservableType::Md5 => ("md5", "Payload delivery"),
        ObservableType::FileName => ("filename", "Artifacts dropped"),
        ObservableType::FilePath => ("filename", "Artifacts dropped"),
        ObservableType::ProcessName | ObservableType::CommandLine => ("text", "Artifacts dropped"),
        ObservableType::User => ("text", "Other"),
    }
}

/// MISP's threat level: 1 high … 4 undefined.
fn threat_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "1",
        Severity::Medium => "2",
        Severity::Low => "3",
    }
}

fn date(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| "1970-01-01".into())
}

/// The MISP event for `incident` and its observables.
pub fn event(incident: &IncidentRecord, observables: &[ObservableView]) -> Value {
    let attributes: Vec<Value> = observables
        .iter()
        .map(|o| {
            let (kind, category) = attribute_type(o.kind);
            json!({
                "uuid": o.id,
                "type": kind,
                "category": category,
                "value": o.value,
                "to_ids": o.verdict == Verdict::Malicious,
                "comment": format!("cordon {}: {}, seen {} time(s)", o.kind, o.verdict, o.sighting_count),
                "timestamp": (o.updated_at_ms / 1000).to_string(),
                "distribution": "5",
            })
        })
        .collect();
    let analysis = match incident.stage {
        Stage::Closed | Stage::FalsePositive => "2",
        Stage::Alert => "0",
        _ => "1",
    };
    json!({
        "Event": {
            "uuid": incident.id,
            "info": incident.title,
            "date": date(incident.created_at_ms),
            "threat_level_id": threat_level(incident.severity),
            "analysis": analysis,
            "distribution": "0",
            "timestamp": (incident.updated_at_ms / 1000).to_string(),
            "Attribute": attributes,
            "Tag": [
                { "name": format!("cordon:kind=\"{}\"", incident.kind) },
                { "name": format!("cordon:stage=\"{}\"", incident.stage.as_str()) },
            ],
        }
    })
}

//! Elastic Security alerts: the documents detection rules write to
//! `.alerts-security.alerts-*`, in ECS. Elastic stores the `kibana.alert.*` fields as dotted
//! keys beside nested ECS objects (`"host": {"name": …}`); connectors and scripts send either
//! form or a mix, and all read the same here. A search hit (`{"_index", "_id", "_source"}`)
//! is unwrapped to its `_source`.
//!
//! | ECS | Cordon |
//! | --- | --- |
//! | `kibana.alert.rule.name` (required) | title and rule |
//! | `kibana.alert.severity` (else `kibana.alert.rule.severity`), else `kibana.alert.risk_score` | severity: low, medium, high, critical as given; from the risk score 0-21 low, 22-47 medium, 48-73 high, 74-100 critical (Elastic's bands); medium if neither |
//! | `host.hostname` (else `host.name`), `host.ip`, `agent.id` | host |
//! | `process.{pid,name,executable,command_line}` | process |
//! | `file.path`, `file.hash.sha256` | file |
//! | `destination.ip`, `destination.port` | destination |
//! | `kibana.alert.reason` (else `kibana.alert.rule.description`) | description |
//! | `kibana.alert.uuid` | the alert's external id |
//!
//! Kind, first that applies: `ransomware` (`event.code` ransomware, "ransomware" in the rule
//! name, or MITRE T1486); `malware` (`event.category` malware, `event.code`
//! malicious_file / memory_signature / shellcode_thread, or "malware" in the rule name); `c2`
//! (MITRE tactic Command and Control / TA0011, or "command and control" in the rule name);
//! `brute_force` (MITRE T1110 / Brute Force, or "brute force" in the rule name); else
//! `other`. MITRE comes from `kibana.alert.rule.threat` and the event's `threat.*`; event
//! fields also from `kibana.alert.original_event.*`.

use serde_json::Value;

use super::{
    fields::{
        first_str, ips, lookup, opt_ip, opt_pid, opt_port, opt_sha256, opt_str, req_str, strings,
    },
    Alert, AlertDestination, AlertError, AlertFile, AlertHost, AlertProcess, Source, DEFAULT_KIND,
};
use crate::incidents::Severity;

/// The `_source` of an Elasticsearch hit, or the value itself.
pub fn unwrap(value: &Value) -> &Value {
    match value.get("_source") {
        Some(source) if source.is_object() => source,
        _ => value,
    }
}

/// Whether `value` looks like an Elastic Security alert: any of its `kibana.alert` fields.
pub fn looks_like(value: &Value) -> bool {
    lookup(value, "kibana.alert").is_some()
        || value
            .as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("kibana.alert.")))
}

/// The severity of a risk score (0-100), by Elastic's default bands.
pub fn severity_of_risk(score: f64) -> Severity {
    if score < 22.0 {
        Severity::Low
    } else if score < 48.0 {
        Severity::Medium
    } else if score < 74.0 {
        Severity::High
    } else {
        Severity::Critical
    }
}

/// Maps an Elastic Security alert (already unwrapped).
pub fn map(value: &Value) -> Result<Alert, AlertError> {
    let name = req_str(value, "kibana.alert.rule.name")?;
    let hostname = match opt_str(value, "host.hostname")? {
        Some(h) => Some(h),
        None => first_str(value, "host.name")?,
    };
    Ok(Alert {
        source: Source::Ecs,
        title: name.clone(),
        kind: kind(value, &name)?.to_owned(),
        severity: severity(value)?,
        host: AlertHost {
            agent_id: opt_str(value, "agent.id")?,
            hostname,
            ips: ips(value, "host.ip")?,
        },
        fingerprint: None,
        process: process(value)?,
        file: file(value)?,
        destination: destination(value)?,
        description: match opt_str(value, "kibana.alert.reason")? {
            Some(reason) => Some(reason),
            None => opt_str(value, "kibana.alert.rule.description")?,
        },
        labels: Vec::new(),
        origin: None,
        external_id: opt_str(value, "kibana.alert.uuid")?,
        rule: name,
    })
}

fn severity(value: &Value) -> Result<Severity, AlertError> {
    for path in ["kibana.alert.severity", "kibana.alert.rule.severity"] {
        if let Some(s) = opt_str(value, path)? {
            return crate::incidents::parse_severity(&s)
                .map_err(|_| AlertError::field(path, "must be low, medium, high or critical"));
        }
    }
    for path in ["kibana.alert.risk_score", "kibana.alert.rule.risk_score"] {
        if let Some(score) = lookup(value, path) {
            return match score.as_f64() {
                Some(score) if (0.0..=100.0).contains(&score) => Ok(severity_of_risk(score)),
                _ => Err(AlertError::field(path, "must be a number 0-100")),
            };
        }
    }
    Ok(Severity::Medium)
}

/// Strings at the first of `paths` that has any.
fn any_strings(value: &Value, paths: &[&str]) -> Result<Vec<String>, AlertError> {
    for path in paths {
        let found = strings(value, path)?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// MITRE tactic and technique names and ids, from the rule's `threat` list and the event's
/// own `threat.*` fields. Unexpected shapes are skipped: this only classifies.
fn mitre(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut take = |v: Option<&Value>| match v {
        Some(Value::String(s)) => out.push(s.to_lowercase()),
        Some(Value::Array(items)) => out.extend(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_lowercase),
        ),
        _ => {}
    };
    if let Some(Value::Array(threats)) = lookup(value, "kibana.alert.rule.threat") {
        for threat in threats {
            take(lookup(threat, "tactic.id"));
            take(lookup(threat, "tactic.name"));
            for technique in lookup(threat, "technique")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                take(lookup(technique, "id"));
                take(lookup(technique, "name"));
                for sub in lookup(technique, "subtechnique")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    take(lookup(sub, "id"));
                }
            }
        }
    }
    for path in [
        "threat.tactic.id",
        "threat.tactic.name",
        "threat.technique.id",
        "threat.technique.name",
        "threat.technique.subtechnique.id",
    ] {
        take(lookup(value, path));
    }
    out
}

fn kind(value: &Value, rule_name: &str) -> Result<&'static str, AlertError> {
    let name = rule_name.to_lowercase();
    let categories = any_strings(
        value,
        &["event.category", "kibana.alert.original_event.category"],
    )?;
    let code = match opt_str(value, "event.code")? {
        Some(code) => Some(code),
        None => opt_str(value, "kibana.alert.original_event.code")?,
    }
    .unwrap_or_default()
    .to_lowercase();
    let mitre = mitre(value);
    let attack = |wanted: &[&str]| {
        mitre.iter().any(|m| {
            wanted
                .iter()
                .any(|w| m == w || m.starts_with(&format!("{w}.")))
        })
    };
    Ok(
        if code == "ransomware" || name.contains("ransomware") || attack(&["t1486"]) {
            "ransomware"
        } else if categories.iter().any(|c| c.eq_ignore_ascii_case("malware"))
            || ["malicious_file", "memory_signature", "shellcode_thread"].contains(&code.as_str())
            || name.contains("malware")
        {
            "malware"
        } else if attack(&["command and control", "ta0011"]) || name.contains("command and control")
        {
            "c2"
        } else if attack(&["t1110", "brute force"]) || name.contains("brute force") {
            "brute_force"
        } else {
            DEFAULT_KIND
        },
    )
}

fn process(value: &Value) -> Result<Option<AlertProcess>, AlertError> {
    let process = AlertProcess {
        pid: opt_pid(value, "process.pid")?,
        name: opt_str(value, "process.name")?,
        executable: opt_str(value, "process.executable")?,
        command_line: opt_str(value, "process.command_line")?,
    };
    Ok((process != AlertProcess::default()).then_some(process))
}

fn file(value: &Value) -> Result<Option<AlertFile>, AlertError> {
    let file = AlertFile {
        path: opt_str(value, "file.path")?,
        sha256: opt_sha256(value, "file.hash.sha256")?,
    };
    Ok((file != AlertFile::default()).then_some(file))
}

fn destination(value: &Value) -> Result<Option<AlertDestination>, AlertError> {
    Ok(match opt_ip(value, "destination.ip")? {
        Some(ip) => Some(AlertDestination {
            ip,
            port: opt_port(value, "destination.port")?,
        }),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixture(text: &str) -> Alert {
        let value: Value = serde_json::from_str(text).unwrap();
        assert!(looks_like(unwrap(&value)), "{text}");
        map(unwrap(&value)).unwrap()
    }

    #[test]
    fn an_endpoint_malware_alert_in_mixed_form() {
        let alert = fixture(include_str!("fixtures/ecs-malware.json"));
        assert_eq!(alert.source, Source::Ecs);
        assert_eq!(alert.title, "Malware Prevention Alert");
        assert_eq!(alert.kind, "malware");
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.host.hostname.as_deref(), Some("web-03"));
        assert_eq!(
            alert.host.ips,
            vec!["10.0.0.7".to_owned(), "fe80::5054:ff:fe12:3456".to_owned()]
        );
        assert_eq!(
            alert.host.agent_id.as_deref(),
            Some("9f3b6c1e-7a44-4d7b-9a0e-2f1c5d8e6b21")
        );
        let process = alert.process.unwrap();
        assert_eq!(process.pid, Some(31337));
        assert_eq!(process.executable.as_deref(), Some("/tmp/.x/xmrig"));
        let file = alert.file.unwrap();
        assert_eq!(
            file.sha256.as_deref(),
            Some("0b3d2f8a7c55e2ab6c1c8a6d1b3f3e6f3a2c1e0d9b8a7f6e5d4c3b2a19080706")
        );
        assert_eq!(
            alert.external_id.as_deref(),
            Some("4c8e1d2f0a9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d")
        );
        assert!(alert
            .description
            .unwrap()
            .starts_with("malware, intrusion_detection"));
    }

    #[test]
    fn a_search_hit_in_dotted_form_is_c2_with_its_destination() {
        let alert = fixture(include_str!("fixtures/ecs-c2-hit.json"));
        assert_eq!(alert.kind, "c2");
        // No severity given: the risk score decides.
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(alert.host.hostname.as_deref(), Some("db-02.corp.example"));
        assert_eq!(alert.host.ips, vec!["10.0.0.9".to_owned()]);
        assert_eq!(
            alert.destination,
            Some(AlertDestination {
                ip: "198.51.100.77".into(),
                port: Some(4444)
            })
        );
        assert_eq!(alert.process.unwrap().name.as_deref(), Some("python3"));
    }

    #[test]
    fn kinds_follow_codes_names_and_mitre() {
        let kind_of = |extra: Value| {
            let mut doc = json!({"kibana.alert.rule.name": "Some Rule"});
            for (k, v) in extra.as_object().unwrap() {
                doc[k] = v.clone();
            }
            map(&doc).unwrap().kind
        };
        assert_eq!(
            kind_of(json!({"event": {"code": "ransomware"}})),
            "ransomware"
        );
        assert_eq!(
            kind_of(json!({"kibana.alert.rule.name": "Potential SSH Brute Force Detected"})),
            "brute_force"
        );
        assert_eq!(
            kind_of(json!({"threat": {"technique": {"id": ["T1110.001"]}}})),
            "brute_force"
        );
        assert_eq!(
            kind_of(json!({"kibana.alert.original_event.category": ["malware"]})),
            "malware"
        );
        assert_eq!(
            kind_of(json!({"event.category": ["process"]})),
            DEFAULT_KIND
        );
    }

    #[test]
    fn risk_scores_map_to_severities() {
        let at = |s: f64| severity_of_risk(s).as_str();
        assert_eq!(
            [at(0.0), at(21.0), at(22.0), at(47.0)],
            ["low", "low", "medium", "medium"]
        );
        assert_eq!(
            [at(48.0), at(73.0), at(74.0), at(100.0)],
            ["high", "high", "critical", "critical"]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let refusal = |v: Value| map(&v).unwrap_err().to_string();
        assert_eq!(
            refusal(json!({"kibana.alert.severity": "high"})),
            "kibana.alert.rule.name must be a non-empty string"
        );
        assert_eq!(
            refusal(json!({"kibana.alert.rule.name": "r", "kibana.alert.severity": "sev1"})),
            "kibana.alert.severity must be low, medium, high or critical"
        );
        assert_eq!(
            refusal(json!({"kibana.alert.rule.name": "r", "kibana.alert.risk_score": 140})),
            "kibana.alert.risk_score must be a number 0-100"
        );
        assert_eq!(
            refusal(json!({"kibana.alert.rule.name": "r", "host": {"ip": ["10.0.0.1", "nope"]}})),
            "host.ip must be an IP address"
        );
        assert_eq!(
            refusal(json!({"kibana.alert.rule.name": "r", "process.pid": "many"})),
            "process.pid must be a process id"
        );
        assert_eq!(
            refusal(
                json!({"kibana.alert.rule.name": "r", "destination": {"ip": "10.0.0.1", "port": 70000}})
            ),
            "destination.port must be a port number 0-65535"
        );
    }
}

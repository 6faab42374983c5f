//! Cordon's own alert format, for scripts and SIEMs without a mapping of their own:
//!
//! ```json
//! {
//!   "title": "beacon to a known C2 address",         // required
//!   "kind": "c2",                  // malware, c2, brute_force, ransomware, any a-z0-9_-. word;
//!                                  // default "other"
//!   "severity": "high",            // low, medium (default), high, critical
//!   "rule": "suricata:2027865",    // the rule that fired; default: the title
//!   "source": "suricata",          // the system that raised it (part of the fingerprint)
//!   "host": {"agent_id": "…", "hostname": "web-01", "ip": "10.0.0.5"},   // any of the three
//!   "fingerprint": "…",            // alerts with the same one join one open incident;
//!                                  // default: computed (see `crate::alerts`)
//!   "process": {"pid": 4242, "name": "nc", "executable": "/usr/bin/nc",
//!               "command_line": "nc 203.0.113.7 443"},
//!   "file": {"path": "/tmp/x", "sha256": "64 hex digits"},
//!   "destination": {"ip": "203.0.113.7", "port": 443},
//!   "description": "free text",
//!   "labels": ["env=prod"]         // at most 32, each at most 128 characters
//! }
//! ```
//!
//! Every field but `title` may be left out. Unknown fields are refused, naming them: this is
//! Cordon's own format, and a misspelt field is better heard about than silently dropped.

use serde_json::Value;

use super::{
    fields::{
        bounded, ips, object_or_absent, only_known, opt_pid, opt_port, opt_sha256, opt_str,
        req_str, strings, MAX_FIELD_CHARS,
    },
    Alert, AlertDestination, AlertError, AlertFile, AlertHost, AlertProcess, Source, DEFAULT_KIND,
};
use crate::incidents::{check_kind, Severity, MAX_LABELS};

const FIELDS: &[&str] = &[
    "title",
    "kind",
    "severity",
    "rule",
    "source",
    "host",
    "fingerprint",
    "process",
    "file",
    "destination",
    "description",
    "labels",
];

/// Longest fingerprint an alert may give, in characters.
pub const MAX_FINGERPRINT_CHARS: usize = 256;

/// Maps a generic alert.
pub fn map(value: &Value) -> Result<Alert, AlertError> {
    only_known(value, "", FIELDS)?;
    let title = req_str(value, "title")?;
    let kind = match opt_str(value, "kind")? {
        Some(kind) => {
            let kind = kind.to_ascii_lowercase();
            check_kind(&kind).map_err(|_| {
                AlertError::field("kind", "must be 1-64 of a-z, 0-9, '_', '-', '.'")
            })?;
            kind
        }
        None => DEFAULT_KIND.to_owned(),
    };
    let severity = match opt_str(value, "severity")? {
        Some(s) => crate::incidents::parse_severity(&s)
            .map_err(|_| AlertError::field("severity", "must be low, medium, high or critical"))?,
        None => Severity::Medium,
    };
    let fingerprint = opt_str(value, "fingerprint")?;
    if fingerprint
        .as_ref()
        .is_some_and(|f| f.chars().count() > MAX_FINGERPRINT_CHARS)
    {
        return Err(AlertError::field(
            "fingerprint",
            format!("must be at most {MAX_FINGERPRINT_CHARS} characters"),
        ));
    }
    let labels = strings(value, "labels")?;
    if labels.len() > MAX_LABELS || labels.iter().any(|l| l.chars().count() > 128) {
        return Err(AlertError::field(
            "labels",
            format!("must be at most {MAX_LABELS} labels of at most 128 characters"),
        ));
    }
    Ok(Alert {
        source: Source::Generic,
        rule: opt_str(value, "rule")?.unwrap_or_else(|| title.clone()),
        kind,
        severity,
        host: host(value)?,
        fingerprint,
        process: process(value)?,
        file: file(value)?,
        destination: destination(value)?,
        description: opt_str(value, "description")?,
        labels,
        origin: opt_str(value, "source")?,
        external_id: None,
        title,
    })
}

fn host(value: &Value) -> Result<AlertHost, AlertError> {
    if !object_or_absent(value, "host")? {
        return Ok(AlertHost::default());
    }
    only_known(value, "host", &["agent_id", "hostname", "ip"])?;
    Ok(AlertHost {
        agent_id: opt_str(value, "host.agent_id")?,
        hostname: opt_str(value, "host.hostname")?,
        ips: ips(value, "host.ip")?,
    })
}

fn process(value: &Value) -> Result<Option<AlertProcess>, AlertError> {
    if !object_or_absent(value, "process")? {
        return Ok(None);
    }
    only_known(
        value,
        "process",
        &["pid", "name", "executable", "command_line"],
    )?;
    let process = AlertProcess {
        pid: opt_pid(value, "process.pid")?,
        name: opt_str(value, "process.name")?,
        executable: opt_str(value, "process.executable")?,
        command_line: opt_str(value, "process.command_line")?,
    };
    Ok((process != AlertProcess::default()).then_some(process))
}

fn file(value: &Value) -> Result<Option<AlertFile>, AlertError> {
    if !object_or_absent(value, "file")? {
        return Ok(None);
    }
    only_known(value, "file", &["path", "sha256"])?;
    let file = AlertFile {
        path: opt_str(value, "file.path")?.map(|p| bounded(&p, MAX_FIELD_CHARS)),
        sha256: opt_sha256(value, "file.sha256")?,
    };
    Ok((file != AlertFile::default()).then_some(file))
}

fn destination(value: &Value) -> Result<Option<AlertDestination>, AlertError> {
    if !object_or_absent(value, "destination")? {
        return Ok(None);
    }
    only_known(value, "destination", &["ip", "port"])?;
    let ip = ips(value, "destination.ip")?
        .into_iter()
        .next()
        .ok_or_else(|| AlertError::field("destination.ip", "must be an IP address"))?;
    Ok(Some(AlertDestination {
        ip,
        port: opt_port(value, "destination.port")?,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const C2: &str = include_str!("fixtures/generic-c2.json");

    fn refusal(value: Value) -> String {
        map(&value).unwrap_err().to_string()
    }

    #[test]
    fn a_full_alert_maps_field_by_field() {
        let alert = map(&serde_json::from_str(C2).unwrap()).unwrap();
        assert_eq!(alert.source, Source::Generic);
        assert_eq!(alert.title, "Beacon to known C2 address from web-01");
        assert_eq!(alert.kind, "c2");
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(alert.rule, "ET CNC Known Command and Control Beacon");
        assert_eq!(alert.origin.as_deref(), Some("suricata"));
        assert_eq!(alert.host.hostname.as_deref(), Some("web-01"));
        assert_eq!(alert.host.ips, vec!["10.0.0.5".to_owned()]);
        let process = alert.process.unwrap();
        assert_eq!(process.pid, Some(4242));
        assert_eq!(process.name.as_deref(), Some("beacon"));
        assert_eq!(
            alert.destination,
            Some(AlertDestination {
                ip: "203.0.113.7".into(),
                port: Some(443)
            })
        );
        assert_eq!(alert.labels, vec!["env=prod".to_owned()]);
        assert_eq!(alert.fingerprint, None);
    }

    #[test]
    fn only_the_title_is_required() {
        let alert = map(&json!({"title": "something odd"})).unwrap();
        assert_eq!(alert.kind, DEFAULT_KIND);
        assert_eq!(alert.severity, Severity::Medium);
        assert_eq!(alert.rule, "something odd");
        assert_eq!(alert.host, AlertHost::default());
        assert_eq!(alert.process, None);
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            refusal(json!({"kind": "c2"})),
            "title must be a non-empty string"
        );
        assert_eq!(
            refusal(json!({"title": "t", "severity": "urgent"})),
            "severity must be low, medium, high or critical"
        );
        assert_eq!(
            refusal(json!({"title": "t", "kind": "C&C"})),
            "kind must be 1-64 of a-z, 0-9, '_', '-', '.'"
        );
        assert_eq!(
            refusal(json!({"title": "t", "host": {"ip": "10.0.0.300"}})),
            "host.ip must be an IP address"
        );
        assert_eq!(
            refusal(json!({"title": "t", "process": {"pid": -1}})),
            "process.pid must be a process id"
        );
        assert_eq!(
            refusal(json!({"title": "t", "destination": {"port": 443}})),
            "destination.ip must be an IP address"
        );
        assert_eq!(
            refusal(json!({"title": "t", "file": {"sha256": "abc"}})),
            "file.sha256 must be a SHA-256 (64 hex digits)"
        );
        assert!(refusal(json!({"title": "t", "hots": {}})).starts_with("hots is not a field"));
        assert!(refusal(json!({"title": "t", "host": {"name": "x"}}))
            .starts_with("host.name is not a field"));
        assert_eq!(
            refusal(json!({"title": "t", "host": "web-01"})),
            "host must be an object"
        );
        assert_eq!(
            refusal(
                json!({"title": "t", "labels": (0..33).map(|i| i.to_string()).collect::<Vec<_>>()})
            ),
            "labels must be at most 32 labels of at most 128 characters"
        );
    }
}

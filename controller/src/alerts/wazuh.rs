//! Wazuh alerts, as the manager writes them to `alerts.json` and hands them to integrations
//! (`integratord` scripts post the alert itself), or wrapped in an active-response message
//! (`{"version": 1, "command": "add", "parameters": {"alert": {…}}}`, unwrapped here).
//!
//! | Wazuh | Cordon |
//! | --- | --- |
//! | `rule.description` (required) | title |
//! | `rule.id` (required) | rule |
//! | `rule.level` (required, 0-16) | severity: 0-6 low, 7-11 medium, 12-14 high, 15-16 critical (the Wazuh dashboard's bands) |
//! | `rule.groups`, `rule.mitre` | kind (below) |
//! | `agent.id`, `agent.name`, `agent.ip` | host (for the manager, `000`, the syslog sender in `predecoder.hostname` when there is one) |
//! | `syscheck.path`, `syscheck.sha256_after`; `data.virustotal.source.file` | file |
//! | `data.audit.{pid,exe,command}`, `data.win.eventdata.{processId,image,commandLine}`, `syscheck.audit.process.{id,name}` | process |
//! | `data.dstip`/`data.dstport`, `data.dest_ip`/`data.dest_port`, `data.win.eventdata.{destinationIp,destinationPort}` | destination |
//! | `full_log` | description |
//! | `id` | the alert's external id |
//!
//! Kind, first that applies: `ransomware` (a `ransomware` group, the word in the
//! description, or MITRE T1486); `malware` (groups `malware`, `virus`, `virustotal` unless
//! VirusTotal found nothing malicious, `rootcheck`, `rootkit`, `yara`, `clamd`, `trojan`);
//! `c2` (groups `c2`, `command_and_control`, or MITRE tactic Command and Control);
//! `brute_force` (groups `authentication_failures`, `authentication_failed`, `brute_force`,
//! `win_authentication_failed`, MITRE T1110 / Brute Force, or `sshd` with "brute force" in
//! the description); `integrity` (group `syscheck`); else `other`.
//!
//! The `data.*` fields come from Wazuh's decoders as text: one that does not read as a port,
//! pid or address is left out rather than failing the alert. The `rule` fields are Wazuh's
//! own and are checked.

use serde_json::Value;

use super::{
    fields::{self, lookup, opt_id, opt_str, opt_uint, req_str, strings},
    Alert, AlertDestination, AlertError, AlertFile, AlertHost, AlertProcess, Source, DEFAULT_KIND,
};
use crate::incidents::Severity;

/// The highest rule level Wazuh uses.
pub const MAX_LEVEL: u64 = 16;

/// The alert inside an active-response message, or the value itself.
pub fn unwrap(value: &Value) -> &Value {
    match lookup(value, "parameters.alert") {
        Some(alert) if alert.get("rule").is_some_and(Value::is_object) => alert,
        _ => value,
    }
}

/// Whether `value` looks like a Wazuh alert: a `rule` object with a `level`.
pub fn looks_like(value: &Value) -> bool {
    value
        .get("rule")
        .and_then(Value::as_object)
        .is_some_and(|rule| rule.contains_key("level"))
}

/// The severity of a rule level.
pub fn severity(level: u64) -> Severity {
    match level {
        0..=6 => Severity::Low,
        7..=11 => Severity::Medium,
        12..=14 => Severity::High,
        _ => Severity::Critical,
    }
}

/// Maps a Wazuh alert (already unwrapped).
pub fn map(value: &Value) -> Result<Alert, AlertError> {
    let level = opt_uint(
        value,
        "rule.level",
        MAX_LEVEL,
        &format!("a number 0-{MAX_LEVEL}"),
    )?
    .ok_or_else(|| AlertError::field("rule.level", format!("must be a number 0-{MAX_LEVEL}")))?;
    let rule = opt_id(value, "rule.id")?
        .ok_or_else(|| AlertError::field("rule.id", "must be a string or a number"))?;
    let title = req_str(value, "rule.description")?;
    let groups = strings(value, "rule.groups")?;
    let mitre = Mitre {
        ids: lenient_strings(value, "rule.mitre.id"),
        tactics: lenient_strings(value, "rule.mitre.tactic"),
        techniques: lenient_strings(value, "rule.mitre.technique"),
    };
    let virustotal_clean = text(value, "data.virustotal.malicious").as_deref() == Some("0");
    Ok(Alert {
        source: Source::Wazuh,
        kind: kind(&groups, &mitre, &title, virustotal_clean).to_owned(),
        severity: severity(level),
        host: host(value)?,
        fingerprint: None,
        process: process(value),
        file: file(value),
        destination: destination(value),
        description: opt_str(value, "full_log")?,
        labels: Vec::new(),
        origin: None,
        external_id: opt_id(value, "id")?,
        rule,
        title,
    })
}

/// The MITRE ATT&CK fields of a rule.
struct Mitre {
    ids: Vec<String>,
    tactics: Vec<String>,
    techniques: Vec<String>,
}

fn kind(
    groups: &[String],
    mitre: &Mitre,
    description: &str,
    virustotal_clean: bool,
) -> &'static str {
    let group = |names: &[&str]| {
        groups
            .iter()
            .any(|g| names.iter().any(|n| g.eq_ignore_ascii_case(n)))
    };
    let has = |list: &[String], wanted: &str| list.iter().any(|x| x.eq_ignore_ascii_case(wanted));
    let text = description.to_lowercase();
    if group(&["ransomware"]) || text.contains("ransomware") || has(&mitre.ids, "T1486") {
        "ransomware"
    } else if group(&[
        "malware",
        "virus",
        "rootcheck",
        "rootkit",
        "yara",
        "clamd",
        "trojan",
    ]) || (group(&["virustotal"]) && !virustotal_clean)
    {
        "malware"
    } else if group(&["c2", "command_and_control"]) || has(&mitre.tactics, "Command and Control") {
        "c2"
    } else if group(&[
        "authentication_failures",
        "authentication_failed",
        "brute_force",
        "win_authentication_failed",
    ]) || has(&mitre.ids, "T1110")
        || has(&mitre.techniques, "Brute Force")
        || (group(&["sshd"]) && text.contains("brute force"))
    {
        "brute_force"
    } else if group(&["syscheck"]) {
        "integrity"
    } else {
        DEFAULT_KIND
    }
}

fn host(value: &Value) -> Result<AlertHost, AlertError> {
    let agent_id = opt_id(value, "agent.id")?;
    let mut hostname = opt_str(value, "agent.name")?;
    let mut ips = fields::ips(value, "agent.ip").unwrap_or_default();
    // The manager (agent 000) also analyses syslog from other hosts: the alert is about the
    // host that sent the log.
    if agent_id.as_deref() == Some("000") {
        if let Some(sender) = text(value, "predecoder.hostname") {
            hostname = Some(sender);
            ips.clear();
        }
    }
    Ok(AlertHost {
        agent_id,
        hostname,
        ips,
    })
}

/// Text at `path` from a decoder: a string or a number, else nothing.
fn text(value: &Value, path: &str) -> Option<String> {
    opt_id(value, path).ok().flatten()
}

fn lenient_strings(value: &Value, path: &str) -> Vec<String> {
    strings(value, path).unwrap_or_default()
}

fn lenient_ip(value: &Value, path: &str) -> Option<String> {
    text(value, path).and_then(|ip| fields::parse_ip(&ip))
}

fn lenient_port(value: &Value, path: &str) -> Option<u16> {
    text(value, path).and_then(|p| p.trim().parse().ok())
}

fn lenient_pid(value: &Value, path: &str) -> Option<u32> {
    text(value, path).and_then(|p| p.trim().parse().ok())
}

/// The last part of a path, Unix or Windows.
fn base_name(path: &str) -> String {
    path.rsplit(['/', '\\']).next().unwrap_or(path).to_owned()
}

fn process(value: &Value) -> Option<AlertProcess> {
    // auditd (Linux), Sysmon via the Windows event channel, and FIM who-data.
    let sources = [
        (
            "data.audit.pid",
            "data.audit.exe",
            Some("data.audit.command"),
            None,
        ),
        (
            "data.win.eventdata.processId",
            "data.win.eventdata.image",
            None,
            Some("data.win.eventdata.commandLine"),
        ),
        (
            "syscheck.audit.process.id",
            "syscheck.audit.process.name",
            None,
            None,
        ),
    ];
    sources.into_iter().find_map(|(pid, exe, name, cmdline)| {
        let executable = text(value, exe);
        let process = AlertProcess {
            pid: lenient_pid(value, pid),
            name: name
                .and_then(|n| text(value, n))
                .or_else(|| executable.as_deref().map(base_name)),
            command_line: cmdline.and_then(|c| text(value, c)),
            executable,
        };
        (process != AlertProcess::default()).then_some(process)
    })
}

fn file(value: &Value) -> Option<AlertFile> {
    let file = AlertFile {
        path: text(value, "syscheck.path").or_else(|| text(value, "data.virustotal.source.file")),
        sha256: text(value, "syscheck.sha256_after")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|h| h.to_ascii_lowercase()),
    };
    (file != AlertFile::default()).then_some(file)
}

fn destination(value: &Value) -> Option<AlertDestination> {
    [
        ("data.dstip", "data.dstport"),
        ("data.dest_ip", "data.dest_port"),
        (
            "data.win.eventdata.destinationIp",
            "data.win.eventdata.destinationPort",
        ),
    ]
    .into_iter()
    .find_map(|(ip, port)| {
        lenient_ip(value, ip).map(|ip| AlertDestination {
            ip,
            port: lenient_port(value, port),
        })
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
    fn an_ssh_brute_force_names_its_agent() {
        let alert = fixture(include_str!("fixtures/wazuh-sshd-brute-force.json"));
        assert_eq!(alert.kind, "brute_force");
        assert_eq!(alert.severity, Severity::Medium);
        assert_eq!(alert.rule, "5712");
        assert_eq!(
            alert.title,
            "sshd: brute force trying to get access to the system. Non existent user."
        );
        assert_eq!(alert.host.agent_id.as_deref(), Some("001"));
        assert_eq!(alert.host.hostname.as_deref(), Some("web-01"));
        assert_eq!(alert.host.ips, vec!["10.0.0.5".to_owned()]);
        assert_eq!(alert.external_id.as_deref(), Some("1712830512.1245623"));
        assert!(alert.description.unwrap().contains("Invalid user admin"));
        assert_eq!(alert.file, None);
    }

    #[test]
    fn a_file_integrity_alert_carries_the_file_and_who_changed_it() {
        let alert = fixture(include_str!("fixtures/wazuh-syscheck-modified.json"));
        assert_eq!(alert.kind, "integrity");
        assert_eq!(alert.severity, Severity::Medium);
        let file = alert.file.unwrap();
        assert_eq!(file.path.as_deref(), Some("/etc/hosts"));
        assert_eq!(
            file.sha256.as_deref(),
            Some("48f09f8c313b303ce2ca9365f70ae8d992c5589c56493ac055f0ab129d82c365")
        );
        let process = alert.process.unwrap();
        assert_eq!(process.pid, Some(13235));
        assert_eq!(process.executable.as_deref(), Some("/usr/bin/vim"));
        assert_eq!(process.name.as_deref(), Some("vim"));
    }

    #[test]
    fn a_virustotal_hit_is_malware() {
        let alert = fixture(include_str!("fixtures/wazuh-virustotal.json"));
        assert_eq!(alert.kind, "malware");
        assert_eq!(alert.severity, Severity::High);
        assert_eq!(
            alert.file.unwrap().path.as_deref(),
            Some("/home/alice/Downloads/invoice.pdf.exe")
        );
    }

    #[test]
    fn an_active_response_message_is_unwrapped() {
        let alert = fixture(include_str!("fixtures/wazuh-active-response.json"));
        assert_eq!(alert.rule, "31168");
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.host.hostname.as_deref(), Some("web-02"));
        assert_eq!(
            alert.destination, None,
            "the attacker is the source, not a destination"
        );
    }

    #[test]
    fn a_sysmon_network_event_is_c2_with_its_process_and_destination() {
        let alert = fixture(include_str!("fixtures/wazuh-sysmon-c2.json"));
        assert_eq!(alert.kind, "c2");
        let process = alert.process.unwrap();
        assert_eq!(process.pid, Some(6120));
        assert_eq!(process.name.as_deref(), Some("rundll32.exe"));
        assert_eq!(
            alert.destination,
            Some(AlertDestination {
                ip: "198.51.100.23".into(),
                port: Some(8443)
            })
        );
    }

    #[test]
    fn levels_map_to_severities() {
        let at = |level: u64| severity(level).as_str();
        assert_eq!(
            [at(0), at(6), at(7), at(11)],
            ["low", "low", "medium", "medium"]
        );
        assert_eq!(
            [at(12), at(14), at(15), at(16)],
            ["high", "high", "critical", "critical"]
        );
    }

    #[test]
    fn the_manager_reports_the_syslog_sender_as_the_host() {
        let alert = map(&json!({
            "rule": {"level": 10, "id": "5712", "description": "brute force", "groups": ["sshd"]},
            "agent": {"id": "000", "name": "wazuh-manager"},
            "predecoder": {"hostname": "fw-edge-1", "program_name": "sshd"},
        }))
        .unwrap();
        assert_eq!(alert.host.hostname.as_deref(), Some("fw-edge-1"));
        assert_eq!(alert.kind, "brute_force");
    }

    #[test]
    fn bad_rule_fields_are_named() {
        let refusal = |v: Value| map(&v).unwrap_err().to_string();
        let ok_rule = json!({"level": 5, "id": "1", "description": "d"});
        assert_eq!(
            refusal(json!({"rule": {"level": "high", "id": "1", "description": "d"}})),
            "rule.level must be a number 0-16"
        );
        assert_eq!(
            refusal(json!({"rule": {"level": 17, "id": "1", "description": "d"}})),
            "rule.level must be a number 0-16"
        );
        assert_eq!(
            refusal(json!({"rule": {"id": "1", "description": "d"}})),
            "rule.level must be a number 0-16"
        );
        assert_eq!(
            refusal(json!({"rule": {"level": 5, "description": "d"}})),
            "rule.id must be a string or a number"
        );
        assert_eq!(
            refusal(json!({"rule": {"level": 5, "id": "1"}})),
            "rule.description must be a non-empty string"
        );
        assert_eq!(
            refusal(json!({"rule": {"level": 5, "id": "1", "description": "d", "groups": [7]}})),
            "rule.groups must be a string or an array of strings"
        );
        // An agent registered without a fixed address is still an agent.
        let alert = map(&json!({"rule": ok_rule, "agent": {"id": "007", "ip": "any"}})).unwrap();
        assert!(alert.host.ips.is_empty());
        // Decoder text that is not a port is left out, not refused.
        let alert =
            map(&json!({"rule": ok_rule, "data": {"dstip": "203.0.113.1", "dstport": "any"}}))
                .unwrap();
        assert_eq!(alert.destination.unwrap().port, None);
    }
}

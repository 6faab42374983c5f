//! What an alert writes besides its row: its fingerprint, the timeline entry playbooks read
//! (the contract in [`Alert::timeline_detail`]), and the one line a person reads.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{host::HostMatch, Alert, Source};

/// The timeline entry kind of an alert.
pub const ENTRY_KIND: &str = "alert";
/// Longest one-line summary on the timeline, in characters.
const MAX_SUMMARY_CHARS: usize = 500;

impl Alert {
    /// The fingerprint: the alert's own, else SHA-256 over source, rule, host and primary
    /// indicator (see [`crate::alerts`]). `host` is how the host was matched.
    pub fn fingerprint(&self, host: &HostMatch) -> String {
        if let Some(own) = &self.fingerprint {
            return own.clone();
        }
        let source = match (&self.source, &self.origin) {
            (Source::Generic, Some(origin)) => format!("generic:{}", origin.to_lowercase()),
            (source, _) => source.as_str().to_owned(),
        };
        let host_key = host
            .agent_id
            .clone()
            .or_else(|| self.host.hostname.as_ref().map(|h| h.to_lowercase()))
            .or_else(|| self.host.ips.first().cloned())
            .or_else(|| self.host.agent_id.clone())
            .unwrap_or_default();
        let mut hash = Sha256::new();
        for part in [
            "cordon-alert-v1",
            &source,
            &self.rule,
            &host_key,
            &self.primary_indicator(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        hex::encode(hash.finalize())
    }

    /// What the alert is about, most specific first: file hash, file path, executable,
    /// process name, destination address; empty if none.
    pub fn primary_indicator(&self) -> String {
        let file = self.file.as_ref();
        let process = self.process.as_ref();
        file.and_then(|f| f.sha256.clone())
            .or_else(|| file.and_then(|f| f.path.clone()))
            .or_else(|| process.and_then(|p| p.executable.clone()))
            .or_else(|| process.and_then(|p| p.name.clone()))
            .or_else(|| self.destination.as_ref().map(|d| d.ip.clone()))
            .unwrap_or_default()
    }

    /// The detail of the alert's timeline entry: the contract playbooks read. `host.agent_id`
    /// is the agent the host was matched to (null if none); `hostname` and `ip` are as the
    /// alert gave them.
    pub fn timeline_detail(
        &self,
        alert_id: &str,
        fingerprint: &str,
        host: &HostMatch,
        received_at_ms: i64,
        raw_sha256: &str,
    ) -> Value {
        json!({
            "alert_id": alert_id,
            "source": self.source.as_str(),
            "rule": self.rule,
            "title": self.title,
            "severity": self.severity.as_str(),
            "kind": self.kind,
            "fingerprint": fingerprint,
            "host": {
                "agent_id": host.agent_id,
                "hostname": self.host.hostname,
                "ip": self.host.ips.first(),
            },
            "process": self.process,
            "file": self.file,
            "destination": self.destination,
            "received_at_ms": received_at_ms,
            "raw_sha256": raw_sha256,
        })
    }

    /// One line for the timeline: what fired, how bad, on which host and how it was matched.
    pub fn summary(&self, host: &HostMatch) -> String {
        let origin = match &self.origin {
            Some(origin) => format!("{} via {}", origin, self.source),
            None => self.source.as_str().to_owned(),
        };
        let named = self.host.describe();
        let on = match (&host.agent_id, host.candidates.as_slice()) {
            (Some(agent), _) => format!(
                "on {named} (agent {agent}, matched by {})",
                host.matched_by.as_deref().unwrap_or("id")
            ),
            _ if self.host.is_empty() => "naming no host".to_owned(),
            (None, []) => format!("on {named}, which matches no enrolled agent"),
            (None, many) => format!(
                "on {named}, which names {} agents ({}); none added",
                many.len(),
                many.join(", ")
            ),
        };
        one_line(
            &format!(
                "{origin} alert ({}): {} {on}",
                self.severity.as_str(),
                self.title
            ),
            MAX_SUMMARY_CHARS,
        )
    }
}

pub use cordon_api::format::one_line;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alerts::{AlertDestination, AlertFile, AlertHost, AlertProcess},
        incidents::Severity,
    };

    fn alert() -> Alert {
        Alert {
            source: Source::Wazuh,
            rule: "5712".into(),
            title: "sshd: brute force".into(),
            kind: "brute_force".into(),
            severity: Severity::High,
            host: AlertHost {
                agent_id: Some("001".into()),
                hostname: Some("Web-01".into()),
                ips: vec!["10.0.0.5".into()],
            },
            fingerprint: None,
            process: None,
            file: None,
            destination: None,
            description: None,
            labels: vec![],
            origin: None,
            external_id: Some("1".into()),
        }
    }

    fn unmatched() -> HostMatch {
        HostMatch::default()
    }

    #[test]
    fn fingerprints_follow_rule_host_and_indicator() {
        let a = alert();
        let base = a.fingerprint(&unmatched());
        assert_eq!(base.len(), 64);
        // Host names compare without case.
        let mut b = a.clone();
        b.host.hostname = Some("web-01".into());
        assert_eq!(b.fingerprint(&unmatched()), base);
        // Another rule, another indicator, or a matched agent: another fingerprint.
        let mut c = a.clone();
        c.rule = "5763".into();
        assert_ne!(c.fingerprint(&unmatched()), base);
        let mut d = a.clone();
        d.destination = Some(AlertDestination {
            ip: "203.0.113.9".into(),
            port: Some(443),
        });
        assert_ne!(d.fingerprint(&unmatched()), base);
        let matched = HostMatch {
            agent_id: Some("agent-1".into()),
            matched_by: Some("hostname".into()),
            candidates: vec![],
        };
        assert_ne!(a.fingerprint(&matched), base);
        // The alert's own fingerprint wins.
        let mut e = a.clone();
        e.fingerprint = Some("mine".into());
        assert_eq!(e.fingerprint(&matched), "mine");
    }

    #[test]
    fn the_indicator_prefers_the_most_specific_thing() {
        let mut a = alert();
        assert_eq!(a.primary_indicator(), "");
        a.destination = Some(AlertDestination {
            ip: "203.0.113.9".into(),
            port: None,
        });
        assert_eq!(a.primary_indicator(), "203.0.113.9");
        a.process = Some(AlertProcess {
            name: Some("nc".into()),
            ..Default::default()
        });
        assert_eq!(a.primary_indicator(), "nc");
        a.file = Some(AlertFile {
            path: Some("/tmp/x".into()),
            sha256: Some("ab".repeat(32)),
        });
        assert_eq!(a.primary_indicator(), "ab".repeat(32));
    }

    #[test]
    fn the_timeline_detail_has_exactly_the_contracted_shape() {
        let mut a = alert();
        a.process = Some(AlertProcess {
            pid: Some(123),
            name: Some("nc".into()),
            executable: None,
            command_line: None,
        });
        let host = HostMatch {
            agent_id: Some("agent-1".into()),
            matched_by: Some("hostname".into()),
            candidates: vec![],
        };
        let detail = a.timeline_detail("al-1", "fp", &host, 42, "00");
        let keys: Vec<&str> = detail
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "alert_id",
            "source",
            "rule",
            "title",
            "severity",
            "kind",
            "fingerprint",
            "host",
            "process",
            "file",
            "destination",
            "received_at_ms",
            "raw_sha256",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(
            detail["host"],
            json!({"agent_id": "agent-1", "hostname": "Web-01", "ip": "10.0.0.5"})
        );
        assert_eq!(
            detail["process"],
            json!({"pid": 123, "name": "nc", "executable": null, "command_line": null})
        );
        assert_eq!(detail["file"], Value::Null);
        assert_eq!(detail["severity"], "high");
        assert_eq!(detail["source"], "wazuh");
    }

    #[test]
    fn summaries_are_one_line_and_say_how_the_host_was_matched() {
        let mut a = alert();
        a.title = "two\nlines".into();
        let s = a.summary(&unmatched());
        assert_eq!(
            s,
            "wazuh alert (high): two lines on Web-01 / 10.0.0.5, which matches no enrolled agent"
        );
        let ambiguous = HostMatch {
            agent_id: None,
            matched_by: None,
            candidates: vec!["a1".into(), "a2".into()],
        };
        assert!(a
            .summary(&ambiguous)
            .ends_with("which names 2 agents (a1, a2); none added"));
        a.host = AlertHost::default();
        assert!(a.summary(&unmatched()).ends_with("naming no host"));
    }
}

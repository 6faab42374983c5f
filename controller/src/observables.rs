//! Observables on incidents: what alerts named (taken in with the alert, in its transaction),
//! and what responders add, judge and remove. Every value is normalised for its type first
//! ([`ObservableType::normalize`]), so one address or hash is one observable however it was
//! written; every change a person makes is on the incident's timeline.

use cordon_api::observables::{
    AddObservable, ObservableAdded, ObservableType, ObservableView, SightingSource,
    UpdateObservable, MAX_PER_INCIDENT,
};
use serde_json::json;

use crate::{
    alerts::Alert,
    incidents::IncidentError,
    now_ms,
    state::Controller,
    store::{NewObservable, NewSighting, NewTimelineEntry},
};

/// The timeline entry kind of a person's change to an observable.
pub const ENTRY_KIND: &str = "observable";

/// Most of a host's addresses an alert records (an alert is someone else's text, and may list
/// thousands).
pub const MAX_HOST_ADDRESSES: usize = 32;

/// The values an alert names, normalised; values that are not what their field says are left
/// out (an alert is someone else's text), as are duplicates.
pub fn from_alert(alert: &Alert) -> Vec<NewObservable> {
    let mut raw: Vec<(ObservableType, String)> = Vec::new();
    if let Some(hostname) = &alert.host.hostname {
        raw.push((ObservableType::Hostname, hostname.clone()));
    }
    for ip in alert.host.ips.iter().take(MAX_HOST_ADDRESSES) {
        raw.push(address(ip));
    }
    if let Some(process) = &alert.process {
        if let Some(name) = &process.name {
            raw.push((ObservableType::ProcessName, name.clone()));
        }
        if let Some(executable) = &process.executable {
            raw.push((ObservableType::FilePath, executable.clone()));
        }
        if let Some(command_line) = &process.command_line {
            raw.push((ObservableType::CommandLine, command_line.clone()));
        }
    }
    if let Some(file) = &alert.file {
        if let Some(path) = &file.path {
            raw.push((ObservableType::FilePath, path.clone()));
            if let Some(name) = base_name(path) {
                raw.push((ObservableType::FileName, name.to_owned()));
            }
        }
        if let Some(sha256) = &file.sha256 {
            raw.push((ObservableType::Sha256, sha256.clone()));
        }
    }
    if let Some(destination) = &alert.destination {
        raw.push(address(&destination.ip));
        if let Some(port) = destination.port {
            raw.push((ObservableType::Port, port.to_string()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<NewObservable> = Vec::new();
    for (kind, value) in raw {
        let Ok(value) = kind.normalize(&value) else {
            continue;
        };
        if seen.insert((kind, value.clone())) {
            out.push(NewObservable {
                kind,
                value,
                verdict: None,
                ignore_for_similarity: None,
            });
        }
    }
    out
}

/// An address as its type and text: an IPv4-mapped IPv6 address is the IPv4 address it names.
fn address(text: &str) -> (ObservableType, String) {
    match text.parse::<std::net::IpAddr>().map(|a| a.to_canonical()) {
        Ok(std::net::IpAddr::V4(v4)) => (ObservableType::Ipv4, v4.to_string()),
        Ok(std::net::IpAddr::V6(v6)) => (ObservableType::Ipv6, v6.to_string()),
        Err(_) if text.contains(':') => (ObservableType::Ipv6, text.to_owned()),
        Err(_) => (ObservableType::Ipv4, text.to_owned()),
    }
}

/// The last component of a POSIX or Windows path.
fn base_name(path: &str) -> Option<&str> {
    path.rsplit(['/', '\\']).next().filter(|n| !n.is_empty())
}

/// A value as the timeline shows it: cut to 80 characters.
fn shown(kind: ObservableType, value: &str) -> String {
    let mut cut: String = value.chars().take(80).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{kind} {cut}")
}

impl Controller {
    /// An incident's observables, oldest first.
    pub async fn incident_observables(
        &self,
        incident_id: &str,
    ) -> Result<Vec<ObservableView>, IncidentError> {
        self.incident(incident_id).await?;
        Ok(self.store.incident_observables(incident_id).await?)
    }

    /// A responder adds a value (or a sighting of one already there).
    pub async fn add_observable(
        &self,
        incident_id: &str,
        request: AddObservable,
        actor: &str,
    ) -> Result<ObservableAdded, IncidentError> {
        self.incident(incident_id).await?;
        let value = request
            .kind
            .normalize(&request.value)
            .map_err(|e| IncidentError::Invalid(e.to_string()))?;
        let agent_id = match &request.agent {
            Some(name) => self
                .resolve_agents(std::slice::from_ref(name))
                .await?
                .into_iter()
                .next(),
            None => None,
        };
        let at_ms = now_ms();
        let verdict = request
            .verdict
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        let entry = NewTimelineEntry {
            at_ms,
            actor: actor.to_owned(),
            kind: ENTRY_KIND.to_owned(),
            summary: format!("observable {}{verdict}", shown(request.kind, &value)),
            detail: json!({
                "change": "added",
                "type": request.kind,
                "value": value,
                "verdict": request.verdict,
                "agent_id": agent_id,
            }),
        };
        let item = NewObservable {
            kind: request.kind,
            value,
            verdict: request.verdict,
            ignore_for_similarity: request.ignore_for_similarity,
        };
        let sighting = NewSighting {
            at_ms,
            source: SightingSource::Person,
            ref_id: None,
            agent_id,
            actor: actor.to_owned(),
        };
        let recorded = self
            .store
            .record_observables(incident_id, &[item], &sighting, &entry)
            .await?
            .ok_or_else(|| IncidentError::UnknownIncident(incident_id.to_owned()))?;
        let Some(one) = recorded.first() else {
            return Err(IncidentError::Invalid(format!(
                "incident {incident_id} holds {MAX_PER_INCIDENT} observables, the most it may"
            )));
        };
        self.publish_incident(incident_id, &entry).await;
        let observable = self.observable(incident_id, &one.id).await?;
        Ok(ObservableAdded {
            created: one.created,
            observable,
        })
    }

    /// A responder changes an observable's verdict or ignore flag.
    pub async fn update_observable(
        &self,
        incident_id: &str,
        id: &str,
        change: UpdateObservable,
        actor: &str,
    ) -> Result<ObservableView, IncidentError> {
        let before = self.observable(incident_id, id).await?;
        if change.verdict.is_none() && change.ignore_for_similarity.is_none() {
            return Err(IncidentError::Invalid(
                "nothing to change: give verdict or ignore_for_similarity".into(),
            ));
        }
        let mut said = Vec::new();
        if let Some(verdict) = change.verdict {
            said.push(format!("marked {verdict}"));
        }
        match change.ignore_for_similarity {
            Some(true) => said.push("ignored for similarity".to_owned()),
            Some(false) => said.push("counted for similarity".to_owned()),
            None => {}
        }
        let entry = NewTimelineEntry {
            at_ms: now_ms(),
            actor: actor.to_owned(),
            kind: ENTRY_KIND.to_owned(),
            summary: format!(
                "observable {} {}",
                shown(before.kind, &before.value),
                said.join(", ")
            ),
            detail: json!({
                "change": "updated",
                "observable_id": id,
                "type": before.kind,
                "value": before.value,
                "verdict": change.verdict,
                "ignore_for_similarity": change.ignore_for_similarity,
            }),
        };
        if !self
            .store
            .update_observable(
                incident_id,
                id,
                change.verdict,
                change.ignore_for_similarity,
                &entry,
            )
            .await?
        {
            return Err(IncidentError::UnknownLinked("observable", id.to_owned()));
        }
        self.publish_incident(incident_id, &entry).await;
        self.observable(incident_id, id).await
    }

    /// A responder removes an observable (and its sightings); returns it as it was.
    pub async fn remove_observable(
        &self,
        incident_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<ObservableView, IncidentError> {
        let before = self.observable(incident_id, id).await?;
        let entry = NewTimelineEntry {
            at_ms: now_ms(),
            actor: actor.to_owned(),
            kind: ENTRY_KIND.to_owned(),
            summary: format!("observable {} removed", shown(before.kind, &before.value)),
            detail: json!({
                "change": "removed",
                "observable_id": id,
                "type": before.kind,
                "value": before.value,
            }),
        };
        if !self
            .store
            .remove_observable(incident_id, id, &entry)
            .await?
        {
            return Err(IncidentError::UnknownLinked("observable", id.to_owned()));
        }
        self.publish_incident(incident_id, &entry).await;
        Ok(before)
    }

    async fn observable(
        &self,
        incident_id: &str,
        id: &str,
    ) -> Result<ObservableView, IncidentError> {
        self.incident(incident_id).await?;
        self.store
            .get_observable(incident_id, id)
            .await?
            .ok_or_else(|| IncidentError::UnknownLinked("observable", id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{parse, Source};

    #[test]
    fn an_alert_gives_its_values_normalised_once_each() {
        let body = serde_json::json!({
            "title": "t", "kind": "malware", "severity": "high",
            "host": { "hostname": "WEB-01.", "ip": "192.0.2.7" },
            "process": { "name": "sh", "executable": "/tmp/x/sh", "command_line": "sh -c id" },
            "file": { "path": "/tmp/x/payload.bin", "sha256": "AB".repeat(32) },
            "destination": { "ip": "2001:DB8::7", "port": 4444 },
        });
        let alert = parse(body.to_string().as_bytes(), Some(Source::Generic)).unwrap();
        let got: Vec<(ObservableType, String)> = from_alert(&alert)
            .into_iter()
            .map(|o| (o.kind, o.value))
            .collect();
        use ObservableType::*;
        let want = [
            (Hostname, "web-01".to_owned()),
            (Ipv4, "192.0.2.7".to_owned()),
            (ProcessName, "sh".to_owned()),
            (FilePath, "/tmp/x/sh".to_owned()),
            (CommandLine, "sh -c id".to_owned()),
            (FilePath, "/tmp/x/payload.bin".to_owned()),
            (FileName, "payload.bin".to_owned()),
            (Sha256, "ab".repeat(32)),
            (Ipv6, "2001:db8::7".to_owned()),
            (Port, "4444".to_owned()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn base_names_of_both_kinds_of_path() {
        assert_eq!(base_name("/tmp/x.sh"), Some("x.sh"));
        assert_eq!(base_name("C:\\Users\\x.exe"), Some("x.exe"));
        assert_eq!(base_name("/tmp/"), None);
    }
}

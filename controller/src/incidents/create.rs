//! Opening incidents: checked requests, hosts named by id or hostname, and the fingerprint
//! that joins a repeat to the open incident instead of opening another.

use super::*;

impl Controller {
    /// Finds agents by id or hostname; every name must match exactly one agent.
    pub async fn resolve_agents(&self, names: &[String]) -> Result<Vec<String>, IncidentError> {
        if names.len() > MAX_HOSTS {
            return Err(IncidentError::Invalid(format!(
                "at most {MAX_HOSTS} hosts per request"
            )));
        }
        let mut ids: Vec<String> = Vec::new();
        let mut all = None;
        for name in names {
            let name = name.trim();
            let id = match self.store.get_agent(name).await? {
                Some(agent) => agent.id,
                None => {
                    if all.is_none() {
                        all = Some(self.store.list_agents().await?);
                    }
                    let matching: Vec<&str> = all
                        .iter()
                        .flatten()
                        .filter(|a| a.hostname.eq_ignore_ascii_case(name))
                        .map(|a| a.id.as_str())
                        .collect();
                    match matching.as_slice() {
                        [] => return Err(IncidentError::UnknownAgent(name.to_owned())),
                        [one] => (*one).to_owned(),
                        many => {
                            return Err(IncidentError::AmbiguousHost(
                                name.to_owned(),
                                many.join(", "),
                            ))
                        }
                    }
                }
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Opens an incident in `alert`. With a fingerprint an open incident already holds,
    /// nothing is created and that incident is returned.
    pub async fn create_incident(
        &self,
        request: CreateIncident,
        actor: &str,
    ) -> Result<Created, IncidentError> {
        self.create_incident_with(request, actor, None).await
    }

    /// [`Controller::create_incident`], storing `opened_by` (e.g. the alert that opened it) on
    /// the timeline in the same transaction, and counting it as the first alert when its kind
    /// is `alert`.
    pub async fn create_incident_with(
        &self,
        request: CreateIncident,
        actor: &str,
        opened_by: Option<NewTimelineEntry>,
    ) -> Result<Created, IncidentError> {
        let prepared = self.prepare_incident(request, actor, opened_by).await?;
        let (id, new) = (&prepared.incident.id, &prepared.incident);
        match self
            .store
            .create_incident(
                new,
                &prepared.hosts,
                &prepared.entries,
                &prepared.stage_entry_id,
            )
            .await?
        {
            CreateOutcome::Created => {
                tracing::info!(incident_id = %id, kind = %new.kind, by = actor, "incident opened");
                if let Some(created) = prepared.entries.first() {
                    self.publish_incident(id, created).await;
                }
                Ok(Created::New(self.incident(id).await?))
            }
            CreateOutcome::FingerprintTaken(existing) => {
                Ok(Created::Existing(self.incident(&existing).await?))
            }
        }
    }

    /// Checks a create request and builds everything the store writes for it (the incident,
    /// its hosts, its `created` entry followed by `opened_by`, its first stage entry) without
    /// writing anything; alert intake writes it together with the alert itself.
    pub(crate) async fn prepare_incident(
        &self,
        request: CreateIncident,
        actor: &str,
        opened_by: Option<NewTimelineEntry>,
    ) -> Result<PreparedIncident, IncidentError> {
        let title = request.title.trim().to_owned();
        if title.is_empty() {
            return Err(IncidentError::Invalid("title must not be empty".into()));
        }
        check_text("title", &title, MAX_TITLE_CHARS)?;
        let description = request.description.unwrap_or_default();
        check_text("description", &description, MAX_TEXT_CHARS)?;
        check_kind(&request.kind)?;
        let severity = match &request.severity {
            Some(s) => parse_severity(s)?,
            None => Severity::Medium,
        };
        if request.labels.len() > MAX_LABELS {
            return Err(IncidentError::Invalid(format!(
                "at most {MAX_LABELS} labels"
            )));
        }
        for label in &request.labels {
            check_text("label", label, 128)?;
        }
        if let Some(assignee) = &request.assignee {
            check_text("assignee", assignee, 128)?;
        }
        if let Some(fingerprint) = &request.fingerprint {
            if fingerprint.is_empty() {
                return Err(IncidentError::Invalid(
                    "fingerprint must not be empty".into(),
                ));
            }
            check_text("fingerprint", fingerprint, 256)?;
        }
        let hosts = self.resolve_agents(&request.agents).await?;
        let new = NewIncident {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.clone(),
            kind: request.kind.clone(),
            severity: severity.as_str().to_owned(),
            stage: Stage::Alert.as_str().to_owned(),
            description,
            assignee: request.assignee.clone(),
            labels: request.labels.clone(),
            fingerprint: request.fingerprint.clone(),
            alert_count: i64::from(opened_by.as_ref().is_some_and(|e| e.kind == "alert")),
            created_at_ms: now_ms(),
            created_by: actor.to_owned(),
        };
        let created = entry(
            actor,
            "created",
            format!("incident opened: {title}"),
            serde_json::json!({
                "kind": request.kind,
                "severity": severity.as_str(),
                "agents": hosts,
                "fingerprint": request.fingerprint,
            }),
        );
        Ok(PreparedIncident {
            incident: new,
            hosts,
            entries: [Some(created), opened_by].into_iter().flatten().collect(),
            stage_entry_id: uuid::Uuid::new_v4().to_string(),
        })
    }
}

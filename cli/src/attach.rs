//! `--incident ID` on collection, hunt and containment commands: what the command starts is
//! attached to that incident (its timeline and report then show it).

use cordon_api::incidents::{IncidentView, Link, LinkKind};

use crate::{client::Client, output, resolve, CliError};

/// The incident's whole id (from an id, or a unique prefix of one), refusing before anything
/// starts when `incident` names no incident.
pub async fn check(client: &Client, incident: Option<&str>) -> Result<Option<String>, CliError> {
    let Some(text) = incident else {
        return Ok(None);
    };
    let id = resolve::incident(client, text).await?;
    let _: IncidentView = client.get(&format!("/api/v1/incidents/{id}")).await?;
    Ok(Some(id))
}

/// Attaches what was started (`kind` `id`) to `incident` (as [`check`] returned it). What was started is not undone by a
/// failure here, and the command goes on (a script that retried would start it twice): the
/// failure is said on stderr with how to attach it by hand.
pub async fn attach(client: &Client, incident: Option<&str>, kind: LinkKind, id: &str) {
    let Some(incident) = incident else {
        return;
    };
    let body = Link {
        kind,
        id: id.to_owned(),
    };
    let attached: Result<IncidentView, CliError> = client
        .post(&format!("/api/v1/incidents/{incident}/links"), &body)
        .await;
    if let Err(e) = attached {
        eprintln!(
            "cordon: warning: {kind} {id} was started but not attached to incident {}: {}; \
             attach it with `cordon incidents attach {} --{kind} {id}`",
            output::terminal(incident),
            output::terminal(&e.to_string()),
            output::terminal(incident),
        );
    }
}

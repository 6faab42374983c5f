//! `--incident ID` on collection, hunt and containment commands: what the command starts is
//! attached to that incident (its timeline and report then show it).

use cordon_api::incidents::{IncidentView, Link, LinkKind};

use crate::{
    client::{path_segment, Client},
    output, CliError,
};

/// Refuses before anything starts when `incident` names no incident.
pub async fn check(client: &Client, incident: Option<&str>) -> Result<(), CliError> {
    if let Some(id) = incident {
        let _: IncidentView = client
            .get(&format!("/api/v1/incidents/{}", path_segment(id)?))
            .await?;
    }
    Ok(())
}

/// Attaches what was started (`kind` `id`) to `incident`. What was started is not undone by a
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
    let attached: Result<IncidentView, CliError> = match path_segment(incident) {
        Ok(segment) => {
            client
                .post(&format!("/api/v1/incidents/{segment}/links"), &body)
                .await
        }
        Err(e) => Err(e),
    };
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

//! `--incident ID` on collection, hunt and containment commands: what the command starts is
//! attached to that incident (its timeline and report then show it).

use cordon_api::incidents::{IncidentView, Link, LinkKind};

use crate::{client::Client, CliError};

/// Refuses before anything starts when `incident` names no incident.
pub async fn check(client: &Client, incident: Option<&str>) -> Result<(), CliError> {
    if let Some(id) = incident {
        let _: IncidentView = client
            .get(&format!("/api/v1/incidents/{}", segment(id)?))
            .await?;
    }
    Ok(())
}

/// Attaches what was started (`kind` `id`) to `incident`. A failure says what was started, so
/// nothing is lost: it can be attached by hand (`cordon incidents link`).
pub async fn attach(
    client: &Client,
    incident: Option<&str>,
    kind: LinkKind,
    id: &str,
) -> Result<(), CliError> {
    let Some(incident) = incident else {
        return Ok(());
    };
    let path = format!("/api/v1/incidents/{}/links", segment(incident)?);
    let body = Link {
        kind,
        id: id.to_owned(),
    };
    let attached: Result<IncidentView, CliError> = client.post(&path, &body).await;
    attached.map(|_| ()).map_err(|e| {
        CliError::Other(format!(
            "{kind} {id} was started but not attached to incident {incident}: {e}"
        ))
    })
}

/// An id as one path segment.
fn segment(id: &str) -> Result<&str, CliError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id)
    } else {
        Err(CliError::Usage(format!(
            "{id:?} is not an incident id: ids are letters, digits, - and _"
        )))
    }
}

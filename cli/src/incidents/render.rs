//! How `cordon incidents` shows an incident to a person: its header, hosts, containment still
//! active and timeline, every piece of text from outside escaped.

use std::collections::HashMap;

use cordon_api::{
    agents::AgentView,
    incidents::{ActiveContainment, IncidentView},
};

use crate::output;

/// Text from people, alerts or agents, safe on a terminal and in one line (see
/// [`output::escape`]).
pub(super) fn plain(text: &str) -> String {
    output::escape(text).into_owned()
}

pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The incident's header lines.
pub(super) fn header(view: &IncidentView) -> String {
    let i = &view.incident;
    let state = if i.stage.is_closed() {
        format!("{} at {}", i.stage, output::time(i.closed_at_ms))
    } else {
        i.stage.to_string()
    };
    let mut out = format!("incident {}: {}\n", i.id, plain(&i.title));
    out.push_str(&format!(
        "  kind {}, severity {}, stage {state}\n",
        plain(&i.kind),
        i.severity
    ));
    let mut escalation = format!("tier {}", i.tier);
    if let Some(to) = &i.escalated_to {
        escalation.push_str(&format!(" ({})", plain(to)));
    }
    out.push_str(&format!(
        "  assignee {}, {escalation}\n",
        plain(i.assignee.as_deref().unwrap_or("none"))
    ));
    out.push_str(&format!(
        "  opened {} by {}, updated {}, {} alert(s)\n",
        output::time(Some(i.created_at_ms)),
        plain(&i.created_by),
        output::time(Some(i.updated_at_ms)),
        i.alert_count
    ));
    if !i.labels.is_empty() {
        out.push_str(&format!(
            "  labels {}\n",
            i.labels
                .iter()
                .map(|l| plain(l))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (n, line) in i.description.lines().enumerate() {
        let lead = if n == 0 { "  description: " } else { "    " };
        out.push_str(&format!("{lead}{}\n", plain(line)));
    }
    out
}

pub(super) fn render_show(view: &IncidentView, agents: &[AgentView]) -> String {
    let by_id: HashMap<&str, &AgentView> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = header(view);

    out.push_str("\nhosts:\n");
    if view.hosts.is_empty() {
        out.push_str("  none (cordon incidents hosts add ID AGENT…)\n");
    } else {
        let rows: Vec<Vec<String>> = view
            .hosts
            .iter()
            .map(|h| {
                let agent = by_id.get(h.agent_id.as_str());
                vec![
                    h.agent_id.clone(),
                    agent.map_or("-".into(), |a| plain(&a.hostname)),
                    agent.map_or("unknown", |a| a.status.as_str()).to_owned(),
                    output::time(Some(h.added_at_ms)),
                    plain(&h.added_by),
                ]
            })
            .collect();
        out.push_str(&output::table(
            &["AGENT", "HOSTNAME", "STATUS", "ADDED", "BY"],
            &rows,
        ));
    }

    out.push_str("\ncontainment still active:\n");
    if view.active_containment.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&containment_table(&view.active_containment, &by_id));
    }

    if !view.links.is_empty() {
        out.push_str("\nattached:\n");
        let rows: Vec<Vec<String>> = view
            .links
            .iter()
            .map(|l| {
                vec![
                    l.kind.as_str().to_owned(),
                    l.ref_id.clone(),
                    output::time(Some(l.linked_at_ms)),
                    plain(&l.linked_by),
                ]
            })
            .collect();
        out.push_str(&output::table(&["KIND", "ID", "ATTACHED", "BY"], &rows));
    }

    out.push_str("\ntimeline:\n");
    let rows: Vec<Vec<String>> = view
        .timeline
        .iter()
        .map(|t| {
            vec![
                output::time(Some(t.at_ms)),
                plain(&t.actor),
                t.kind.clone(),
                plain(&t.summary),
            ]
        })
        .collect();
    out.push_str(&output::table(&["TIME", "WHO", "KIND", "WHAT"], &rows));
    out
}

pub(super) fn containment_table(
    active: &[ActiveContainment],
    agents: &HashMap<&str, &AgentView>,
) -> String {
    let rows: Vec<Vec<String>> = active
        .iter()
        .map(|c| {
            vec![
                c.agent_id.clone(),
                agents
                    .get(c.agent_id.as_str())
                    .map_or_else(|| "-".into(), |a| plain(&a.hostname)),
                c.what.clone(),
                if c.targets.is_empty() {
                    "-".into()
                } else {
                    c.targets.join(", ")
                },
                output::time(Some(c.until_ms)),
                c.action_id.clone(),
            ]
        })
        .collect();
    output::table(
        &["AGENT", "HOSTNAME", "WHAT", "TARGETS", "UNTIL", "ACTION"],
        &rows,
    )
}

/// Similar incidents as a person reads them: one block each, most similar first.
pub fn similar(page: &cordon_api::similar::SimilarPage) -> String {
    let mut out = String::new();
    if page.similar.is_empty() {
        out.push_str(&format!(
            "no incident is like {} (of {} incidents)\n",
            page.incident_id, page.incident_count
        ));
    }
    for s in &page.similar {
        out.push_str(&format!(
            "{}  {}  score {:.1}  {}  {}\n",
            s.id.get(..8).unwrap_or(&s.id),
            output::escape(&s.title),
            s.score,
            s.outcome,
            output::time(Some(s.opened_at_ms)),
        ));
        for r in &s.reasons {
            out.push_str(&format!(
                "    {:+.2}  {}\n",
                r.weight,
                output::escape(&r.text)
            ));
        }
        for w in &s.worked {
            out.push_str(&format!(
                "    worked: {} on {}{}\n",
                output::escape(&w.what),
                w.agent_id.get(..8).unwrap_or(&w.agent_id),
                w.done
                    .as_deref()
                    .map(|d| format!(" ({})", output::escape(d)))
                    .unwrap_or_default()
            ));
        }
        if let Some(secs) = s.secs_to_contain {
            out.push_str(&format!(
                "    contained after {}\n",
                cordon_api::format::duration(secs.unsigned_abs())
            ));
        }
        if let Some(secs) = s.secs_to_close {
            out.push_str(&format!(
                "    closed after {}\n",
                cordon_api::format::duration(secs.unsigned_abs())
            ));
        }
    }
    if !page.noise.is_empty() {
        out.push_str(&format!(
            "noise (in more than {:.0} % of incidents, not counted): {}\n",
            page.noise_share * 100.0,
            page.noise
                .iter()
                .map(|n| output::escape(n).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// What `suggest` proposed, one line each, then what it did not learn from.
pub fn suggestions(page: &cordon_api::suggest::SuggestPage) -> String {
    let mut out = String::new();
    if page.suggestions.is_empty() {
        out.push_str(
            "nothing to suggest: no similar closed incident had containment that worked\n",
        );
    }
    for s in &page.suggestions {
        let host = s
            .agent_id
            .as_deref()
            .map(|h| format!(" on {}", h.get(..8).unwrap_or(h)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}: {}{host} (worked on incident {}): {}\n",
            s.state,
            output::escape(&s.what),
            s.from_incident.get(..8).unwrap_or(&s.from_incident),
            output::escape(&s.note)
        ));
    }
    for p in &page.passed_over {
        out.push_str(&format!("passed over: {}\n", output::escape(p)));
    }
    out
}

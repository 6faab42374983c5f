//! Similar past incidents, and what worked there.
//!
//! Two incidents are alike for what they share, each shared thing weighted by how rare it is
//! across all incidents — `ln(1 + N / n)` for a thing held by `n` of `N` incidents, so an
//! address seen in 2 of 40,000 counts about 9.9 and one seen in 9,000 about 1.7:
//! - an observable both hold (benign or ignored ones never count, on either side);
//! - a host both involve;
//! - an alert rule that fired on both;
//!
//! and, for incidents found by one of those, being of the same kind (+0.5) and how close in
//! time they were opened (+0.5 on the same day, halving about every three weeks). A thing held
//! by at least [`NOISE_MIN_INCIDENTS`] incidents and by more than the noise share of them
//! (default 5 %) is noise: it counts for nothing and the answer names it. Every reason comes
//! with its words and its weight; the score is their sum.

use std::collections::HashMap;

use cordon_api::{
    actions::{ActionState, ActionView},
    incidents::{LinkKind, Stage},
    similar::{
        Outcome, Reason, ReasonKind, SimilarIncident, SimilarPage, WorkedAction,
        DEFAULT_NOISE_SHARE, SHOWN_SIMILAR,
    },
};

use crate::{
    incidents::IncidentError,
    state::Controller,
    store::{similar::Shared, IncidentRecord, NewTimelineEntry},
};

/// A thing is noise only once this many incidents hold it (with few incidents, any shared
/// thing is a large share of them).
pub const NOISE_MIN_INCIDENTS: i64 = 3;

const DAY_MS: f64 = 86_400_000.0;

/// A value held by more incidents than this is looked up on its own, and only in the newest
/// this many of them.
const PER_VALUE: i64 = 200;

/// Fewest candidates looked at whole, however few are asked for.
const MIN_HYDRATED: usize = 50;

/// A candidate being scored.
#[derive(Debug, Default)]
struct Candidate {
    score: f64,
    reasons: Vec<Reason>,
}

impl Candidate {
    fn add(&mut self, kind: ReasonKind, text: String, weight: f64) {
        self.score += weight;
        self.reasons.push(Reason { kind, text, weight });
    }
}

/// How much a thing held by `n` of `total` incidents says.
fn rarity(n: i64, total: i64) -> f64 {
    let n = n.max(1) as f64;
    (1.0 + total.max(1) as f64 / n).ln()
}

fn is_noise(n: i64, total: i64, share: f64) -> bool {
    n >= NOISE_MIN_INCIDENTS && (n as f64) > share * total as f64
}

fn cut(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// "in 2 of 40 incidents".
fn held(n: i64, total: i64) -> String {
    format!("in {n} of {total} incidents")
}

/// How far apart two openings were, in words.
fn apart(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    let hours = ms / 3_600_000;
    if hours < 1 {
        "within the hour".to_owned()
    } else if hours < 48 {
        format!("{hours} h apart")
    } else {
        format!("{} days apart", hours / 24)
    }
}

/// How an incident ended: reopened if it was ever closed and opened again.
fn outcome(stage: Stage, entered: &[Stage]) -> Outcome {
    let reopened = entered
        .windows(2)
        .any(|pair| pair[0].is_closed() && !pair[1].is_closed());
    match stage {
        _ if reopened => Outcome::Reopened,
        Stage::Closed => Outcome::Closed,
        Stage::FalsePositive => Outcome::FalsePositive,
        _ => Outcome::Open,
    }
}

/// The timeline entry kind naming the similar incidents an alert's new incident was found like.
pub const ENTRY_KIND: &str = "similar";

/// The timeline entry for `similar` (most similar first, not empty).
pub fn timeline_entry(similar: &[SimilarIncident], actor: &str) -> NewTimelineEntry {
    let best = &similar[..similar.len().min(3)];
    let named: Vec<String> = best
        .iter()
        .map(|s| {
            let why = s.reasons.first().map(|r| r.text.as_str()).unwrap_or("");
            format!(
                "{} {:?} (score {:.1}, {}: {why})",
                s.id.get(..8).unwrap_or(&s.id),
                cut(&s.title),
                s.score,
                s.outcome
            )
        })
        .collect();
    NewTimelineEntry {
        at_ms: crate::now_ms(),
        actor: actor.to_owned(),
        kind: ENTRY_KIND.to_owned(),
        summary: format!("similar to {}", named.join("; ")),
        detail: serde_json::json!({
            "similar": similar
                .iter()
                .map(|s| serde_json::json!({
                    "incident_id": s.id,
                    "score": s.score,
                    "outcome": s.outcome,
                    "reasons": s.reasons,
                }))
                .collect::<Vec<_>>(),
        }),
    }
}

impl Controller {
    /// The incidents most like `id`, most similar first, at most `limit`; things held by more
    /// than `noise_share` of all incidents are noise.
    pub async fn similar_incidents(
        &self,
        id: &str,
        limit: usize,
        noise_share: f64,
    ) -> Result<SimilarPage, IncidentError> {
        if !(0.0..=1.0).contains(&noise_share) || noise_share.is_nan() {
            return Err(IncidentError::Invalid(format!(
                "noise_share {noise_share} must be between 0 and 1"
            )));
        }
        let me = self.incident(id).await?;
        let total = self.store.incident_count().await?;
        let mut candidates: HashMap<String, Candidate> = HashMap::new();
        let mut noise = Vec::new();

        // Observables.
        let observables = self.store.counted_observables(id).await?;
        let keys: Vec<String> = observables.iter().map(|o| o.key.clone()).collect();
        let holding = self
            .store
            .incidents_holding(Shared::Observable, &keys)
            .await?;
        let mut kept = Vec::new();
        let mut said: HashMap<String, (String, i64)> = HashMap::new();
        for o in &observables {
            let n = holding.get(&o.key).copied().unwrap_or(1);
            let words = format!("{} {}", o.kind, cut(&o.value));
            if is_noise(n, total, noise_share) {
                noise.push(format!("{words} ({})", held(n, total)));
            } else {
                kept.push(o.key.clone());
                said.insert(o.key.clone(), (words, n));
            }
        }
        // Values held by many incidents are read one by one, newest first and bounded; the
        // rest together.
        let (common, rare): (Vec<String>, Vec<String>) = kept
            .into_iter()
            .partition(|k| said.get(k).is_some_and(|(_, n)| *n > PER_VALUE));
        let mut pairs = self
            .store
            .incidents_sharing(Shared::Observable, &rare, id)
            .await?;
        for key in common {
            for other in self.store.newest_sharing(&key, id, PER_VALUE).await? {
                pairs.push((other, key.clone()));
            }
        }
        for (other, key) in pairs {
            if let Some((words, n)) = said.get(&key) {
                candidates.entry(other).or_default().add(
                    ReasonKind::Observable,
                    format!("shares {words} (seen {})", held(*n, total)),
                    rarity(*n, total),
                );
            }
        }

        // Hosts.
        let hosts: Vec<String> = self
            .store
            .incident_hosts(id)
            .await?
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        let holding = self.store.incidents_holding(Shared::Host, &hosts).await?;
        let mut kept = Vec::new();
        let mut names = HashMap::new();
        for agent_id in &hosts {
            let n = holding.get(agent_id).copied().unwrap_or(1);
            let name = match self.store.get_agent(agent_id).await? {
                Some(agent) => agent.hostname,
                None => agent_id.clone(),
            };
            if is_noise(n, total, noise_share) {
                noise.push(format!("host {} ({})", cut(&name), held(n, total)));
            } else {
                kept.push(agent_id.clone());
                names.insert(agent_id.clone(), (name, n));
            }
        }
        for (other, agent_id) in self
            .store
            .incidents_sharing(Shared::Host, &kept, id)
            .await?
        {
            if let Some((name, n)) = names.get(&agent_id) {
                candidates.entry(other).or_default().add(
                    ReasonKind::Host,
                    format!("involves host {} too ({})", cut(name), held(*n, total)),
                    rarity(*n, total),
                );
            }
        }

        // Alert rules.
        let rules = self.store.incident_rules(id).await?;
        let holding = self.store.incidents_holding(Shared::Rule, &rules).await?;
        let (noisy, kept): (Vec<String>, Vec<String>) = rules
            .iter()
            .cloned()
            .partition(|r| is_noise(holding.get(r).copied().unwrap_or(1), total, noise_share));
        for rule in noisy {
            let n = holding.get(&rule).copied().unwrap_or(1);
            noise.push(format!("alert rule {} ({})", cut(&rule), held(n, total)));
        }
        for (other, rule) in self
            .store
            .incidents_sharing(Shared::Rule, &kept, id)
            .await?
        {
            let n = holding.get(&rule).copied().unwrap_or(1);
            candidates.entry(other).or_default().add(
                ReasonKind::Rule,
                format!(
                    "an alert of rule {} opened or joined both ({})",
                    cut(&rule),
                    held(n, total)
                ),
                rarity(n, total),
            );
        }

        // Kind and time, for the strongest of those found (a few times as many as asked for:
        // kind and time can only reorder them a little); then the strongest.
        let mut found: Vec<(String, Candidate)> = candidates.into_iter().collect();
        found.sort_by(|(a, x), (b, y)| y.score.total_cmp(&x.score).then(a.cmp(b)));
        found.truncate(limit.saturating_mul(4).max(MIN_HYDRATED));
        let mut scored = Vec::new();
        for (other, mut candidate) in found {
            let Some(record) = self.store.get_incident(&other).await? else {
                continue;
            };
            if record.kind == me.kind {
                candidate.add(
                    ReasonKind::Kind,
                    format!("same kind ({})", record.kind),
                    0.5,
                );
            }
            let gap = me.created_at_ms - record.created_at_ms;
            let recent = 0.5 * (-(gap.unsigned_abs() as f64) / DAY_MS / 30.0).exp();
            candidate.add(
                ReasonKind::Recent,
                format!("opened {}", apart(gap)),
                (recent * 1000.0).round() / 1000.0,
            );
            scored.push((record, candidate));
        }
        scored.sort_by(|(a, x), (b, y)| {
            y.score
                .total_cmp(&x.score)
                .then(b.created_at_ms.cmp(&a.created_at_ms))
                .then(a.id.cmp(&b.id))
        });
        scored.truncate(limit);
        let mut similar = Vec::with_capacity(scored.len());
        for (record, mut candidate) in scored {
            candidate
                .reasons
                .sort_by(|a, b| b.weight.total_cmp(&a.weight));
            for reason in &mut candidate.reasons {
                reason.weight = (reason.weight * 1000.0).round() / 1000.0;
            }
            similar.push(self.what_happened(record, candidate).await?);
        }
        Ok(SimilarPage {
            incident_id: id.to_owned(),
            similar,
            noise,
            incident_count: total,
            noise_share,
        })
    }

    /// The few most similar incidents an alert's answer, a view and a report show. They are
    /// extra: a failed lookup is logged and shows none, rather than failing what shows them.
    pub async fn shown_similar(&self, id: &str) -> Vec<SimilarIncident> {
        match self
            .similar_incidents(id, SHOWN_SIMILAR, DEFAULT_NOISE_SHARE)
            .await
        {
            Ok(page) => page.similar,
            Err(e) => {
                tracing::error!(incident_id = %id, error = %e, "cannot look for similar incidents");
                Vec::new()
            }
        }
    }

    /// A scored incident with how it ended and the containment that ran there.
    async fn what_happened(
        &self,
        record: IncidentRecord,
        candidate: Candidate,
    ) -> Result<SimilarIncident, IncidentError> {
        let entered: Vec<Stage> = self
            .store
            .stage_entries(&record.id)
            .await?
            .into_iter()
            .map(|e| e.stage)
            .collect();
        let mut worked = Vec::new();
        for link in self.store.incident_links(&record.id).await? {
            if link.kind != LinkKind::Action {
                continue;
            }
            let Some(action) = self.store.get_action(&link.ref_id).await? else {
                continue;
            };
            let view = ActionView::try_from(action)?;
            if view.state != ActionState::Done {
                continue;
            }
            worked.push(WorkedAction {
                what: cordon_api::format::what(&view.request.action),
                done: view.receipt.as_ref().map(|r| r.done.clone()),
                done_at_ms: view.finished_at_ms,
                action_id: view.id,
                agent_id: view.agent_id,
                kind: view.kind,
            });
        }
        worked.sort_by_key(|w| w.done_at_ms);
        let secs = |at: Option<i64>| at.map(|at| (at - record.created_at_ms).max(0) / 1000);
        Ok(SimilarIncident {
            outcome: outcome(record.stage, &entered),
            secs_to_contain: secs(worked.first().and_then(|w| w.done_at_ms)),
            secs_to_close: secs(record.closed_at_ms),
            worked,
            score: (candidate.score * 1000.0).round() / 1000.0,
            reasons: candidate.reasons,
            id: record.id,
            title: record.title,
            kind: record.kind,
            severity: record.severity,
            stage: record.stage,
            opened_at_ms: record.created_at_ms,
            closed_at_ms: record.closed_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_things_weigh_more_than_common_ones() {
        assert!((rarity(2, 40_000) - 9.9).abs() < 0.05);
        assert!((rarity(9_000, 40_000) - 1.69).abs() < 0.05);
        assert!(rarity(1, 2) > rarity(2, 2));
    }

    #[test]
    fn noise_needs_both_a_share_and_a_few_incidents() {
        assert!(
            !is_noise(2, 2, 0.05),
            "two incidents sharing a hash is a finding"
        );
        assert!(is_noise(3, 10, 0.05));
        assert!(!is_noise(3, 100, 0.05));
        assert!(!is_noise(60, 1000, 0.1));
    }

    #[test]
    fn an_incident_closed_and_opened_again_was_reopened() {
        use Stage::*;
        assert_eq!(outcome(Closed, &[Alert, Response, Closed]), Outcome::Closed);
        assert_eq!(
            outcome(FalsePositive, &[Alert, FalsePositive]),
            Outcome::FalsePositive
        );
        assert_eq!(
            outcome(Assessment, &[Alert, Closed, Assessment]),
            Outcome::Reopened
        );
        assert_eq!(
            outcome(Closed, &[Alert, Closed, Analysis, Closed]),
            Outcome::Reopened
        );
        assert_eq!(outcome(Response, &[Alert, Response]), Outcome::Open);
    }

    #[test]
    fn gaps_in_words() {
        assert_eq!(apart(10 * 60_000), "within the hour");
        assert_eq!(apart(-5 * 3_600_000), "5 h apart");
        assert_eq!(apart(7 * 86_400_000), "7 days apart");
    }
}

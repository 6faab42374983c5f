//! Batched presence writes: agents' last-seen times and disconnects go to the store in one
//! transaction per flush instead of one per agent. 10,000 agents heartbeating, or all of them
//! dropping at once when a network fails, then cost a few writes a second instead of thousands
//! queueing for SQLite's single write lock (which used to time out and leave agents recorded as
//! connected).
//!
//! Connects stay synchronous (a session is refused if the store cannot record it); whether an
//! agent is online right now always comes from the registry, in memory.

use std::{collections::HashMap, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// How often pending presence changes are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// One agent's pending change.
pub use crate::store::PresenceChange as Pending;

/// Where sessions report presence. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    tx: mpsc::UnboundedSender<(String, Pending)>,
}

/// The receiving end, for [`run`].
pub type PresenceReceiver = mpsc::UnboundedReceiver<(String, Pending)>;

impl Presence {
    pub fn channel() -> (Self, PresenceReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// The agent was active at `at_ms`.
    pub fn seen(&self, agent_id: &str, at_ms: i64) {
        let _ = self.tx.send((
            agent_id.to_string(),
            Pending {
                seen_at_ms: at_ms,
                gone: false,
            },
        ));
    }

    /// The agent's session ended at `at_ms`.
    pub fn gone(&self, agent_id: &str, at_ms: i64) {
        let _ = self.tx.send((
            agent_id.to_string(),
            Pending {
                seen_at_ms: at_ms,
                gone: true,
            },
        ));
    }
}

/// Folds a new report into what is pending for an agent: the latest time wins; a session that
/// ended stays ended unless a later report says the agent is active again.
pub fn merge(pending: &mut HashMap<String, Pending>, agent_id: String, update: Pending) {
    pending
        .entry(agent_id)
        .and_modify(|p| {
            if update.seen_at_ms >= p.seen_at_ms {
                *p = update;
            }
        })
        .or_insert(update);
}

/// Writes presence until `shutdown`, then flushes what is left. A failed flush is kept and
/// retried with the next one: nothing is dropped while the store is briefly unavailable.
pub async fn run(controller: Shared, mut rx: PresenceReceiver, shutdown: CancellationToken) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            received = rx.recv() => match received {
                Some((agent, update)) => merge(&mut pending, agent, update),
                None => break,
            },
            _ = ticker.tick() => flush(&controller, &mut pending).await,
        }
    }
    while let Ok((agent, update)) = rx.try_recv() {
        merge(&mut pending, agent, update);
    }
    flush(&controller, &mut pending).await;
}

async fn flush(controller: &Shared, pending: &mut HashMap<String, Pending>) {
    if pending.is_empty() {
        return;
    }
    // An agent that already came back has a live session: its disconnect is stale.
    let batch: Vec<(String, Pending)> = pending
        .iter()
        .map(|(agent, p)| {
            let gone = p.gone && !controller.registry.is_online(agent);
            (agent.clone(), Pending { gone, ..*p })
        })
        .collect();
    match controller.store.record_presence(&batch).await {
        Ok(()) => pending.clear(),
        Err(e) => {
            tracing::warn!(agents = batch.len(), error = %e, "cannot record agent presence; will retry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_report_wins() {
        let mut pending = HashMap::new();
        let seen = |t| Pending {
            seen_at_ms: t,
            gone: false,
        };
        merge(&mut pending, "a".into(), seen(10));
        merge(
            &mut pending,
            "a".into(),
            Pending {
                seen_at_ms: 20,
                gone: true,
            },
        );
        merge(&mut pending, "a".into(), seen(15));
        assert_eq!(
            pending["a"],
            Pending {
                seen_at_ms: 20,
                gone: true
            },
            "an older heartbeat does not undo a later disconnect"
        );
        merge(&mut pending, "a".into(), seen(30));
        assert_eq!(pending["a"], seen(30));
    }
}

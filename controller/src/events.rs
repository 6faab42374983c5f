//! Events: what happened to incidents, tasks and actions, told to live consumers
//! (`GET /api/v1/events`, server-sent events) and to outgoing webhooks.
//!
//! An event is published *after* the change it describes committed, by the [`Controller`]
//! function that made the change: [`Controller::publish`] first writes a delivery row for every
//! webhook that wants the event (the outbox, so a delivery survives a restart; the change's own
//! commit and the outbox write are separate, so a crash between the two loses that one
//! notification, never the change), wakes the delivery worker ([`crate::webhooks`]), and then
//! hands the event to live consumers through a broadcast channel, which never blocks the
//! publisher (a consumer that falls behind is told how many it missed).
//!
//! Incident changes are published from their timeline entry ([`Controller::publish_incident`]),
//! the same entry the store writes with the change, so a new kind of incident change needs
//! only its entry kind mapped in [`incident_kind`]. Code that appends to an incident's timeline
//! through the store directly must call it too.
//!
//! The enabled webhooks are read from the store at most every [`WEBHOOK_CACHE_TTL`] (and at once
//! after a change on this controller), so a publish with no webhook wanting the event costs no
//! database work; a webhook added on another replica sharing the database is seen within that
//! time.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use crate::{
    now_ms,
    state::Controller,
    store::{
        webhooks::{NewDelivery, WebhookTarget},
        ActionEnd, NewTimelineEntry, TaskEnd,
    },
};
pub use cordon_api::events::{kind, Event};

/// Events kept for live consumers that have not read them yet; a consumer further behind is
/// told how many it missed.
pub const LIVE_CAPACITY: usize = 1024;
/// Recent events kept so a consumer that reconnects with `Last-Event-ID` gets what it missed.
pub const RESUME_CAPACITY: usize = 1024;
/// How long after the last live consumer left events are still built and kept for its
/// return (a publish with nobody listening otherwise skips building the event).
pub const RESUME_WINDOW: Duration = Duration::from_secs(120);
/// Most live consumers (`GET /api/v1/events` streams) at once.
pub const MAX_LIVE_CONSUMERS: usize = 64;
/// Live event streams one token may hold at once.
pub const MAX_LIVE_PER_TOKEN: usize = 8;

/// A live consumer's places (in all, and for its token); given back when dropped.
#[derive(Debug)]
pub struct LivePermit {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _per_token: crate::limits::KeyedPermit<String>,
}
/// How long the list of enabled webhooks is reused before it is read again.
pub const WEBHOOK_CACHE_TTL: Duration = Duration::from_secs(2);
/// The base of the delivery retry backoff unless configured otherwise (see
/// [`crate::webhooks`]).
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);

/// Whether an event kind pattern matches `kind`: `*` matches everything, `prefix.*` every kind
/// under `prefix.`, anything else only itself.
pub fn kind_matches(pattern: &str, kind: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => kind
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == kind,
    }
}

/// Whether any of `patterns` matches `kind`.
pub fn any_matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| kind_matches(p, kind))
}

/// Checks an event kind pattern: `*`, or dot-separated words of `a-z0-9_`, optionally ending
/// in `.*`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix(".*").unwrap_or(pattern);
    let ok = pattern == "*"
        || (!body.is_empty()
            && body.len() <= 64
            && body.split('.').all(|word| {
                !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            }));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event pattern {pattern:?} must be `*`, a kind such as `task.done`, or a prefix such as `incident.*`"
        ))
    }
}

/// The event kind for an incident timeline entry kind.
pub fn incident_kind(entry_kind: &str) -> &'static str {
    match entry_kind {
        "created" => kind::INCIDENT_CREATED,
        "stage" => kind::INCIDENT_STAGE_CHANGED,
        "assigned" => kind::INCIDENT_ASSIGNED,
        "escalated" => kind::INCIDENT_ESCALATED,
        "severity" => kind::INCIDENT_SEVERITY_CHANGED,
        "comment" => kind::INCIDENT_COMMENT,
        "hosts" => kind::INCIDENT_HOSTS_ADDED,
        "alert" => kind::INCIDENT_ALERT_JOINED,
        "task" | "hunt" | "action" | "evidence" => kind::INCIDENT_LINKED,
        _ => kind::INCIDENT_UPDATED,
    }
}

/// The event kind for how a task ended.
pub fn task_end_kind(end: &TaskEnd) -> &'static str {
    match end {
        TaskEnd::Done { .. } => kind::TASK_DONE,
        TaskEnd::Failed { .. } => kind::TASK_FAILED,
        TaskEnd::Cancelled { .. } => kind::TASK_CANCELLED,
    }
}

/// The event kind for how an action ended.
pub fn action_end_kind(end: &ActionEnd) -> &'static str {
    match end {
        ActionEnd::Done { .. } => kind::ACTION_DONE,
        ActionEnd::Failed { .. } => kind::ACTION_FAILED,
        ActionEnd::Expired { .. } => kind::ACTION_EXPIRED,
    }
}

/// Where a resuming live consumer picks up (see [`Events::resume`]).
pub struct Resumed {
    /// The kept events after the resume point, oldest first; `None` when the resume point is
    /// no longer kept.
    pub backlog: Option<Vec<Arc<Event>>>,
    /// Everything published from now on.
    pub feed: broadcast::Receiver<Arc<Event>>,
}

/// The controller's event hub: the live channel, the cached webhook list and the delivery
/// worker's wake-up.
pub struct Events {
    live: broadcast::Sender<Arc<Event>>,
    /// The last [`RESUME_CAPACITY`] events sent live, oldest first; written under this lock
    /// together with the live send, so a resuming consumer sees each event exactly once.
    recent: Mutex<VecDeque<Arc<Event>>>,
    /// When the last live consumer went away, if none is connected now.
    last_left: Mutex<Option<Instant>>,
    webhooks: Mutex<Option<(Instant, Arc<Vec<WebhookTarget>>)>>,
    /// Woken when deliveries were queued.
    pub(crate) queued: Notify,
    retry_base_ms: AtomicU64,
    /// One permit per live consumer.
    live_permits: Arc<tokio::sync::Semaphore>,
    /// And per token: one client cannot take every stream.
    live_per_token: Arc<crate::limits::KeyedLimit<String>>,
    /// Cancelled when the controller stops, so live streams end instead of holding the
    /// API's graceful shutdown open.
    closing: tokio_util::sync::CancellationToken,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let base = std::env::var("CORDON_WEBHOOK_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(DEFAULT_RETRY_BASE.as_millis() as u64);
        Self {
            live: broadcast::channel(LIVE_CAPACITY).0,
            recent: Mutex::new(VecDeque::with_capacity(RESUME_CAPACITY)),
            last_left: Mutex::new(None),
            webhooks: Mutex::new(None),
            queued: Notify::new(),
            retry_base_ms: AtomicU64::new(base),
            live_permits: Arc::new(tokio::sync::Semaphore::new(MAX_LIVE_CONSUMERS)),
            live_per_token: crate::limits::KeyedLimit::new(MAX_LIVE_PER_TOKEN),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// A place for one more live consumer using token `token_id`, or why there is none:
    /// [`MAX_LIVE_CONSUMERS`] are connected, or [`MAX_LIVE_PER_TOKEN`] with this token.
    pub fn live_permit(&self, token_id: &str) -> Result<LivePermit, &'static str> {
        let per_token = self
            .live_per_token
            .try_acquire(token_id.to_string())
            .ok_or("this token has its most live event streams open; close one first")?;
        let slot = self
            .live_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many live event streams are open; try again later")?;
        Ok(LivePermit {
            _slot: slot,
            _per_token: per_token,
        })
    }

    /// Cancelled when the controller stops.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// Ends every live stream (the controller is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// A live feed of events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// A live feed resuming after the event `last_id` (a consumer's `Last-Event-ID`): the
    /// kept events published after it, then everything from now on, with no gap and nothing
    /// twice. The resume point is `None` when `last_id` is no longer kept (too old, or from
    /// before a controller restart): the consumer may have missed events.
    pub fn resume(&self, last_id: &str) -> Resumed {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let feed = self.live.subscribe();
        let backlog = recent
            .iter()
            .rposition(|e| e.id == last_id)
            .map(|at| recent.iter().skip(at + 1).cloned().collect());
        Resumed { backlog, feed }
    }

    /// Sends `event` live and keeps it for consumers that resume.
    fn send_live(&self, event: Event) {
        let event = Arc::new(event);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RESUME_CAPACITY {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// Notes that a live consumer went away: events are still kept for [`RESUME_WINDOW`] in
    /// case it comes back.
    pub fn consumer_left(&self) {
        let mut last_left = self.last_left.lock().unwrap_or_else(|e| e.into_inner());
        *last_left = Some(Instant::now());
    }

    /// Whether a live consumer is connected, or left recently enough to resume.
    fn live_interest(&self) -> bool {
        if self.live.receiver_count() > 0 {
            return true;
        }
        let last_left = self.last_left.lock().unwrap_or_else(|e| e.into_inner());
        last_left.is_some_and(|at| at.elapsed() < RESUME_WINDOW)
    }

    /// How many live consumers are subscribed now.
    pub fn live_consumers(&self) -> usize {
        self.live.receiver_count()
    }

    /// The first delay before a failed delivery is tried again; each later one doubles.
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms.load(Ordering::Relaxed))
    }

    /// Changes the retry base (at least 1 ms), e.g. for tests that should not wait seconds.
    pub fn set_retry_base(&self, base: Duration) {
        let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
        self.retry_base_ms.store(ms, Ordering::Relaxed);
    }

    /// Forgets the cached webhook list, so the next publish reads it again.
    pub fn webhooks_changed(&self) {
        if let Ok(mut cache) = self.webhooks.lock() {
            *cache = None;
        }
    }

    fn cached_webhooks(&self) -> Option<Arc<Vec<WebhookTarget>>> {
        let cache = self.webhooks.lock().ok()?;
        match &*cache {
            Some((at, targets)) if at.elapsed() < WEBHOOK_CACHE_TTL => Some(targets.clone()),
            _ => None,
        }
    }

    fn cache_webhooks(&self, targets: Arc<Vec<WebhookTarget>>) {
        if let Ok(mut cache) = self.webhooks.lock() {
            *cache = Some((Instant::now(), targets));
        }
    }
}

impl Controller {
    /// Enabled webhooks, from the cache when it is fresh. On a store error, none (logged):
    /// the change being published has committed already and must not fail because of it.
    async fn webhook_targets(&self) -> Arc<Vec<WebhookTarget>> {
        if let Some(targets) = self.events.cached_webhooks() {
            return targets;
        }
        match self.store.webhook_targets().await {
            Ok(targets) => {
                let targets = Arc::new(targets);
                self.events.cache_webhooks(targets.clone());
                targets
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read webhooks; events are not queued for them");
                Arc::new(Vec::new())
            }
        }
    }

    /// Whether anybody (a live consumer or a webhook) would receive an event of `kind`; lets a
    /// publisher skip the reads that building the event takes.
    pub async fn wants_event(&self, kind: &str) -> bool {
        self.events.live_interest()
            || self
                .webhook_targets()
                .await
                .iter()
                .any(|t| any_matches(&t.events, kind))
    }

    /// Publishes an event whose change has committed: queues it for every webhook that wants
    /// it, then tells live consumers. Never fails; what cannot be queued is logged.
    pub async fn publish(&self, event: Event) {
        let targets = self.webhook_targets().await;
        let wanting: Vec<&WebhookTarget> = targets
            .iter()
            .filter(|t| any_matches(&t.events, &event.kind))
            .collect();
        if !wanting.is_empty() {
            self.queue_for(&event, wanting.iter().map(|t| t.id.as_str()))
                .await;
        }
        self.events.send_live(event);
    }

    /// Writes `event` to the outbox of each webhook in `webhook_ids` and wakes the worker.
    /// Returns the delivery ids, or none if the write failed (logged).
    pub(crate) async fn queue_for<'a>(
        &self,
        event: &Event,
        webhook_ids: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let body = match serde_json::to_string(event) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(event_id = %event.id, kind = %event.kind, error = %e, "cannot encode event");
                return Vec::new();
            }
        };
        let now = now_ms();
        let deliveries: Vec<NewDelivery> = webhook_ids
            .map(|webhook_id| NewDelivery {
                id: uuid::Uuid::new_v4().to_string(),
                webhook_id: webhook_id.to_owned(),
                event_id: event.id.clone(),
                event_kind: event.kind.clone(),
                body: body.clone(),
                created_at_ms: now,
            })
            .collect();
        match self.store.queue_deliveries(&deliveries).await {
            Ok(()) => {
                self.events.queued.notify_one();
                deliveries.into_iter().map(|d| d.id).collect()
            }
            Err(e) => {
                tracing::error!(event_id = %event.id, kind = %event.kind, error = %e, "cannot queue webhook deliveries");
                Vec::new()
            }
        }
    }

    /// Publishes the change an incident timeline entry records (the entry was stored with
    /// the change). The event's data is the entry's `detail` and the `incident` as it is now.
    /// A stage entry that closes the incident is also published as `incident.closed`.
    pub async fn publish_incident(&self, incident_id: &str, entry: &NewTimelineEntry) {
        let kind = incident_kind(&entry.kind);
        if !self.wants_event(kind).await {
            return;
        }
        let incident = match self.store.get_incident(incident_id).await {
            Ok(incident) => incident,
            Err(e) => {
                tracing::warn!(incident_id, error = %e, "cannot read the incident for its event");
                None
            }
        };
        let data = serde_json::json!({ "detail": entry.detail, "incident": incident });
        let event = Event {
            at_ms: entry.at_ms,
            ..Event::new(kind, entry.summary.clone(), data)
        }
        .actor(&entry.actor)
        .incident(incident_id);
        let closes = kind == kind::INCIDENT_STAGE_CHANGED
            && entry
                .detail
                .get("to")
                .and_then(Value::as_str)
                .is_some_and(crate::incidents::is_closed_stage);
        let closed = closes.then(|| Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind::INCIDENT_CLOSED.to_owned(),
            ..event.clone()
        });
        self.publish(event).await;
        if let Some(closed) = closed {
            self.publish(closed).await;
        }
    }

    /// Appends `entry` to an incident's timeline (touching nothing else) and publishes it:
    /// for code that records something on an incident, such as a playbook's progress. False
    /// for an unknown incident (nothing published).
    pub async fn append_incident_timeline(
        &self,
        incident_id: &str,
        entry: &NewTimelineEntry,
    ) -> Result<bool, crate::store::StoreError> {
        let appended = self.store.append_timeline(incident_id, entry).await?;
        if appended {
            self.publish_incident(incident_id, entry).await;
        }
        Ok(appended)
    }

    /// Publishes how a task ended, with its agent and kind (read only if anybody listens).
    pub(crate) async fn publish_task_end(&self, task_id: &str, kind: &str) {
        if !self.wants_event(kind).await {
            return;
        }
        let task = match self.store.get_task(task_id).await {
            Ok(Some(task)) => task,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot read the task for its event");
                return;
            }
        };
        let data = serde_json::json!({
            "kind": task.kind,
            "state": task.state.as_str(),
            "hunt_id": task.hunt_id,
            "error_code": task.error_code,
            "error_message": task.error_message,
            "created_by": task.created_by,
        });
        let summary = format!(
            "task {} on {}: {}",
            task.kind,
            task.agent_id,
            task.state.as_str()
        );
        let event = Event::new(kind, summary, data)
            .agent(&task.agent_id)
            .task(&task.id);
        self.publish(event).await;
    }

    /// Publishes an action's state (`action.*` kind), read from the store.
    pub(crate) async fn publish_action(&self, action_id: &str, kind: &str) {
        if !self.wants_event(kind).await {
            return;
        }
        let action = match self.store.get_action(action_id).await {
            Ok(Some(action)) => action,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(action_id, error = %e, "cannot read the action for its event");
                return;
            }
        };
        let data = serde_json::json!({
            "kind": action.kind,
            "state": action.state.as_str(),
            "required_signers": action.required_signers,
            "error_code": action.error_code,
            "error_message": action.error_message,
            "created_by": action.created_by,
            "expires_at_ms": action.expires_at_ms,
        });
        let summary = format!(
            "action {} on {}: {}",
            action.kind,
            action.agent_id,
            action.state.as_str()
        );
        let mut event = Event::new(kind, summary, data)
            .agent(&action.agent_id)
            .action(&action.id);
        if let Some(task_id) = &action.task_id {
            event = event.task(task_id);
        }
        self.publish(event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_kinds_prefixes_and_everything() {
        assert!(kind_matches("*", "task.done"));
        assert!(kind_matches("incident.*", "incident.created"));
        assert!(kind_matches("incident.*", "incident.stage_changed"));
        assert!(!kind_matches("incident.*", "incidents.created"));
        assert!(!kind_matches("incident.*", "incident"));
        assert!(!kind_matches("incident.*", "task.done"));
        assert!(kind_matches("task.done", "task.done"));
        assert!(!kind_matches("task.done", "task.done_later"));
        assert!(!kind_matches("task", "task.done"));
        assert!(any_matches(
            &["task.failed".into(), "incident.*".into()],
            "incident.closed"
        ));
        assert!(!any_matches(&[], "incident.closed"));
    }

    #[test]
    fn patterns_are_checked() {
        for good in ["*", "incident.*", "task.done", "a_b.c1.*"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".*",
            "incident.",
            "Incident.*",
            "a..b",
            "a.*.b",
            "**",
            "a b",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_timeline_entry_kind_has_an_event_kind() {
        assert_eq!(incident_kind("created"), kind::INCIDENT_CREATED);
        assert_eq!(incident_kind("stage"), kind::INCIDENT_STAGE_CHANGED);
        assert_eq!(incident_kind("alert"), kind::INCIDENT_ALERT_JOINED);
        assert_eq!(incident_kind("evidence"), kind::INCIDENT_LINKED);
        assert_eq!(incident_kind("something new"), kind::INCIDENT_UPDATED);
        for k in kind::ALL {
            assert!(check_pattern(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn a_consumer_resumes_after_its_last_event_with_nothing_twice() {
        let events = Events::new();
        let sent: Vec<String> = (0..3)
            .map(|n| {
                let event = Event::new(kind::TASK_DONE, format!("done {n}"), Value::Null);
                let id = event.id.clone();
                events.send_live(event);
                id
            })
            .collect();
        let mut resumed = events.resume(&sent[0]);
        let backlog: Vec<String> = resumed
            .backlog
            .expect("the resume point is kept")
            .iter()
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(backlog, sent[1..]);
        events.send_live(Event::new(kind::TASK_DONE, "later", Value::Null));
        let live = resumed.feed.try_recv().expect("published after resuming");
        assert_eq!(live.summary, "later");
        assert!(resumed.feed.try_recv().is_err(), "nothing twice");

        // A resume point no longer kept says so.
        assert!(events.resume("not-an-event-id").backlog.is_none());
        for n in 0..RESUME_CAPACITY {
            events.send_live(Event::new(
                kind::TASK_DONE,
                format!("more {n}"),
                Value::Null,
            ));
        }
        assert!(events.resume(&sent[2]).backlog.is_none());
    }

    #[test]
    fn events_are_built_for_a_consumer_that_just_left() {
        let events = Events::new();
        assert!(!events.live_interest(), "nobody ever listened");
        let feed = events.subscribe();
        assert!(events.live_interest());
        drop(feed);
        events.consumer_left();
        assert!(events.live_interest(), "it may come back");
        *events.last_left.lock().unwrap() = Instant::now().checked_sub(RESUME_WINDOW);
        assert!(!events.live_interest(), "gone too long");
    }

    #[test]
    fn events_serialize_without_empty_ids() {
        let event = Event::new(kind::TASK_DONE, "done", serde_json::json!({"a": 1}))
            .agent("a1")
            .task("t1");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "task.done");
        assert_eq!(json["agent_id"], "a1");
        assert!(json.get("incident_id").is_none());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

//! `GET /api/v1/events` (viewer and up): the live event stream as server-sent events.
//!
//! Each event is sent as `id: <event id>`, `event: <kind>`, `data: <the event as JSON>`;
//! `?kinds=incident.*,task.done` keeps only the kinds matching one of the patterns. A comment
//! line is sent every [`KEEP_ALIVE`] so proxies keep the connection open. Events published
//! after the stream opened are sent; a consumer reconnecting with `Last-Event-ID` (as
//! EventSource clients do) first gets the events it missed, from the last
//! [`crate::events::RESUME_CAPACITY`] kept, or an `events.lagged` event when its resume point is
//! no longer kept. A consumer that reads too slowly to keep up is sent an `events.lagged`
//! event with how many it missed (`{"missed": N}`) rather than having them vanish silently.
//! The stream ends when the controller stops.

use cordon_api::error::ErrorCode;
use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, StatusCode},
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    events::{any_matches, check_pattern, kind, Event},
    store::Role,
};

/// How often a keep-alive comment is sent on a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most patterns in `kinds`.
pub const MAX_PATTERNS: usize = 32;
/// Longest `Last-Event-ID` looked up (event ids are UUIDs).
const MAX_LAST_EVENT_ID: usize = 128;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated kind patterns, e.g. `incident.*,task.failed`; every event when absent.
    #[serde(default)]
    kinds: Option<String>,
}

/// Parses `kinds`: comma-separated patterns, each checked.
fn patterns(kinds: Option<&str>) -> Result<Vec<String>, ApiError> {
    let patterns: Vec<String> = kinds
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if patterns.len() > MAX_PATTERNS {
        return Err(ApiError::bad_request(format!(
            "kinds: at most {MAX_PATTERNS} patterns"
        )));
    }
    for pattern in &patterns {
        check_pattern(pattern).map_err(|e| ApiError::bad_request(format!("kinds: {e}")))?;
    }
    Ok(patterns)
}

/// One event as SSE. A note that events were missed carries no `id:`, so a client's
/// `Last-Event-ID` stays on the last real event and a reconnect resumes from there.
fn sse(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let sse = SseEvent::default().event(event.kind.clone()).data(data);
    if event.kind == kind::EVENTS_LAGGED {
        sse
    } else {
        sse.id(event.id.clone())
    }
}

/// What a live stream holds between events.
struct Feed {
    /// Events missed before a reconnect, sent first.
    backlog: VecDeque<Arc<Event>>,
    events: Receiver<Arc<Event>>,
    patterns: Vec<String>,
    closing: CancellationToken,
    state: AppState,
    _permit: crate::events::LivePermit,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.state.events.consumer_left();
    }
}

impl Feed {
    fn wanted(&self, event: &Event) -> bool {
        self.patterns.is_empty() || any_matches(&self.patterns, &event.kind)
    }

    /// The next event to send, or None when the stream should end.
    async fn next(&mut self) -> Option<SseEvent> {
        while let Some(event) = self.backlog.pop_front() {
            // A note that events were missed goes out whatever the patterns.
            if event.kind == kind::EVENTS_LAGGED || self.wanted(&event) {
                return Some(sse(&event));
            }
        }
        loop {
            let received = tokio::select! {
                _ = self.closing.cancelled() => return None,
                received = self.events.recv() => received,
            };
            match received {
                Ok(event) => {
                    if self.wanted(&event) {
                        return Some(sse(&event));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "live event consumer fell behind");
                    let event = Event::new(
                        kind::EVENTS_LAGGED,
                        format!("{missed} events were missed: this consumer read too slowly"),
                        serde_json::json!({ "missed": missed }),
                    );
                    return Some(sse(&event));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The consumer's `Last-Event-ID`, if it sent a usable one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Last-Event-ID: not visible ASCII"))?
        .trim();
    if id.len() > MAX_LAST_EVENT_ID {
        return Err(ApiError::bad_request(format!(
            "Last-Event-ID: longer than {MAX_LAST_EVENT_ID} bytes"
        )));
    }
    Ok((!id.is_empty()).then(|| id.to_owned()))
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "events_stream",
    tag = "events",
    summary = "Live events as server-sent events (`Last-Event-ID` resumes)",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(EventsQuery),
    responses(
        (status = 200, description = "A stream of server-sent events, each one `Event` as JSON", content_type = "text/event-stream", body = cordon_api::events::Event),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let patterns = patterns(query.kinds.as_deref())?;
    let last_id = last_event_id(&headers)?;
    let permit = state
        .events
        .live_permit(&caller.token_id)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, why))?;
    let (backlog, events) = match last_id {
        None => (VecDeque::new(), state.events.subscribe()),
        Some(last_id) => {
            let resumed = state.events.resume(&last_id);
            let backlog = resumed.backlog.map_or_else(
                || {
                    let missed = Event::new(
                        kind::EVENTS_LAGGED,
                        format!(
                            "event {last_id} is no longer kept: events since it may have been \
                             missed"
                        ),
                        serde_json::json!({ "resume_from": last_id, "missed": null }),
                    );
                    VecDeque::from([Arc::new(missed)])
                },
                VecDeque::from,
            );
            (backlog, resumed.feed)
        }
    };
    let feed = Feed {
        backlog,
        events,
        patterns,
        closing: state.events.closing(),
        state: state.clone(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_split_and_checked() {
        assert_eq!(
            patterns(Some("incident.*, task.done,,")).unwrap(),
            ["incident.*", "task.done"]
        );
        assert!(patterns(None).unwrap().is_empty());
        let err = patterns(Some("incident.*,Bad Kind")).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.detail.starts_with("kinds: "), "{}", err.detail);
    }
}

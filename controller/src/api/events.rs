//! `GET /api/v1/events` (viewer and up): the live event stream as server-sent events.
//!
//! Each event is sent as `id: <event id>`, `event: <kind>`, `data: <the event as JSON>`;
//! `?kinds=incident.*,task.done` keeps only the kinds matching one of the patterns. A comment
//! line is sent every [`KEEP_ALIVE`] so proxies keep the connection open. Only events published
//! after the stream opened are sent; a consumer that reads too slowly to keep up is sent an
//! `events.lagged` event with how many it missed (`{"missed": N}`) rather than having them
//! vanish silently. The stream ends when the controller stops.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::StatusCode,
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

#[derive(Debug, Deserialize)]
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

/// One event as SSE.
fn sse(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(event.id.clone())
        .event(event.kind.clone())
        .data(data)
}

/// What a live stream holds between events.
struct Feed {
    events: Receiver<Arc<Event>>,
    patterns: Vec<String>,
    closing: CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Feed {
    /// The next event to send, or None when the stream should end.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let received = tokio::select! {
                _ = self.closing.cancelled() => return None,
                received = self.events.recv() => received,
            };
            match received {
                Ok(event) => {
                    if self.patterns.is_empty() || any_matches(&self.patterns, &event.kind) {
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

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let patterns = patterns(query.kinds.as_deref())?;
    let permit = state.events.live_permit().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many live event streams are open; try again later",
        )
    })?;
    let feed = Feed {
        events: state.events.subscribe(),
        patterns,
        closing: state.events.closing(),
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

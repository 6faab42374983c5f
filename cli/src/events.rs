//! `cordon events [--kinds incident.*,task.*] [--count N]`: follows the controller's live event
//! stream (`GET /api/v1/events`), one line per event — time, kind and summary for people, the
//! event as one JSON object per line with `--json` — until Ctrl-C or `--count` events. When
//! the stream breaks (the controller restarts, the network drops) it reconnects with
//! `Last-Event-ID`, so the events published meanwhile still arrive, once each.

use clap::Args;

use cordon_api::events::Event;

use crate::{client::Client, follow::Backoff, output, CliError};

/// Largest single server-sent event accepted; a bigger one means the answer is not an event
/// stream.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only these kinds: comma-separated patterns such as `incident.*,task.failed`.
    #[arg(long)]
    pub kinds: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// One server-sent event: its `event:` name and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into server-sent events (the subset the controller sends: `id`,
/// `event`, `data` fields and `:` comments, lines ended by `\n` or `\r\n`).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseMessage,
    has_data: bool,
    size: usize,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseMessage>, CliError> {
        let mut done = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                self.size += 1;
                if self.size > MAX_EVENT_BYTES {
                    return Err(CliError::Other(format!(
                        "an event from the controller is larger than {MAX_EVENT_BYTES} bytes"
                    )));
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    done.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                self.size = 0;
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        Ok(done)
    }
}

/// One event as a line for people.
fn human(message: &SseMessage) -> String {
    match serde_json::from_str::<Event>(&message.data) {
        Ok(event) => {
            let mut subject = Vec::new();
            if let Some(id) = &event.incident_id {
                subject.push(format!("incident={id}"));
            }
            if let Some(id) = &event.agent_id {
                subject.push(format!("agent={id}"));
            }
            format!(
                "{}  {:<26} {}{}",
                output::time(Some(event.at_ms)),
                event.kind,
                event.summary.replace(['\n', '\r'], " "),
                if subject.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", subject.join(" "))
                }
            )
        }
        Err(_) => format!(
            "{}  {}",
            message.event.as_deref().unwrap_or("message"),
            message.data.replace(['\n', '\r'], " ")
        ),
    }
}

/// Follows the stream, printing as events arrive; returns nothing more to print.
pub async fn run(client: &Client, args: EventsArgs, json: bool) -> Result<String, CliError> {
    let mut path = "/api/v1/events".to_owned();
    if let Some(kinds) = &args.kinds {
        path.push_str("?kinds=");
        for byte in kinds.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b',' => {
                    path.push(char::from(byte))
                }
                _ => path.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    if args.count == Some(0) {
        return Ok(String::new());
    }
    let mut response = Some(client.open_stream(&path, None).await?);
    let mut parser = SseParser::default();
    let mut seen = 0u64;
    let mut last_id: Option<String> = None;
    let mut backoff = Backoff::new();
    loop {
        let Some(stream) = response.as_mut() else {
            // Broken: reconnect and resume after the last event seen. A refusal (a revoked
            // token, say) ends it; an unreachable controller is tried again.
            match client.open_stream(&path, last_id.as_deref()).await {
                Ok(reopened) => {
                    match &last_id {
                        Some(id) => eprintln!("cordon: reconnected; resuming after event {id}"),
                        None => eprintln!(
                            "cordon: reconnected; events published while away are not replayed"
                        ),
                    }
                    parser = SseParser::default();
                    response = Some(reopened);
                }
                Err(CliError::Unreachable(e)) => backoff.pause(&e).await,
                Err(e) => return Err(e),
            }
            continue;
        };
        let chunk = match stream.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                eprintln!("cordon: the controller closed the event stream; reconnecting");
                response = None;
                // A stream that ends at once, again and again, is not tried in a tight loop.
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
            Err(e) => {
                eprintln!("cordon: reading the event stream: {e}; reconnecting");
                response = None;
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
        };
        backoff.reset();
        for message in parser.push(&chunk)? {
            if message.id.is_some() {
                last_id.clone_from(&message.id);
            }
            // One line per event, whatever the event's text holds.
            let line = if json {
                output::json_terminal(&message.data.replace(['\n', '\r'], " ")).into_owned()
            } else {
                output::escape(&human(&message)).into_owned()
            };
            match output::emit(&format!("{line}\n")) {
                Err(CliError::OutputClosed) => return Ok(String::new()),
                other => other?,
            }
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(String::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": keep-alive\n\nid: 1\nevent: inc")
            .unwrap()
            .is_empty());
        let done = parser
            .push(b"ident.created\r\ndata: {\"a\":\ndata: 1}\n\nevent: x\ndata: y\n\n")
            .unwrap();
        assert_eq!(
            done,
            [
                SseMessage {
                    id: Some("1".into()),
                    event: Some("incident.created".into()),
                    data: "{\"a\":\n1}".into(),
                },
                SseMessage {
                    id: None,
                    event: Some("x".into()),
                    data: "y".into(),
                }
            ]
        );
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut parser = SseParser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(parser.push(&big).is_err());
    }

    #[test]
    fn human_lines_name_the_kind_and_subject() {
        let event = Event::new(
            "incident.created",
            "incident opened: x",
            serde_json::json!({}),
        )
        .incident("i1");
        let line = human(&SseMessage {
            id: Some(event.id.clone()),
            event: Some(event.kind.clone()),
            data: serde_json::to_string(&event).unwrap(),
        });
        assert!(line.contains("incident.created"), "{line}");
        assert!(line.contains("incident opened: x"), "{line}");
        assert!(line.contains("incident=i1"), "{line}");
    }
}

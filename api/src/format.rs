//! How the CLI and reports word things for people: times, durations, actions, one-line
//! summaries. One place, so a report and a terminal say the same thing the same way.

use cordon_protocol::action::Action;

/// A time (ms since the Unix epoch) as `2026-12-02 14:21:15Z`; `-` when absent.
pub fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

/// A number of seconds in its largest whole unit: `7d`, `2h`, `30m`, `90s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What an action does, in words: `kill pid 4242 (started …)`, `isolate the host for 30m`.
pub fn what(action: &Action) -> String {
    match action {
        Action::Kill {
            pid,
            start_time_ms,
            tree,
        } => format!(
            "kill pid {pid}{} (started {})",
            if *tree { " and its descendants" } else { "" },
            time(Some(*start_time_ms))
        ),
        Action::Quarantine { path } => format!("quarantine {path}"),
        Action::Restore { quarantine_id } => format!("restore quarantined file {quarantine_id}"),
        Action::Block { targets, ttl_secs } => {
            format!("block {} for {}", targets.join(", "), duration(*ttl_secs))
        }
        Action::Unblock { targets } => format!("unblock {}", targets.join(", ")),
        Action::Isolate { ttl_secs } => format!("isolate the host for {}", duration(*ttl_secs)),
        Action::Release => "release the host's isolation".into(),
        Action::Fetch { path } => format!("read the contents of {path}"),
        Action::Terminate {
            pid,
            start_time_ms,
            grace_secs,
        } => format!(
            "terminate pid {pid} (started {}): SIGTERM, then SIGKILL after {}",
            time(Some(*start_time_ms)),
            duration(*grace_secs)
        ),
    }
}

/// `text` cut to `max` characters, an ellipsis marking the cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` on one line (control characters become spaces), trimmed and bounded.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    bounded(flat.trim(), max)
}

/// The forms a duration may take, for messages.
pub const DURATION_FORMS: &str = "a number and a unit, like 90s, 10m, 1h30m, 2d or 1w";

/// Parses a duration as people write them (`90s`, `10m`, `1h30m`, `2d`, `1w`; humantime's
/// units) into whole seconds. A unit is always needed: is a bare `30` seconds or minutes?
pub fn parse_duration_secs(input: &str) -> Result<u64, String> {
    let text = input.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{input:?} has no unit: write {DURATION_FORMS}"));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{input:?} is not a duration ({e}): write {DURATION_FORMS}"))?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{input:?}: durations are whole seconds"));
    }
    match duration.as_secs() {
        0 => Err(format!("{input:?} is not a positive duration")),
        secs => Ok(secs),
    }
}

/// `e` and every error under it, `: `-separated (an HTTP client's "error sending request"
/// alone says nothing of the refused connection or bad certificate beneath).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_as_people_write_them() {
        assert_eq!(duration(604_800), "7d");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(90), "90s");
        assert_eq!(duration(0), "0s");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00Z");
    }

    #[test]
    fn durations_need_a_unit_and_take_the_usual_forms() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
            ("1w", 604_800),
            (" 5m ", 300),
        ] {
            assert_eq!(parse_duration_secs(text), Ok(secs), "{text}");
        }
        let bare = parse_duration_secs("30").unwrap_err();
        assert!(bare.contains("no unit") && bare.contains("1h30m"), "{bare}");
        for bad in ["0s", "abc", "", "1.5s", "-5m", "10 parsecs"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line(" a\nb\tc ", 10), "a b c");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}

//! Human output: aligned tables and times, and the escaping that keeps text from hosts, alerts
//! and people from driving the terminal. File names, process arguments and host names may hold
//! control characters and escape sequences: every table cell is [`escape`]d (so a name cannot
//! forge a row), and everything the CLI prints passes [`terminal`] or, for `--json`,
//! [`json_terminal`] on its way out.

use std::{
    borrow::Cow,
    io::{self, Write},
};

use crate::CliError;

/// Prints rows as an aligned table under `headers`; every cell is [`escape`]d.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Whether `c` must not reach a terminal as it is: C0 and C1 control characters, DEL, and the
/// Unicode controls that reorder or hide text (bidirectional embeddings, overrides and
/// isolates, zero-width marks, line and paragraph separators).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` from a host, an alert or a person, made safe for one field of human output: every
/// character of [`is_unsafe`] (line breaks and tabs included, so a file name cannot forge a
/// row) is written as a visible escape (`\n`, `\t`, `\r`, `\x1b`, `\u{202e}`).
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_except(text, None)
}

/// Human output as a whole: as [`escape`], but its own line breaks are kept.
pub fn terminal(text: &str) -> Cow<'_, str> {
    escape_except(text, Some('\n'))
}

fn escape_except(text: &str, keep: Option<char>) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && Some(c) != keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if Some(c) == keep || !is_unsafe(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// JSON output made safe for a terminal: serde_json escapes C0 controls already; DEL, C1
/// controls and the reordering controls are written as `\uXXXX` too (they can only occur
/// inside strings, where that escape means the same character).
pub fn json_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && c != '\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c != '\n' && is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What a command prints, made safe for the terminal: [`json_terminal`] for `--json`,
/// [`terminal`] otherwise.
pub fn safe(text: &str, json: bool) -> Cow<'_, str> {
    if json {
        json_terminal(text)
    } else {
        terminal(text)
    }
}

pub use cordon_api::format::time;

/// Writes `text` to standard output. A reader that went away (`cordon … | head -1`) is no
/// failure: it is [`CliError::OutputClosed`], which ends the command quietly with status 0.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(CliError::OutputClosed),
        Err(e) => Err(CliError::Other(format!("writing to standard output: {e}"))),
    }
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["a".into(), "online".into()],
                vec!["bbbb".into(), "offline".into()],
            ],
        );
        assert_eq!(t, "ID    STATUS\na     online\nbbbb  offline\n");
    }

    #[test]
    fn untrusted_text_cannot_drive_the_terminal_or_forge_rows() {
        let evil = "a.txt\n4242  root  /bin/evil\x1b[2K\r\u{202e}txt.exe\u{9b}31m\u{7f}";
        let t = table(&["NAME", "SIZE"], &[vec![evil.into(), "1".into()]]);
        assert_eq!(t.lines().count(), 2, "one header, one row: {t}");
        for bad in ['\x1b', '\r', '\u{202e}', '\u{9b}', '\u{7f}'] {
            assert!(!t.contains(bad), "{bad:?} reached the terminal: {t:?}");
        }
        assert!(t.contains("a.txt\\n4242"), "{t}");
        assert!(
            t.contains("\\x1b[2K\\r\\u{202e}txt.exe\\x9b31m\\x7f"),
            "{t}"
        );
        // Whole outputs keep their own line breaks and lose the rest.
        assert_eq!(
            terminal("ok\n\x1b]0;pwned\x07\n"),
            "ok\n\\x1b]0;pwned\\x07\n"
        );
        assert_eq!(
            terminal("plain ünïcode\n"),
            Cow::Borrowed("plain ünïcode\n")
        );
        // JSON: the same characters as JSON escapes, so the document still parses the same.
        let doc = serde_json::json!({ "name": "x\u{202e}y\u{9b}z\u{1b}" }).to_string();
        let safe = json_terminal(&doc);
        assert!(
            !safe.contains('\u{202e}') && !safe.contains('\u{9b}'),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], "x\u{202e}y\u{9b}z\u{1b}");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00Z");
        assert_eq!(time(None), "-");
    }
}

//! The report as Markdown, for tickets: every untrusted string goes through [`escape`].

use super::*;

/// Makes text from people, alerts or agents safe inside a Markdown table cell, heading, list
/// item or paragraph: backslashes and the characters that delimit cells, code spans, links,
/// emphasis and HTML are escaped; line breaks become `<br>`; other control characters spaces;
/// the controls that reorder or hide text (bidirectional overrides, zero-width marks) are
/// shown by name (`[U+202E]`); and bare links are defanged (`hxxps://`, `www[.]`, `a[@]b.c`)
/// so a renderer makes nothing clickable out of them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let mut chars = text.char_indices().peekable();
    let mut after_word = false;
    while let Some((i, c)) = chars.next() {
        let rest = &lower[i..];
        if !after_word && (rest.starts_with("http://") || rest.starts_with("https://")) {
            // `http` → `hxxp`: the `tt` is replaced, the rest goes on as usual.
            out.push(c);
            out.push_str("xx");
            chars.next();
            chars.next();
            after_word = true;
            continue;
        }
        if !after_word && rest.starts_with("www.") {
            out.push_str(&text[i..i + 3]);
            out.push_str("\\[.\\]");
            for _ in 0..3 {
                chars.next();
            }
            after_word = true;
            continue;
        }
        after_word = c.is_alphanumeric();
        match c {
            '@' if rest[1..]
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('.')) =>
            {
                out.push_str("\\[@\\]");
            }
            '\\' | '|' | '`' | '[' | ']' | '*' | '_' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {
                if chars.peek().map(|&(_, c)| c) != Some('\n') {
                    out.push_str("<br>");
                }
            }
            '\n' | '\u{2028}' | '\u{2029}' => out.push_str("<br>"),
            c if c.is_control() => out.push(' '),
            c if reorders_or_hides(c) => {
                out.push_str(&format!("\\[U+{:04X}\\]", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The controls that reorder or hide text: bidirectional overrides and isolates, zero-width
/// marks.
fn reorders_or_hides(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

/// An identifier as inline code when it can be (hex, UUIDs), else escaped text.
pub(super) fn code(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '/'))
    {
        format!("`{text}`")
    } else {
        escape(text)
    }
}

/// Text as an inline code span, outside tables only (GFM splits cells on a `|` even inside
/// code): literal, so nothing in it is markup. Text a span cannot hold is escaped instead.
pub(super) fn code_span(text: &str) -> String {
    if !text.is_empty()
        && !text.contains('`')
        && !text.chars().any(|c| c.is_control() || reorders_or_hides(c))
    {
        format!("`{text}`")
    } else {
        escape(text)
    }
}

fn or_dash(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => escape(t),
        _ => "—".to_owned(),
    }
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str(&format!("| {} |\n", headers.join(" | ")));
    out.push_str(&format!(
        "|{}\n",
        headers.iter().map(|_| " --- |").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
}

/// The report as Markdown (GitHub-flavoured: tables).
pub fn render_markdown(report: &IncidentReport) -> String {
    let s = &report.summary;
    let mut out = format!("# Incident report: {}\n\n", escape(&s.title));
    out.push_str(&format!(
        "Generated {} (all times UTC).\n\n",
        time(Some(report.generated_at_ms))
    ));

    out.push_str("## Summary\n\n");
    let escalation = match &s.escalated_to {
        Some(to) => format!("tier {} ({})", s.tier, escape(to)),
        None => format!("tier {}", s.tier),
    };
    let closed = match s.closed_at_ms {
        Some(at) => time(Some(at)),
        None if s.closed => "—".to_owned(),
        None => "open".to_owned(),
    };
    let labels = if s.labels.is_empty() {
        "—".to_owned()
    } else {
        s.labels
            .iter()
            .map(|l| escape(l))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        vec!["Id".into(), code(&s.id)],
        vec!["Kind".into(), escape(&s.kind)],
        vec!["Severity".into(), escape(s.severity.as_str())],
        vec!["Stage".into(), escape(s.stage.as_str())],
        vec!["Assignee".into(), or_dash(s.assignee.as_deref())],
        vec!["Escalation".into(), escalation],
        vec![
            "Opened".into(),
            format!("{} by {}", time(Some(s.opened_at_ms)), escape(&s.opened_by)),
        ],
        vec!["Closed".into(), closed],
        vec!["Alerts".into(), s.alert_count.to_string()],
        vec!["Labels".into(), labels],
    ];
    if let Some(fingerprint) = &s.fingerprint {
        rows.push(vec!["Alert fingerprint".into(), escape(fingerprint)]);
    }
    table(&mut out, &["Field", "Value"], &rows);
    if !s.description.trim().is_empty() {
        out.push_str("### Description\n\n");
        for line in s.description.lines() {
            out.push_str("> ");
            out.push_str(&escape_line_start(&escape(line)));
            out.push('\n');
        }
        out.push('\n');
    }

    out.push_str("## Hosts\n\n");
    if report.hosts.is_empty() {
        out.push_str("No hosts.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .hosts
            .iter()
            .map(|h| {
                vec![
                    code(&h.agent_id),
                    or_dash(h.hostname.as_deref()),
                    h.status.map_or("unknown", AgentStatus::as_str).to_owned(),
                    format!("{} by {}", time(Some(h.added_at_ms)), escape(&h.added_by)),
                ]
            })
            .collect();
        table(&mut out, &["Agent", "Hostname", "Status", "Added"], &rows);
    }

    out.push_str("## Observables\n\n");
    if report.observables.is_empty() {
        out.push_str("None.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .observables
            .iter()
            .map(|o| {
                let ignored = if o.ignore_for_similarity {
                    " (ignored for similarity)"
                } else {
                    ""
                };
                vec![
                    o.kind.as_str().to_owned(),
                    escape(&o.value),
                    format!("{}{ignored}", o.verdict),
                    o.sighting_count.to_string(),
                    format!("{} by {}", time(Some(o.added_at_ms)), escape(&o.added_by)),
                ]
            })
            .collect();
        table(
            &mut out,
            &["Type", "Value", "Verdict", "Sightings", "Added"],
            &rows,
        );
    }

    out.push_str("## Similar past incidents\n\n");
    if report.similar.is_empty() {
        out.push_str("None found.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .similar
            .iter()
            .map(|s| {
                let why: Vec<String> = s.reasons.iter().take(3).map(|r| escape(&r.text)).collect();
                let worked: Vec<String> = s.worked.iter().map(|w| escape(&w.what)).collect();
                vec![
                    code(&s.id),
                    escape(&s.title),
                    format!("{:.1}", s.score),
                    s.outcome.to_string(),
                    why.join("; "),
                    if worked.is_empty() {
                        "—".to_owned()
                    } else {
                        worked.join("; ")
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "Incident",
                "Title",
                "Score",
                "Outcome",
                "Why",
                "Containment that ran",
            ],
            &rows,
        );
    }

    out.push_str("## Containment still active\n\n");
    if report.active_containment.is_empty() {
        out.push_str("None: no host is isolated and no block is in force.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .active_containment
            .iter()
            .map(|c| {
                vec![
                    code(&c.agent_id),
                    escape(&c.what),
                    if c.targets.is_empty() {
                        "—".to_owned()
                    } else {
                        c.targets
                            .iter()
                            .map(|t| escape(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    time(Some(c.until_ms)),
                    code(&c.action_id),
                ]
            })
            .collect();
        table(
            &mut out,
            &["Agent", "Measure", "Targets", "Until", "Action"],
            &rows,
        );
    }

    out.push_str("## Timeline\n\n");
    if report.timeline.is_empty() {
        out.push_str("Nothing recorded.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .timeline
            .iter()
            .map(|item| {
                vec![
                    time(Some(item.at_ms)),
                    escape(&item.actor),
                    escape(&item.kind),
                    escape(&item.summary),
                ]
            })
            .collect();
        table(&mut out, &["Time (UTC)", "Who", "Kind", "What"], &rows);
    }

    out.push_str("## Evidence\n\n");
    if report.evidence.is_empty() {
        out.push_str("No evidence collected.\n\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .evidence
            .iter()
            .map(|e| {
                vec![
                    code(&e.sha256),
                    e.size.to_string(),
                    escape(&e.kind),
                    or_dash(e.source_path.as_deref()),
                    code(&e.agent_id),
                    code(&e.task_id),
                    time(Some(e.received_at_ms)),
                    if e.verified {
                        "yes".to_owned()
                    } else {
                        format!("**NO**: {}", escape(&e.verify_failures.join("; ")))
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SHA-256",
                "Bytes",
                "Kind",
                "Source",
                "Agent",
                "Task",
                "Received",
                "Verifies now",
            ],
            &rows,
        );
    }

    out.push_str("## Actions\n\n");
    if report.actions.is_empty() {
        out.push_str("No containment actions.\n\n");
    }
    for a in &report.actions {
        out.push_str(&format!(
            "### {} on {}: {}\n\n",
            escape(&a.what),
            code(&a.agent_id),
            a.state.as_str()
        ));
        out.push_str(&format!("- Action: {}\n", code(&a.id)));
        out.push_str(&format!(
            "- Created {} by {}; ended {}\n",
            time(Some(a.created_at_ms)),
            escape(&a.created_by),
            time(a.finished_at_ms)
        ));
        let signers = if a.signers.is_empty() {
            "nobody".to_owned()
        } else {
            a.signers
                .iter()
                .map(|s| format!("{} (key {})", escape(&s.name), code(&s.key_id)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!("- Signed by: {signers}\n"));
        if let Some(error) = &a.error {
            out.push_str(&format!(
                "- Error: {}: {}\n",
                escape(error.code.as_str()),
                escape(&error.message)
            ));
        }
        match &a.receipt {
            None => out.push_str("- Receipt: none\n"),
            Some(r) => {
                let verified = if r.signature_verified {
                    "signature verified".to_owned()
                } else {
                    format!(
                        "**signature NOT verified**: {}",
                        escape(r.verify_error.as_deref().unwrap_or("unknown"))
                    )
                };
                out.push_str(&format!(
                    "- Receipt {} signed by agent key {}: {verified}\n",
                    time(Some(r.at_ms)),
                    code(&r.agent_public_key)
                ));
                out.push_str(&format!("  - before: {}\n", code_span(r.before.get())));
                out.push_str(&format!("  - done: {}\n", escape(&r.done)));
                out.push_str(&format!("  - after: {}\n", code_span(r.after.get())));
            }
        }
        out.push('\n');
    }

    out.push_str("## Attached\n\n");
    if report.attached.is_empty() {
        out.push_str("Nothing attached.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .attached
            .iter()
            .map(|l| {
                vec![
                    escape(l.kind.as_str()),
                    code(&l.ref_id),
                    format!("{} by {}", time(Some(l.linked_at_ms)), escape(&l.linked_by)),
                ]
            })
            .collect();
        table(&mut out, &["Kind", "Id", "Attached"], &rows);
    }
    out
}

/// A line that would start a block (heading, list, quote, rule) if it began a paragraph line,
/// made plain (its input is already [`escape`]d).
fn escape_line_start(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with(['#', '-', '+', '=', '*', '_', '~']) {
        return format!("\\{trimmed}");
    }
    // An ordered list item: digits then `.` or `)`; escape the delimiter.
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && trimmed[digits..].starts_with(['.', ')']) {
        return format!("{}\\{}", &trimmed[..digits], &trimmed[digits..]);
    }
    line.to_owned()
}

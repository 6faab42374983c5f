use cordon_api::incidents::{ActiveContainment, TimelineItem};

use super::{
    markdown::{code, code_span},
    *,
};

fn report() -> IncidentReport {
    IncidentReport {
        generated_at_ms: 1_700_000_000_000,
        summary: ReportSummary {
            id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
            title: "beacon | from\nweb-1 [x](http://evil)".into(),
            kind: "c2".into(),
            severity: cordon_api::incidents::Severity::High,
            stage: cordon_api::incidents::Stage::Response,
            closed: false,
            description: "line one | still one\n# not a heading\n1. not a list".into(),
            assignee: Some("alice".into()),
            tier: 2,
            escalated_to: Some("ir|team".into()),
            opened_at_ms: 1_700_000_000_000,
            opened_by: "wazuh".into(),
            closed_at_ms: None,
            alert_count: 3,
            labels: vec!["env=prod".into(), "a|b".into()],
            fingerprint: None,
        },
        hosts: vec![ReportHost {
            agent_id: "agent-1".into(),
            hostname: Some("web|1\r\nevil".into()),
            status: Some(cordon_api::agents::AgentStatus::Online),
            added_at_ms: 1_700_000_000_000,
            added_by: "alice".into(),
        }],
        timeline: vec![TimelineItem {
            at_ms: 1_700_000_001_000,
            actor: "bob".into(),
            kind: "comment".into(),
            summary: "saw `rm -rf` | then\nleft <script>alert(1)</script> \\| done".into(),
            detail: serde_json::Value::Null,
            entry_id: Some(4),
        }],
        evidence: vec![ReportEvidence {
            sha256: "ab".repeat(32),
            size: 12,
            kind: "file".into(),
            source_path: Some("/tmp/a|b\nc".into()),
            agent_id: "agent-1".into(),
            task_id: "task-1".into(),
            received_at_ms: 1_700_000_002_000,
            agent_public_key: "cd".repeat(32),
            verified: false,
            verify_failures: vec!["content hash: 12 bytes on disk hash to ff".into()],
        }],
        actions: vec![ReportAction {
            id: "act-1".into(),
            agent_id: "agent-1".into(),
            kind: "block".into(),
            what: "block 203.0.113.7 for 1h".into(),
            state: cordon_api::actions::ActionState::Done,
            created_by: "alice".into(),
            created_at_ms: 1_700_000_003_000,
            finished_at_ms: Some(1_700_000_004_000),
            signers: vec![ReportSigner {
                name: "alice|admin".into(),
                key_id: "0123456789abcdef".into(),
                added_by: "alice".into(),
            }],
            receipt: Some(ReportReceipt {
                at_ms: 1_700_000_004_000,
                before: serde_json::value::RawValue::from_string("{\"blocked\":[]}".into())
                    .unwrap(),
                done: "blocked 203.0.113.7\nfor 1h".into(),
                after: serde_json::value::RawValue::from_string(
                    "{\"blocked\":[\"203.0.113.7\"]}".into(),
                )
                .unwrap(),
                agent_public_key: "cd".repeat(32),
                signature_verified: true,
                verify_error: None,
            }),
            error: None,
        }],
        active_containment: vec![ActiveContainment {
            agent_id: "agent-1".into(),
            what: "blocked".into(),
            targets: vec!["203.0.113.7".into()],
            until_ms: 1_700_000_100_000,
            action_id: "act-1".into(),
        }],
        attached: vec![],
        observables: vec![cordon_api::observables::ObservableView {
            id: "0b5e".into(),
            incident_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
            kind: cordon_api::observables::ObservableType::CommandLine,
            value: "sh -c 'a | b'\nleft <script>x</script> http://evil/x".into(),
            verdict: cordon_api::observables::Verdict::Malicious,
            ignore_for_similarity: true,
            added_by: "wazuh|x".into(),
            added_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
            sightings: vec![],
            sighting_count: 2,
        }],
        similar: vec![cordon_api::similar::SimilarIncident {
            id: "7a2b".into(),
            title: "earlier | one\nleft".into(),
            kind: "c2".into(),
            severity: cordon_api::incidents::Severity::High,
            stage: cordon_api::incidents::Stage::Closed,
            opened_at_ms: 1_600_000_000_000,
            closed_at_ms: Some(1_600_000_100_000),
            score: 11.25,
            reasons: vec![cordon_api::similar::Reason {
                kind: cordon_api::similar::ReasonKind::Observable,
                text: "shares url http://evil/x | y".into(),
                weight: 9.9,
            }],
            outcome: cordon_api::similar::Outcome::Closed,
            worked: vec![cordon_api::similar::WorkedAction {
                action_id: "a1".into(),
                agent_id: "agent-1".into(),
                kind: "block".into(),
                what: "block 203.0.113.7 for 1h".into(),
                done_at_ms: Some(1_600_000_050_000),
                done: Some("blocked".into()),
            }],
            secs_to_contain: Some(50),
            secs_to_close: Some(100),
        }],
    }
}

/// The cells of a GFM table row, split as renderers split them: on pipes not escaped by a
/// backslash (a backslash escapes the character after it, including another backslash).
fn cells(row: &str) -> Vec<String> {
    let inner = row
        .trim()
        .strip_prefix('|')
        .and_then(|r| r.strip_suffix('|'))
        .unwrap_or_else(|| panic!("not a table row: {row:?}"));
    let mut cells = vec![String::new()];
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = cells.last_mut().unwrap();
                last.push(c);
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

#[test]
fn escaping_neutralises_table_breakers_links_and_html() {
    assert_eq!(escape("a|b"), "a\\|b");
    assert_eq!(escape("a\\|b"), "a\\\\\\|b");
    assert_eq!(
        escape("one\ntwo\r\nthree\rfour"),
        "one<br>two<br>three<br>four"
    );
    assert_eq!(escape("[x](http://e)"), "\\[x\\](hxxp://e)");
    // Bare links, emphasis and reordering controls.
    assert_eq!(
        escape("see https://evil.example/x and WWW.evil.example"),
        "see hxxps://evil.example/x and WWW\\[.\\]evil.example"
    );
    assert_eq!(
        escape("mail bob@evil.example now"),
        "mail bob\\[@\\]evil.example now"
    );
    assert_eq!(escape("root@host"), "root@host", "not an address");
    assert_eq!(
        escape("*bold* _it_ ~~gone~~"),
        "\\*bold\\* \\_it\\_ \\~\\~gone\\~\\~"
    );
    assert_eq!(
        escape("invoice\u{202e}fdp.exe"),
        "invoice\\[U+202E\\]fdp.exe"
    );
    assert_eq!(
        escape("shttp://x"),
        "shttp://x",
        "inside a word it is no link"
    );
    assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
    assert_eq!(escape("`code`"), "\\`code\\`");
    assert_eq!(escape("bell\u{7}esc\u{1b}"), "bell esc ");
    assert_eq!(escape("plain host-1.example"), "plain host-1.example");
    assert_eq!(code("abc-123"), "`abc-123`");
    assert_eq!(code("a`b"), "a\\`b");
}

#[test]
fn every_table_row_keeps_its_columns_whatever_the_text() {
    let md = render_markdown(&report());
    let mut header_width = None;
    let mut tables = 0;
    for line in md.lines() {
        if !line.starts_with('|') {
            header_width = None;
            continue;
        }
        let width = cells(line).len();
        match header_width {
            None => {
                header_width = Some(width);
                tables += 1;
            }
            Some(w) => assert_eq!(width, w, "row breaks its table: {line:?}\n{md}"),
        }
    }
    // Summary, hosts, observables, similar incidents, containment, timeline, evidence.
    assert_eq!(tables, 7, "{md}");
    // Nothing user-controlled starts a line of its own.
    for line in md.lines() {
        assert!(!line.starts_with("left"), "{line:?}");
        assert!(!line.starts_with("evil"), "{line:?}");
        assert!(!line.starts_with("# not"), "{line:?}");
        assert!(!line.starts_with("web-1"), "{line:?}");
    }
    assert!(!md.contains("<script>"), "{md}");
    // The link's brackets are escaped and the address defanged: it renders as text.
    assert!(!md.contains("[x](http"), "{md}");
    assert!(!md.contains("http://"), "{md}");
    assert!(md.contains("\\[x\\](hxxp://evil)"), "{md}");
}

#[test]
fn the_markdown_says_what_a_reader_needs() {
    let md = render_markdown(&report());
    assert!(md.starts_with("# Incident report: beacon \\| from<br>web-1 \\[x\\](hxxp://evil)\n"));
    assert!(md.contains("| Escalation | tier 2 (ir\\|team) |"), "{md}");
    assert!(md.contains("| Labels | env=prod, a\\|b |"), "{md}");
    assert!(md.contains("> line one \\| still one\n> \\# not a heading\n> 1\\. not a list\n"));
    assert!(md.contains("| `agent-1` | web\\|1<br>evil | online | 2023-11-14 22:13:20Z by alice |"));
    assert!(md.contains(
        "| 2023-11-14 22:13:21Z | bob | comment | saw \\`rm -rf\\` \\| then<br>left &lt;script&gt;alert(1)&lt;/script&gt; \\\\\\| done |"
    ), "{md}");
    assert!(md.contains(&format!(
        "| `{}` | 12 | file | /tmp/a\\|b<br>c |",
        "ab".repeat(32)
    )));
    assert!(md.contains("**NO**: content hash: 12 bytes on disk hash to ff"));
    assert!(md.contains("### block 203.0.113.7 for 1h on `agent-1`: done"));
    assert!(md.contains("- Signed by: alice\\|admin (key `0123456789abcdef`)"));
    assert!(md.contains(": signature verified\n"));
    assert!(md.contains("  - done: blocked 203.0.113.7<br>for 1h\n"));
    assert!(md.contains("  - before: `{\"blocked\":[]}`\n"), "{md}");
    assert_eq!(code_span("a\nb"), "a<br>b");
    assert_eq!(code_span("<b>"), "`<b>`");
    assert_eq!(code_span("a`b"), "a\\`b");
    // Reordering controls leave the code span and are named.
    assert_eq!(code_span("{\"a\u{202e}b\"}"), "{\"a\\[U+202E\\]b\"}");
    assert!(md.contains("| `agent-1` | blocked | 203.0.113.7 |"));
}

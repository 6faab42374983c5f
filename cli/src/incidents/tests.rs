use super::*;

#[test]
fn terminal_text_is_one_line_without_escapes() {
    assert_eq!(plain("a\nb\r\nc"), "a\\nb\\r\\nc");
    assert_eq!(plain("red\u{1b}[31m"), "red\\x1b[31m");
    assert_eq!(shorten("abcdef", 4), "abc…");
    assert_eq!(shorten("abc", 4), "abc");
}

#[test]
fn refused_moves_name_the_rule_and_the_way_past_it() {
    let e = refused_move(
        CliError::Other(
            "409 Conflict: refused: closing from response skips remediation; move it to \
             remediation first, or force it with a reason"
                .into(),
        ),
        "i1",
        Stage::Closed,
    );
    let text = e.to_string();
    assert!(text.starts_with("incident i1: moving to closed refused: closing from response"));
    assert!(text.contains("--force --reason"), "{text}");
    assert_eq!(e.exit_code(), 1);
    // Anything else passes through untouched.
    let denied = refused_move(CliError::Denied("forbidden".into()), "i1", Stage::Closed);
    assert_eq!(denied.exit_code(), 3);
}

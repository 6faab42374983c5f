//! Fuzzes alert intake as `POST /api/v1/alerts` runs it: any body, with the format detected or
//! forced (byte 0: 0 = detect, 1 = generic, 2 = wazuh, 3 = ecs), through
//! `cordon_controller::alerts::parse`.
//!
//! Invariants (a failed `assert!` is a finding, as is any panic):
//! - parsing never panics, whatever the body or the forced format;
//! - a refusal has a message (the API's 400 names what is wrong);
//! - an accepted alert has a non-empty title and rule, a detected format is the one it
//!   reports, and parsing it again with that format forced gives the same alert.
#![no_main]

use cordon_controller::alerts::{parse, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let forced = match selector % 4 {
        0 => None,
        1 => Some(Source::Generic),
        2 => Some(Source::Wazuh),
        _ => Some(Source::Ecs),
    };
    match parse(body, forced) {
        Err(e) => assert!(!e.to_string().is_empty(), "a refusal without a message"),
        Ok(alert) => {
            assert!(!alert.title.trim().is_empty(), "accepted without a title");
            assert!(!alert.rule.is_empty(), "accepted without a rule");
            if let Some(source) = forced {
                assert_eq!(alert.source, source, "the forced format is the one reported");
            }
            let again = parse(body, Some(alert.source)).expect("the same body parses again");
            assert_eq!(format!("{again:?}"), format!("{alert:?}"), "parsing is deterministic");
        }
    }
});

//! Fuzzes the playbook file parser as `serve` and `POST /api/v1/playbooks/reload` run it on the
//! TOML files of the data directory: any text through
//! `cordon_controller::playbooks::load::parse_file`.
//!
//! Invariants (a failed `assert!` is a finding, as is any panic):
//! - parsing never panics;
//! - every error names the file (and, where it has one, a line inside the text), so an operator
//!   can find it;
//! - an accepted playbook has a name.
#![no_main]

use std::path::Path;

use cordon_controller::playbooks::load::parse_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzzed.toml");
    match parse_file(file, &text) {
        Ok(playbook) => assert!(!playbook.name.is_empty(), "accepted without a name"),
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without saying why");
            let lines = text.lines().count().max(1);
            for error in errors {
                assert_eq!(error.file, file, "the error names another file");
                if let Some(line) = error.line {
                    assert!(
                        (1..=lines + 1).contains(&line),
                        "line {line} outside a {lines}-line file: {error}"
                    );
                }
                assert!(error.to_string().starts_with("fuzzed.toml"), "{error}");
            }
        }
    }
});

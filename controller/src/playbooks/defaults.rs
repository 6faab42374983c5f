//! The playbooks a new deployment starts with: malware on a host, a suspicious outbound
//! connection (C2), brute force and lateral movement, and ransomware. `init` (and so
//! `quickstart`) writes each into `DATA_DIR/playbooks/` only when no file of that name is
//! there, so a user's edits are never overwritten — and a deleted default stays deleted only
//! until the next `init`.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// File name and contents of each default playbook.
pub const DEFAULTS: [(&str, &str); 4] = [
    ("malware.toml", include_str!("defaults/malware.toml")),
    ("c2.toml", include_str!("defaults/c2.toml")),
    (
        "brute-force.toml",
        include_str!("defaults/brute-force.toml"),
    ),
    ("ransomware.toml", include_str!("defaults/ransomware.toml")),
];

/// Writes the defaults missing from `dir` (created if needed); returns the files written.
pub fn install(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in DEFAULTS {
        let path = dir.join(name);
        // create_new: a file someone put there (or edited) in the meantime is left alone.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
                written.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        incidents::Stage,
        playbooks::{load_dir, parse_file, Collect, ProposedAction},
    };

    #[test]
    fn every_default_is_valid() {
        for (name, text) in DEFAULTS {
            let playbook =
                parse_file(Path::new(name), text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!playbook.description.is_empty(), "{name}");
            assert!(playbook.plan(Stage::Collection).is_some(), "{name}");
            assert!(playbook.plan(Stage::Response).is_some(), "{name}");
        }
    }

    #[test]
    fn defaults_cover_the_four_kinds_sensibly() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(install(dir.path()).unwrap().len(), 4);
        let set = load_dir(dir.path()).unwrap();
        let response = |kind: &str| -> Vec<&'static str> {
            set.matching(kind, Stage::Response)
                .iter()
                .flat_map(|(_, plan)| plan.propose.iter().map(|p| p.action.name()))
                .collect()
        };
        assert_eq!(response("malware"), ["kill", "quarantine"]);
        assert_eq!(response("c2"), ["block", "kill"]);
        assert_eq!(response("lateral_movement"), ["kill", "isolate"]);
        assert!(response("ransomware").contains(&"isolate"));
        let isolate = set.matching("ransomware", Stage::Response)[0].1.propose[0]
            .action
            .clone();
        assert_eq!(isolate, ProposedAction::Isolate { ttl_secs: 3600 });
        let malware = set.matching("malware", Stage::Collection);
        assert_eq!(malware[0].1.collect[0], Collect::Snapshot);
        assert!(set.matching("other", Stage::Collection).is_empty());
        assert!(set.matching("malware", Stage::Alert).is_empty());
    }

    #[test]
    fn an_edited_default_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("malware.toml");
        std::fs::write(&mine, "# mine\n").unwrap();
        let written = install(dir.path()).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "# mine\n");
        assert!(install(dir.path()).unwrap().is_empty());
    }
}

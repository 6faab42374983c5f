//! Reading playbook files: every `*.toml` in the playbooks directory, checked whole before
//! any is used. Every error names the file and the line (from the spans the TOML reader
//! keeps), so `cordon playbooks validate`, `serve` and a reload all point at what to fix.
//!
//! ```toml
//! name = "malware"
//! description = "Malware on a host"
//! kinds = ["malware"]            # incident kinds, or ["*"]
//!
//! [[stage]]
//! stage = "collection"
//! collect = [{ task = "snapshot" }, { task = "file_hash", path = "{alert.file.path}" }]
//! hunts = [{ file_sha256 = "{alert.file.sha256}", ttl = "1h" }]
//!
//! [[stage]]
//! stage = "response"
//! propose = [{ action = "kill" }, { action = "quarantine", path = "{alert.file.path}" }]
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    steps::{collect, hunt, propose, Checker, RawCollect, RawHunt, RawPropose},
    Playbook, PlaybookSet, StagePlan, ANY_KIND,
};
use crate::incidents::Stage;

/// Largest playbook file read.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Most playbook files loaded.
pub const MAX_PLAYBOOKS: usize = 256;
/// Most steps of one kind (collections, hunts, proposals) in one stage.
pub const MAX_STEPS: usize = 32;
/// How long a proposal waits for approval unless the playbook says otherwise.
pub const DEFAULT_VALID_FOR_SECS: u64 = 30 * 60;
/// How long a block lasts unless the playbook says otherwise.
pub const DEFAULT_BLOCK_TTL_SECS: u64 = 3600;

/// One thing wrong with one playbook file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PlaybookError {
    pub file: PathBuf,
    /// 1-based; None for errors about the whole file (unreadable, too large).
    pub line: Option<usize>,
    pub message: String,
}

/// Everything wrong with a set of playbook files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookErrors(pub Vec<PlaybookError>);

impl std::fmt::Display for PlaybookErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for PlaybookErrors {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    kinds: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    stage: Vec<Spanned<RawStage>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    stage: Spanned<String>,
    #[serde(default)]
    collect: Vec<Spanned<RawCollect>>,
    #[serde(default)]
    hunts: Vec<Spanned<RawHunt>>,
    #[serde(default)]
    propose: Vec<Spanned<RawPropose>>,
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Whether `name` may be a playbook name or an incident kind: 1-64 of a-z, 0-9, `_-.`.
fn is_word(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Reads and checks one playbook's text (`file` names it in errors).
pub fn parse_file(file: &Path, text: &str) -> Result<Playbook, Vec<PlaybookError>> {
    let raw: RawPlaybook = toml::from_str(text).map_err(|e| {
        vec![PlaybookError {
            file: file.to_path_buf(),
            line: e.span().map(|span| line_of(text, span.start)),
            message: e.message().trim().to_owned(),
        }]
    })?;
    let mut check = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    if !is_word(raw.name.get_ref()) {
        check.error(
            raw.name.span(),
            format!(
                "name {:?} must be 1-64 of a-z, 0-9, '_', '-', '.'",
                raw.name.get_ref()
            ),
        );
    }
    let mut kinds = Vec::new();
    if raw.kinds.get_ref().is_empty() {
        check.error(
            raw.kinds.span(),
            "kinds is empty: name the incident kinds (e.g. [\"malware\"]) or [\"*\"] for any",
        );
    }
    for kind in raw.kinds.get_ref() {
        if kind.get_ref() != ANY_KIND && !is_word(kind.get_ref()) {
            check.error(
                kind.span(),
                format!(
                    "kind {:?} must be \"*\" or 1-64 of a-z, 0-9, '_', '-', '.'",
                    kind.get_ref()
                ),
            );
        } else if !kinds.contains(kind.get_ref()) {
            kinds.push(kind.get_ref().clone());
        }
    }
    let mut stages: Vec<StagePlan> = Vec::new();
    let mut seen: HashMap<Stage, usize> = HashMap::new();
    for raw_stage in &raw.stage {
        let raw_stage = raw_stage.get_ref();
        let stage = match raw_stage.stage.get_ref().parse::<Stage>() {
            Ok(stage) => stage,
            Err(e) => {
                check.error(raw_stage.stage.span(), e.to_string());
                continue;
            }
        };
        let line = line_of(text, raw_stage.stage.span().start);
        if let Some(first) = seen.insert(stage, line) {
            check.error(
                raw_stage.stage.span(),
                format!("stage {stage} is already planned at line {first}; merge the two"),
            );
            continue;
        }
        for (count, span, what) in [
            (
                raw_stage.collect.len(),
                raw_stage.collect.first().map(Spanned::span),
                "collections",
            ),
            (
                raw_stage.hunts.len(),
                raw_stage.hunts.first().map(Spanned::span),
                "hunts",
            ),
            (
                raw_stage.propose.len(),
                raw_stage.propose.first().map(Spanned::span),
                "proposals",
            ),
        ] {
            if count > MAX_STEPS {
                check.error(
                    span.unwrap_or_else(|| raw_stage.stage.span()),
                    format!("{count} {what} in stage {stage}; at most {MAX_STEPS}"),
                );
            }
        }
        let plan = StagePlan {
            stage,
            collect: raw_stage
                .collect
                .iter()
                .filter_map(|c| collect(&mut check, c))
                .collect(),
            hunts: raw_stage
                .hunts
                .iter()
                .filter_map(|h| hunt(&mut check, h))
                .collect(),
            propose: raw_stage
                .propose
                .iter()
                .filter_map(|p| propose(&mut check, p))
                .collect(),
        };
        if plan.collect.is_empty() && plan.hunts.is_empty() && plan.propose.is_empty() {
            check.error(
                raw_stage.stage.span(),
                format!("stage {stage} has nothing to do: give it collect, hunts or propose"),
            );
        }
        stages.push(plan);
    }
    if !check.errors.is_empty() {
        return Err(check.errors);
    }
    Ok(Playbook {
        name: raw.name.into_inner(),
        description: raw.description.unwrap_or_default(),
        kinds,
        file: file.to_path_buf(),
        stages,
    })
}

/// Loads every `*.toml` in `dir`, in name order; a missing directory holds none. All files
/// are checked, and every error in any of them is returned.
pub fn load_dir(dir: &Path) -> Result<PlaybookSet, PlaybookErrors> {
    let whole = |file: &Path, message: String| PlaybookError {
        file: file.to_path_buf(),
        line: None,
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PlaybookSet::default()),
        Err(e) => return Err(PlaybookErrors(vec![whole(dir, e.to_string())])),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PlaybookErrors(vec![whole(dir, e.to_string())]))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.len() > MAX_PLAYBOOKS {
        return Err(PlaybookErrors(vec![whole(
            dir,
            format!(
                "{} playbook files; at most {MAX_PLAYBOOKS} are loaded",
                files.len()
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut playbooks: Vec<Playbook> = Vec::new();
    for file in files {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                errors.push(whole(
                    &file,
                    format!(
                        "{} bytes; a playbook may have at most {MAX_FILE_BYTES}",
                        meta.len()
                    ),
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                errors.push(whole(&file, e.to_string()));
                continue;
            }
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(whole(&file, e.to_string()));
                continue;
            }
        };
        match parse_file(&file, &text) {
            Ok(playbook) => {
                if let Some(first) = playbooks.iter().find(|p| p.name == playbook.name) {
                    let line = text
                        .lines()
                        .position(|l| l.trim_start().starts_with("name"))
                        .map(|i| i + 1);
                    errors.push(PlaybookError {
                        file: file.clone(),
                        line,
                        message: format!(
                            "playbook name {:?} is already used by {}",
                            playbook.name,
                            first.file.display()
                        ),
                    });
                } else {
                    playbooks.push(playbook);
                }
            }
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    if errors.is_empty() {
        Ok(PlaybookSet { playbooks })
    } else {
        Err(PlaybookErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbooks::{Collect, HostScope, Proposal, ProposedAction};

    fn parse(text: &str) -> Result<Playbook, String> {
        parse_file(Path::new("dir/test.toml"), text).map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    const GOOD: &str = r#"
name = "malware"
description = "malware on a host"
kinds = ["malware", "trojan"]

[[stage]]
stage = "collection"
collect = [
  { task = "snapshot" },
  { task = "file_hash", path = "{alert.file.path}" },
  { task = "sockets" },
  { task = "fetch_file", path = "{alert.file.path}", max_bytes = 1048576 },
]
hunts = [{ file_sha256 = "{alert.file.sha256}", ttl = "2h" }, { remote_port = 4444 }]

[[stage]]
stage = "response"
propose = [
  { action = "kill", tree = true },
  { action = "quarantine" },
  { action = "block", ttl = "30m", valid_for = "10m" },
  { action = "isolate", ttl = "1h", hosts = "alert" },
]
"#;

    #[test]
    fn a_playbook_reads_into_its_plan() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "malware");
        assert_eq!(p.kinds, ["malware", "trojan"]);
        assert!(p.matches_kind("trojan") && !p.matches_kind("c2"));
        let collection = p.plan(Stage::Collection).unwrap();
        assert_eq!(collection.collect.len(), 4);
        assert_eq!(collection.collect[2], Collect::Network);
        assert_eq!(collection.hunts[0].ttl_secs, 7200);
        assert_eq!(collection.hunts[1].filters[0].0, "remote_port");
        let response = p.plan(Stage::Response).unwrap();
        assert_eq!(
            response.propose[0],
            Proposal {
                action: ProposedAction::Kill { tree: true },
                hosts: HostScope::Alert,
                valid_for_secs: DEFAULT_VALID_FOR_SECS,
            }
        );
        match &response.propose[2] {
            Proposal {
                action: ProposedAction::Block { targets, ttl_secs },
                hosts: HostScope::All,
                valid_for_secs: 600,
            } => {
                assert_eq!(targets[0].source(), "{alert.destination.ip}");
                assert_eq!(*ttl_secs, 1800);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(response.propose[3].hosts, HostScope::Alert);
        assert!(p.plan(Stage::Analysis).is_none());
    }

    /// Each mistake, and the line it must be reported on.
    #[test]
    fn every_error_names_the_file_and_line() {
        let cases: [(&str, &str, usize); 14] = [
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"triage\"\ncollect = [{ task = \"snapshot\" }]\n",
                "unknown stage \"triage\"",
                4,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [\n  { task = \"snapshot\" },\n  { task = \"memdump\" },\n]\n",
                "unknown task kind \"memdump\"",
                7,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"response\"\npropose = [{ action = \"nuke\" }]\n",
                "unknown action \"nuke\"",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"response\"\n\npropose = [{ action = \"isolate\", ttl = \"an hour\" }]\n",
                "is not a duration",
                6,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"response\"\npropose = [{ action = \"isolate\", ttl = \"30d\" }]\n",
                "longer than the 7 days",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"file_hash\", path = \"{alert.file.hash}\" }]\n",
                "unknown reference {alert.file.hash}",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\nhunts = [{ file_sha256 = \"{alert.sha}\" }]\n",
                "unknown reference {alert.sha}",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"snapshot\", path = \"/etc\" }]\n",
                "task snapshot takes no `path`",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"file_hash\" }]\n",
                "needs a `path`",
                5,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"snapshot\" }]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"network\" }]\n",
                "already planned at line 4",
                7,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"collection\"\ncollect = [{ task = \"snapshot\", colour = \"red\" }]\n",
                "unknown field `colour`",
                5,
            ),
            (
                "name = \"x\"\nkinds = []\n",
                "kinds is empty",
                2,
            ),
            (
                "name = \"x\"\nkinds = [\"*\"]\n[[stage]]\nstage = \"response\"\npropose = [{ action = \"release\" }]\n",
                "undoes containment",
                5,
            ),
            ("name = \"x\"\nkinds = [\"*\"\n", "invalid array", 3),
        ];
        for (text, wanted, line) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with(&format!("dir/test.toml:{line}: ")),
                "{text}\n=> {err}"
            );
            assert!(err.contains(wanted), "{text}\n=> {err}");
        }
    }

    #[test]
    fn a_directory_loads_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_dir(&dir.path().join("missing"))
            .unwrap()
            .playbooks
            .is_empty());
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a playbook").unwrap();
        let set = load_dir(dir.path()).unwrap();
        assert_eq!(set.playbooks.len(), 1);
        assert!(set.collects("snapshot") && !set.collects("ping"));
        assert_eq!(set.matching("malware", Stage::Collection).len(), 1);
        assert!(set.matching("c2", Stage::Collection).is_empty());

        // The same name twice: the second file is named, with its name line.
        std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("b.toml:2: playbook name \"malware\" is already used by"),
            "{err}"
        );
        assert!(err.contains("a.toml"), "{err}");
    }
}

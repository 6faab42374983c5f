//! `cordon-agent trust …`: manage, on the host, which keys this agent trusts to sign containment
//! actions. Each command edits `DATA_DIR/policy.toml` (see [`crate::policy`]) and returns what to
//! print. A running agent sees the change within a second
//! ([`crate::session::POLICY_CHECK_INTERVAL`]), reports it to its controller, and applies it to
//! the next action.

use std::path::Path;

use cordon_protocol::action::{key_id, ActionKind};

use crate::{
    policy::{self, Policy, TrustedSigner},
    AgentError,
};

/// Lifetime a signer may give when `--max-ttl` is not given.
pub const DEFAULT_MAX_TTL_SECS: u64 = 3600;

/// What `trust add` needs.
#[derive(Debug, Clone)]
pub struct AddOptions<'a> {
    pub public_key_file: &'a Path,
    /// Comma-separated action names, or `all`.
    pub actions: &'a str,
    /// `--max-ttl`, e.g. `1h`, `30m`, `90s`, `7d`.
    pub max_ttl: Option<&'a str>,
    /// Defaults to the key file's name without extension.
    pub name: Option<&'a str>,
}

/// `trust add`: trusts the key in `options.public_key_file` for the listed actions.
pub fn add(data_dir: &Path, options: &AddOptions<'_>) -> Result<String, AgentError> {
    let file = options.public_key_file;
    let text = std::fs::read_to_string(file).map_err(|e| AgentError::io(file, e))?;
    let key = policy::parse_public_key_file(&text).map_err(|detail| AgentError::Config {
        path: file.to_path_buf(),
        detail,
    })?;
    let actions = parse_actions(options.actions)?;
    let max_ttl_secs = match options.max_ttl {
        Some(text) => parse_duration(text)?,
        None => DEFAULT_MAX_TTL_SECS,
    };
    let name = match options.name {
        Some(name) if !name.trim().is_empty() => name.trim().to_string(),
        Some(_) => return Err(AgentError::InvalidInput("--name must not be empty".into())),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "signer".into()),
    };
    let id = key_id(&key.to_bytes());

    let mut policy = Policy::load(data_dir)?;
    if let Some(existing) = policy.signer(&id) {
        return Err(AgentError::InvalidInput(format!(
            "key {id} is already trusted as {:?}; `cordon-agent trust remove --data-dir {} {id}` first to change it",
            existing.name,
            data_dir.display()
        )));
    }
    policy.signers.push(TrustedSigner {
        name: name.clone(),
        public_key: hex::encode(key.to_bytes()),
        actions: actions.iter().map(|a| a.as_str().to_string()).collect(),
        max_ttl_secs,
    });
    policy.save(data_dir)?;
    Ok(format!(
        "trusted key {id} ({name}) for {} with a maximum lifetime of {}",
        join(&actions),
        format_duration(max_ttl_secs)
    ))
}

/// `trust remove`: stops trusting key `key_id`.
pub fn remove(data_dir: &Path, key_id: &str) -> Result<String, AgentError> {
    let mut policy = Policy::load(data_dir)?;
    let before = policy.signers.len();
    let mut removed = String::new();
    policy.signers.retain(|s| {
        let keep = s.key_id().as_deref() != Some(key_id);
        if !keep {
            removed = s.name.clone();
        }
        keep
    });
    if policy.signers.len() == before {
        return Err(AgentError::InvalidInput(format!(
            "no trusted key has id {key_id:?}; `cordon-agent trust list --data-dir {}` shows them",
            data_dir.display()
        )));
    }
    policy.save(data_dir)?;
    Ok(format!("no longer trusting key {key_id} ({removed})"))
}

/// `trust require`: how many distinct signers `action` needs (1 removes the requirement).
pub fn require(data_dir: &Path, action: &str, signers: u32) -> Result<String, AgentError> {
    let kind: ActionKind = action.trim().parse().map_err(AgentError::InvalidInput)?;
    if signers == 0 {
        return Err(AgentError::InvalidInput(
            "--signers must be at least 1".into(),
        ));
    }
    let mut policy = Policy::load(data_dir)?;
    if signers == 1 {
        policy.required_signers.remove(kind.as_str());
    } else {
        policy
            .required_signers
            .insert(kind.as_str().to_string(), signers);
    }
    policy.save(data_dir)?;
    let able = policy.signers.iter().filter(|s| s.allows(kind)).count();
    let mut out = format!("{kind} now needs {signers} distinct signer(s)");
    if able < signers as usize {
        out.push_str(&format!(
            "\nwarning: only {able} trusted key(s) may sign {kind}; it cannot run until more are added"
        ));
    }
    Ok(out)
}

/// `trust list`: the trusted keys as a table, or the policy's trust part as JSON.
pub fn list(data_dir: &Path, json: bool) -> Result<String, AgentError> {
    let policy = Policy::load(data_dir)?;
    if json {
        let signers: Vec<_> = policy
            .signers
            .iter()
            .map(|s| {
                serde_json::json!({
                    "key_id": s.key_id().unwrap_or_default(),
                    "name": s.name,
                    "public_key": s.public_key,
                    "actions": s.actions,
                    "max_ttl_secs": s.max_ttl_secs,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "signers": signers,
            "required_signers": policy.required_signers,
        });
        return serde_json::to_string_pretty(&doc)
            .map_err(|e| AgentError::InvalidInput(e.to_string()));
    }
    if policy.signers.is_empty() {
        return Ok(format!(
            "no trusted keys: no containment action can run (add one with `cordon-agent trust add --data-dir {} …`)",
            data_dir.display()
        ));
    }
    let rows: Vec<[String; 4]> = policy
        .signers
        .iter()
        .map(|s| {
            [
                s.key_id().unwrap_or_default(),
                s.name.clone(),
                s.actions.join(","),
                format_duration(s.max_ttl_secs),
            ]
        })
        .collect();
    let header = ["KEY ID", "NAME", "ACTIONS", "MAX TTL"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if !policy.required_signers.is_empty() {
        let required: Vec<String> = policy
            .required_signers
            .iter()
            .map(|(a, n)| format!("{a}={n}"))
            .collect();
        out.push_str(&format!("required signers: {}\n", required.join(", ")));
    }
    Ok(out.trim_end().to_string())
}

/// Parses `kill,quarantine,…` (or `all`), refusing unknown names and empty lists.
pub fn parse_actions(text: &str) -> Result<Vec<ActionKind>, AgentError> {
    if text.trim() == "all" {
        return Ok(ActionKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind: ActionKind = name.parse().map_err(AgentError::InvalidInput)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(AgentError::InvalidInput(
            "--actions lists no action (e.g. --actions kill,quarantine,restore)".into(),
        ));
    }
    Ok(kinds)
}

/// Parses `90s`, `30m`, `1h`, `7d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64, AgentError> {
    let bad = || {
        AgentError::InvalidInput(format!(
            "--max-ttl {text:?}: expected a duration like 90s, 30m, 1h or 7d"
        ))
    };
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(factor) {
        Some(0) => Err(AgentError::InvalidInput(
            "--max-ttl must be at least 1s".into(),
        )),
        Some(secs) => Ok(secs),
        None => Err(bad()),
    }
}

fn format_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn join(kinds: &[ActionKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn key_file(dir: &Path, name: &str, seed: u8) -> (std::path::PathBuf, String) {
        let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", hex::encode(key.to_bytes()))).unwrap();
        (path, key_id(&key.to_bytes()))
    }

    fn add_opts<'a>(file: &'a Path, actions: &'a str) -> AddOptions<'a> {
        AddOptions {
            public_key_file: file,
            actions,
            max_ttl: None,
            name: None,
        }
    }

    #[test]
    fn policy_trust_add_list_require_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("agent");
        let (alice, alice_id) = key_file(tmp.path(), "alice.pub", 1);
        let (bob, bob_id) = key_file(tmp.path(), "bob.pub", 2);

        let out = add(&data, &add_opts(&alice, "kill, quarantine")).unwrap();
        assert!(out.contains(&alice_id) && out.contains("1h"), "{out}");
        let out = add(
            &data,
            &AddOptions {
                max_ttl: Some("30m"),
                name: Some("automation"),
                ..add_opts(&bob, "block")
            },
        )
        .unwrap();
        assert!(out.contains("automation") && out.contains("30m"), "{out}");

        let err = add(&data, &add_opts(&alice, "kill"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already trusted"), "{err}");

        let out = require(&data, "kill", 2).unwrap();
        assert!(out.contains("warning: only 1"), "{out}");

        let table = list(&data, false).unwrap();
        assert!(table.starts_with("KEY ID"), "{table}");
        assert!(table.contains(&format!("{alice_id}  alice")), "{table}");
        assert!(table.contains("kill,quarantine"), "{table}");
        assert!(table.contains("required signers: kill=2"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&list(&data, true).unwrap()).unwrap();
        assert_eq!(json["signers"][1]["key_id"], bob_id.as_str());
        assert_eq!(json["signers"][1]["max_ttl_secs"], 1800);
        assert_eq!(json["required_signers"]["kill"], 2);

        remove(&data, &alice_id).unwrap();
        let err = remove(&data, &alice_id).unwrap_err().to_string();
        assert!(err.contains("no trusted key"), "{err}");
        let policy = Policy::load(&data).unwrap();
        assert_eq!(policy.signers.len(), 1);
        assert_eq!(policy.signers[0].name, "automation");
        require(&data, "kill", 1).unwrap();
        assert!(Policy::load(&data).unwrap().required_signers.is_empty());
    }

    #[test]
    fn policy_trust_errors_are_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let (alice, _) = key_file(tmp.path(), "alice.pub", 1);
        let err = add(tmp.path(), &add_opts(&alice, "kill,format-disk"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("format-disk") && err.contains("quarantine"),
            "{err}"
        );
        let err = add(
            tmp.path(),
            &add_opts(&tmp.path().join("missing.pub"), "kill"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing.pub"), "{err}");
        let junk = tmp.path().join("junk.pub");
        std::fs::write(&junk, "hello").unwrap();
        let err = add(tmp.path(), &add_opts(&junk, "kill"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.pub") && err.contains("hex"), "{err}");
        let err = add(
            tmp.path(),
            &AddOptions {
                max_ttl: Some("soon"),
                ..add_opts(&alice, "kill")
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--max-ttl"), "{err}");
        assert!(require(tmp.path(), "nuke", 2).is_err());
        assert!(require(tmp.path(), "kill", 0).is_err());
        // Nothing was written by the failures.
        assert!(!policy::path(tmp.path()).exists());
    }

    #[test]
    fn policy_durations_and_action_lists_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("120").unwrap(), 120);
        for bad in ["", "0s", "h", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_actions("all").unwrap().len(), ActionKind::ALL.len());
        assert_eq!(
            parse_actions("kill,kill,block").unwrap(),
            vec![ActionKind::Kill, ActionKind::Block]
        );
        assert!(parse_actions(" , ").is_err());
    }
}

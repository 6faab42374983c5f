//! Snapshot (`TaskKind::Snapshot`): the system facts, the process list with executable hashes,
//! and the sockets and interfaces, in one JSON bundle streamed as chunks, with a manifest that
//! hashes each section and the whole, signed by the agent's key.
//!
//! The bundle is `{"system":…,"processes":…,"network":…}` where each member is exactly the
//! section text the manifest hashes, so a verifier can re-hash each section as stored. A
//! collector that fails leaves its section out and is named in the manifest's `problems`; the
//! snapshot fails only if every collector did.

use std::io::Cursor;

use cordon_protocol::{
    evidence::{EvidenceKind, EvidenceManifest, ManifestSection},
    message::{TaskError, TaskErrorCode, TaskOutput},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    cancel::{Cancel, CancelOnDrop},
    fetch::{self, StreamError},
    gate::Index,
    network, process, system, task_error,
};
use crate::tasks::TaskContext;

/// Largest bundle the agent will send (the sections of a very busy host are a few MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// Collects, streams and signs a snapshot.
pub async fn snapshot(task_id: &str, ctx: &TaskContext) -> Result<TaskOutput, TaskError> {
    let guard = CancelOnDrop::default();
    let cancelled = guard.cancel();
    let ctx = ctx.clone();
    let task_id = task_id.to_string();
    tokio::task::spawn_blocking(move || {
        let (bundle, sections, problems) = collect_bundle(&ctx.gate().index(), &cancelled);
        if sections.is_empty() {
            return Err(task_error(
                TaskErrorCode::Internal,
                format!("every collector failed: {}", problems.join("; ")),
            ));
        }
        let (total_len, sha256) = fetch::stream_chunks(
            &mut Cursor::new(bundle),
            &task_id,
            MAX_BUNDLE_BYTES,
            &ctx.outbox,
            &cancelled,
        )
        .map_err(|e| match e {
            StreamError::Io(e) => task_error(TaskErrorCode::Internal, format!("snapshot: {e}")),
            StreamError::TooLarge => task_error(
                TaskErrorCode::TooLarge,
                format!("snapshot bundle is larger than {MAX_BUNDLE_BYTES} bytes"),
            ),
            StreamError::Stopped(why) => task_error(TaskErrorCode::Cancelled, why),
        })?;
        let manifest = EvidenceManifest {
            version: 1,
            kind: EvidenceKind::Snapshot,
            agent_id: ctx.agent_id.clone(),
            hostname: crate::inventory::hostname(),
            task_id,
            collected_at_ms: crate::now_ms(),
            total_len,
            sha256,
            source_path: None,
            file: None,
            sections,
            problems,
        };
        fetch::sign(&manifest, &ctx)
    })
    .await
    .map_err(|e| task_error(TaskErrorCode::Internal, format!("snapshot failed: {e}")))?
}

/// Runs every collector (executables hashed through the gate's `index`); returns the bundle
/// text, its sections and what failed.
fn collect_bundle(index: &Index, cancel: &Cancel) -> (Vec<u8>, Vec<ManifestSection>, Vec<String>) {
    let parts = [
        ("system", section(system::collect())),
        ("processes", section(process::list(true, index, cancel))),
        ("network", section(network::snapshot())),
    ];

    let mut bundle = b"{".to_vec();
    let mut sections = Vec::new();
    let mut problems = Vec::new();
    for (name, part) in parts {
        match part {
            Ok(text) => {
                if !sections.is_empty() {
                    bundle.push(b',');
                }
                bundle.extend_from_slice(format!("\"{name}\":").as_bytes());
                bundle.extend_from_slice(text.as_bytes());
                sections.push(ManifestSection {
                    name: name.to_string(),
                    len: text.len() as u64,
                    sha256: hex::encode(Sha256::digest(text.as_bytes())),
                });
            }
            Err(why) => problems.push(format!("{name}: {why}")),
        }
    }
    bundle.push(b'}');
    (bundle, sections, problems)
}

fn section<T: Serialize>(collected: Result<T, TaskError>) -> Result<String, String> {
    let value = collected.map_err(|e| e.message)?;
    serde_json::to_string(&value).map_err(|e| format!("cannot encode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_json_whose_sections_match_the_manifest() {
        let (bundle, sections, problems) = collect_bundle(&Index::none(), &Cancel::never());
        assert!(problems.is_empty(), "{problems:?}");
        let doc: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&bundle).unwrap();
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["system", "processes", "network"]);
        for s in &sections {
            let text = doc[&s.name].get();
            assert_eq!(text.len() as u64, s.len, "{}", s.name);
            assert_eq!(hex::encode(Sha256::digest(text.as_bytes())), s.sha256);
        }
    }
}

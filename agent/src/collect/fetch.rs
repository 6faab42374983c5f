//! File fetch (`TaskKind::FetchFile`): a regular file's bytes streamed to the controller in
//! chunks, the SHA-256 computed while reading and sent in the last chunk, then a manifest signed
//! with the agent's key naming the path, the file's metadata, the length and the hash.
//!
//! The size limit is checked twice: against the file's size before the first byte is sent, and
//! against the bytes actually read (a file can grow while it is read).

use std::io::{self, Read};

use cordon_protocol::{
    evidence::{EvidenceKind, EvidenceManifest, SignedManifest},
    message::{AgentMessage, Chunk, ChunkEnd, TaskError, TaskErrorCode, TaskOutput},
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    cancel::{Cancel, CancelOnDrop},
    file, io_error, task_error,
};
use crate::tasks::TaskContext;

/// Bytes per chunk: large enough to keep the link busy, small enough that the session's bounded
/// outgoing queue holds little memory.
pub const CHUNK_LEN: usize = 256 * 1024;

/// Streams `path` and returns its signed manifest.
pub async fn fetch(
    task_id: &str,
    path: String,
    max_bytes: u64,
    ctx: &TaskContext,
) -> Result<TaskOutput, TaskError> {
    let guard = CancelOnDrop::default();
    let cancelled = guard.cancel();
    let ctx = ctx.clone();
    let task_id = task_id.to_string();
    tokio::task::spawn_blocking(move || {
        fetch_blocking(&task_id, &path, max_bytes, &ctx, &cancelled)
    })
    .await
    .map_err(|e| task_error(TaskErrorCode::Internal, format!("file fetch failed: {e}")))?
}

fn fetch_blocking(
    task_id: &str,
    path: &str,
    max_bytes: u64,
    ctx: &TaskContext,
    cancelled: &Cancel,
) -> Result<TaskOutput, TaskError> {
    let (mut reader, p, meta) = file::open_regular(&ctx.gate().index(), path)?;
    if meta.len() > max_bytes {
        return Err(too_large(path, max_bytes));
    }
    let stat = file::describe(path, &meta, None);
    let (total_len, sha256) =
        stream_chunks(&mut reader, task_id, max_bytes, &ctx.outbox, cancelled).map_err(
            |e| match e {
                StreamError::Io(e) => io_error(&p, &e),
                StreamError::TooLarge => too_large(path, max_bytes),
                StreamError::Stopped(why) => task_error(TaskErrorCode::Cancelled, why),
            },
        )?;
    let manifest = EvidenceManifest {
        version: 1,
        kind: EvidenceKind::File,
        agent_id: ctx.agent_id.clone(),
        hostname: crate::inventory::hostname(),
        task_id: task_id.to_string(),
        collected_at_ms: crate::now_ms(),
        total_len,
        sha256,
        source_path: Some(path.to_string()),
        file: Some(stat),
        sections: Vec::new(),
        problems: Vec::new(),
    };
    sign(&manifest, ctx)
}

/// Signs a manifest as the task's output.
pub(crate) fn sign(
    manifest: &EvidenceManifest,
    ctx: &TaskContext,
) -> Result<TaskOutput, TaskError> {
    SignedManifest::sign(manifest, &ctx.signer)
        .map(TaskOutput::Evidence)
        .map_err(|e| {
            task_error(
                TaskErrorCode::Internal,
                format!("signing the manifest: {e}"),
            )
        })
}

fn too_large(path: &str, max_bytes: u64) -> TaskError {
    task_error(
        TaskErrorCode::TooLarge,
        format!("{path}: larger than the limit of {max_bytes} bytes"),
    )
}

/// Why streaming stopped early.
#[derive(Debug)]
pub(crate) enum StreamError {
    Io(io::Error),
    TooLarge,
    Stopped(&'static str),
}

/// Sends everything `reader` yields as chunks of `task_id` (blocking: call from a blocking
/// thread), refusing more than `limit` bytes. The last chunk carries the length and SHA-256 of
/// the whole. Returns those two.
pub(crate) fn stream_chunks(
    reader: &mut impl Read,
    task_id: &str,
    limit: u64,
    outbox: &mpsc::Sender<AgentMessage>,
    cancelled: &Cancel,
) -> Result<(u64, String), StreamError> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut seq = 0u64;
    loop {
        if cancelled.is_cancelled() {
            return Err(StreamError::Stopped("cancelled"));
        }
        let data = read_up_to(reader, CHUNK_LEN).map_err(StreamError::Io)?;
        total += data.len() as u64;
        if total > limit {
            return Err(StreamError::TooLarge);
        }
        hasher.update(&data);
        let last = data.len() < CHUNK_LEN;
        let end = last.then(|| ChunkEnd {
            total_len: total,
            sha256: hex::encode(hasher.clone().finalize()),
        });
        let chunk = Chunk {
            task_id: task_id.to_string(),
            seq,
            data,
            end,
        };
        outbox
            .blocking_send(AgentMessage::Chunk(chunk))
            .map_err(|_| StreamError::Stopped("the session ended during the transfer"))?;
        seq += 1;
        if last {
            return Ok((total, hex::encode(hasher.finalize())));
        }
    }
}

/// Reads until `len` bytes or end of file.
fn read_up_to(reader: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn collect(rx: &mut mpsc::Receiver<AgentMessage>) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        while let Ok(AgentMessage::Chunk(c)) = rx.try_recv() {
            chunks.push(c);
        }
        chunks
    }

    #[test]
    fn chunks_are_numbered_and_the_last_carries_the_hash() {
        let (tx, mut rx) = mpsc::channel(16);
        let data = vec![7u8; CHUNK_LEN * 2 + 10];
        let (len, sha) = stream_chunks(
            &mut Cursor::new(&data),
            "t",
            u64::MAX,
            &tx,
            &Cancel::never(),
        )
        .unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        let chunks = collect(&mut rx);
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(chunks[..2].iter().all(|c| c.end.is_none()));
        let end = chunks[2].end.as_ref().unwrap();
        assert_eq!((end.total_len, end.sha256.as_str()), (len, sha.as_str()));
        let joined: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn an_empty_stream_is_one_final_chunk_and_a_long_one_stops_at_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        let (len, _) = stream_chunks(&mut Cursor::new(b""), "t", 0, &tx, &Cancel::never()).unwrap();
        assert_eq!(len, 0);
        let chunks = collect(&mut rx);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].end.is_some());

        let data = vec![1u8; CHUNK_LEN + 1];
        let err = stream_chunks(
            &mut Cursor::new(&data),
            "t",
            CHUNK_LEN as u64,
            &tx,
            &Cancel::never(),
        )
        .unwrap_err();
        assert!(matches!(err, StreamError::TooLarge), "{err:?}");
        assert!(
            collect(&mut rx).iter().all(|c| c.end.is_none()),
            "nothing that looks complete is sent"
        );
    }

    #[test]
    fn a_cancelled_or_orphaned_stream_stops() {
        let (tx, rx) = mpsc::channel(16);
        let guard = CancelOnDrop::default();
        let cancelled = guard.cancel();
        drop(guard);
        let err = stream_chunks(&mut Cursor::new(b"x"), "t", 10, &tx, &cancelled).unwrap_err();
        assert!(matches!(err, StreamError::Stopped("cancelled")));
        drop(rx);
        let err =
            stream_chunks(&mut Cursor::new(b"x"), "t", 10, &tx, &Cancel::never()).unwrap_err();
        assert!(matches!(err, StreamError::Stopped(_)));
    }
}

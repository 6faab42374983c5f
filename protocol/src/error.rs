//! Errors from framing, encoding and the connection layer.

use thiserror::Error;

/// Everything that can go wrong between bytes on the wire and a typed message.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The peer announced a frame larger than we accept; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// The payload could not be decoded as the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The payload decoded, but bytes were left over: a sign of a confused or hostile peer.
    #[error("message has {extra} trailing bytes after a valid {expected}")]
    TrailingBytes {
        extra: usize,
        expected: &'static str,
    },
    /// A message could not be encoded (for example it would exceed the frame limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The peer speaks a protocol version we do not.
    #[error("protocol version mismatch: we speak {oldest} to {newest}, the peer speaks {theirs}")]
    VersionMismatch {
        oldest: u32,
        newest: u32,
        theirs: u32,
    },
    /// Incomplete frames across all connections would exceed the receive budget: this one is
    /// closed rather than let memory grow.
    #[error("receive budget exhausted: {held} bytes of incomplete frames here, {limit} allowed across all connections")]
    ReceiveBudget { held: usize, limit: usize },
    /// The connection closed in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// The underlying transport failed.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}

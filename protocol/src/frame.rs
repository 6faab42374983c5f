//! Length-prefixed frames: a u32 big-endian length, then that many payload bytes.
//!
//! The length is checked against [`MAX_FRAME_LEN`] as soon as its four bytes arrive, and the
//! buffer never grows for a length a peer merely announced: it grows with the bytes that have
//! arrived, and is let go once a large frame has been handed out, so a peer cannot make us
//! hold memory by announcing (or half-sending) a huge frame. A [`ReceiveBudget`] shared by
//! every connection bounds the bytes of frames still arriving across all of them.
//! "Not enough bytes yet" (`Ok(None)`) is kept apart from "these bytes are invalid" (`Err`).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Largest payload accepted or sent in one frame. Bulk data (file fetches, snapshots) travels as
/// chunks well below this.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// A read buffer larger than this is dropped once it is empty, so one large frame does not pin
/// its memory for the rest of a long-lived connection.
const KEEP_BUFFER: usize = 64 * 1024;

/// The bytes of incomplete frames that many connections may hold together. Cheap to clone;
/// every clone counts against the same total.
#[derive(Debug, Clone)]
pub struct ReceiveBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl ReceiveBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Frame codec for `tokio_util::codec::Framed`. Yields each frame's payload.
#[derive(Debug)]
pub struct FrameCodec {
    max_len: usize,
    budget: Option<ReceiveBudget>,
    /// What this codec counts against `budget` now.
    charged: usize,
}

impl FrameCodec {
    /// A codec enforcing [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A codec enforcing a smaller limit (e.g. for the enrolment handshake).
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            max_len: max_len.min(MAX_FRAME_LEN),
            budget: None,
            charged: 0,
        }
    }

    /// Changes the frame limit from the next frame on (never above [`MAX_FRAME_LEN`]): e.g. a
    /// small limit for a handshake, the full one after it.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    /// This codec's incomplete frames count against `budget`; past it, decoding fails with
    /// [`ProtocolError::ReceiveBudget`] (the connection is closed, its bytes let go).
    pub fn with_budget(mut self, budget: ReceiveBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Counts `held` bytes of incomplete frames against the budget, instead of what was
    /// counted before.
    fn charge(&mut self, held: usize) -> Result<(), ProtocolError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if held > self.charged {
            let more = held - self.charged;
            let before = budget.used.fetch_add(more, Ordering::Relaxed);
            if before + more > budget.limit {
                budget.used.fetch_sub(more, Ordering::Relaxed);
                return Err(ProtocolError::ReceiveBudget {
                    held,
                    limit: budget.limit,
                });
            }
        } else {
            budget
                .used
                .fetch_sub(self.charged - held, Ordering::Relaxed);
        }
        self.charged = held;
        Ok(())
    }
}

impl Clone for FrameCodec {
    /// A clone has its own (empty) buffer, so it starts with nothing charged.
    fn clone(&self) -> Self {
        Self {
            max_len: self.max_len,
            budget: self.budget.clone(),
            charged: 0,
        }
    }
}

impl Drop for FrameCodec {
    fn drop(&mut self) {
        let _ = self.charge(0);
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
        if src.len() < HEADER_LEN {
            self.charge(src.len())?;
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_len {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        if src.len() < HEADER_LEN + len {
            // Never reserve the announced length: the buffer grows as bytes arrive, at most a
            // little ahead of them.
            self.charge(src.len())?;
            src.reserve((HEADER_LEN + len - src.len()).min(KEEP_BUFFER));
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let frame = src.split_to(len);
        if src.is_empty() && src.capacity() > KEEP_BUFFER {
            *src = BytesMut::new();
        }
        self.charge(src.len())?;
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), ProtocolError> {
        if payload.len() > self.max_len {
            return Err(ProtocolError::FrameTooLarge {
                len: payload.len(),
                max: self.max_len,
            });
        }
        dst.reserve(HEADER_LEN + payload.len());
        // Cannot truncate: max_len <= MAX_FRAME_LEN < u32::MAX.
        dst.put_u32(payload.len() as u32);
        dst.put_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(payload, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_half_sent_frame_holds_what_arrived_not_what_it_announced() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_FRAME_LEN as u32);
        buf.put_slice(&[7u8; 100]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        // At most a little ahead of what arrived, never the 4 MiB announced.
        assert!(
            buf.capacity() <= 104 + 2 * KEEP_BUFFER,
            "grew to {} for 104 bytes",
            buf.capacity()
        );
    }

    #[test]
    fn a_large_frame_lets_its_buffer_go_once_handed_out() {
        let mut codec = FrameCodec::new();
        let mut buf = encode(&vec![1u8; 1024 * 1024]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 1024 * 1024);
        assert!(buf.capacity() <= KEEP_BUFFER, "kept {}", buf.capacity());
    }

    #[test]
    fn the_budget_bounds_incomplete_frames_across_codecs_and_is_given_back() {
        let budget = ReceiveBudget::new(1000);
        let mut a = FrameCodec::new().with_budget(budget.clone());
        let mut b = FrameCodec::new().with_budget(budget.clone());
        let half = |n: usize| {
            let mut buf = BytesMut::new();
            buf.put_u32(10_000);
            buf.put_slice(&vec![0u8; n]);
            buf
        };
        let mut buf_a = half(596);
        assert!(a.decode(&mut buf_a).unwrap().is_none());
        assert_eq!(budget.used(), 600);
        let mut buf_b = half(500);
        let err = b.decode(&mut buf_b).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::ReceiveBudget {
                    held: 504,
                    limit: 1000
                }
            ),
            "{err}"
        );
        assert_eq!(budget.used(), 600, "a refused charge is not kept");
        // A complete frame gives its bytes back; a dropped codec gives back what it held.
        let mut whole = encode(b"done");
        assert_eq!(b.decode(&mut whole).unwrap().unwrap(), &b"done"[..]);
        assert_eq!(budget.used(), 600);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn incomplete_header_and_body_ask_for_more() {
        let mut codec = FrameCodec::new();
        let full = encode(b"hello");
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert!(
                codec.decode(&mut partial).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { len, .. } if len == u32::MAX as usize)
        );
        assert!(
            buf.capacity() < 1024,
            "no buffer grown for the claimed length"
        );
    }

    #[test]
    fn a_handshake_limit_applies_until_raised() {
        let mut codec = FrameCodec::with_max_len(16);
        let mut big = encode(&[7u8; 17]);
        assert!(matches!(
            codec.decode(&mut big.clone()).unwrap_err(),
            ProtocolError::FrameTooLarge { len: 17, max: 16 }
        ));
        codec.set_max_len(usize::MAX);
        assert_eq!(codec.decode(&mut big).unwrap().unwrap().len(), 17);
        let mut huge = BytesMut::from(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes()[..]);
        assert!(
            codec.decode(&mut huge).is_err(),
            "never above the protocol's limit"
        );
    }

    #[test]
    fn oversized_payload_is_refused_on_encode() {
        let mut codec = FrameCodec::with_max_len(8);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode(&[0u8; 9][..], &mut buf),
            Err(ProtocolError::FrameTooLarge { len: 9, max: 8 })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn eof_inside_a_frame_is_an_error_not_a_clean_close() {
        let mut codec = FrameCodec::new();
        let full = encode(b"hello");
        let mut partial = BytesMut::from(&full[..6]);
        assert!(matches!(
            codec.decode_eof(&mut partial),
            Err(ProtocolError::Truncated { buffered: 6 })
        ));
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn round_trip_many_frames(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 0..8)) {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::new();
            for p in &payloads {
                codec.encode(&p[..], &mut buf).unwrap();
            }
            for p in &payloads {
                let frame = codec.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&frame[..], &p[..]);
            }
            prop_assert!(codec.decode(&mut buf).unwrap().is_none());
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics_and_never_overallocates(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(buf.capacity() <= bytes.len().max(HEADER_LEN) + MAX_FRAME_LEN + HEADER_LEN);
        }
    }
}

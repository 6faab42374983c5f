//! Length-prefixed frames: a u32 big-endian length, then that many payload bytes.
//!
//! The length is checked against [`MAX_FRAME_LEN`] as soon as its four bytes arrive, before any
//! buffer is grown for the payload, so a peer cannot make us allocate by announcing a huge frame.
//! "Not enough bytes yet" (`Ok(None)`) is kept apart from "these bytes are invalid" (`Err`).

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Largest payload accepted or sent in one frame. Bulk data (file fetches, snapshots) travels as
/// chunks well below this.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Frame codec for `tokio_util::codec::Framed`. Yields each frame's payload.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    /// A codec enforcing [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A codec with a smaller limit (e.g. for the enrolment handshake). Never above the protocol
    /// maximum.
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            max_len: max_len.min(MAX_FRAME_LEN),
        }
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
            // Reserve only what this (already bounded) frame still needs.
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len)))
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

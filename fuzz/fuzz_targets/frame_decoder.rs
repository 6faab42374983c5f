//! Fuzzes the wire path a peer controls: bytes arriving in arbitrary pieces go through
//! `FrameCodec` (as `tokio_util::codec::Framed` drives it), and every frame it yields is decoded
//! as each message a peer can send first or later.
//!
//! Input layout:
//! - byte 0: chunking. `0` feeds the whole rest at once; `n > 0` feeds pieces of 1..=n bytes,
//!   sizes drawn from a small PRNG seeded by bytes 0 and 1 (`1` is byte-by-byte).
//! - byte 1: frame limit. High bit clear: `FrameCodec::new()` (the protocol's `MAX_FRAME_LEN`).
//!   High bit set: `FrameCodec::with_max_len((b & 0x7f) * 8)`, so the limit is small enough for
//!   short inputs to hit it; `0xff` asks for `usize::MAX`, which must be clamped to the maximum.
//! - the rest: the byte stream.
//!
//! Invariants checked (a failed `assert!` is a finding, as is any panic):
//! - the decoder never panics, on any split of the stream;
//! - no frame is longer than the codec's limit, and the limit never exceeds `MAX_FRAME_LEN`;
//! - every byte fed is accounted for: consumed by a frame (header + payload) or still buffered;
//! - `Ok(None)` consumes nothing and only happens when a whole frame is really not there yet;
//! - `FrameTooLarge` reports the announced length and a limit it really exceeds;
//! - the buffer never grows for a length the codec refused (capacity stays bounded);
//! - at end of stream, `decode_eof` is `Ok(None)` on an empty buffer and `Truncated` naming the
//!   exact number of buffered bytes otherwise;
//! - a frame re-encoded by the codec decodes back to the same payload;
//! - for each message type, if a frame decodes, re-encoding the value succeeds, is no longer than
//!   the frame (so it fits back into a frame), decodes to an equal value, and re-encodes to the
//!   same bytes.
#![no_main]

use std::fmt::Debug;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use cordon_protocol::codec;
use cordon_protocol::enroll::{EnrollRequest, EnrollResponse};
use cordon_protocol::frame::{FrameCodec, HEADER_LEN, MAX_FRAME_LEN};
use cordon_protocol::hello::{decode_hello, AgentHello, ControllerHello};
use cordon_protocol::message::{AgentMessage, ControllerMessage};
use cordon_protocol::{ProtocolError, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let chunking = data.first().copied().unwrap_or(0);
    let limit_sel = data.get(1).copied().unwrap_or(0);
    let stream = data.get(2..).unwrap_or(&[]);

    let (mut codec, limit) = match limit_sel {
        0xff => (FrameCodec::with_max_len(usize::MAX), MAX_FRAME_LEN),
        b if b & 0x80 != 0 => {
            let l = usize::from(b & 0x7f) * 8;
            (FrameCodec::with_max_len(l), l)
        }
        _ => (FrameCodec::new(), MAX_FRAME_LEN),
    };
    assert!(limit <= MAX_FRAME_LEN);

    let mut rng = Rng::new(u32::from(chunking) << 8 | u32::from(limit_sel));
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    let mut rest = stream;
    let mut stopped = false;

    'feed: while !rest.is_empty() {
        let n = if chunking == 0 {
            rest.len()
        } else {
            (1 + rng.next() as usize % usize::from(chunking)).min(rest.len())
        };
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        fed += n;

        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert_eq!(
                        before - buf.len(),
                        HEADER_LEN + frame.len(),
                        "a frame consumes exactly its header and payload"
                    );
                    consumed += HEADER_LEN + frame.len();
                    check_frame(&frame, limit);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) must not consume bytes");
                    assert_incomplete(&buf, limit);
                    break;
                }
                Err(e) => {
                    check_decode_error(&e, &buf, limit);
                    // Framed stops at the first error; so do we.
                    stopped = true;
                    break 'feed;
                }
            }
            assert_eq!(
                fed,
                consumed + buf.len(),
                "every byte fed is consumed or buffered"
            );
        }
        assert_eq!(
            fed,
            consumed + buf.len(),
            "every byte fed is consumed or buffered"
        );
        check_capacity(&buf, fed, limit);
    }

    // End of stream, unless an error already ended the connection.
    if !stopped {
        // The last decode returned Ok(None) (or nothing was fed), so no whole frame is buffered.
        match codec.decode_eof(&mut buf) {
            Ok(None) => assert!(buf.is_empty(), "clean EOF only with nothing buffered"),
            Ok(Some(frame)) => panic!(
                "decode_eof yielded a {}-byte frame that decode did not",
                frame.len()
            ),
            Err(ProtocolError::Truncated { buffered }) => {
                assert!(!buf.is_empty(), "Truncated with an empty buffer");
                assert_eq!(
                    buffered,
                    buf.len(),
                    "Truncated names the buffered byte count"
                );
            }
            Err(e) => {
                // A FrameTooLarge here would mean decode accepted a header it now refuses.
                panic!("unexpected decode_eof error after Ok(None): {e:?}");
            }
        }
    }
});

/// Tiny xorshift so chunk sizes are a pure function of the input.
struct Rng(u32);

impl Rng {
    fn new(seed: u32) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

fn announced_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= HEADER_LEN).then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
}

/// After `Ok(None)`: either the header is incomplete, or it announces an acceptable length
/// whose payload has not fully arrived.
fn assert_incomplete(buf: &BytesMut, limit: usize) {
    if let Some(len) = announced_len(buf) {
        assert!(
            len <= limit,
            "Ok(None) for a length ({len}) over the limit ({limit})"
        );
        assert!(
            buf.len() < HEADER_LEN + len,
            "Ok(None) although a whole frame ({len} bytes) is buffered ({} bytes)",
            buf.len()
        );
    }
}

fn check_decode_error(e: &ProtocolError, buf: &BytesMut, limit: usize) {
    match *e {
        ProtocolError::FrameTooLarge { len, max } => {
            assert_eq!(max, limit, "FrameTooLarge reports the codec's limit");
            assert!(len > max, "FrameTooLarge for {len} <= {max}");
            assert_eq!(
                announced_len(buf),
                Some(len),
                "FrameTooLarge reports the announced length and leaves the header in place"
            );
        }
        ref other => panic!("FrameCodec::decode returned an unexpected error: {other:?}"),
    }
}

/// The buffer may only grow for bytes actually fed plus at most one acceptable frame; never for
/// a refused length. Loose by a factor of two plus slack for `BytesMut`/`Vec` growth policy.
fn check_capacity(buf: &BytesMut, fed: usize, limit: usize) {
    let bound = 2 * (fed + HEADER_LEN + limit) + 128 * 1024;
    assert!(
        buf.capacity() <= bound,
        "buffer capacity {} exceeds {bound} (fed {fed}, limit {limit})",
        buf.capacity()
    );
}

fn check_frame(frame: &[u8], limit: usize) {
    assert!(
        frame.len() <= limit,
        "frame of {} bytes over the limit {limit}",
        frame.len()
    );
    assert!(frame.len() <= MAX_FRAME_LEN);

    // The codec's own encoding of this payload decodes back to it.
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    codec
        .encode(frame, &mut wire)
        .expect("a received frame can be re-encoded");
    assert_eq!(wire.len(), HEADER_LEN + frame.len());
    let back = codec
        .decode(&mut wire)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is complete");
    assert_eq!(&back[..], frame);
    assert!(wire.is_empty());

    roundtrip::<AgentMessage>(frame, codec::decode);
    roundtrip::<ControllerMessage>(frame, codec::decode);
    roundtrip::<EnrollRequest>(frame, codec::decode);
    roundtrip::<EnrollResponse>(frame, codec::decode);
    roundtrip::<AgentHello>(frame, decode_hello);
    roundtrip::<ControllerHello>(frame, decode_hello);
    if let Ok(h) = decode_hello::<AgentHello>(frame) {
        assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    }
    if let Ok(h) = decode_hello::<ControllerHello>(frame) {
        assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    }
}

fn roundtrip<T>(payload: &[u8], decode: fn(&[u8]) -> Result<T, ProtocolError>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(value) = decode(payload) else { return };
    let name = std::any::type_name::<T>();
    let bytes =
        codec::encode(&value).unwrap_or_else(|e| panic!("decoded {name} does not re-encode: {e}"));
    assert!(
        bytes.len() <= payload.len(),
        "re-encoded {name} is longer ({}) than the payload it came from ({})",
        bytes.len(),
        payload.len()
    );
    let again = decode(&bytes).unwrap_or_else(|e| panic!("re-encoded {name} does not decode: {e}"));
    assert_eq!(value, again, "{name} changed across encode/decode");
    let bytes_again = codec::encode(&again).expect("second encode");
    assert_eq!(bytes, bytes_again, "{name} encoding is not deterministic");
}

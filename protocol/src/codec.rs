//! Payload encoding. Every message is bincode 2 (serde) with a decode limit, and a decode that
//! leaves bytes over is an error.
//!
//! bincode is unmaintained upstream (RUSTSEC-2025-0141); it is named only in this module so it
//! can be swapped without touching callers.

use serde::{de::DeserializeOwned, Serialize};

use crate::{frame::MAX_FRAME_LEN, ProtocolError};

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes a message into a payload.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Decodes a whole payload as `T`: errors on malformed input and on trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(ProtocolError::TrailingBytes {
            extra: bytes.len() - read,
            expected: std::any::type_name::<T>(),
        });
    }
    Ok(value)
}

/// Reads only the leading `u32` of a payload. Every hello message starts with its protocol
/// version, so a peer's version can be read even when the rest of its hello is in a format we do
/// not know.
pub fn peek_version(bytes: &[u8]) -> Result<u32, ProtocolError> {
    let (version, _) = bincode::serde::decode_from_slice::<u32, _>(bytes, config())
        .map_err(|e| ProtocolError::Malformed(format!("no protocol version: {e}")))?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        version: u32,
        name: String,
        items: Vec<u64>,
    }

    #[test]
    fn round_trip() {
        let s = Sample {
            version: 7,
            name: "web-01".into(),
            items: vec![1, 2, 3],
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
        assert_eq!(peek_version(&bytes).unwrap(), 7);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&42u32).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(ProtocolError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn huge_claimed_collection_is_refused_without_allocating() {
        // A Vec<u64> claiming u64::MAX elements: varint 0xFD marker + 8 bytes.
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<Vec<u64>>(&bytes),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_input_is_malformed() {
        let bytes = encode(&Sample {
            version: 1,
            name: "abc".into(),
            items: vec![9; 10],
        })
        .unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Sample>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

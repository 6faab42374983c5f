//! A typed message stream over any async byte stream (in practice a TLS stream): frames from
//! [`crate::frame`], payloads from [`crate::codec`].

use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::{codec, frame::FrameCodec, ProtocolError};

/// One peer connection. `recv` returns `Ok(None)` when the peer closed cleanly between frames.
#[derive(Debug)]
pub struct Connection<S> {
    framed: Framed<S, FrameCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream with the protocol's frame limit.
    pub fn new(stream: S) -> Self {
        Self::with_codec(stream, FrameCodec::new())
    }

    /// Wraps a stream with a specific frame codec (e.g. a tighter limit).
    pub fn with_codec(stream: S, codec: FrameCodec) -> Self {
        Self {
            framed: Framed::new(stream, codec),
        }
    }

    /// Encodes and sends one message, flushing it to the stream.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ProtocolError> {
        let payload = codec::encode(message)?;
        self.framed.send(&payload[..]).await
    }

    /// Encodes and queues one message without flushing; call [`Connection::flush`] after a batch.
    pub async fn feed<T: Serialize>(&mut self, message: &T) -> Result<(), ProtocolError> {
        let payload = codec::encode(message)?;
        self.framed.feed(&payload[..]).await
    }

    /// Flushes queued messages.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        <Framed<S, FrameCodec> as SinkExt<&[u8]>>::flush(&mut self.framed).await
    }

    /// Receives one raw frame. Cancel-safe: a frame is either fully returned or left buffered.
    pub async fn recv_frame(&mut self) -> Result<Option<bytes::BytesMut>, ProtocolError> {
        self.framed.next().await.transpose()
    }

    /// Receives and decodes one message. Cancel-safe like [`Connection::recv_frame`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtocolError> {
        match self.recv_frame().await? {
            Some(frame) => codec::decode(&frame).map(Some),
            None => Ok(None),
        }
    }

    /// The frame codec, e.g. to raise its limit once a handshake is over.
    pub fn codec_mut(&mut self) -> &mut FrameCodec {
        self.framed.codec_mut()
    }

    /// The underlying stream, e.g. to read TLS session details.
    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }

    /// Gives back the stream (for an orderly TLS shutdown).
    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn messages_cross_a_duplex_pipe_and_close_cleanly() {
        let (a, b) = tokio::io::duplex(1024);
        let mut left = Connection::new(a);
        let mut right = Connection::new(b);
        left.send(&"ping".to_string()).await.unwrap();
        left.send(&7u64).await.unwrap();
        assert_eq!(
            right.recv::<String>().await.unwrap().as_deref(),
            Some("ping")
        );
        assert_eq!(right.recv::<u64>().await.unwrap(), Some(7));
        drop(left);
        assert!(right.recv::<u64>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn close_mid_frame_is_reported() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut right = Connection::new(b);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            right.recv::<u64>().await,
            Err(ProtocolError::Truncated { buffered: 6 })
        ));
    }
}

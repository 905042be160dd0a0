//! The frame format, in one place: a 4-byte big-endian length prefix and
//! one JSON message, with an explicit maximum frame size. Encoding and
//! decoding only; no sockets are opened and no protocol decisions made here.

use crate::protocol::{Body, ErrorCode, Message, WireError};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The codec for one direction of a connection.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_PREFIX_BYTES)
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// The reading half of a framed stream.
pub type FrameReader<S> = FramedRead<ReadHalf<S>, LengthDelimitedCodec>;
/// The writing half of a framed stream.
pub type FrameWriter<S> = FramedWrite<WriteHalf<S>, LengthDelimitedCodec>;

/// Split `stream` into its framed halves, both bounded by `max_frame_bytes`.
pub fn framed<S: AsyncRead + AsyncWrite>(
    stream: S,
    max_frame_bytes: usize,
) -> (FrameReader<S>, FrameWriter<S>) {
    let (rd, wr) = tokio::io::split(stream);
    (
        FramedRead::new(rd, codec(max_frame_bytes)),
        FramedWrite::new(wr, codec(max_frame_bytes)),
    )
}

/// Seconds since the Unix epoch, for the `timestamp` field.
pub fn wall_clock_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Encode `body` as one frame payload stamped with the wall clock.
pub fn encode(body: Body) -> Bytes {
    Bytes::from(body.encode(wall_clock_secs()))
}

/// One whole frame (length prefix and payload) as bytes, for the few places
/// that write to a raw socket before a [`codec`] takes over: the hello a
/// plain-TCP client sends before it looks at the server's first bytes, and
/// the refusal written to a connection that gets no slot.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(LENGTH_PREFIX_BYTES + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a reader got from the stream.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed message.
    Message(Body),
    /// A frame that is not a valid message; the stream is still usable.
    Invalid(WireError),
    /// The stream is unusable (oversized frame, I/O error); the connection
    /// must be closed after telling the peer.
    Broken(WireError),
}

/// Read the next inbound item; `None` at a clean EOF.
pub async fn read_next<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, LengthDelimitedCodec>,
    max_frame_bytes: usize,
) -> Option<Inbound> {
    match reader.next().await? {
        Ok(frame) => Some(match Message::decode(&frame) {
            Ok(body) => Inbound::Message(body),
            Err(e) => Inbound::Invalid(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Some(Inbound::Broken(WireError::new(
            ErrorCode::FrameTooLarge,
            format!("frame length exceeds max_frame_bytes ({max_frame_bytes} bytes); the connection is closed"),
        ))),
        Err(e) => {
            // Reset or other transport failure: the same as a close.
            tracing::debug!("connection ended: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// A frame built by hand decodes with the codec to the same payload.
    #[test]
    fn a_hand_built_frame_is_what_the_codec_reads() {
        let payload = br#"{"type":"heartbeat"}"#;
        let bytes = frame(payload);
        assert_eq!(&bytes[..4], &(payload.len() as u32).to_be_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        let got = codec(1024)
            .decode(&mut buf)
            .expect("decodes")
            .expect("one frame");
        assert_eq!(&got[..], &payload[..]);
        assert!(buf.is_empty());
    }
}

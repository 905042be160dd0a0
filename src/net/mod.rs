//! Framing and connections: 4-byte big-endian length prefix + one JSON
//! object, with an explicit maximum frame size. No protocol decisions here.

pub mod stream;

use crate::protocol::{Body, ErrorCode, Message, WireError};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// The codec for one direction of a connection.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
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

/// Something for a connection's writer task.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Bytes),
    /// Write the frame, then run the crash point named (used by fault
    /// injection to stop exactly after a message left the process).
    FrameThenCrash(Bytes, &'static str),
    /// Close the connection after what was queued before.
    Close,
}

/// How much a connection's writer may hold for a peer that does not read.
#[derive(Clone, Debug)]
pub struct SendLimit {
    /// Bytes of frames taken from the queue and not yet written.
    pub max_bytes: usize,
    /// The peer's address, for the log line when it is disconnected.
    pub peer: String,
}

/// Drive the writing half of a connection until `Close` or the channel
/// ends. Frames are taken from `rx` as soon as they arrive and held here
/// against a byte budget while the socket is slow: a peer that lets more
/// than `limit.max_bytes` pile up is disconnected at once (logged with its
/// address, `abort` cancelled so the reader stops too) instead of being
/// buffered without bound.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Outgoing>,
    limit: SendLimit,
    abort: tokio_util::sync::CancellationToken,
) {
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max_bytes));
    // Unbounded in frames, bounded in bytes by `budget` (a frame has at
    // least one byte of payload).
    let (held_tx, mut held_rx) = mpsc::unbounded_channel();
    let take = async move {
        while let Some(item) = rx.recv().await {
            let permit = match &item {
                Outgoing::Frame(b) | Outgoing::FrameThenCrash(b, _) => {
                    let cost = u32::try_from(b.len().max(1)).unwrap_or(u32::MAX);
                    match budget.clone().try_acquire_many_owned(cost) {
                        Ok(p) => Some(p),
                        Err(_) => return false,
                    }
                }
                Outgoing::Close => None,
            };
            let close = matches!(item, Outgoing::Close);
            if held_tx.send((item, permit)).is_err() || close {
                break;
            }
        }
        true
    };
    let write = async {
        while let Some((item, _permit)) = held_rx.recv().await {
            let res = match item {
                Outgoing::Frame(b) => writer.send(b).await,
                Outgoing::FrameThenCrash(b, point) => {
                    let _ = writer.send(b).await;
                    crate::crash::kill_now(point)
                }
                Outgoing::Close => break,
            };
            if res.is_err() {
                break;
            }
        }
        let _ = SinkExt::<Bytes>::close(&mut writer).await;
    };
    let (mut take, mut write) = (std::pin::pin!(take), std::pin::pin!(write));
    let mut taking = true;
    loop {
        tokio::select! {
            _ = abort.cancelled() => return,
            ok = &mut take, if taking => {
                if !ok {
                    tracing::warn!(
                        peer = %limit.peer,
                        "peer is not reading its messages: more than send_buffer_max_bytes ({} bytes) waiting for it; disconnecting",
                        limit.max_bytes
                    );
                    abort.cancel();
                    return;
                }
                taking = false;
            }
            _ = &mut write => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    fn limit(max_bytes: usize) -> SendLimit {
        SendLimit {
            max_bytes,
            peer: "127.0.0.1:1".into(),
        }
    }

    /// The peer never reads: the socket takes 64 bytes, then frames pile up
    /// in the writer until the fourth 300-byte frame would pass 1000 bytes.
    #[tokio::test]
    async fn a_peer_that_does_not_read_is_cut_off_once_the_byte_budget_is_spent() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(16);
        let abort = CancellationToken::new();
        let writer = FramedWrite::new(ours, codec(1024));
        let task = tokio::spawn(write_loop(writer, rx, limit(1000), abort.clone()));
        for _ in 0..10 {
            if tx
                .send(Outgoing::Frame(Bytes::from(vec![7u8; 300])))
                .await
                .is_err()
            {
                break;
            }
        }
        task.await.expect("writer task");
        assert!(abort.is_cancelled());
    }

    /// A peer that reads gets every frame, in order, and is never cut off,
    /// though four times the budget passes through in all: the budget
    /// bounds what waits, not what was sent.
    #[tokio::test]
    async fn a_reading_peer_gets_everything_and_keeps_its_connection() {
        const ROUND: usize = 3 * 304;
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(16);
        let abort = CancellationToken::new();
        let writer = FramedWrite::new(ours, codec(1024));
        let task = tokio::spawn(write_loop(writer, rx, limit(1000), abort.clone()));
        let (got_tx, mut got_rx) = mpsc::channel(1);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            for _ in 0..4 {
                let mut round = vec![0u8; ROUND];
                theirs
                    .read_exact(&mut round)
                    .await
                    .expect("a round of frames");
                all.extend_from_slice(&round);
                let _ = got_tx.send(()).await;
            }
            all
        });
        for round in 0..4u8 {
            for _ in 0..3 {
                tx.send(Outgoing::Frame(Bytes::from(vec![round; 300])))
                    .await
                    .expect("writer alive");
            }
            got_rx.recv().await.expect("the reader read a round");
        }
        tx.send(Outgoing::Close).await.expect("writer alive");
        task.await.expect("writer task");
        let all = reader.await.expect("reader task");
        assert!(!abort.is_cancelled());
        assert_eq!(all.len(), 4 * ROUND);
        assert_eq!(all[4 + 3 * ROUND], 3);
    }
}

//! The writing half of a connection: frames from a bounded queue to the
//! socket, with a byte budget for a peer that does not read. It never
//! reads, decides nothing about the protocol and never blocks its sender.

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

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
    use crate::net::codec::codec;
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

//! The writing half of a connection: frames from a bounded queue to the
//! socket, with a byte budget for a peer that does not read. Every frame
//! queued when the writer wakes up goes out in one `writev` (length
//! prefixes and payloads side by side, nothing copied), so a turn of the
//! event loop that sends many frames to one peer costs one system call. It
//! never reads, decides nothing about the protocol and never blocks its
//! sender.

use super::codec::LENGTH_PREFIX_BYTES;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// Largest frame payload written; a larger one ends the connection
    /// (after the frames before it), as the peer would refuse it.
    pub max_frame_bytes: usize,
    /// The peer's address, for the log line when it is disconnected.
    pub peer: String,
    /// Once the connection is to close, how long the frames before the
    /// close may take to be written; past it the connection is cut. A peer
    /// that stopped reading (gone behind a partition) must not hold a
    /// close, and with it the reconnect that follows, until TCP gives up.
    /// The connections use their first-frame allowance (the handshake or
    /// pre-authentication timeout): a peer gets as long to take our last
    /// frames as it had to send its first.
    pub close_linger: std::time::Duration,
    /// Cancelled when the connection's reader has ended. After our side is
    /// closed (or a write failed) the writer waits for it at most
    /// `close_linger`, then stops the reader itself: a peer that vanished
    /// without a close (a host gone behind a partition) must not keep the
    /// connection, and the reconnect after it, waiting for an end of
    /// stream that never comes.
    pub reader_done: CancellationToken,
}

/// Most frames in one write: Linux takes at most 1024 slices per `writev`
/// (IOV_MAX), two per frame.
pub const BATCH_FRAMES_MAX: usize = 512;

/// Drive the writing half of a connection until `Close` or the channel
/// ends. Frames are taken from `rx` as soon as they arrive and held here
/// against a byte budget while the socket is slow: a peer that lets more
/// than `limit.max_bytes` pile up is disconnected at once (logged with its
/// address, `abort` cancelled so the reader stops too) instead of being
/// buffered without bound. Whatever is held when a write can start goes out
/// in that one write.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
    limit: SendLimit,
    abort: CancellationToken,
) {
    let mut held = Held::new(limit.max_bytes);
    let mut batch = Batch::default();
    // When the connection must be closed by, once it is to close.
    let mut closing_by: Option<tokio::time::Instant> = None;
    loop {
        if held.items.is_empty() {
            if !held.taking {
                break;
            }
            let item = crate::sim::select! {
                _ = abort.cancelled() => return,
                item = rx.recv() => item,
            };
            if !held.take(item) {
                return over_budget(&limit, &abort);
            }
        }
        // Everything queued by now joins this write.
        while held.taking {
            let item = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            if !held.take(item) {
                return over_budget(&limit, &abort);
            }
        }
        let then = held.fill(&mut batch, limit.max_frame_bytes);
        let written = {
            let mut write = std::pin::pin!(batch.write_to(&mut writer));
            loop {
                if !held.taking && closing_by.is_none() {
                    closing_by = Some(tokio::time::Instant::now() + limit.close_linger);
                }
                let linger = async {
                    match closing_by {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                // While the socket is slow, keep taking frames, so the
                // budget sees a peer that does not read.
                crate::sim::select! {
                    _ = abort.cancelled() => return,
                    r = &mut write => break r,
                    _ = linger => return close_stuck(&limit, &abort),
                    item = rx.recv(), if held.taking => {
                        if !held.take(item) {
                            return over_budget(&limit, &abort);
                        }
                    }
                }
            }
        };
        held.bytes -= batch.cost;
        batch.clear();
        match then {
            Then::More if written.is_ok() => {}
            Then::More | Then::End => break,
            Then::Crash(point) => crate::crash::kill_now(point),
        }
    }
    let linger = tokio::time::sleep(limit.close_linger);
    tokio::pin!(linger);
    crate::sim::select! {
        _ = abort.cancelled() => return,
        _ = writer.shutdown() => {}
        _ = &mut linger => return close_stuck(&limit, &abort),
    }
    crate::sim::select! {
        _ = abort.cancelled() => {}
        _ = limit.reader_done.cancelled() => {}
        _ = &mut linger => {
            tracing::debug!(peer = %limit.peer, "closed our side; no close from the peer within {} ms, stopping", limit.close_linger.as_millis());
            abort.cancel();
        }
    }
}

/// The connection was to close and its last frames could not be written
/// within the linger: log it and stop both halves.
fn close_stuck(limit: &SendLimit, abort: &CancellationToken) {
    tracing::warn!(
        peer = %limit.peer,
        "closing: the peer took none of our last frames within {} ms; cutting the connection",
        limit.close_linger.as_millis()
    );
    abort.cancel();
}

/// The peer let more than the budget pile up: log it and stop both halves.
fn over_budget(limit: &SendLimit, abort: &CancellationToken) {
    tracing::warn!(
        peer = %limit.peer,
        "peer is not reading its messages: more than send_buffer_max_bytes ({} bytes) waiting for it; disconnecting",
        limit.max_bytes
    );
    abort.cancel();
}

/// What was taken from the queue and not yet written, with its cost
/// against the budget.
struct Held {
    items: VecDeque<Outgoing>,
    /// Payload bytes of the frames held, including the batch being written
    /// (a frame costs at least one byte). Never above `max_bytes`.
    bytes: usize,
    max_bytes: usize,
    /// False once `Close` was taken or the queue ended: nothing more is
    /// taken.
    taking: bool,
}

/// What follows the write of a batch.
#[derive(Debug, PartialEq)]
enum Then {
    /// Go on writing.
    More,
    /// Close the connection (`Close`, a frame above the limit).
    End,
    /// Run this crash point (the batch ended with `FrameThenCrash`).
    Crash(&'static str),
}

impl Held {
    fn new(max_bytes: usize) -> Held {
        Held {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
            taking: true,
        }
    }

    /// Hold `item` (`None`: the queue ended). False when its frame does not
    /// fit in the budget: the peer is not reading.
    fn take(&mut self, item: Option<Outgoing>) -> bool {
        let Some(item) = item else {
            self.taking = false;
            return true;
        };
        match &item {
            Outgoing::Frame(b) | Outgoing::FrameThenCrash(b, _) => {
                let cost = b.len().max(1);
                if cost > self.max_bytes - self.bytes {
                    return false;
                }
                self.bytes += cost;
            }
            Outgoing::Close => self.taking = false,
        }
        self.items.push_back(item);
        true
    }

    /// Move the held frames into `batch`, in order, up to the first one
    /// that must be followed by something else than more frames.
    fn fill(&mut self, batch: &mut Batch, max_frame_bytes: usize) -> Then {
        while batch.frames.len() < BATCH_FRAMES_MAX {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            match item {
                Outgoing::Frame(b) if b.len() > max_frame_bytes => {
                    tracing::error!(
                        "a {} byte frame exceeds max_frame_bytes ({max_frame_bytes}); closing the connection",
                        b.len()
                    );
                    return Then::End;
                }
                Outgoing::Frame(b) => batch.push(b),
                Outgoing::FrameThenCrash(b, point) => {
                    if b.len() <= max_frame_bytes {
                        batch.push(b);
                    }
                    return Then::Crash(point);
                }
                Outgoing::Close => return Then::End,
            }
        }
        Then::More
    }
}

/// Frames going out in one write, each behind its length prefix.
#[derive(Default)]
struct Batch {
    frames: Vec<Bytes>,
    prefixes: Vec<[u8; LENGTH_PREFIX_BYTES]>,
    /// What these frames count against the budget.
    cost: usize,
}

impl Batch {
    /// Add a frame of at most `u32::MAX` bytes (the frame limit is far
    /// below).
    fn push(&mut self, frame: Bytes) {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.prefixes.push(len.to_be_bytes());
        self.cost += frame.len().max(1);
        self.frames.push(frame);
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.prefixes.clear();
        self.cost = 0;
    }

    /// Write every frame, with as few system calls as the socket allows
    /// (one, unless it is full), then flush (TLS writes its records then).
    /// `writev`, also for a single slice: the kernel counts it in
    /// `/proc/PID/io` (`syscw`), where `twopc bench` reads writes per
    /// transaction; `send` would not be counted.
    async fn write_to<W: AsyncWrite + Unpin>(&self, writer: &mut W) -> io::Result<()> {
        let mut slices = Vec::with_capacity(2 * self.frames.len());
        for (prefix, frame) in self.prefixes.iter().zip(&self.frames) {
            slices.push(IoSlice::new(prefix));
            if !frame.is_empty() {
                slices.push(IoSlice::new(frame));
            }
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = writer.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::codec::codec;
    use bytes::BytesMut;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Encoder;

    fn limit(max_bytes: usize) -> SendLimit {
        SendLimit {
            max_bytes,
            max_frame_bytes: 1024,
            peer: "127.0.0.1:1".into(),
            close_linger: std::time::Duration::from_secs(600),
            // No reader in these tests: the writer need not wait for one.
            reader_done: {
                let done = CancellationToken::new();
                done.cancel();
                done
            },
        }
    }

    /// A socket that records what each write call got: at most `per_call`
    /// bytes are taken per call.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        per_call: usize,
        shut_down: bool,
    }

    impl Recorder {
        fn new(per_call: usize) -> Recorder {
            Recorder {
                writes: Vec::new(),
                per_call,
                shut_down: false,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut got: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            got.truncate(self.per_call);
            let n = got.len();
            self.writes.push(got);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Frames `0..n` of lengths 0, 37, 74, ... (mod 700), each filled
    /// with its number.
    fn frames(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(vec![i as u8; (i * 37) % 700]))
            .collect()
    }

    /// The bytes the codec writes for `frames`, one frame per write: what
    /// the peer's reader expects.
    fn codec_bytes(frames: &[Bytes]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            codec(1024)
                .encode(f.clone(), &mut out)
                .expect("within the limit");
        }
        out.to_vec()
    }

    /// Queue `items` (then drop the sender) and run the writer over `rec`
    /// until it stops.
    async fn run(rec: &mut Recorder, items: Vec<Outgoing>, limit: SendLimit) {
        let (tx, rx) = mpsc::channel(items.len().max(1));
        for item in items {
            tx.try_send(item).expect("room in the queue");
        }
        drop(tx);
        write_loop(rec, rx, limit, CancellationToken::new()).await;
    }

    #[tokio::test]
    async fn frames_queued_together_leave_in_one_write_as_the_codec_frames_them() {
        let frames = frames(100);
        let mut rec = Recorder::new(usize::MAX);
        let items = frames.iter().cloned().map(Outgoing::Frame).collect();
        run(&mut rec, items, limit(1 << 20)).await;
        assert_eq!(rec.writes.len(), 1);
        assert_eq!(rec.bytes(), codec_bytes(&frames));
        assert!(rec.shut_down, "the end of the queue closes the connection");
    }

    #[tokio::test]
    async fn more_frames_than_one_write_takes_go_out_in_as_few_writes_as_fit() {
        let frames = frames(BATCH_FRAMES_MAX + 88);
        let mut rec = Recorder::new(usize::MAX);
        let items = frames.iter().cloned().map(Outgoing::Frame).collect();
        run(&mut rec, items, limit(1 << 20)).await;
        assert_eq!(rec.writes.len(), 2);
        assert_eq!(rec.bytes(), codec_bytes(&frames));
    }

    #[tokio::test]
    async fn a_socket_that_takes_a_few_bytes_per_call_gets_every_byte_in_order() {
        let frames = frames(40);
        let mut rec = Recorder::new(7);
        let items = frames.iter().cloned().map(Outgoing::Frame).collect();
        run(&mut rec, items, limit(1 << 20)).await;
        let expected = codec_bytes(&frames);
        assert_eq!(rec.bytes(), expected);
        assert_eq!(rec.writes.len(), expected.len().div_ceil(7));
    }

    #[tokio::test]
    async fn close_ends_the_connection_after_the_frames_before_it() {
        let frames = frames(3);
        let mut rec = Recorder::new(usize::MAX);
        let items = vec![
            Outgoing::Frame(frames[0].clone()),
            Outgoing::Frame(frames[1].clone()),
            Outgoing::Close,
            Outgoing::Frame(frames[2].clone()),
        ];
        run(&mut rec, items, limit(1 << 20)).await;
        assert_eq!(rec.bytes(), codec_bytes(&frames[..2]));
        assert!(rec.shut_down);
    }

    #[tokio::test]
    async fn a_frame_above_the_frame_limit_ends_the_connection_after_the_frames_before_it() {
        let small = Bytes::from_static(b"{}");
        let mut rec = Recorder::new(usize::MAX);
        let items = vec![
            Outgoing::Frame(small.clone()),
            Outgoing::Frame(Bytes::from(vec![b' '; 1025])),
            Outgoing::Frame(small.clone()),
        ];
        run(&mut rec, items, limit(1 << 20)).await;
        assert_eq!(rec.bytes(), codec_bytes(&[small]));
        assert!(rec.shut_down);
    }

    /// The peer never reads: the socket takes 64 bytes, then frames pile up
    /// in the writer until the fourth 300-byte frame would pass 1000 bytes.
    #[tokio::test]
    async fn a_peer_that_does_not_read_is_cut_off_once_the_byte_budget_is_spent() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(16);
        let abort = CancellationToken::new();
        let task = tokio::spawn(write_loop(ours, rx, limit(1000), abort.clone()));
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

    /// A close asked for while the peer takes nothing does not wait for the
    /// peer: past the linger the connection is cut (and the close, with
    /// the reconnect behind it, goes ahead).
    #[tokio::test]
    async fn a_close_behind_a_stuck_write_cuts_the_connection_after_the_linger() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(16);
        let abort = CancellationToken::new();
        let limit = SendLimit {
            close_linger: std::time::Duration::from_millis(20),
            ..limit(1000)
        };
        let task = tokio::spawn(write_loop(ours, rx, limit, abort.clone()));
        // More than the pipe holds: the write stays pending.
        tx.send(Outgoing::Frame(Bytes::from(vec![7u8; 300])))
            .await
            .expect("queued");
        tx.send(Outgoing::Close).await.expect("queued");
        // Generous: the linger is 20 ms.
        tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the writer stopped")
            .expect("writer task");
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
        let task = tokio::spawn(write_loop(ours, rx, limit(1000), abort.clone()));
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

//! Seams for running the real nodes inside a seeded, deterministic
//! simulation (the `sim` cargo feature, with `turmoil`): whether the caller
//! runs in one, a seeded random source, and a simulated disk that the log
//! writes to instead of files.
//!
//! With the feature off, [`active`] is a constant `false`, the random draws
//! are the thread's ordinary generator and there is no disk: production
//! code takes exactly the paths it took before. With the feature on but
//! outside a simulation (the rest of the test suite), the same holds.
//!
//! This module is a leaf: it knows nothing of the log's format, the
//! network or the cores.

#[cfg(feature = "sim")]
mod disk;
#[cfg(feature = "sim")]
pub use disk::{DiskFault, SimDisk, SyncOutcome};

/// True while running inside a simulation.
pub fn active() -> bool {
    #[cfg(feature = "sim")]
    {
        turmoil::in_simulation()
    }
    #[cfg(not(feature = "sim"))]
    {
        false
    }
}

#[cfg(feature = "sim")]
thread_local! {
    /// The simulation's random source. Turmoil runs every host on the
    /// thread that runs the simulation, in a fixed order, so one seeded
    /// generator per thread gives every node a reproducible sequence.
    static RNG: std::cell::RefCell<Option<rand::rngs::StdRng>> = const { std::cell::RefCell::new(None) };
    /// Simulated disks by data directory, registered by the harness.
    static DISKS: std::cell::RefCell<std::collections::BTreeMap<std::path::PathBuf, SimDisk>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Seed this thread's simulation random source (the harness, before a run).
#[cfg(feature = "sim")]
pub fn seed(seed: u64) {
    use rand::SeedableRng;
    RNG.with(|r| *r.borrow_mut() = Some(rand::rngs::StdRng::seed_from_u64(seed)));
}

/// Attach `disk` to the data directory `dir`: a log opened there inside a
/// simulation lives on `disk`, not in files.
#[cfg(feature = "sim")]
pub fn attach_disk(dir: &std::path::Path, disk: SimDisk) {
    DISKS.with(|d| d.borrow_mut().insert(dir.to_path_buf(), disk));
}

/// Forget every attached disk (the harness, after a run).
#[cfg(feature = "sim")]
pub fn detach_disks() {
    DISKS.with(|d| d.borrow_mut().clear());
}

/// The simulated disk of data directory `dir`, inside a simulation.
#[cfg(feature = "sim")]
pub fn disk(dir: &std::path::Path) -> Option<SimDisk> {
    if !active() {
        return None;
    }
    DISKS.with(|d| d.borrow().get(dir).cloned())
}

/// A draw in `lo..=hi`: from the seeded source inside a simulation (when
/// seeded), else from the thread's ordinary generator.
pub fn random_range(lo: u64, hi: u64) -> u64 {
    use rand::Rng;
    #[cfg(feature = "sim")]
    if active() {
        let seeded = RNG.with(|r| r.borrow_mut().as_mut().map(|g| g.random_range(lo..=hi)));
        if let Some(v) = seeded {
            return v;
        }
    }
    rand::rng().random_range(lo..=hi)
}

/// Milliseconds since the Unix epoch: the simulation's clock inside one,
/// else the system's.
pub fn unix_millis() -> u128 {
    #[cfg(feature = "sim")]
    if let Some(d) = turmoil::since_epoch() {
        return d.as_millis();
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Deliberate runtime bugs, to show that the runtime-level simulation's
/// checks catch them (with `fault-injection` and `sim`; see
/// tests/simulation_runtime.rs). Each breaks one durability or routing
/// rule of the runtime and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// A participant sends its vote before its `Prepared` record is synced.
    VoteBeforePreparedSynced,
    /// The log writer publishes a batch as durable before its sync returns.
    AckBeforeSync,
    /// A decision the coordinator sends again to a participant (replayed
    /// after the participant reconnects, or resent after silence) goes to
    /// another participant's connection instead.
    DecisionToWrongParticipant,
    /// A coordinator group's leader counts its records durable when it
    /// hands them to Raft, before a majority has them: its COMMIT can leave
    /// and be lost with it, and the next leader aborts the transaction.
    GroupDecisionBeforeCommitted,
}

#[cfg(all(feature = "sim", feature = "fault-injection"))]
thread_local! {
    static BUG: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Arm `bug` (or none) for the simulations run on this thread.
#[cfg(all(feature = "sim", feature = "fault-injection"))]
pub fn arm_bug(bug: Option<Bug>) {
    BUG.with(|b| b.set(bug));
}

/// Is `bug` armed? Only ever inside a simulation built with
/// `fault-injection`; a constant false otherwise.
pub fn bug(bug: Bug) -> bool {
    #[cfg(all(feature = "sim", feature = "fault-injection"))]
    {
        active() && BUG.with(|b| b.get()) == Some(bug)
    }
    #[cfg(not(all(feature = "sim", feature = "fault-injection")))]
    {
        let _ = bug;
        false
    }
}

/// `tokio::select!` whose choice among ready branches replays: inside a
/// simulation the branches are polled in the order written (`biased`),
/// because tokio's random start is seeded from the operating system;
/// outside one it is `tokio::select!` unchanged, fair as before. With the
/// `sim` feature off the biased copy is dead code.
macro_rules! select {
    ($($body:tt)*) => {
        if $crate::sim::active() {
            tokio::select! { biased; $($body)* }
        } else {
            tokio::select! { $($body)* }
        }
    };
}
pub(crate) use select;

#[cfg(feature = "sim")]
thread_local! {
    /// Per host address, how many times its connections were reset.
    static RESETS: std::cell::RefCell<std::collections::BTreeMap<std::net::IpAddr, u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

#[cfg(feature = "sim")]
fn resets_of(ip: std::net::IpAddr) -> u64 {
    RESETS.with(|r| r.borrow().get(&ip).copied().unwrap_or(0))
}

/// Reset every connection the host at `ip` has open now (the harness): its
/// side of each fails its next read or write with `ConnectionReset`, and the
/// peer sees the connection end when that side drops it. Connections made
/// later are not affected.
#[cfg(feature = "sim")]
pub fn reset_connections(ip: std::net::IpAddr) {
    RESETS.with(|r| *r.borrow_mut().entry(ip).or_insert(0) += 1);
}

/// Forget every reset (the harness, after a run).
#[cfg(feature = "sim")]
pub fn forget_resets() {
    RESETS.with(|r| r.borrow_mut().clear());
}

/// A simulated TCP stream that [`reset_connections`] can reset.
#[cfg(feature = "sim")]
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    ip: Option<std::net::IpAddr>,
    born: u64,
}

#[cfg(feature = "sim")]
impl SimStream {
    pub fn new(inner: turmoil::net::TcpStream) -> SimStream {
        let ip = inner.local_addr().ok().map(|a| a.ip());
        let born = ip.map_or(0, resets_of);
        SimStream { inner, ip, born }
    }

    fn reset(&self) -> Option<std::io::Error> {
        let ip = self.ip?;
        (resets_of(ip) != self.born).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (simulated)",
            )
        })
    }
}

#[cfg(feature = "sim")]
impl tokio::io::AsyncRead for SimStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.reset() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(feature = "sim")]
impl tokio::io::AsyncWrite for SimStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(e) = self.reset() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.reset() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.reset() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! Free loopback ports for processes started together on one machine (the
//! local cluster of `twopc demo`, `bench` and `bank`, and the tests), which
//! must know each other's ports before they start.
//!
//! A port bound to 0 comes from the kernel's ephemeral range, the same range
//! every outgoing connection's local port comes from: between the moment
//! such a port is found free and the moment a process listens on it, a
//! connection made by anyone on the machine can take it. These ports are
//! drawn below that range instead (or above it, if it starts low), where only
//! another listener can take one.

use std::sync::atomic::{AtomicU32, Ordering};

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A loopback port nobody listens on now, outside the ephemeral range.
/// Successive calls in one process give different ports.
pub fn free_loopback_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = ephemeral_range();
    let (start, end) = if lo >= 11_000 {
        (10_000, lo)
    } else {
        (hi + 1, 65_536)
    };
    let span = end.saturating_sub(start);
    if span >= 1_000 {
        // Processes drawing at once start at different places.
        let _ = NEXT.compare_exchange(
            0,
            rand::random_range(0..span),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..span.min(4_096) {
            let port = start + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return Ok(port as u16);
            }
        }
    }
    // No room outside the ephemeral range: one from inside it.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(
                !(lo..=hi).contains(&u32::from(p)),
                "{p} is in the ephemeral range {lo}-{hi}"
            );
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("free");
        }
    }
}

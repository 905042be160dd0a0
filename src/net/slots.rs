//! Connection slots of one listening port, as a plain table: which
//! connections hold a slot, which of them have not completed their
//! handshake yet, and from which address. It decides; the listener acts.
//! No sockets, no clock, no tasks here.
//!
//! The rules, in the order they apply to a new connection:
//! 1. An address with `preauth_per_address` connections still in their
//!    handshake gets no more: refused. One address cannot hold the port
//!    with idle sockets.
//! 2. A free shared slot (`shared`) is taken.
//! 3. Otherwise a connection still in its handshake is evicted to make
//!    room: one from the address with the most such connections, the
//!    oldest of them. An idle flood then only displaces itself, and a
//!    legitimate peer from another address is never the one evicted while
//!    the flood's addresses hold more handshakes than its own.
//! 4. Otherwise a reserved slot (`reserved`) is taken, on probation: the
//!    connection keeps it only if its completed handshake qualifies
//!    (a participant on the coordinator port, any authenticated operator on
//!    an admin port); the same eviction applies within the reserve.
//! 5. Otherwise: refused.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// How many connections a port serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLimits {
    /// Slots any connection may hold (`max_connections`).
    pub shared: usize,
    /// Slots kept for connections whose handshake qualifies.
    pub reserved: usize,
    /// Connections of one address still in their handshake.
    pub preauth_per_address: usize,
}

/// Which pool a slot comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Shared,
    Reserved,
}

/// Why a connection gets no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `preauth_per_address` handshakes open.
    AddressBusy,
    /// Every slot is held by a connection that completed its handshake.
    Full,
    /// It holds a reserved slot and its handshake does not qualify.
    NotReserved,
}

/// What to do with a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit<K> {
    /// Serve it from `pool`; first close `evict` (a connection still in
    /// its handshake), whose slot it takes.
    Accept {
        pool: Pool,
        evict: Option<K>,
    },
    Refuse(Refusal),
}

#[derive(Clone, Debug)]
struct Entry<A> {
    addr: A,
    pool: Pool,
    /// Still in its handshake (may be evicted).
    preauth: bool,
}

/// The slot table. `K` orders connections by age (ids are handed out in
/// accept order); `A` is the peer's address.
#[derive(Debug)]
pub struct Slots<K, A> {
    limits: SlotLimits,
    conns: BTreeMap<K, Entry<A>>,
    preauth_by_addr: HashMap<A, usize>,
    used: [usize; 2],
}

fn index(pool: Pool) -> usize {
    match pool {
        Pool::Shared => 0,
        Pool::Reserved => 1,
    }
}

impl<K: Ord + Copy, A: Eq + Hash + Clone> Slots<K, A> {
    pub fn new(limits: SlotLimits) -> Self {
        Slots {
            limits,
            conns: BTreeMap::new(),
            preauth_by_addr: HashMap::new(),
            used: [0, 0],
        }
    }

    /// Connections holding a slot of `pool`.
    pub fn used(&self, pool: Pool) -> usize {
        self.used[index(pool)]
    }

    /// Connections of `addr` still in their handshake.
    pub fn preauth_of(&self, addr: &A) -> usize {
        self.preauth_by_addr.get(addr).copied().unwrap_or(0)
    }

    /// A new connection `conn` from `addr`. On `Accept`, the table already
    /// counts it (and no longer counts the evicted one).
    pub fn admit(&mut self, conn: K, addr: A) -> Admit<K> {
        if self.preauth_of(&addr) >= self.limits.preauth_per_address {
            return Admit::Refuse(Refusal::AddressBusy);
        }
        for (pool, cap) in [
            (Pool::Shared, self.limits.shared),
            (Pool::Reserved, self.limits.reserved),
        ] {
            if self.used(pool) < cap {
                self.insert(conn, addr, pool);
                return Admit::Accept { pool, evict: None };
            }
            if let Some(victim) = self.victim(pool) {
                self.release(victim);
                self.insert(conn, addr, pool);
                return Admit::Accept {
                    pool,
                    evict: Some(victim),
                };
            }
        }
        Admit::Refuse(Refusal::Full)
    }

    /// `conn` completed its handshake; `qualifies` says whether it may keep
    /// a reserved slot. On refusal the table no longer counts it.
    pub fn authenticated(&mut self, conn: K, qualifies: bool) -> Result<Pool, Refusal> {
        let Some(e) = self.conns.get_mut(&conn) else {
            // Evicted meanwhile; the listener closes it.
            return Err(Refusal::Full);
        };
        let pool = e.pool;
        if pool == Pool::Reserved && !qualifies {
            self.release(conn);
            return Err(Refusal::NotReserved);
        }
        if e.preauth {
            e.preauth = false;
            let addr = e.addr.clone();
            self.drop_preauth(&addr);
        }
        Ok(pool)
    }

    /// `conn` is gone (or evicted): free its slot. Unknown ids are ignored.
    pub fn release(&mut self, conn: K) {
        if let Some(e) = self.conns.remove(&conn) {
            self.used[index(e.pool)] -= 1;
            if e.preauth {
                self.drop_preauth(&e.addr);
            }
        }
    }

    fn insert(&mut self, conn: K, addr: A, pool: Pool) {
        *self.preauth_by_addr.entry(addr.clone()).or_insert(0) += 1;
        self.used[index(pool)] += 1;
        self.conns.insert(
            conn,
            Entry {
                addr,
                pool,
                preauth: true,
            },
        );
    }

    fn drop_preauth(&mut self, addr: &A) {
        if let Some(n) = self.preauth_by_addr.get_mut(addr) {
            *n -= 1;
            if *n == 0 {
                self.preauth_by_addr.remove(addr);
            }
        }
    }

    /// The connection of `pool` still in its handshake whose address has
    /// the most handshakes open; the oldest among equals.
    fn victim(&self, pool: Pool) -> Option<K> {
        let mut best: Option<(usize, K)> = None;
        for (k, e) in &self.conns {
            if !e.preauth || e.pool != pool {
                continue;
            }
            let n = self.preauth_of(&e.addr);
            // Iteration is oldest first: only a strictly busier address
            // replaces the candidate.
            if best.is_none_or(|(m, _)| n > m) {
                best = Some((n, *k));
            }
        }
        best.map(|(_, k)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(shared: usize, reserved: usize, per: usize) -> Slots<u32, &'static str> {
        Slots::new(SlotLimits {
            shared,
            reserved,
            preauth_per_address: per,
        })
    }

    fn accept(pool: Pool, evict: Option<u32>) -> Admit<u32> {
        Admit::Accept { pool, evict }
    }

    #[test]
    fn one_address_cannot_hold_more_than_its_handshakes() {
        let mut s = slots(10, 0, 2);
        assert_eq!(s.admit(1, "a"), accept(Pool::Shared, None));
        assert_eq!(s.admit(2, "a"), accept(Pool::Shared, None));
        assert_eq!(s.admit(3, "a"), Admit::Refuse(Refusal::AddressBusy));
        // Once one of them authenticates, the address may open another.
        assert_eq!(s.authenticated(1, false), Ok(Pool::Shared));
        assert_eq!(s.admit(4, "a"), accept(Pool::Shared, None));
        assert_eq!(s.admit(5, "b"), accept(Pool::Shared, None));
        assert_eq!((s.used(Pool::Shared), s.preauth_of(&"a")), (4, 2));
    }

    #[test]
    fn a_full_port_evicts_a_handshake_of_the_busiest_address_oldest_first() {
        let mut s = slots(5, 0, 3);
        for (k, a) in [(1, "x"), (2, "y"), (3, "y"), (4, "x"), (5, "y")] {
            assert_eq!(s.admit(k, a), accept(Pool::Shared, None));
        }
        // y has three handshakes open, x two: y's oldest goes.
        assert_eq!(s.admit(6, "p"), accept(Pool::Shared, Some(2)));
        // Now x and y have two each: the oldest of both, x's 1.
        assert_eq!(s.admit(7, "y"), accept(Pool::Shared, Some(1)));
        // p (one handshake) is never chosen while others have more.
        assert_eq!(s.admit(8, "x"), accept(Pool::Shared, Some(3)));
        assert_eq!(s.preauth_of(&"p"), 1);
        assert_eq!(s.used(Pool::Shared), 5);
    }

    #[test]
    fn reserved_slots_serve_only_qualifying_handshakes_once_the_shared_ones_are_authenticated() {
        let mut s = slots(2, 1, 4);
        assert_eq!(s.admit(1, "c"), accept(Pool::Shared, None));
        assert_eq!(s.admit(2, "c"), accept(Pool::Shared, None));
        assert_eq!(s.authenticated(1, false), Ok(Pool::Shared));
        assert_eq!(s.authenticated(2, false), Ok(Pool::Shared));
        // No handshake left to evict in the shared pool: the reserve.
        assert_eq!(s.admit(3, "c"), accept(Pool::Reserved, None));
        assert_eq!(s.authenticated(3, false), Err(Refusal::NotReserved));
        assert_eq!(s.used(Pool::Reserved), 0);
        assert_eq!(s.admit(4, "p"), accept(Pool::Reserved, None));
        assert_eq!(s.authenticated(4, true), Ok(Pool::Reserved));
        assert_eq!(s.admit(5, "p"), Admit::Refuse(Refusal::Full));
        s.release(1);
        assert_eq!(s.admit(6, "c"), accept(Pool::Shared, None));
    }

    #[test]
    fn an_evicted_connection_that_finishes_its_handshake_is_refused_and_release_is_idempotent() {
        let mut s = slots(1, 0, 2);
        assert_eq!(s.admit(1, "a"), accept(Pool::Shared, None));
        assert_eq!(s.admit(2, "b"), accept(Pool::Shared, Some(1)));
        assert_eq!(s.authenticated(1, true), Err(Refusal::Full));
        s.release(1);
        s.release(1);
        assert_eq!((s.used(Pool::Shared), s.preauth_of(&"a")), (1, 0));
    }
}

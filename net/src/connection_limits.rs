//! Kafka's connection quotas over the whole broker: `max.connections` (client connections open
//! at once, over every shard) and `max.connections.per.ip` (from one client address). With
//! SO_REUSEPORT the kernel spreads one client's connections over the shards, so both counts
//! must be shared by the shards: one atomic for the total and, only when a per-address limit
//! is set, a small map under a mutex, touched once per accept and once per close.
//!
//! What happens over a limit is Kafka's (`SocketServer`'s `ConnectionQuotas.inc`): at
//! `max.connections` the acceptor stops accepting until a connection closes (new clients wait
//! in the listen backlog and their connect times out on their side if it lasts); over
//! `max.connections.per.ip` the new connection is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The limits, shared by every shard of a broker.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Client connections open at once, over every shard.
    connections_max: usize,
    /// Client connections from one address; `usize::MAX`: no limit (Kafka's default).
    connections_per_ip_max: usize,
    open: AtomicUsize,
    /// Open connections per client address; kept only while `connections_per_ip_max` is set,
    /// and only for addresses with a connection open, so bounded by `connections_max`.
    open_per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections` are open: wait for one to close, then ask again.
    BrokerFull { connections_max: usize },
    /// `max.connections.per.ip` are open from this address: close the new one.
    AddressFull { connections_per_ip_max: usize },
}

/// A connection's place in the counts, given back when it is dropped.
#[derive(Debug)]
#[must_use = "the connection counts as open only while this lives"]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl ConnectionLimits {
    /// `connections_per_ip_max` of `None` is no per-address limit.
    pub fn new(connections_max: usize, connections_per_ip_max: Option<usize>) -> ConnectionLimits {
        assert!(connections_max > 0, "at least one connection");
        ConnectionLimits {
            connections_max,
            connections_per_ip_max: connections_per_ip_max.unwrap_or(usize::MAX),
            open: AtomicUsize::new(0),
            open_per_ip: Mutex::default(),
        }
    }

    /// No limit at all (tests, and brokers built without a configuration).
    pub fn unlimited() -> ConnectionLimits {
        ConnectionLimits::new(usize::MAX, None)
    }

    /// Client connections open now, over every shard.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a new connection from `address` if both limits allow it (the broker's first, as
    /// Kafka checks them).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.connections_max).then_some(open + 1)
            });
        if taken.is_err() {
            return Err(Refusal::BrokerFull {
                connections_max: self.connections_max,
            });
        }
        if self.connections_per_ip_max != usize::MAX {
            let mut per_ip = self.per_ip();
            let from_address = per_ip.entry(address).or_insert(0);
            if *from_address >= self.connections_per_ip_max {
                if *from_address == 0 {
                    per_ip.remove(&address);
                }
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::AddressFull {
                    connections_per_ip_max: self.connections_per_ip_max,
                });
            }
            *from_address += 1;
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            address,
        })
    }

    fn per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts are updated whole under the lock; a panic cannot leave one half-changed.
        self.open_per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let limits = &self.limits;
        if limits.connections_per_ip_max != usize::MAX {
            let mut per_ip = limits.per_ip();
            if let Some(from_address) = per_ip.get_mut(&self.address) {
                *from_address -= 1;
                if *from_address == 0 {
                    per_ip.remove(&self.address);
                }
            }
        }
        limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_broker_limit_counts_every_connection_and_frees_on_close() {
        let limits = Arc::new(ConnectionLimits::new(2, None));
        let first = limits.admit(ONE).unwrap();
        let _second = limits.admit(TWO).unwrap();
        assert_eq!(
            limits.admit(ONE).unwrap_err(),
            Refusal::BrokerFull { connections_max: 2 }
        );
        assert_eq!(limits.open(), 2);
        drop(first);
        assert_eq!(limits.open(), 1);
        let _third = limits.admit(ONE).expect("a slot freed by a close");
    }

    #[test]
    fn the_address_limit_counts_per_address_and_forgets_addresses_without_connections() {
        let limits = Arc::new(ConnectionLimits::new(10, Some(2)));
        let one = [limits.admit(ONE).unwrap(), limits.admit(ONE).unwrap()];
        assert_eq!(
            limits.admit(ONE).unwrap_err(),
            Refusal::AddressFull {
                connections_per_ip_max: 2
            }
        );
        assert_eq!(limits.open(), 2, "a refused connection is not counted");
        let _two = limits
            .admit(TWO)
            .expect("another address has its own count");
        drop(one);
        assert_eq!(limits.per_ip().len(), 1, "only addresses with connections");
        let _again = limits.admit(ONE).unwrap();
        assert_eq!(limits.open(), 2);
    }

    #[test]
    fn an_address_limit_of_zero_refuses_everyone() {
        let limits = Arc::new(ConnectionLimits::new(10, Some(0)));
        assert!(limits.admit(ONE).is_err());
        assert!(limits.per_ip().is_empty());
        assert_eq!(limits.open(), 0);
    }
}

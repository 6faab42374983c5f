//! Admission to a listener. Three bounds, each also per peer address:
//! - connections in all (the API bounds them per peer too; the agent listener does not, since
//!   a whole site may sit behind one NAT address);
//! - connections still in their TLS handshake, a smaller budget of their own, so a flood of
//!   slow or never-finished handshakes cannot lock out the clients that finish theirs;
//! - each handshake has a deadline (the listener's, see [`HANDSHAKE_DEADLINE`]).
//!
//! A refused connection is closed at once. Refusals are logged at most every
//! [`REFUSAL_LOG_EVERY`], with how many there were, so a flood does not flood the log too.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::{KeyedLimit, KeyedPermit};

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Refusals are logged at most this often.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub connections: usize,
    /// `None`: no per-peer bound on established connections.
    pub connections_per_peer: Option<usize>,
    pub handshakes: usize,
    pub handshakes_per_peer: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    PeerFull,
    HandshakesFull,
    PeerHandshakesFull,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Full => "the connection limit is reached",
            Refusal::PeerFull => "this address has its most connections open",
            Refusal::HandshakesFull => "too many TLS handshakes are in progress",
            Refusal::PeerHandshakesFull => "this address has its most TLS handshakes in progress",
        })
    }
}

/// One listener's admission state.
#[derive(Debug)]
pub struct Admission {
    what: &'static str,
    bounds: Bounds,
    connections: Arc<Semaphore>,
    per_peer: Option<Arc<KeyedLimit<IpAddr>>>,
    handshakes: Arc<Semaphore>,
    handshakes_per_peer: Arc<KeyedLimit<IpAddr>>,
    refused: AtomicU64,
    last_log_ms: AtomicI64,
}

/// An admitted connection's places; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _connection: OwnedSemaphorePermit,
    _peer: Option<KeyedPermit<IpAddr>>,
    handshake: Option<(OwnedSemaphorePermit, KeyedPermit<IpAddr>)>,
}

impl Admitted {
    /// The handshake finished: its places go back to the handshake budget.
    pub fn handshake_done(&mut self) {
        self.handshake = None;
    }
}

impl Admission {
    /// Admission for the listener called `what` (for the log).
    pub fn new(what: &'static str, bounds: Bounds) -> Self {
        Self {
            what,
            bounds,
            connections: Arc::new(Semaphore::new(bounds.connections)),
            per_peer: bounds.connections_per_peer.map(KeyedLimit::new),
            handshakes: Arc::new(Semaphore::new(bounds.handshakes)),
            handshakes_per_peer: KeyedLimit::new(bounds.handshakes_per_peer),
            refused: AtomicU64::new(0),
            last_log_ms: AtomicI64::new(0),
        }
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Admits a connection from `peer`, or says why not (and logs it, now and then).
    pub fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let admitted = self.try_admit(peer);
        if let Err(why) = admitted {
            self.note_refusal(peer, why);
        }
        admitted
    }

    fn try_admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let handshake_slot = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::HandshakesFull)?;
        let handshake_peer = self
            .handshakes_per_peer
            .try_acquire(peer)
            .ok_or(Refusal::PeerHandshakesFull)?;
        let peer_slot = match &self.per_peer {
            Some(limit) => Some(limit.try_acquire(peer).ok_or(Refusal::PeerFull)?),
            None => None,
        };
        let connection = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        Ok(Admitted {
            _connection: connection,
            _peer: peer_slot,
            handshake: Some((handshake_slot, handshake_peer)),
        })
    }

    fn note_refusal(&self, peer: IpAddr, why: Refusal) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let every = i64::try_from(REFUSAL_LOG_EVERY.as_millis()).unwrap_or(i64::MAX);
        if now - last >= every
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = self.what,
                %peer,
                reason = %why,
                refused_so_far = refused,
                "refusing connections"
            );
        }
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn handshakes_and_connections_are_bounded_per_peer_and_in_all() {
        let admission = Admission::new(
            "test",
            Bounds {
                connections: 4,
                connections_per_peer: Some(3),
                handshakes: 3,
                handshakes_per_peer: 2,
            },
        );
        let mut a1 = admission.admit(ip(2)).unwrap();
        let mut a2 = admission.admit(ip(2)).unwrap();
        assert_eq!(
            admission.admit(ip(2)).unwrap_err(),
            Refusal::PeerHandshakesFull
        );
        // Another address still gets in while the first one's handshakes hang.
        let mut b1 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(3)).unwrap_err(), Refusal::HandshakesFull);
        // Finished handshakes free handshake places but keep their connection places.
        a1.handshake_done();
        a2.handshake_done();
        b1.handshake_done();
        let _a3 = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).unwrap_err(), Refusal::PeerFull);
        let _c = admission.admit(ip(3)).unwrap_err();
        assert_eq!(admission.admit(ip(4)).unwrap_err(), Refusal::Full);
        drop(b1);
        assert!(
            admission.admit(ip(4)).is_ok(),
            "a closed connection's place is free"
        );
        assert!(admission.refused() >= 4);
    }
}

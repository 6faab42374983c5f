//! The agent gateway: the mTLS listener agents dial, one task per connection.
//!
//! The TLS ClientHello's ALPN picks the configuration before the handshake completes:
//! `cordon/1` requires a client certificate from our CA that is not on the CRL; `cordon-enroll/1`
//! takes none and accepts only an enrolment request. Everything else is refused and logged.
//!
//! The gateway speaks the wire only; what an agent's messages mean is [`crate::sessions`]'s.

pub mod enroll;
pub mod session;

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    listen::admission::{Admission, Admitted, Bounds},
    state::Shared,
};

/// Longest a TLS handshake (and the hello after it) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once, and from one address. Agents are not bounded per
/// address once connected (a whole site may sit behind one NAT address), but their handshakes
/// are, so a flood from one address leaves room for everyone else's.
pub const HANDSHAKES: usize = 2048;
pub const HANDSHAKES_PER_PEER: usize = 512;

/// Accepts agent connections until `shutdown`, holding at most `max_connections` at once.
pub async fn serve(
    controller: Shared,
    listener: TcpListener,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(
        "agents",
        Bounds {
            connections: max_connections,
            connections_per_peer: None,
            handshakes: HANDSHAKES,
            handshakes_per_peer: HANDSHAKES_PER_PEER,
        },
    );
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "agent listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(admitted) = admission.admit(peer.ip()) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let controller = controller.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(handle(controller, tcp, peer, shutdown, admitted));
    }
    tracker.close();
    // Sessions see the same shutdown token and say goodbye; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

async fn handle(
    controller: Shared,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    mut admitted: Admitted,
) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refused agent connection: bad TLS client hello");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "refused agent connection: TLS client hello timed out");
            return;
        }
    };
    let alpn: Vec<Vec<u8>> = start
        .client_hello()
        .alpn()
        .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    let enroll = alpn.iter().any(|p| p == cordon_protocol::ALPN_ENROLL);
    let session = alpn.iter().any(|p| p == cordon_protocol::ALPN_SESSION);
    let config = if session {
        controller.tls.session()
    } else if enroll {
        controller.tls.enroll()
    } else {
        tracing::warn!(%peer, "refused agent connection: no Cordon ALPN protocol offered");
        return;
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refused agent connection: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "refused agent connection: TLS handshake timed out");
            return;
        }
    };
    // A session frees its handshake slot once its hello is accepted; an enrolment holds it to
    // the end (it is one request and one answer, under the handshake timeout).
    if session {
        session::run(controller, tls, peer, shutdown, &mut admitted).await;
    } else {
        enroll::run(controller, tls, peer).await;
    }
    drop(admitted);
}

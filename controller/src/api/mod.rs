//! The HTTPS API under `/api/v1`: JSON, bearer tokens with roles, errors as
//! `{ "error": …, "detail": … }`. One file per resource.

pub mod actions;
pub mod agents;
pub mod alerts;
pub mod api_tokens;
pub mod audit;
pub mod auth;
pub mod error;
pub mod events;
pub mod evidence;
pub mod exchange;
pub mod health;
pub mod hunts;
pub mod incidents;
pub mod lookup;
pub mod observables;
pub mod playbooks;
pub mod recorder;
pub mod routes;
pub mod similar;
pub mod suggest;
pub mod tasks;
pub mod tokens;
pub mod watches;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use crate::listen::{
    admission::{Admission, Bounds, HANDSHAKE_DEADLINE},
    idle::{Busy, IdleTimeout},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// Handlers' state: the whole controller.
pub type AppState = Shared;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most API connections served at once.
pub const MAX_API_CONNECTIONS: usize = 1024;
/// The API listener's bounds: 1,024 connections, 64 from one address, and 256 TLS
/// handshakes in progress, 16 from one address (see [`crate::listen::admission`]).
pub const API_BOUNDS: Bounds = Bounds {
    connections: MAX_API_CONNECTIONS,
    connections_per_peer: Some(64),
    handshakes: 256,
    handshakes_per_peer: 16,
};
/// An API connection on which nothing moved for this long, with no request in flight, is
/// closed (live event streams send a keep-alive every 15 s; a long-poll keeps its connection
/// busy for as long as it waits).
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// All API routes.
pub fn router(state: AppState) -> Router {
    let (routes, _) = routes::api_routes().split_for_parts();
    routes
        .fallback(error::no_route)
        // Runs after routing (so it sees the matched route) and before every handler.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            recorder::record,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API over TLS until `shutdown`, then lets open requests finish (bounded).
pub async fn serve(state: AppState, listener: TcpListener, shutdown: CancellationToken) {
    let config = match state.tls.api() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the API TLS configuration");
            return;
        }
    };
    let acceptor = TlsAcceptor::from(config);
    let app = router(state);
    let admission = Admission::new("api", API_BOUNDS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection's task, so none outlives the server (and the store it reads).
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(mut admitted) = admission.admit(peer.ip()) else {
            continue;
        };
        let acceptor = acceptor.clone();
        let busy = Busy::default();
        let service = InFlight {
            inner: TowerToHyperService::new(app.clone()),
            busy: busy.clone(),
        };
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let tcp = IdleTimeout::new(tcp, API_IDLE_TIMEOUT).with_busy(busy);
            let tls = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "API TLS handshake timed out");
                    return;
                }
            };
            admitted.handshake_done();
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
            drop(admitted);
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after 5 s; closing them");
    }
    connections.shutdown().await;
}

/// A connection's service, handing each request the connection's [`Busy`] (as an extension)
/// so a handler that waits on purpose — a long-poll — marks the connection busy for as long as
/// it waits. Nothing else does: a client that stalls its request body is still idle.
#[derive(Clone)]
struct InFlight<S> {
    inner: S,
    busy: Busy,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for InFlight<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.busy.clone());
        self.inner.call(request)
    }
}

/// Marks the request's connection busy until the guard drops: for long-polls.
pub fn waiting(busy: Option<axum::Extension<Busy>>) -> Option<crate::listen::idle::BusyGuard> {
    busy.map(|axum::Extension(busy)| busy.start())
}

#[cfg(test)]
mod tests {
    use hyper::service::Service;

    use super::*;

    /// Answers whether the request carried a `Busy`, and holds it busy meanwhile.
    #[derive(Clone)]
    struct Probe;

    impl Service<hyper::Request<()>> for Probe {
        type Response = bool;
        type Error = ();
        type Future = std::future::Ready<Result<bool, ()>>;

        fn call(&self, request: hyper::Request<()>) -> Self::Future {
            let busy = request.extensions().get::<Busy>().cloned();
            let guard = waiting(busy.map(axum::Extension));
            let active = guard.is_some();
            std::future::ready(Ok(active))
        }
    }

    #[tokio::test]
    async fn only_a_handler_that_waits_marks_the_connection_busy() {
        let busy = Busy::default();
        let service = InFlight {
            inner: Probe,
            busy: busy.clone(),
        };
        assert!(
            !busy.active(),
            "a request alone (its body unread) is not busy"
        );
        assert!(service.call(hyper::Request::new(())).await.unwrap());
        assert!(!busy.active(), "and the wait's guard let go when it ended");
    }
}

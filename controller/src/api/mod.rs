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
pub mod health;
pub mod hunts;
pub mod incidents;
pub mod playbooks;
pub mod recorder;
pub mod routes;
pub mod tasks;
pub mod tokens;
pub mod types;
pub mod watches;
pub mod webhooks;

use std::{future::Future, pin::Pin, time::Duration};

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
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        tokio::spawn(async move {
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
}

/// A connection's service, counting each request in `busy` until its response is ready, so a
/// long-poll does not count as an idle connection.
#[derive(Clone)]
struct InFlight<S> {
    inner: S,
    busy: Busy,
}

impl<S, R> hyper::service::Service<R> for InFlight<S>
where
    S: hyper::service::Service<R, Future: Send + 'static>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        let guard = self.busy.start();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper::service::Service;
    use tokio::sync::Notify;

    use super::*;

    /// Answers once `go` is notified.
    #[derive(Clone)]
    struct Slow(Arc<Notify>);

    impl Service<()> for Slow {
        type Response = ();
        type Error = ();
        type Future = Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;

        fn call(&self, (): ()) -> Self::Future {
            let go = self.0.clone();
            Box::pin(async move {
                go.notified().await;
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_request_counts_as_in_flight_until_its_response_is_ready() {
        let go = Arc::new(Notify::new());
        let busy = Busy::default();
        let service = InFlight {
            inner: Slow(go.clone()),
            busy: busy.clone(),
        };
        let response = tokio::spawn(service.call(()));
        tokio::task::yield_now().await;
        assert!(busy.active(), "a long-poll keeps its connection busy");
        go.notify_one();
        response.await.unwrap().unwrap();
        assert!(!busy.active(), "and lets it go when answered");
    }
}

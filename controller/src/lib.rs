//! The Cordon controller: the agent gateway (mTLS), the store, the HTTPS API, and the responder
//! CLI `cordon` that talks to it.
#![forbid(unsafe_code)]

pub mod actions;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod cli;
pub mod deployment;
pub mod events;
pub mod evidence;
pub mod gateway;
pub mod hunts;
pub mod incidents;
pub mod limits;
pub mod listen;
pub mod pki;
pub mod playbooks;
#[cfg(feature = "quickstart")]
pub mod quickstart;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod watches;
pub mod webhooks;

/// Milliseconds since the Unix epoch: the store's time unit.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `e` and every error under it, `: `-separated (an HTTP client's "error sending request"
/// alone says nothing of the refused connection or bad certificate beneath).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

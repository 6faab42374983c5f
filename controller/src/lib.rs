//! The Cordon controller: the agent gateway (mTLS), the store, the HTTPS API that serves the
//! contract in `cordon-api`, and the domain between them (incidents, playbooks, actions).
#![forbid(unsafe_code)]

pub mod actions;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod deployment;
pub mod events;
pub mod evidence;
pub mod exchange;
pub mod gateway;
pub mod hunts;
pub mod incidents;
pub mod limits;
pub mod listen;
pub mod observables;
pub mod pki;
pub mod playbooks;
#[cfg(feature = "quickstart")]
pub mod quickstart;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod similar;
pub mod state;
pub mod store;
pub mod suggest;
pub mod tasks;
pub mod tls;
pub mod watches;
pub mod webhooks;

pub use cordon_api::{format::error_chain, now_ms};

//! Cordon's wire protocol: what the agent and the controller say to each other, and how it is
//! framed on the wire. Types and codecs only; no sockets and no policy live here.
//!
//! Layers, bottom up:
//! - [`frame`]: u32 big-endian length + payload, the length checked before any allocation;
//! - [`codec`]: bincode with a decode limit and no trailing bytes (the only place bincode is named);
//! - [`connection`]: typed send/receive over any async byte stream;
//! - [`hello`], [`message`], [`enroll`]: the messages themselves;
//! - [`action`]: the signed containment-action envelope and its canonical signing bytes;
//! - [`evidence`]: the agent-signed manifest that comes with fetched files and snapshots;
//! - [`hunt`]: what a hunt query may say and what "match" means, for both sides.
#![forbid(unsafe_code)]

pub mod action;
pub mod cidr;
pub mod codec;
pub mod collect;
pub mod connection;
pub mod enroll;
pub mod error;
pub mod evidence;
pub mod fingerprint;
pub mod frame;
pub mod hello;
pub mod hunt;
pub mod inventory;
pub mod message;
pub mod receipt;

pub use error::ProtocolError;

/// The newest protocol version this build speaks. Bumped on any change to a message that an
/// older peer could not decode: 2 added [`message::AgentMessage::PolicyChanged`]; 3 added signed
/// reads (a fetch's `authorization`, the policy's `signed_reads`); 4 added
/// [`message::TaskKind::Quarantined`] and [`action::Action::Terminate`].
pub const PROTOCOL_VERSION: u32 = 4;

/// The oldest protocol version this build still speaks, so a controller can be upgraded before
/// its agents: a session runs at the agent's version, and the controller never sends such an
/// agent a message it could not decode (see [`message::TaskKind::since_version`]).
pub const OLDEST_PROTOCOL_VERSION: u32 = 3;

/// TLS ALPN protocol name for an enrolled agent's session (client certificate required).
pub const ALPN_SESSION: &[u8] = b"cordon/1";
/// TLS ALPN protocol name for enrolment (no client certificate yet; a one-time token instead).
pub const ALPN_ENROLL: &[u8] = b"cordon-enroll/1";

/// The DNS name every controller certificate carries and every agent verifies, whatever address
/// it dialled: agents reach controllers through NAT, proxies and changing addresses, so identity
/// comes from the private CA, not from the address.
pub const CONTROLLER_SERVER_NAME: &str = "controller.cordon";

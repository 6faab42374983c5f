//! Agents' sessions as the domain sees them, whatever carries them: who is connected
//! ([`registry`]), when they were last seen ([`presence`]), and the one entry point for what a
//! session brings in ([`inbox::Inbox`]). The gateway ([`crate::gateway`]) speaks the wire
//! (TLS, hellos, frames, heartbeat answers) and hands everything else to an inbox; nothing here
//! knows about sockets.

pub mod inbox;
pub mod presence;
pub mod registry;
pub mod starts;
pub mod transfer;

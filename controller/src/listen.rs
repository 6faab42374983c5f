//! What both of the controller's listeners (agents, API) do with a connection before it is
//! theirs: [`admission`] decides whether it may come in at all, and [`idle`] closes it once
//! nothing has moved on it for too long.

pub mod admission;
pub mod idle;

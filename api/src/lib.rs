//! The contract of Cordon's HTTP API (`/api/v1`): every request and response body, one module
//! per resource. The controller serves these types and the `cordon` CLI (and any Rust client)
//! sends and reads them; nothing here knows HTTP, the store or the controller's internals.
//!
//! Conventions: times are milliseconds since the Unix epoch (`*_at_ms`); durations are seconds
//! (`*_secs`); enumerations are lowercase (`snake_case`) strings; byte strings are lowercase
//! hex.

/// `stage == "closed"`: an enumeration compares with its name (its `as_str`).
#[macro_export]
#[doc(hidden)]
macro_rules! eq_name {
    ($($t:ty),*) => {$(
        impl PartialEq<&str> for $t {
            fn eq(&self, name: &&str) -> bool {
                self.as_str() == *name
            }
        }
    )*};
}

pub mod actions;
pub mod agents;
pub mod alerts;
pub mod audit;
pub mod error;
pub mod events;
pub mod evidence;
pub mod format;
pub mod hunts;
pub mod incidents;
pub mod lookup;
pub mod observables;
pub mod playbooks;
pub mod similar;
pub mod suggest;
pub mod tasks;
pub mod tokens;
pub mod watches;
pub mod webhooks;

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

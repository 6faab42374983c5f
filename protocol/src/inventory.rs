//! What an agent tells the controller about its host when it says hello.

use serde::{Deserialize, Serialize};

/// Host facts sent in the agent's hello and shown by `cordon agents show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    pub hostname: String,
    /// OS name and version, e.g. "Debian GNU/Linux 12".
    pub os: String,
    pub kernel: String,
    /// CPU architecture, e.g. "x86_64".
    pub arch: String,
    /// Interface addresses (IPv4 and IPv6), without loopback.
    pub addresses: Vec<String>,
    pub agent_version: String,
    /// Host boot time, milliseconds since the Unix epoch.
    pub boot_time_ms: i64,
    /// What the agent's containment policy accepts (public facts only), so the controller can
    /// hold an action until it has enough signatures and refuse early what the agent would.
    pub action_policy: crate::action::PolicySummary,
}

//! Host facts for the hello: hostname, OS, kernel, architecture, addresses, boot time.

use cordon_protocol::inventory::Inventory;
use sysinfo::{Networks, System};

/// This host's name ("unknown" if the OS will not say).
pub fn hostname() -> String {
    System::host_name().unwrap_or_else(|| "unknown".to_string())
}

/// Collects the inventory. Cheap: no process or CPU scan.
pub fn collect() -> Inventory {
    let networks = Networks::new_with_refreshed_list();
    let mut addresses: Vec<String> = networks
        .values()
        .flat_map(|data| data.ip_networks().iter().map(|n| n.addr))
        .filter(|addr| !addr.is_loopback())
        .map(|addr| addr.to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    Inventory {
        hostname: hostname(),
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        addresses,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        boot_time_ms: i64::try_from(System::boot_time())
            .unwrap_or(0)
            .saturating_mul(1000),
        // Filled in by the session from the agent's policy (see `crate::policy`).
        action_policy: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inventory_names_this_host() {
        let inv = super::collect();
        assert!(!inv.hostname.is_empty());
        assert!(!inv.kernel.is_empty());
        assert!(inv.boot_time_ms > 0);
        assert!(inv.addresses.iter().all(|a| a != "127.0.0.1" && a != "::1"));
    }
}

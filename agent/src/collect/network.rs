//! Network (`TaskKind::Network`): TCP and UDP sockets over IPv4 and IPv6 from
//! `/proc/net/{tcp,tcp6,udp,udp6}` with the process that owns each, and the interfaces with their
//! addresses (sysinfo).
//!
//! Ownership comes from the other side: every `/proc/PID/fd/*` that links to `socket:[INODE]`.
//! Processes that exit mid-scan or deny access are skipped; their sockets are listed without an
//! owner.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use cordon_protocol::{
    collect::{InterfaceInfo, NetworkSnapshot, SocketInfo},
    message::TaskError,
};
use sysinfo::Networks;

use super::{io_error, procfs};

/// The socket tables: file, protocol, family.
const TABLES: [(&str, &str, u8); 4] = [
    ("/proc/net/tcp", "tcp", 4),
    ("/proc/net/tcp6", "tcp", 6),
    ("/proc/net/udp", "udp", 4),
    ("/proc/net/udp6", "udp", 6),
];

/// Sockets, their owners and the interfaces. A missing IPv6 table (IPv6 disabled) is an empty
/// table; any other table that cannot be read means no usable `/proc`, which is an error.
pub fn snapshot() -> Result<NetworkSnapshot, TaskError> {
    Ok(NetworkSnapshot {
        collected_at_ms: crate::now_ms(),
        sockets: sockets_where(|_| true)?,
        interfaces: interfaces(),
    })
}

/// The sockets `keep` accepts, with their owners. Owners are looked up for those only (the
/// expensive part), so a hunt for one remote port does not resolve every socket on the host.
pub(crate) fn sockets_where(
    keep: impl Fn(&SocketInfo) -> bool,
) -> Result<Vec<SocketInfo>, TaskError> {
    let mut sockets = Vec::new();
    for (file, protocol, family) in TABLES {
        match std::fs::read_to_string(file) {
            Ok(text) => sockets.extend(
                parse_table(&text, protocol, family)
                    .into_iter()
                    .filter(&keep),
            ),
            Err(e) if family == 6 && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(Path::new(file), &e)),
        }
    }
    // Inode 0: sockets no descriptor holds any more (TIME_WAIT, orphaned FIN_WAIT).
    let wanted: HashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    let owners = socket_owners(&wanted);
    for socket in &mut sockets {
        if let Some((pid, name)) = owners.get(&socket.inode) {
            socket.pid = Some(*pid);
            socket.process_name = Some(name.clone());
        }
    }
    Ok(sockets)
}

/// Interfaces, sorted by name, with "addr/prefix" addresses.
fn interfaces() -> Vec<InterfaceInfo> {
    let networks = Networks::new_with_refreshed_list();
    let mut out: Vec<InterfaceInfo> = networks
        .iter()
        .map(|(name, data)| InterfaceInfo {
            name: name.clone(),
            mac: data.mac_address().to_string(),
            addresses: data
                .ip_networks()
                .iter()
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Parses one `/proc/net/{tcp,udp}[6]` table. Lines that do not parse are skipped: the format is
/// the kernel's and has not changed in decades, so a bad line means a truncated read, not input
/// to reject.
pub fn parse_table(text: &str, protocol: &str, family: u8) -> Vec<SocketInfo> {
    text.lines()
        .skip(1)
        .filter_map(|line| parse_line(line, protocol, family))
        .collect()
}

/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …`
fn parse_line(line: &str, protocol: &str, family: u8) -> Option<SocketInfo> {
    let fields: Vec<&str> = line.split_ascii_whitespace().take(10).collect();
    if fields.len() < 10 {
        return None;
    }
    let (local, local_port) = parse_endpoint(fields[1])?;
    let (remote, remote_port) = parse_endpoint(fields[2])?;
    let state = u8::from_str_radix(fields[3], 16).ok()?;
    let state = if protocol == "tcp" {
        tcp_state(state).to_string()
    } else if state == 7 && remote.is_unspecified() && remote_port == 0 {
        // UDP has no states; the kernel reuses TCP's: 07 (CLOSE) unconnected, 01 connected.
        "UNCONN".to_string()
    } else {
        "ESTABLISHED".to_string()
    };
    Some(SocketInfo {
        protocol: protocol.to_string(),
        family,
        local_address: local.to_string(),
        local_port,
        remote_address: remote.to_string(),
        remote_port,
        state,
        uid: fields[7].parse().ok()?,
        inode: fields[9].parse().ok()?,
        pid: None,
        process_name: None,
    })
}

/// `0100007F:0277` → (127.0.0.1, 631). The kernel prints the address as 32-bit words in host
/// byte order (`%08X` of the in-memory word), so each word's native-endian bytes are the address
/// bytes in network order; the port is printed as a plain number.
fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// TCP state names as `ss` prints them (include/net/tcp_states.h).
fn tcp_state(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Socket inode → (pid, process name) for the inodes in `wanted`, by reading the descriptor
/// links of every process (as `ss -p` does; the kernel offers no reverse index). A socket shared
/// after fork goes to the lowest pid.
fn socket_owners(wanted: &HashSet<u64>) -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::with_capacity(wanted.len());
    if wanted.is_empty() {
        return owners;
    }
    let Ok(pids) = procfs::pids() else {
        return owners;
    };
    let found = procfs::parallel_map(
        &pids,
        || (),
        |&pid, _| {
            // Gone or not ours to read: skip.
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            let inodes: Vec<u64> = fds
                .flatten()
                .filter_map(|fd| {
                    let target = std::fs::read_link(fd.path()).ok()?;
                    socket_inode(target.as_os_str().as_encoded_bytes())
                })
                .filter(|inode| wanted.contains(inode))
                .collect();
            (!inodes.is_empty()).then_some((pid, inodes))
        },
    );
    // In pid order, so the first owner seen is the lowest pid.
    for (pid, inodes) in found {
        let name = process_name(pid);
        for inode in inodes {
            owners.entry(inode).or_insert_with(|| (pid, name.clone()));
        }
    }
    owners
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `/proc/PID/comm` without its newline; empty if the process just exited.
fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    fn find<'a>(
        snapshot: &'a NetworkSnapshot,
        protocol: &str,
        port: u16,
        state: &str,
    ) -> &'a SocketInfo {
        snapshot
            .sockets
            .iter()
            .find(|s| s.protocol == protocol && s.local_port == port && s.state == state)
            .unwrap_or_else(|| panic!("{protocol} {state} on port {port} not found"))
    }

    #[test]
    fn a_tcp_listener_and_its_connection_are_listed_with_this_pid() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let snapshot = snapshot().unwrap();

        let listen = find(&snapshot, "tcp", port, "LISTEN");
        assert_eq!(listen.family, 4);
        assert_eq!(listen.local_address, "127.0.0.1");
        assert_eq!(listen.pid, Some(std::process::id()));
        assert!(listen
            .process_name
            .as_deref()
            .is_some_and(|n| !n.is_empty()));
        assert!(listen.inode != 0);

        let conn = find(&snapshot, "tcp", client_port, "ESTABLISHED");
        assert_eq!(conn.remote_address, "127.0.0.1");
        assert_eq!(conn.remote_port, port);
        assert_eq!(conn.pid, Some(std::process::id()));
    }

    #[test]
    fn an_ipv6_listener_is_listed() {
        let listener = match TcpListener::bind("[::1]:0") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("SKIPPED: IPv6 not available here ({e})");
                return;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let snapshot = snapshot().unwrap();
        let listen = find(&snapshot, "tcp", port, "LISTEN");
        assert_eq!(listen.family, 6);
        assert_eq!(listen.local_address, "::1");
        assert_eq!(listen.pid, Some(std::process::id()));
    }

    #[test]
    fn udp_sockets_are_listed_unconnected_or_established() {
        let open = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = open.local_addr().unwrap().port();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(("127.0.0.1", port)).unwrap();
        let connected_port = connected.local_addr().unwrap().port();
        let snapshot = snapshot().unwrap();

        let unconn = find(&snapshot, "udp", port, "UNCONN");
        assert_eq!(unconn.family, 4);
        assert_eq!(unconn.pid, Some(std::process::id()));
        let est = find(&snapshot, "udp", connected_port, "ESTABLISHED");
        assert_eq!(est.remote_port, port);
    }

    #[test]
    fn interfaces_carry_prefixed_addresses() {
        let snapshot = snapshot().unwrap();
        assert!(!snapshot.interfaces.is_empty());
        for iface in &snapshot.interfaces {
            for addr in &iface.addresses {
                let (ip, prefix) = addr.split_once('/').expect("addr/prefix");
                assert!(ip.parse::<IpAddr>().is_ok(), "{addr}");
                assert!(prefix.parse::<u8>().is_ok(), "{addr}");
            }
        }
    }

    // The kernel prints host-order words; these strings are what a little-endian host prints.
    #[cfg(target_endian = "little")]
    #[test]
    fn kernel_table_lines_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:A2C4 2E0B1AC0:01BB 01 00000000:00000000 02:000A7D4A 00000000  1000        0 4242 2 0000000000000000 20 4 30 10 -1
";
        let sockets = parse_table(tcp, "tcp", 4);
        assert_eq!(sockets.len(), 2);
        assert_eq!(
            (
                sockets[0].local_address.as_str(),
                sockets[0].local_port,
                sockets[0].state.as_str()
            ),
            ("127.0.0.1", 631, "LISTEN")
        );
        assert_eq!(sockets[0].inode, 31337);
        assert_eq!(sockets[1].local_address, "10.0.2.15");
        assert_eq!(sockets[1].remote_address, "192.26.11.46");
        assert_eq!(sockets[1].remote_port, 443);
        assert_eq!(sockets[1].uid, 1000);

        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 B80D0120000000000000000001000000:D431 06 00000000:00000000 03:00000DE6 00000000     0        0 0 3 0000000000000000
";
        let sockets = parse_table(tcp6, "tcp", 6);
        assert_eq!(sockets[0].local_address, "::1");
        assert_eq!(sockets[0].local_port, 22);
        assert_eq!(sockets[1].local_address, "::ffff:127.0.0.1");
        assert_eq!(sockets[1].remote_address, "2001:db8::1");
        assert_eq!(sockets[1].state, "TIME_WAIT");

        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 555 2 0000000000000000 0
  garbage line
";
        let sockets = parse_table(udp, "udp", 4);
        assert_eq!(sockets.len(), 1, "the bad line is skipped");
        assert_eq!(sockets[0].state, "UNCONN");
        assert_eq!(sockets[0].local_port, 68);
    }

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"/tmp/socket:[1]"), None);
    }
}

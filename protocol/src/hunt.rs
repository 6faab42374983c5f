//! The rules of a hunt query ([`HuntQuery`]), shared by the controller (which refuses a bad
//! query before queueing anything) and the agent (which refuses it again: it trusts no input).
//!
//! What "match" means. A query has up to three parts, each present when any of its filters is
//! given; within a part every given filter must hold, and a host matches when every part present
//! found something:
//!
//! - **process** (`process_name`, `cmdline_contains`, `exe_sha256`): a process matches when
//!   `process_name` equals its kernel name (`comm`, at most 15 bytes), the file name of its
//!   executable or the file name of its `argv[0]`; `cmdline_contains` is a substring of its
//!   arguments joined by single spaces (case-sensitive); `exe_sha256` is the SHA-256 of the
//!   executable it runs (hex, any case).
//! - **network** (`remote_address`, `remote_port`): a TCP or UDP socket matches when its remote
//!   address equals `remote_address` (or lies in it, for a CIDR prefix such as `10.0.0.0/8`;
//!   an IPv4-mapped IPv6 address counts as the IPv4 one) and its remote port is `remote_port`.
//!   When the query also has process filters, the socket's owning process must match them (a
//!   socket whose owner is unknown then does not): "a connection to X made by Y".
//! - **file** (`file_path`, `file_sha256`): the path (absolute, exact) exists and, with a hash,
//!   is a regular file with that SHA-256. A hash without a path is refused: the agent does not
//!   hash whole file systems.
//!
//! The host's answer is a [`crate::collect::HuntMatches`]: matching processes (or, with network
//! filters, the matching sockets and their owners) and the file, or nothing when it does not
//! match.

use std::net::IpAddr;

use crate::message::HuntQuery;

/// Most processes, and most sockets, one hunt answer carries (the rest is flagged truncated).
pub const MAX_REPORTED: usize = 1000;
/// Longest `process_name` (a file name).
pub const MAX_NAME_LEN: usize = 255;
/// Longest `cmdline_contains` and `file_path`.
pub const MAX_TEXT_LEN: usize = 4096;

/// Why a query was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHuntQuery(pub String);

/// Checks a query: at least one filter, no empty or oversized strings, hashes of 64 hex digits,
/// an IP address or CIDR prefix, a port from 1, an absolute path without `..`.
pub fn validate(query: &HuntQuery) -> Result<(), InvalidHuntQuery> {
    let invalid = |m: String| Err(InvalidHuntQuery(m));
    if !has_process_part(query) && !has_network_part(query) && !has_file_part(query) {
        return invalid(
            "a hunt needs at least one filter: process_name, exe_sha256, cmdline_contains, \
             remote_address, remote_port, file_path (with file_sha256)"
                .into(),
        );
    }
    text("process_name", query.process_name.as_deref(), MAX_NAME_LEN)?;
    text(
        "cmdline_contains",
        query.cmdline_contains.as_deref(),
        MAX_TEXT_LEN,
    )?;
    for (field, value) in [
        ("exe_sha256", &query.exe_sha256),
        ("file_sha256", &query.file_sha256),
    ] {
        if let Some(hash) = value {
            if !is_sha256(hash) {
                return invalid(format!(
                    "{field}: {:?} is not a SHA-256 (64 hex digits)",
                    preview(hash)
                ));
            }
        }
    }
    if let Some(address) = &query.remote_address {
        IpPrefix::parse(address)?;
    }
    if query.remote_port == Some(0) {
        return invalid("remote_port: must be between 1 and 65535".into());
    }
    if query.file_sha256.is_some() && query.file_path.is_none() {
        return invalid("file_sha256 needs file_path: name the file whose hash to check".into());
    }
    if let Some(path) = &query.file_path {
        text("file_path", Some(path), MAX_TEXT_LEN)?;
        if !path.starts_with('/') {
            return invalid(format!("file_path: {:?} must be absolute", preview(path)));
        }
        if path.split('/').any(|c| c == "..") {
            return invalid(format!(
                "file_path: {:?} must not contain `..`",
                preview(path)
            ));
        }
    }
    Ok(())
}

/// Whether the query has process filters.
pub fn has_process_part(query: &HuntQuery) -> bool {
    query.process_name.is_some() || query.cmdline_contains.is_some() || query.exe_sha256.is_some()
}

/// Whether the query has network filters.
pub fn has_network_part(query: &HuntQuery) -> bool {
    query.remote_address.is_some() || query.remote_port.is_some()
}

/// Whether the query names a file.
pub fn has_file_part(query: &HuntQuery) -> bool {
    query.file_path.is_some() || query.file_sha256.is_some()
}

/// Whether `s` is 64 hex digits (either case).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn text(field: &str, value: Option<&str>, max: usize) -> Result<(), InvalidHuntQuery> {
    let Some(value) = value else { return Ok(()) };
    if value.is_empty() {
        return Err(InvalidHuntQuery(format!(
            "{field}: must not be empty (leave it out to match anything)"
        )));
    }
    if value.len() > max {
        return Err(InvalidHuntQuery(format!(
            "{field}: {} bytes, longer than {max}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(InvalidHuntQuery(format!("{field}: contains a NUL byte")));
    }
    Ok(())
}

/// The start of a value, for messages (a huge value must not make a huge message).
fn preview(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An IP address or a CIDR prefix (`192.0.2.7`, `10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    network: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// Parses an address (a prefix of its full length) or `address/length`.
    pub fn parse(s: &str) -> Result<Self, InvalidHuntQuery> {
        let bad = || {
            InvalidHuntQuery(format!(
                "remote_address: {:?} is not an IP address or CIDR prefix",
                preview(s)
            ))
        };
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => {
                let len: u8 = len.parse().map_err(|_| bad())?;
                // A v4-mapped v6 prefix (::ffff:10.0.0.0/104) was turned into v4 above.
                let len = if addr.contains(':') && network.is_ipv4() {
                    len.checked_sub(96).ok_or_else(bad)?
                } else {
                    len
                };
                if len > max {
                    return Err(bad());
                }
                len
            }
        };
        Ok(Self { network, len })
    }

    /// Whether `addr` lies in this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, canonical(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_eq(&net.octets(), &a.octets(), usize::from(self.len))
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_eq(&net.octets(), &a.octets(), usize::from(self.len))
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, how dual-stack sockets show IPv4 peers) as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], bits: usize) -> bool {
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> HuntQuery {
        HuntQuery::default()
    }

    #[test]
    fn a_query_needs_a_filter_and_sane_values() {
        let err = validate(&q()).unwrap_err();
        assert!(err.0.contains("at least one filter"), "{err}");
        let ok = HuntQuery {
            process_name: Some("sshd".into()),
            ..q()
        };
        assert!(validate(&ok).is_ok());
        for (query, says) in [
            (
                HuntQuery {
                    cmdline_contains: Some(String::new()),
                    ..q()
                },
                "cmdline_contains: must not be empty",
            ),
            (
                HuntQuery {
                    exe_sha256: Some("abc".into()),
                    ..q()
                },
                "exe_sha256",
            ),
            (
                HuntQuery {
                    file_sha256: Some("a".repeat(64)),
                    ..q()
                },
                "file_sha256 needs file_path",
            ),
            (
                HuntQuery {
                    file_path: Some("etc/passwd".into()),
                    ..q()
                },
                "absolute",
            ),
            (
                HuntQuery {
                    file_path: Some("/tmp/../etc/shadow".into()),
                    ..q()
                },
                "`..`",
            ),
            (
                HuntQuery {
                    remote_address: Some("10.0.0.300".into()),
                    ..q()
                },
                "remote_address",
            ),
            (
                HuntQuery {
                    remote_port: Some(0),
                    ..q()
                },
                "remote_port",
            ),
            (
                HuntQuery {
                    process_name: Some("a\0b".into()),
                    ..q()
                },
                "NUL",
            ),
            (
                HuntQuery {
                    process_name: Some("x".repeat(MAX_NAME_LEN + 1)),
                    ..q()
                },
                "longer than",
            ),
        ] {
            let err = validate(&query).unwrap_err();
            assert!(err.0.contains(says), "{query:?}: {err}");
        }
        let hashes = HuntQuery {
            file_path: Some("/bin/sh".into()),
            file_sha256: Some("AB".repeat(32)),
            ..q()
        };
        assert!(validate(&hashes).is_ok(), "upper-case hex is accepted");
    }

    #[test]
    fn addresses_and_prefixes_match_as_networks_do() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let one = IpPrefix::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(one.contains(ip("::ffff:192.0.2.7")), "v4-mapped counts");
        assert!(!one.contains(ip("192.0.2.8")));
        let net = IpPrefix::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        let odd = IpPrefix::parse("10.0.0.0/9").unwrap();
        assert!(odd.contains(ip("10.127.0.1")));
        assert!(!odd.contains(ip("10.128.0.1")));
        let v6 = IpPrefix::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let mapped = IpPrefix::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(IpPrefix::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "host.example", "10.0.0.1/x", ""] {
            assert!(IpPrefix::parse(bad).is_err(), "{bad}");
        }
    }
}

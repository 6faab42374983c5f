//! Addresses and CIDR blocks as block/isolate targets: strict parsing (a typo must not widen a
//! block), and the overlap arithmetic the safety rails and the nftables interval sets need.
//! One rule for everyone: the agent applies it before acting, the CLI before signing, the
//! controller when it works out what is still blocked.

use std::{fmt, net::IpAddr, str::FromStr};

/// An IPv4 or IPv6 network: an address with no host bits set and a prefix length.
/// A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// An inclusive range of addresses within one family, as nftables interval sets hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    v6: bool,
    first: u128,
    last: u128,
}

impl Cidr {
    /// The single-address network for `addr` (IPv4-mapped IPv6 addresses become IPv4).
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        Cidr {
            addr,
            len: max_len(&addr),
        }
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    pub fn range(&self) -> AddrRange {
        let max = max_len(&self.addr);
        let bits = to_bits(&self.addr);
        let host_bits = u32::from(max - self.len);
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        AddrRange {
            v6: self.is_v6(),
            first: bits,
            last: bits | span,
        }
    }
}

impl AddrRange {
    /// The range from `first` to `last` inclusive, if both are of one family and ordered.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        let (a, b) = (first.to_canonical(), last.to_canonical());
        if a.is_ipv6() != b.is_ipv6() || to_bits(&a) > to_bits(&b) {
            return None;
        }
        Some(AddrRange {
            v6: a.is_ipv6(),
            first: to_bits(&a),
            last: to_bits(&b),
        })
    }

    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.v6 == other.v6 && self.first <= other.last && other.first <= self.last
    }

    /// Every address of `other` is in `self`.
    pub fn covers(&self, other: &AddrRange) -> bool {
        self.v6 == other.v6 && self.first <= other.first && other.last <= self.last
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let r = Cidr::host(addr).range();
        self.overlaps(&r)
    }
}

/// Why a target was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| CidrError(format!("{text:?} is not an IP address or CIDR: {why}"));
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| bad("expected e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32"))?;
        // `::ffff:a.b.c.d` never matches an IPv6 packet on the wire; treat it as the IPv4
        // address it names so the rails and the sets see one form.
        let (addr, offset) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), 96),
                None => (addr, 0),
            },
            IpAddr::V4(_) => (addr, 0),
        };
        let max = max_len(&addr);
        let len = match len_text {
            None => max,
            Some(l) => {
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the prefix length must be a number"));
                }
                let l: u8 = l.parse().map_err(|_| bad("bad prefix length"))?;
                if l < offset || l - offset > max {
                    return Err(bad(&format!("prefix length over {}", max + offset)));
                }
                l - offset
            }
        };
        let cidr = Cidr { addr, len };
        let network = from_bits(cidr.is_v6(), cidr.range().first & mask(max, len));
        if network != addr {
            return Err(bad(&format!(
                "host bits are set (did you mean {}?)",
                Cidr { addr: network, len }
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    /// The form nftables accepts and lists: a bare address for a single host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == max_len(&self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// Most targets one block or unblock names.
pub const MAX_TARGETS: usize = 1024;

/// A block's or unblock's targets, as the agent takes them: at least one, at most
/// [`MAX_TARGETS`], each an address or a network without host bits, and no two overlapping.
/// Sorted, duplicates folded.
pub fn parse_targets(targets: &[String]) -> Result<Vec<Cidr>, String> {
    if targets.is_empty() {
        return Err("no target given".into());
    }
    if targets.len() > MAX_TARGETS {
        return Err(format!(
            "{} targets given; at most {MAX_TARGETS} per action",
            targets.len()
        ));
    }
    let mut parsed = targets
        .iter()
        .map(|t| t.parse::<Cidr>().map_err(|e| e.0))
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort();
    parsed.dedup();
    for (i, a) in parsed.iter().enumerate() {
        if let Some(b) = parsed[i + 1..]
            .iter()
            .find(|b| a.range().overlaps(&b.range()))
        {
            return Err(format!(
                "targets {a} and {b} overlap; name each network once"
            ));
        }
    }
    Ok(parsed)
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv6() {
        128
    } else {
        32
    }
}

fn mask(max: u8, len: u8) -> u128 {
    let host_bits = u32::from(max - len);
    if host_bits >= 128 {
        0
    } else {
        !((1u128 << host_bits) - 1)
    }
}

fn to_bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_bits(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        // Truncation is exact: an IPv4 range never exceeds 32 bits.
        IpAddr::V4((bits as u32).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(cidr("192.0.2.7/32").to_string(), "192.0.2.7");
        assert_eq!(cidr("198.51.100.0/24").to_string(), "198.51.100.0/24");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("2001:DB8::1").to_string(), "2001:db8::1");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("::ffff:192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(cidr("::ffff:192.0.2.0/120").to_string(), "192.0.2.0/24");
    }

    #[test]
    fn rejects_what_is_not_a_network() {
        for bad in [
            "",
            "host.example",
            "192.0.2.7/33",
            "2001:db8::/129",
            "192.0.2.7/",
            "192.0.2.7/+8",
            "192.0.2.7/ 8",
            "192.0.2.7/24",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "192.0.2.7 ",
            "::ffff:192.0.2.0/95",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be refused");
        }
        let err = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(err.0.contains("did you mean 10.0.0.0/8"), "{}", err.0);
    }

    #[test]
    fn ranges_overlap_within_a_family_only() {
        let net = cidr("10.0.0.0/8").range();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.0".parse().unwrap()));
        assert!(net.overlaps(&cidr("10.1.2.3").range()));
        assert!(net.covers(&cidr("10.1.2.0/24").range()));
        assert!(!cidr("10.1.2.0/24").range().covers(&net));
        assert!(cidr("10.1.2.3").range().overlaps(&net));
        assert!(!net.overlaps(&cidr("::/0").range()));
        assert!(cidr("::/0").range().contains("::1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0")
            .range()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(cidr("::/0")
            .range()
            .contains("2001:db8::1".parse().unwrap()));
        let r = AddrRange::new("10.0.0.5".parse().unwrap(), "10.0.0.9".parse().unwrap()).unwrap();
        assert!(r.overlaps(&cidr("10.0.0.8/29").range()));
        assert!(!r.overlaps(&cidr("10.0.0.16/29").range()));
        assert!(AddrRange::new("10.0.0.9".parse().unwrap(), "10.0.0.5".parse().unwrap()).is_none());
    }
}

//! Validation and normalisation of observable values, one rule per type: what is refused
//! names the type, the value and why; what is accepted comes out in one canonical form.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ObservableType;

/// Longest value kept, in bytes (a command line may be long; nothing else comes close).
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// A value that is not what its type says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown}: {why}")]
pub struct InvalidObservable {
    pub kind: ObservableType,
    /// The value as given, quoted and cut to 200 characters.
    pub shown: String,
    pub why: String,
}

impl ObservableType {
    /// `value` in this type's canonical form, or why it is not one:
    /// - `ipv4`, `ipv6`: the standard text form (IPv6 compressed, lowercase; brackets dropped);
    ///   an IPv4-mapped IPv6 address is refused in favour of its `ipv4`;
    /// - `cidr`: network/prefix, host bits must be clear (`10.0.0.0/8`; a bare address is /32
    ///   or /128);
    /// - `domain`, `hostname`: lowercase ASCII (internationalised names in punycode), no
    ///   trailing dot; a domain has at least two labels;
    /// - `url`: parsed and written back (scheme and host lowercased, default port dropped),
    ///   with a host;
    /// - `sha256`, `sha1`, `md5`: lowercase hex of 64, 40 or 32 digits;
    /// - `email`: `local@domain`, the domain normalised as a domain;
    /// - `port`: 1 to 65535, in decimal;
    /// - `file_path`: absolute (`/…`, `C:\…` or `\\server\…`);
    /// - `file_name`: no directory part;
    /// - `process_name`, `command_line`, `user`: as given, trimmed, without control
    ///   characters (a command line may hold tabs).
    pub fn normalize(self, value: &str) -> Result<String, InvalidObservable> {
        let bad = |why: &str| InvalidObservable {
            kind: self,
            shown: format!("{:?}", value.chars().take(200).collect::<String>()),
            why: why.to_owned(),
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(bad(&format!("longer than {MAX_VALUE_BYTES} bytes")));
        }
        let text = value.trim();
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if text.contains('\0') {
            return Err(bad("holds a NUL character"));
        }
        match self {
            ObservableType::Ipv4 => text
                .parse::<Ipv4Addr>()
                .map(|a| a.to_string())
                .map_err(|_| bad("not an IPv4 address (e.g. 192.0.2.7)")),
            ObservableType::Ipv6 => ipv6(text).map_err(|why| bad(&why)),
            ObservableType::Cidr => cidr(text).map_err(|why| bad(&why)),
            ObservableType::Domain => domain(text, true).map_err(|why| bad(&why)),
            ObservableType::Hostname => domain(text, false).map_err(|why| bad(&why)),
            ObservableType::Url => url(text).map_err(|why| bad(&why)),
            ObservableType::Sha256 => hex_digest(text, 64).map_err(|why| bad(&why)),
            ObservableType::Sha1 => hex_digest(text, 40).map_err(|why| bad(&why)),
            ObservableType::Md5 => hex_digest(text, 32).map_err(|why| bad(&why)),
            ObservableType::Email => email(text).map_err(|why| bad(&why)),
            ObservableType::Port => match text.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad("not a port (1 to 65535)")),
                Ok(port) => Ok(port.to_string()),
            },
            ObservableType::FilePath => file_path(text).map_err(|why| bad(&why)),
            ObservableType::FileName => file_name(text).map_err(|why| bad(&why)),
            ObservableType::ProcessName | ObservableType::User => {
                if text.len() > 256 {
                    return Err(bad("longer than 256 bytes"));
                }
                plain_text(text, false).map_err(|why| bad(&why))
            }
            ObservableType::CommandLine => plain_text(text, true).map_err(|why| bad(&why)),
        }
    }
}

fn ipv6(text: &str) -> Result<String, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let addr: Ipv6Addr = inner
        .parse()
        .map_err(|_| "not an IPv6 address (e.g. 2001:db8::7)".to_owned())?;
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Err(format!("an IPv4-mapped address: record it as ipv4 {v4}"));
    }
    Ok(addr.to_string())
}

fn cidr(text: &str) -> Result<String, String> {
    let parsed: cordon_protocol::cidr::Cidr = text
        .parse()
        .map_err(|e: cordon_protocol::cidr::CidrError| e.0)?;
    let shown = parsed.to_string();
    if shown.contains('/') {
        return Ok(shown);
    }
    // A single address: the block form says so.
    Ok(if parsed.is_v6() {
        format!("{shown}/128")
    } else {
        format!("{shown}/32")
    })
}

/// A DNS name, lowercase ASCII without the trailing dot; `dotted` asks for two labels or more.
fn domain(text: &str, dotted: bool) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("an IP address, not a name: record it as ipv4 or ipv6".into());
    }
    let ascii = match url::Host::parse(name) {
        Ok(url::Host::Domain(d)) => d,
        Ok(_) => return Err("an IP address, not a name: record it as ipv4 or ipv6".into()),
        Err(e) => return Err(format!("not a DNS name ({e})")),
    };
    if ascii.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("each label (between dots) must be 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a label may hold only letters, digits, - and _".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with -".into());
        }
    }
    if dotted && labels.len() < 2 {
        return Err("a domain has at least two labels (e.g. example.org)".into());
    }
    Ok(ascii.to_ascii_lowercase())
}

fn url(text: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !parsed.has_host() {
        return Err("a URL with a host is expected (e.g. https://example.org/x)".into());
    }
    // Credentials in a URL are a secret, not part of what is observed: they never go into the
    // store or an export.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok(parsed.to_string())
}

fn hex_digest(text: &str, digits: usize) -> Result<String, String> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("not {digits} hex digits"));
    }
    Ok(text.to_ascii_lowercase())
}

fn email(text: &str) -> Result<String, String> {
    let (local, host) = text
        .rsplit_once('@')
        .ok_or_else(|| "not an address (local@domain)".to_owned())?;
    if local.is_empty() || local.len() > 64 {
        return Err("the part before @ must be 1 to 64 characters".into());
    }
    if local
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err("the part before @ holds a space, a control character or another @".into());
    }
    let host = domain(host, true).map_err(|why| format!("its domain: {why}"))?;
    Ok(format!("{local}@{host}"))
}

fn file_path(text: &str) -> Result<String, String> {
    if text.len() > 4096 {
        return Err("longer than 4096 bytes".into());
    }
    let bytes = text.as_bytes();
    let windows_drive = bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes[2] == b'\\' || bytes[2] == b'/');
    if !(text.starts_with('/') || text.starts_with("\\\\") || windows_drive) {
        return Err("not an absolute path (/…, C:\\… or \\\\server\\…)".into());
    }
    if text.ends_with(['/', '\\']) {
        return Err("names a directory, not a file (it ends with a separator)".into());
    }
    if text.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    Ok(text.to_owned())
}

fn file_name(text: &str) -> Result<String, String> {
    if text.len() > 255 {
        return Err("longer than 255 bytes".into());
    }
    if text.contains('/') || text.contains('\\') {
        return Err("a name, not a path: record a path as file_path".into());
    }
    if text == "." || text == ".." {
        return Err("not a file name".into());
    }
    plain_text(text, false)
}

fn plain_text(text: &str, tabs: bool) -> Result<String, String> {
    if text.chars().any(|c| c.is_control() && !(tabs && c == '\t')) {
        return Err("holds a control character".into());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests;

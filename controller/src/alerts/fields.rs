//! Reading fields out of an alert's JSON by their dotted path (`rule.level`,
//! `kibana.alert.rule.name`), whether the sender nested them as objects, flattened them into
//! dotted keys, or mixed the two (Elastic's alert documents do: `"kibana.alert.rule.name"` at
//! the top level beside a nested `"host": {"name": …}`). Every refusal names the path.

use std::net::IpAddr;

use serde_json::Value;

use super::AlertError;

/// Longest text kept from any one field, in characters (longer is cut, marked with `…`).
pub const MAX_FIELD_CHARS: usize = 4096;

/// The value at `path`, trying at each level the longest dotted key first. JSON `null` counts
/// as absent.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let parts: Vec<&str> = path.split('.').collect();
    find(value, &parts).filter(|v| !v.is_null())
}

fn find<'a>(value: &'a Value, parts: &[&str]) -> Option<&'a Value> {
    if parts.is_empty() {
        return Some(value);
    }
    let object = value.as_object()?;
    (1..=parts.len()).rev().find_map(|taken| {
        let key = parts[..taken].join(".");
        object
            .get(&key)
            .and_then(|child| find(child, &parts[taken..]))
    })
}

/// Whether anything (not null) is at `path`.
pub fn has(value: &Value, path: &str) -> bool {
    lookup(value, path).is_some()
}

fn invalid(path: &str, what: &str) -> AlertError {
    AlertError::Field {
        field: path.to_owned(),
        message: format!("must be {what}"),
    }
}

pub use cordon_api::format::bounded;

/// A string at `path` (trimmed, bounded; empty counts as absent); anything but a string is
/// refused.
pub fn opt_str(value: &Value, path: &str) -> Result<Option<String>, AlertError> {
    match lookup(value, path) {
        None => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| bounded(s, MAX_FIELD_CHARS)))
        }
        Some(_) => Err(invalid(path, "a string")),
    }
}

/// A required string at `path`.
pub fn req_str(value: &Value, path: &str) -> Result<String, AlertError> {
    opt_str(value, path)?.ok_or_else(|| invalid(path, "a non-empty string"))
}

/// An identifier at `path`: a string, or a number written as one.
pub fn opt_id(value: &Value, path: &str) -> Result<Option<String>, AlertError> {
    match lookup(value, path) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => opt_str(value, path).map_err(|_| invalid(path, "a string or a number")),
    }
}

/// A string at `path`, or the first string of an array there.
pub fn first_str(value: &Value, path: &str) -> Result<Option<String>, AlertError> {
    Ok(strings(value, path)?.into_iter().next())
}

/// The strings at `path`: one string, or an array of them (at most 64 kept).
pub fn strings(value: &Value, path: &str) -> Result<Vec<String>, AlertError> {
    match lookup(value, path) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(Some(s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| bounded(s, MAX_FIELD_CHARS))
            .into_iter()
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|item| !item.is_null())
            .take(64)
            .map(|item| match item {
                Value::String(s) => Ok(bounded(s.trim(), MAX_FIELD_CHARS)),
                _ => Err(invalid(path, "a string or an array of strings")),
            })
            .filter(|s| !matches!(s, Ok(s) if s.is_empty()))
            .collect(),
        Some(_) => Err(invalid(path, "a string or an array of strings")),
    }
}

/// An unsigned integer at `path` up to `max`: a JSON number, or (`lenient`) a string holding
/// one. `what` says what it must be, for the refusal.
pub fn opt_uint(
    value: &Value,
    path: &str,
    max: u64,
    what: &str,
) -> Result<Option<u64>, AlertError> {
    let number = match lookup(value, path) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match number {
        Some(n) if n <= max => Ok(Some(n)),
        _ => Err(invalid(path, what)),
    }
}

/// A process id at `path` (number, or a string holding one).
pub fn opt_pid(value: &Value, path: &str) -> Result<Option<u32>, AlertError> {
    Ok(opt_uint(value, path, u64::from(u32::MAX), "a process id")?
        .and_then(|n| u32::try_from(n).ok()))
}

/// A port at `path` (number, or a string holding one).
pub fn opt_port(value: &Value, path: &str) -> Result<Option<u16>, AlertError> {
    Ok(
        opt_uint(value, path, u64::from(u16::MAX), "a port number 0-65535")?
            .and_then(|n| u16::try_from(n).ok()),
    )
}

/// An IP address at `path`, written the canonical way (as agents report theirs).
pub fn opt_ip(value: &Value, path: &str) -> Result<Option<String>, AlertError> {
    Ok(ips(value, path)?.into_iter().next())
}

/// The IP addresses at `path`: one, or an array.
pub fn ips(value: &Value, path: &str) -> Result<Vec<String>, AlertError> {
    strings(value, path)
        .map_err(|_| invalid(path, "an IP address or an array of them"))?
        .iter()
        .map(|s| parse_ip(s).ok_or_else(|| invalid(path, "an IP address")))
        .collect()
}

/// An IP address in canonical form; `None` if `s` is not one.
pub fn parse_ip(s: &str) -> Option<String> {
    s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// A SHA-256 at `path`: 64 hex digits, returned in lower case.
pub fn opt_sha256(value: &Value, path: &str) -> Result<Option<String>, AlertError> {
    match opt_str(value, path)? {
        None => Ok(None),
        Some(hash) if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(Some(hash.to_ascii_lowercase()))
        }
        Some(_) => Err(invalid(path, "a SHA-256 (64 hex digits)")),
    }
}

/// Refuses keys of the object at `path` (the whole document for `""`) that are not in
/// `known`, naming the first one: for Cordon's own format, where a misspelt field is a
/// mistake worth hearing about.
pub fn only_known(value: &Value, path: &str, known: &[&str]) -> Result<(), AlertError> {
    let object = if path.is_empty() {
        value.as_object()
    } else {
        lookup(value, path).and_then(Value::as_object)
    };
    let Some(object) = object else {
        return Ok(());
    };
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(AlertError::Field {
            field: if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            },
            message: format!("is not a field here (expected {})", known.join(", ")),
        }),
    }
}

/// Requires the value at `path`, if present, to be an object.
pub fn object_or_absent(value: &Value, path: &str) -> Result<bool, AlertError> {
    match lookup(value, path) {
        None => Ok(false),
        Some(Value::Object(_)) => Ok(true),
        Some(_) => Err(invalid(path, "an object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_are_found_nested_dotted_or_mixed() {
        let doc = json!({
            "kibana.alert.rule.name": "dotted",
            "kibana": {"alert": {"uuid": "nested"}},
            "host": {"os.name": "Debian", "ip": ["192.0.2.1", "2001:DB8::1"]},
            "gone": null,
        });
        assert_eq!(req_str(&doc, "kibana.alert.rule.name").unwrap(), "dotted");
        assert_eq!(req_str(&doc, "kibana.alert.uuid").unwrap(), "nested");
        assert_eq!(req_str(&doc, "host.os.name").unwrap(), "Debian");
        assert_eq!(
            ips(&doc, "host.ip").unwrap(),
            vec!["192.0.2.1".to_owned(), "2001:db8::1".to_owned()]
        );
        assert!(!has(&doc, "gone"));
        assert_eq!(opt_str(&doc, "missing.path").unwrap(), None);
    }

    #[test]
    fn refusals_name_the_field() {
        let doc = json!({"rule": {"level": "high", "id": 5712}, "p": "x", "h": "abc"});
        let err = opt_uint(&doc, "rule.level", 16, "a number 0-16").unwrap_err();
        assert_eq!(err.to_string(), "rule.level must be a number 0-16");
        assert_eq!(opt_id(&doc, "rule.id").unwrap().as_deref(), Some("5712"));
        assert_eq!(
            opt_port(&doc, "p").unwrap_err().to_string(),
            "p must be a port number 0-65535"
        );
        assert_eq!(
            opt_sha256(&doc, "h").unwrap_err().to_string(),
            "h must be a SHA-256 (64 hex digits)"
        );
        assert_eq!(
            req_str(&doc, "title").unwrap_err().to_string(),
            "title must be a non-empty string"
        );
        let err = only_known(&doc, "", &["rule", "p"]).unwrap_err();
        assert!(
            err.to_string().starts_with("h is not a field here"),
            "{err}"
        );
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        assert_eq!(bounded("abcdef", 4), "abc…");
        assert_eq!(bounded("abc", 4), "abc");
    }
}

//! Certificate fingerprints as Cordon prints and pins them: the SHA-256 of the DER, lowercase
//! hex. The controller prints its CA's; an agent pins it at enrolment, however it was pasted.

use sha2::{Digest, Sha256};

/// SHA-256 of a DER certificate, lowercase hex.
pub fn of_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A fingerprint as users paste it (any case, with or without colons, an optional `sha256:`
/// prefix), as [`of_der`] writes it; `None` unless it is 64 hex digits.
pub fn normalize(input: &str) -> Option<String> {
    let s = input.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_forms_normalise_to_what_of_der_writes() {
        let printed = of_der(b"certificate");
        assert_eq!(printed.len(), 64);
        let pasted = printed
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(normalize(&pasted).as_deref(), Some(printed.as_str()));
        assert_eq!(
            normalize(&format!(" sha256:{printed}\n")).as_deref(),
            Some(printed.as_str())
        );
        assert_eq!(normalize("abc"), None);
        assert_eq!(normalize(&"g".repeat(64)), None);
    }
}

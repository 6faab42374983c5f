//! Lookups: `GET /api/v1/lookup/{kind}?q=…` turns what a person typed (a hostname, a full id,
//! or the first characters of an id or a SHA-256, as tables print them) into the ids it may
//! mean, so every client resolves names the same way.

use serde::{Deserialize, Serialize};

/// What a lookup searches.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LookupKind {
    /// By hostname (any case) or id prefix.
    Agent,
    Incident,
    Action,
    Task,
    Hunt,
    Watch,
    Alert,
    /// By SHA-256 prefix.
    Evidence,
}

impl LookupKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every kind's name, comma-separated, for messages.
    pub fn names() -> String {
        use strum::VariantArray;
        let names: Vec<&str> = Self::VARIANTS.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }

    /// How a person names one of these, for messages ("no incident whose id starts with …").
    pub fn key(self) -> &'static str {
        match self {
            LookupKind::Evidence => "SHA-256",
            _ => "id",
        }
    }

    /// Whether `text` is already a whole key of this kind (a UUID, or 64 hex digits for
    /// evidence), so no lookup is needed.
    pub fn is_whole(self, text: &str) -> bool {
        match self {
            LookupKind::Evidence => text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
            _ => text.len() == 36 && uuid::Uuid::try_parse(text).is_ok(),
        }
    }
}

/// `?q=…`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// A hostname (agents only), or the first characters of an id or SHA-256.
    pub q: String,
}

/// One thing the query may mean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LookupMatch {
    /// The id (the SHA-256 for evidence).
    pub id: String,
    /// What a person recognises it by: a hostname, a title, a kind.
    pub label: String,
    /// For agents: whether the hostname, rather than the id, matched.
    #[serde(default)]
    pub by_hostname: bool,
}

/// `GET /api/v1/lookup/{kind}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lookup {
    pub kind: LookupKind,
    /// The query as it was matched (lowercased).
    pub query: String,
    /// At most [`MAX_MATCHES`], ordered by id; exact hostname matches first.
    pub matches: Vec<LookupMatch>,
    /// More matched than were returned.
    pub more: bool,
}

/// Most matches a lookup returns: enough to show a person the choice.
pub const MAX_MATCHES: usize = 10;
/// Longest query: a hostname's limit.
pub const MAX_QUERY: usize = 255;

/// The id prefix in `text`, lowercased, when it could start an id of `kind` (hex digits, and
/// `-` for UUIDs); `None` otherwise (it can still be a hostname).
pub fn id_prefix(kind: LookupKind, text: &str) -> Option<String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || (b == b'-' && kind != LookupKind::Evidence));
    ok.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_hex_and_dashes_lowercased() {
        assert_eq!(
            id_prefix(LookupKind::Agent, "3F2A-9"),
            Some("3f2a-9".into())
        );
        assert_eq!(id_prefix(LookupKind::Evidence, "ab-"), None);
        assert_eq!(id_prefix(LookupKind::Agent, "web-01"), None);
        assert_eq!(id_prefix(LookupKind::Task, "%"), None);
        assert_eq!(id_prefix(LookupKind::Task, ""), None);
    }

    #[test]
    fn whole_keys_need_no_lookup() {
        assert!(LookupKind::Task.is_whole("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        assert!(!LookupKind::Task.is_whole("67e55044"));
        assert!(LookupKind::Evidence.is_whole(&"a".repeat(64)));
        assert!(!LookupKind::Evidence.is_whole(&"g".repeat(64)));
    }
}

//! Values in a playbook that come from the alert: `"{alert.file.path}"`, or text around such
//! references (`"{alert.destination.ip}/32"`). The references are checked when the playbook is
//! loaded, against the fields of the alert's timeline entry (the contract in
//! [`crate::alerts::Alert::timeline_detail`]); at run time a reference the alert left empty
//! makes the step say so on the timeline instead of running with half a value.

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Every reference a template may use.
pub const REFERENCES: [&str; 14] = [
    "alert.kind",
    "alert.rule",
    "alert.title",
    "alert.host.agent_id",
    "alert.host.hostname",
    "alert.host.ip",
    "alert.process.pid",
    "alert.process.name",
    "alert.process.executable",
    "alert.process.command_line",
    "alert.file.path",
    "alert.file.sha256",
    "alert.destination.ip",
    "alert.destination.port",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(&'static str),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A template that cannot be read, or whose reference the alert did not fill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown reference {{{0}}}: expected one of {refs}", refs = known())]
    Unknown(String),
    #[error("unclosed '{{' in {0:?}")]
    Unclosed(String),
    #[error("'}}' without '{{' in {0:?}")]
    Stray(String),
    #[error("the value must not be empty")]
    Empty,
    /// At run time: the alert does not give this field.
    #[error("the alert gives no {0}")]
    Missing(&'static str),
}

fn known() -> String {
    REFERENCES
        .iter()
        .map(|r| format!("{{{r}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Template {
    /// Reads `source`, checking every reference.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match (rest.find('{'), rest.find('}')) {
                (None, None) => {
                    parts.push(Part::Text(rest.to_owned()));
                    rest = "";
                }
                (None, Some(_)) => return Err(TemplateError::Stray(source.to_owned())),
                (Some(_), None) => return Err(TemplateError::Unclosed(source.to_owned())),
                (Some(open), Some(close)) if close < open => {
                    return Err(TemplateError::Stray(source.to_owned()))
                }
                (Some(open), Some(close)) => {
                    if open > 0 {
                        parts.push(Part::Text(rest[..open].to_owned()));
                    }
                    let name = rest[open + 1..close].trim();
                    let known = REFERENCES
                        .iter()
                        .find(|r| **r == name)
                        .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
                    parts.push(Part::Ref(known));
                    rest = &rest[close + 1..];
                }
            }
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// As written in the playbook.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it uses the alert at all.
    pub fn uses_alert(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Ref(_)))
    }

    /// Fills it from `alert` (the detail of the alert's timeline entry; `Null` when the
    /// incident has no alert).
    pub fn render(&self, alert: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref(name) => out.push_str(&lookup(alert, name)?),
            }
        }
        Ok(out)
    }
}

/// One field of the alert's timeline detail, as text; missing, null or empty is an error.
pub fn lookup(alert: &Value, reference: &'static str) -> Result<String, TemplateError> {
    let path = reference.strip_prefix("alert.").unwrap_or(reference);
    let value = path
        .split('.')
        .try_fold(alert, |value, key| value.get(key))
        .ok_or(TemplateError::Missing(reference))?;
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(TemplateError::Missing(reference)),
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_are_checked_and_filled() {
        let alert = json!({
            "file": {"path": "/tmp/x.exe", "sha256": null},
            "destination": {"ip": "203.0.113.9", "port": 443},
        });
        let t = Template::parse("{alert.file.path}").unwrap();
        assert!(t.uses_alert());
        assert_eq!(t.render(&alert).unwrap(), "/tmp/x.exe");
        let t = Template::parse("{alert.destination.ip}:{ alert.destination.port }").unwrap();
        assert_eq!(t.render(&alert).unwrap(), "203.0.113.9:443");
        let fixed = Template::parse("/var/log/auth.log").unwrap();
        assert!(!fixed.uses_alert());
        assert_eq!(fixed.render(&Value::Null).unwrap(), "/var/log/auth.log");

        let missing = Template::parse("{alert.file.sha256}").unwrap();
        assert_eq!(
            missing.render(&alert),
            Err(TemplateError::Missing("alert.file.sha256"))
        );
        assert_eq!(
            missing.render(&Value::Null),
            Err(TemplateError::Missing("alert.file.sha256"))
        );
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let err = Template::parse("{alert.file.hash}").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown reference {alert.file.hash}"),
            "{err}"
        );
        assert!(err.to_string().contains("{alert.file.sha256}"), "{err}");
        assert!(matches!(
            Template::parse("{alert.file.path"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            Template::parse("a}b"),
            Err(TemplateError::Stray(_))
        ));
        assert_eq!(Template::parse(" "), Err(TemplateError::Empty));
    }
}

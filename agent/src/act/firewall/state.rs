//! The `inet cordon` table as `nft -j list table inet cordon` shows it: blocked elements with
//! their timeouts, the isolation elements, what stays reachable, and which chains use which
//! sets, so a receipt can say "rule present" or "rule gone" from the kernel's own answer.

use cordon_protocol::message::{TaskError, TaskErrorCode};
use serde_json::{json, Value};

use cordon_protocol::cidr::{AddrRange, Cidr};

/// One element of `blocked4`/`blocked6` as the kernel lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedElem {
    /// As nft prints it (`10.0.0.0/8`, `192.0.2.7`).
    pub text: String,
    pub range: AddrRange,
    pub timeout_secs: Option<u64>,
    pub expires_secs: Option<u64>,
}

/// A base or regular chain of the table, with the sets its rules refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainInfo {
    pub name: String,
    pub hook: Option<String>,
    pub rules: usize,
    pub sets: Vec<String>,
}

/// What the kernel holds in `inet cordon`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    pub present: bool,
    pub chains: Vec<ChainInfo>,
    pub blocked: Vec<BlockedElem>,
    /// `(family, seconds left)` for each element of `isolation`.
    pub isolation: Vec<(String, Option<u64>)>,
    pub controller: Vec<String>,
    pub allow: Vec<String>,
}

impl TableState {
    pub fn parse(text: &str) -> Result<Self, TaskError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| TaskError {
            code: TaskErrorCode::Internal,
            message: format!("cannot read `nft -j` output: {e}"),
        })?;
        let mut state = TableState::default();
        let items = doc
            .get("nftables")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for item in items {
            if item.get("table").is_some() {
                state.present = true;
            } else if let Some(chain) = item.get("chain") {
                state.chains.push(ChainInfo {
                    name: str_field(chain, "name"),
                    hook: chain.get("hook").and_then(Value::as_str).map(str::to_owned),
                    rules: 0,
                    sets: Vec::new(),
                });
            } else if let Some(rule) = item.get("rule") {
                let name = str_field(rule, "chain");
                if let Some(chain) = state.chains.iter_mut().find(|c| c.name == name) {
                    chain.rules += 1;
                    set_refs(rule.get("expr").unwrap_or(&Value::Null), &mut chain.sets);
                }
            } else if let Some(set) = item.get("set") {
                state.add_set(set);
            }
        }
        Ok(state)
    }

    fn add_set(&mut self, set: &Value) {
        let elems = set
            .get("elem")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for elem in elems {
            // Elements with a timeout come wrapped: {"elem": {"val": …, "timeout", "expires"}}.
            let (val, timeout, expires) = match elem.get("elem") {
                Some(inner) => (
                    inner.get("val").unwrap_or(&Value::Null),
                    inner.get("timeout").and_then(Value::as_u64),
                    inner.get("expires").and_then(Value::as_u64),
                ),
                None => (elem, None, None),
            };
            let text = elem_text(val);
            match set.get("name").and_then(Value::as_str) {
                Some("blocked4" | "blocked6") => {
                    if let Some(range) = elem_range(val) {
                        self.blocked.push(BlockedElem {
                            text,
                            range,
                            timeout_secs: timeout,
                            expires_secs: expires,
                        });
                    }
                }
                Some("isolation") => self.isolation.push((text, expires)),
                Some("controller4" | "controller6") => self.controller.push(text),
                Some("allow4" | "allow6") => self.allow.push(text),
                _ => {}
            }
        }
    }

    /// The rules that drop blocked traffic are in place for this family.
    pub fn blocking(&self, v6: bool) -> bool {
        let set = if v6 { "@blocked6" } else { "@blocked4" };
        ["input", "output", "forward"]
            .iter()
            .all(|name| self.chain_uses(name, set))
    }

    /// Seconds the isolation has left, if both families are isolated and the rules are in place.
    pub fn isolated(&self) -> Option<u64> {
        let hooked = ["input", "output", "forward"]
            .iter()
            .all(|name| self.chain_uses(name, "@isolation"));
        let families = ["ipv4", "ipv6"].map(|f| self.isolation.iter().find(|(fam, _)| fam == f));
        match families {
            [Some((_, a)), Some((_, b))] if hooked => Some(a.unwrap_or(0).min(b.unwrap_or(0))),
            _ => None,
        }
    }

    fn chain_uses(&self, name: &str, set: &str) -> bool {
        self.chains
            .iter()
            .any(|c| c.name == name && c.sets.iter().any(|s| s == set))
    }

    /// The chains, as the receipt shows them.
    pub fn chains_json(&self) -> Value {
        Value::Array(
            self.chains
                .iter()
                .map(|c| json!({"name": c.name, "hook": c.hook, "rules": c.rules, "sets": c.sets}))
                .collect(),
        )
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Collects the `@set` names a rule's expressions refer to.
fn set_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with('@') && !out.contains(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| set_refs(i, out)),
        Value::Object(map) => map.values().for_each(|i| set_refs(i, out)),
        _ => {}
    }
}

/// An element value as nft's text syntax writes it.
fn elem_text(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_owned();
    }
    if let Some(n) = v.as_u64() {
        return n.to_string();
    }
    if let Some(p) = v.get("prefix") {
        return format!(
            "{}/{}",
            str_field(p, "addr"),
            p.get("len").and_then(Value::as_u64).unwrap_or_default()
        );
    }
    if let Some([a, b]) = v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
        return format!("{}-{}", elem_text(a), elem_text(b));
    }
    if let Some(parts) = v.get("concat").and_then(Value::as_array) {
        return parts.iter().map(elem_text).collect::<Vec<_>>().join(" . ");
    }
    v.to_string()
}

/// The addresses an element of an address set covers.
fn elem_range(v: &Value) -> Option<AddrRange> {
    if let Some(s) = v.as_str() {
        let addr = s.parse().ok()?;
        return AddrRange::new(addr, addr);
    }
    if let Some(p) = v.get("prefix") {
        let cidr: Cidr = format!("{}/{}", p.get("addr")?.as_str()?, p.get("len")?.as_u64()?)
            .parse()
            .ok()?;
        return Some(cidr.range());
    }
    let [a, b] = v.get("range")?.as_array()?.as_slice() else {
        return None;
    };
    AddrRange::new(a.as_str()?.parse().ok()?, b.as_str()?.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table_back_from_nft_json() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "cordon", "handle": 1}},
          {"set": {"family": "inet", "name": "blocked4", "table": "cordon", "type": "ipv4_addr",
            "flags": ["interval", "timeout"], "elem": [
              {"elem": {"val": {"prefix": {"addr": "10.0.0.0", "len": 8}}, "timeout": 50, "expires": 49}},
              {"elem": {"val": "192.0.2.7", "timeout": 50, "expires": 12}},
              {"elem": {"val": {"range": ["192.0.2.10", "192.0.2.20"]}, "timeout": 9, "expires": 1}}]}},
          {"set": {"family": "inet", "name": "isolation", "table": "cordon", "type": "nf_proto",
            "elem": [{"elem": {"val": "ipv4", "timeout": 50, "expires": 40}},
                     {"elem": {"val": "ipv6", "timeout": 50, "expires": 41}}]}},
          {"set": {"family": "inet", "name": "controller4", "table": "cordon",
            "elem": [{"concat": ["10.0.0.1", 7443]}]}},
          {"chain": {"family": "inet", "table": "cordon", "name": "input", "hook": "input"}},
          {"chain": {"family": "inet", "table": "cordon", "name": "output", "hook": "output"}},
          {"chain": {"family": "inet", "table": "cordon", "name": "forward", "hook": "forward"}},
          {"rule": {"chain": "input", "expr": [{"match": {"right": "@blocked4"}}, {"drop": null}]}},
          {"rule": {"chain": "input", "expr": [{"match": {"right": "@isolation"}}]}},
          {"rule": {"chain": "output", "expr": [{"match": {"right": "@blocked4"}}]}},
          {"rule": {"chain": "output", "expr": [{"match": {"right": "@isolation"}}]}},
          {"rule": {"chain": "forward", "expr": [{"match": {"right": "@blocked4"}}]}},
          {"rule": {"chain": "forward", "expr": [{"match": {"right": "@isolation"}}]}}]}"#;
        let state = TableState::parse(text).unwrap();
        assert!(state.present);
        let texts: Vec<_> = state.blocked.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["10.0.0.0/8", "192.0.2.7", "192.0.2.10-192.0.2.20"]);
        assert_eq!(state.blocked[1].expires_secs, Some(12));
        assert!(state.blocked[2]
            .range
            .contains("192.0.2.15".parse().unwrap()));
        assert_eq!(state.controller, ["10.0.0.1 . 7443"]);
        assert!(state.blocking(false));
        assert!(!state.blocking(true));
        assert_eq!(state.isolated(), Some(40));
        assert_eq!(state.chains[0].rules, 2);
    }

    #[test]
    fn an_absent_or_empty_table_reads_as_nothing() {
        let state = TableState::parse(r#"{"nftables": [{"metainfo": {}}]}"#).unwrap();
        assert_eq!(state, TableState::default());
        assert!(state.isolated().is_none());
        assert!(TableState::parse("not json").is_err());
    }
}

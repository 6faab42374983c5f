//! Block and unblock: targets parsed strictly, the safety rail (never the controller, never
//! loopback), and elements of `blocked4`/`blocked6` with kernel timeouts.

use cordon_protocol::{cidr::Cidr, message::TaskError};
use serde_json::{json, Value};

use super::{
    check_ttl, invalid, list_of, lock, nft, nft::Nft, refused_by_rail, resolve_controller,
    state::TableState, ActEnv, Controller, Outcome,
};

/// Attempts at a change whose elements may expire between reading and writing them.
const ATTEMPTS: u32 = 3;

fn parse_targets(targets: &[String]) -> Result<Vec<Cidr>, TaskError> {
    cordon_protocol::cidr::parse_targets(targets).map_err(invalid)
}

/// The safety rail: nothing that covers the controller or loopback is ever blocked.
fn check_rails(targets: &[Cidr], controller: &Controller) -> Result<(), TaskError> {
    let loopback = ["127.0.0.0/8".parse::<Cidr>(), "::1".parse::<Cidr>()];
    for target in targets {
        let range = target.range();
        if let Some(addr) = controller.addrs.iter().find(|a| range.contains(a.ip())) {
            return Err(refused_by_rail(format!(
                "refusing to block {target}: it covers the controller's address {} ({}); the \
                 controller is never blocked",
                addr.ip(),
                controller.name
            )));
        }
        for lo in loopback.iter().flatten() {
            if range.overlaps(&lo.range()) {
                return Err(refused_by_rail(format!(
                    "refusing to block {target}: it covers loopback ({lo}); loopback is never \
                     blocked"
                )));
            }
        }
    }
    Ok(())
}

/// `VERB element inet cordon blockedN { … }` lines for the targets, per family.
fn push_elements(script: &mut String, verb: &str, targets: &[Cidr], ttl_secs: Option<u64>) {
    for (set, v6) in [("blocked4", false), ("blocked6", true)] {
        let elems: Vec<String> = targets
            .iter()
            .filter(|t| t.is_v6() == v6)
            .map(|t| match ttl_secs {
                Some(ttl) => format!("{t} timeout {ttl}s"),
                None => t.to_string(),
            })
            .collect();
        if !elems.is_empty() {
            script.push_str(&format!(
                "{verb} element {} {set} {{ {} }}\n",
                nft::TABLE,
                elems.join(", ")
            ));
        }
    }
}

/// The receipt's view of some targets: the element that blocks each, and whether the rules
/// that use the set are in place.
fn targets_json(state: &TableState, targets: &[Cidr]) -> Value {
    let targets: Vec<Value> = targets
        .iter()
        .map(|t| {
            let range = t.range();
            let elem = state.blocked.iter().find(|e| e.range.covers(&range));
            json!({
                "target": t.to_string(),
                "blocked": elem.is_some() && state.blocking(t.is_v6()),
                "element": elem.map(|e| e.text.clone()),
                "timeout_secs": elem.and_then(|e| e.timeout_secs),
                "expires_in_secs": elem.and_then(|e| e.expires_secs),
            })
        })
        .collect();
    json!({
        "table": nft::TABLE,
        "present": state.present,
        "targets": targets,
        "blocked_total": state.blocked.len(),
        "chains": state.chains_json(),
    })
}

pub(super) fn block_with(
    nft: &Nft,
    targets: &[String],
    ttl_secs: u64,
    env: &ActEnv,
) -> Result<Outcome, TaskError> {
    check_ttl(ttl_secs, "block")?;
    let targets = parse_targets(targets)?;
    let controller = resolve_controller(env, "block")?;
    check_rails(&targets, &controller)?;
    let _serial = lock();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = nft.list()?;
        let mut refresh = Vec::new();
        for target in &targets {
            let range = target.range();
            for elem in before.blocked.iter().filter(|e| e.range.overlaps(&range)) {
                if elem.range != range {
                    return Err(invalid(format!(
                        "{target} overlaps {}, which is already blocked (for {} s more); \
                         unblock {} first, or block exactly {}",
                        elem.text,
                        elem.expires_secs.unwrap_or(0),
                        elem.text,
                        elem.text
                    )));
                }
                refresh.push(*target);
            }
        }
        let mut script = nft::definition().to_owned();
        push_elements(&mut script, "delete", &refresh, None);
        push_elements(&mut script, "add", &targets, Some(ttl_secs));
        match nft.apply(&script) {
            Ok(()) => {}
            // A block listed a moment ago may have expired before the delete reached it.
            Err(e) if !refresh.is_empty() && attempt < ATTEMPTS => {
                tracing::debug!(error = %e.message, "retrying block");
                continue;
            }
            Err(e) => return Err(e),
        }
        let after = nft.list()?;
        let refreshed = if refresh.is_empty() {
            String::new()
        } else {
            format!(" (already blocked, timeout reset: {})", list_of(&refresh))
        };
        tracing::info!(targets = %list_of(&targets), ttl_secs, "blocked");
        return Ok(Outcome {
            before: targets_json(&before, &targets),
            done: format!(
                "blocked all traffic to and from {} for {ttl_secs} s{refreshed}; the kernel lifts \
                 the block when it expires",
                list_of(&targets)
            ),
            after: targets_json(&after, &targets),
        });
    }
}

pub(super) fn unblock_with(
    nft: &Nft,
    targets: &[String],
    _env: &ActEnv,
) -> Result<Outcome, TaskError> {
    let targets = parse_targets(targets)?;
    let _serial = lock();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = nft.list()?;
        let (mut remove, mut absent) = (Vec::new(), Vec::new());
        for target in &targets {
            let range = target.range();
            if before.blocked.iter().any(|e| e.range == range) {
                remove.push(*target);
            } else if let Some(elem) = before.blocked.iter().find(|e| e.range.overlaps(&range)) {
                return Err(invalid(format!(
                    "{target} is not blocked by itself but overlaps the blocked {}; unblock {} \
                     instead",
                    elem.text, elem.text
                )));
            } else {
                absent.push(*target);
            }
        }
        if !remove.is_empty() {
            let mut script = String::new();
            push_elements(&mut script, "delete", &remove, None);
            match nft.apply(&script) {
                Ok(()) => {}
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e.message, "retrying unblock");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let after = if remove.is_empty() {
            before.clone()
        } else {
            nft.list()?
        };
        let mut done = Vec::new();
        if !remove.is_empty() {
            done.push(format!("unblocked {}", list_of(&remove)));
        }
        if !absent.is_empty() {
            done.push(format!("{} was not blocked", list_of(&absent)));
        }
        tracing::info!(targets = %list_of(&targets), "unblocked");
        return Ok(Outcome {
            before: targets_json(&before, &targets),
            done: done.join("; "),
            after: targets_json(&after, &targets),
        });
    }
}

#[cfg(test)]
mod tests {
    use cordon_protocol::message::TaskErrorCode;

    use super::{super::testing::*, *};
    use crate::act::firewall::MAX_TTL_SECS;

    #[test]
    fn never_blocks_the_controller_or_loopback() {
        let env = env("10.20.0.1:7443");
        for target in [
            "10.20.0.1",
            "10.20.0.0/16",
            "0.0.0.0/0",
            "::ffff:10.20.0.1",
            "127.0.0.1",
            "127.8.0.0/16",
            "::1",
            "::/0",
        ] {
            let err = block_with(&no_nft(), &targets(&[target]), 60, &env).unwrap_err();
            assert_eq!(err.code, TaskErrorCode::PolicyDenied, "{target}: {err:?}");
        }
        let err = block_with(&no_nft(), &targets(&["10.20.0.0/24"]), 60, &env).unwrap_err();
        assert!(err.message.contains("controller"), "{}", err.message);
        let v6 = crate::act::ActEnv {
            controller: "[fd00:20::1]:7443".into(),
            ..env
        };
        let err = block_with(&no_nft(), &targets(&["fd00::/8"]), 60, &v6).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    }

    #[test]
    fn bad_targets_and_ttls_are_invalid_input_naming_them() {
        let env = env("10.20.0.1:7443");
        let cases: [(&[&str], u64, &str); 6] = [
            (&["evil.example"], 60, "evil.example"),
            (&["192.0.2.7", "192.0.2.300"], 60, "192.0.2.300"),
            (&["192.0.2.0/24", "192.0.2.7"], 60, "overlap"),
            (&[], 60, "no target"),
            (&["192.0.2.7"], 0, "ttl"),
            (&["192.0.2.7"], MAX_TTL_SECS + 1, "ttl"),
        ];
        for (list, ttl, needle) in cases {
            let err = block_with(&no_nft(), &targets(list), ttl, &env).unwrap_err();
            assert_eq!(err.code, TaskErrorCode::InvalidInput, "{list:?}");
            assert!(err.message.contains(needle), "{list:?}: {}", err.message);
        }
        let err = unblock_with(&no_nft(), &targets(&["10.0.0.1/8"]), &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        let many = vec!["192.0.2.7".to_owned(); cordon_protocol::cidr::MAX_TARGETS + 1];
        let err = block_with(&no_nft(), &many, 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
    }

    #[test]
    fn block_scripts_name_only_the_agents_table() {
        let mut script = nft::definition().to_owned();
        push_elements(&mut script, "add", &["192.0.2.7".parse().unwrap()], Some(5));
        push_elements(
            &mut script,
            "delete",
            &["2001:db8::/32".parse().unwrap()],
            None,
        );
        for line in script.lines() {
            assert!(line.contains(" inet cordon"), "{line}");
        }
        assert!(script.contains("add element inet cordon blocked4 { 192.0.2.7 timeout 5s }"));
        assert!(script.contains("delete element inet cordon blocked6 { 2001:db8::/32 }"));
    }
}

//! Isolate and release: the set `isolation` whose elements' timeout ends the isolation in the
//! kernel, what stays reachable (loopback, the controller, the policy allowlist), and the record
//! in `DATA_DIR/firewall.json` that re-applies an isolation after a restart.

use std::net::SocketAddr;

use cordon_protocol::cidr::Cidr;
use cordon_protocol::message::TaskError;
use serde_json::{json, Value};

use super::{
    check_ttl, invalid, list_of, lock, nft, nft::Nft, record, record::Record, resolve_controller,
    state::TableState, ActEnv, Controller, Outcome, MAX_TTL_SECS,
};

fn parse_allowlist(env: &ActEnv) -> Result<Vec<Cidr>, TaskError> {
    env.policy
        .isolation_allowlist
        .iter()
        .map(|entry| {
            entry
                .parse::<Cidr>()
                .map_err(|e| invalid(format!("policy isolation_allowlist: {}", e.0)))
        })
        .collect()
}

fn isolation_json(state: &TableState, record: Option<&Record>) -> Value {
    let mut value = json!({
        "table": nft::TABLE,
        "present": state.present,
        "isolated": state.isolated().is_some(),
        "expires_in_secs": state.isolated(),
        "controller": state.controller,
        "allowlist": state.allow,
        "chains": state.chains_json(),
    });
    if let (Some(record), Some(map)) = (record, value.as_object_mut()) {
        map.insert("recorded_until_ms".into(), json!(record.isolated_until_ms));
    }
    value
}

/// The whole isolation as one transaction: the table, what stays reachable, and the two
/// `isolation` elements whose timeout ends it.
fn isolation_script(ttl_secs: u64, controller: &[SocketAddr], allow: &[Cidr]) -> String {
    let t = nft::TABLE;
    let mut script = nft::definition().to_owned();
    for set in [
        "controller4",
        "controller6",
        "allow4",
        "allow6",
        "isolation",
    ] {
        script.push_str(&format!("flush set {t} {set}\n"));
    }
    for (v6, ctl, alw) in [
        (false, "controller4", "allow4"),
        (true, "controller6", "allow6"),
    ] {
        let ctl_elems: Vec<String> = controller
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| format!("{} . {}", a.ip(), a.port()))
            .collect();
        if !ctl_elems.is_empty() {
            script.push_str(&format!(
                "add element {t} {ctl} {{ {} }}\n",
                ctl_elems.join(", ")
            ));
        }
        let alw_elems: Vec<String> = allow
            .iter()
            .filter(|c| c.is_v6() == v6)
            .map(Cidr::to_string)
            .collect();
        if !alw_elems.is_empty() {
            script.push_str(&format!(
                "add element {t} {alw} {{ {} }}\n",
                alw_elems.join(", ")
            ));
        }
    }
    script.push_str(&format!(
        "add element {t} isolation {{ ipv4 timeout {ttl_secs}s, ipv6 timeout {ttl_secs}s }}\n"
    ));
    script
}

pub(super) fn isolate_with(nft: &Nft, ttl_secs: u64, env: &ActEnv) -> Result<Outcome, TaskError> {
    check_ttl(ttl_secs, "isolation")?;
    let controller = resolve_controller(env, "isolate the host")?;
    let allow = parse_allowlist(env)?;
    let _serial = lock();
    let until_ms = crate::now_ms().saturating_add(ttl_secs.saturating_mul(1000) as i64);
    apply_isolation(nft, ttl_secs, until_ms, &controller, &allow, env)
}

/// Records the isolation first, then applies it: a crash in between leaves a record that
/// [`super::reapply_on_start`] carries out, never a kernel isolation the agent has forgotten.
fn apply_isolation(
    nft: &Nft,
    ttl_secs: u64,
    until_ms: i64,
    controller: &Controller,
    allow: &[Cidr],
    env: &ActEnv,
) -> Result<Outcome, TaskError> {
    let before = nft.list()?;
    let previous = record::load(&env.data_dir)?;
    let record = Record {
        isolated_until_ms: Some(until_ms),
        controller: controller.addrs.clone(),
    };
    record::store(&env.data_dir, &record)?;
    if let Err(e) = nft.apply(&isolation_script(ttl_secs, &controller.addrs, allow)) {
        if let Err(undo) = record::store(&env.data_dir, &previous) {
            tracing::warn!(error = %undo.message, "cannot roll back the isolation record");
        }
        return Err(e);
    }
    let after = nft.list()?;
    let reachable: Vec<String> = controller.addrs.iter().map(|a| a.to_string()).collect();
    tracing::info!(ttl_secs, until_ms, "isolated");
    Ok(Outcome {
        before: isolation_json(&before, None),
        done: format!(
            "isolated the host for {ttl_secs} s: only loopback, the controller {} ({}) and the \
             allowlist [{}] stay reachable; the kernel ends the isolation when it expires",
            controller.name,
            reachable.join(", "),
            list_of(allow)
        ),
        after: isolation_json(&after, Some(&record)),
    })
}

pub(super) fn release_with(nft: &Nft, env: &ActEnv) -> Result<Outcome, TaskError> {
    let _serial = lock();
    let before = nft.list()?;
    // Forget the isolation before lifting it, so a crash in between cannot bring it back.
    record::store(&env.data_dir, &Record::default())?;
    if before.present {
        let t = nft::TABLE;
        let mut script = nft::definition().to_owned();
        for set in [
            "isolation",
            "controller4",
            "controller6",
            "allow4",
            "allow6",
        ] {
            script.push_str(&format!("flush set {t} {set}\n"));
        }
        nft.apply(&script)?;
    }
    let after = nft.list()?;
    let done = match before.isolated() {
        Some(left) => {
            format!("released the isolation ({left} s were left); blocks, if any, stay in place")
        }
        None => "the host was not isolated; nothing to release".to_owned(),
    };
    tracing::info!("released isolation");
    Ok(Outcome {
        before: isolation_json(&before, None),
        done,
        after: isolation_json(&after, Some(&Record::default())),
    })
}

pub(super) fn reapply_with(nft: &Nft, env: &ActEnv) -> Result<Option<Outcome>, TaskError> {
    let recorded = record::load(&env.data_dir)?;
    let Some(until_ms) = recorded.isolated_until_ms else {
        return Ok(None);
    };
    let left_ms = until_ms.saturating_sub(crate::now_ms());
    if left_ms <= 0 {
        let _serial = lock();
        record::store(&env.data_dir, &Record::default())?;
        tracing::info!(until_ms, "recorded isolation has ended");
        return Ok(None);
    }
    // A wall clock set back could stretch the record; the kernel's limit still caps it.
    let ttl_secs = u64::try_from(left_ms)
        .unwrap_or(0)
        .div_ceil(1000)
        .min(MAX_TTL_SECS);
    let controller = match resolve_controller(env, "re-apply the isolation") {
        Ok(controller) => controller,
        // At boot, name resolution may not work yet; the recorded addresses still do.
        Err(e) if !recorded.controller.is_empty() => {
            tracing::warn!(error = %e.message, "using the controller addresses recorded at isolation");
            Controller {
                name: env.controller.clone(),
                addrs: recorded.controller.clone(),
            }
        }
        Err(e) => return Err(e),
    };
    // The policy may have changed since; a bad entry must not lift the isolation, so it is
    // left out (reachable only if the policy is fixed) rather than refusing to isolate.
    let allow: Vec<Cidr> = env
        .policy
        .isolation_allowlist
        .iter()
        .filter_map(|entry| match entry.parse::<Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(e) => {
                tracing::warn!(error = %e.0, "isolation allowlist entry left out");
                None
            }
        })
        .collect();
    let _serial = lock();
    let outcome = apply_isolation(nft, ttl_secs, until_ms, &controller, &allow, env)?;
    tracing::info!(ttl_secs, until_ms, "re-applied the recorded isolation");
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cordon_protocol::message::TaskErrorCode;

    use super::{super::testing::*, *};
    use crate::policy::Policy;

    #[test]
    fn a_bad_allowlist_entry_refuses_isolation() {
        let mut env = env("10.20.0.1:7443");
        env.policy = Arc::new(Policy {
            isolation_allowlist: vec!["10.30.0.0/16".into(), "backup-host".into()],
            ..Policy::default()
        });
        let err = isolate_with(&no_nft(), 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        assert!(err.message.contains("backup-host"), "{}", err.message);
    }

    #[test]
    fn a_zero_ttl_is_refused() {
        let err = isolate_with(&no_nft(), 0, &env("10.20.0.1:7443")).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
    }

    #[test]
    fn isolation_scripts_name_only_the_agents_table() {
        let script = isolation_script(
            30,
            &[
                "10.20.0.1:7443".parse().unwrap(),
                "[fd00::1]:7443".parse().unwrap(),
            ],
            &["10.30.0.0/16".parse().unwrap()],
        );
        for line in script.lines() {
            assert!(line.contains(" inet cordon"), "{line}");
        }
        assert!(script.contains("add element inet cordon controller4 { 10.20.0.1 . 7443 }"));
        assert!(script.contains("add element inet cordon controller6 { fd00::1 . 7443 }"));
        assert!(script.contains("add element inet cordon allow4 { 10.30.0.0/16 }"));
        assert!(script.contains("ipv4 timeout 30s, ipv6 timeout 30s"));
    }
}

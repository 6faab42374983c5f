//! The firewall actions for real, in the namespaces of [`super::netns_lab`]: TCP connections
//! across the veth pair before and after each action, with the agent side's table read back.

use std::{
    thread,
    time::{Duration, Instant},
};

use cordon_protocol::message::TaskErrorCode;

use super::{
    block::{block_with, unblock_with},
    isolation::{isolate_with, reapply_with, release_with},
    netns_lab::*,
    record,
};

#[test]
fn block_drops_traffic_both_ways_spares_the_controller_and_unblock_restores_it() {
    let Some(mut lab) = Lab::new() else { return };
    let env = lab.env(&[]);
    // Another table in the same namespace, which the agent must leave exactly as it was.
    lab.nft_command("add table inet bystander");
    lab.nft_command(
        "add chain inet bystander c { type filter hook input priority 0; policy accept; }",
    );
    lab.nft_command("add rule inet bystander c tcp dport 9 accept");
    let bystander = || {
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.agent_ns,
            "nft",
            "list",
            "table",
            "inet",
            "bystander",
        ])
        .unwrap()
    };
    let bystander_before = bystander();
    assert!(lab.peer.reaches(AGENT, SERVICE));
    assert!(lab.agent.reaches(TARGET6, SERVICE));

    let outcome = block_with(&lab.nft, &targets(&[TARGET, TARGET6]), 60, &env).unwrap();
    assert_eq!(outcome.before["targets"][0]["blocked"], false);
    assert_eq!(
        outcome.after["targets"][0]["blocked"], true,
        "{}",
        outcome.after
    );
    assert_eq!(
        outcome.after["targets"][1]["blocked"], true,
        "{}",
        outcome.after
    );
    let expires = outcome.after["targets"][0]["expires_in_secs"]
        .as_u64()
        .unwrap();
    assert!((55..=60).contains(&expires), "{expires}");

    assert!(
        !lab.agent.reaches(TARGET, SERVICE),
        "outbound to a blocked host"
    );
    assert!(
        !lab.agent.reaches(TARGET6, SERVICE),
        "outbound to a blocked IPv6 host"
    );
    assert!(
        !lab.peer.reaches(AGENT, SERVICE),
        "inbound from a blocked host"
    );
    assert!(
        lab.agent.reaches(CONTROLLER, CONTROL),
        "the controller stays reachable"
    );
    assert!(
        lab.agent.reaches(OTHER, SERVICE),
        "other hosts stay reachable"
    );

    // Again, longer: the block's timeout is reset, not duplicated.
    let again = block_with(&lab.nft, &targets(&[TARGET]), 600, &env).unwrap();
    assert!(again.done.contains("timeout reset"), "{}", again.done);
    let expires = again.after["targets"][0]["expires_in_secs"]
        .as_u64()
        .unwrap();
    assert!(expires > 60, "{}", again.after);
    assert_eq!(again.after["blocked_total"], 2);

    // A different network overlapping a block is refused, naming the block.
    let err = block_with(&lab.nft, &targets(&["10.231.0.0/30"]), 60, &env).unwrap_err();
    assert_eq!(err.code, TaskErrorCode::InvalidInput);
    assert!(err.message.contains(TARGET), "{}", err.message);

    // The safety rail holds against a real table too.
    for rail in [CONTROLLER, "10.231.0.0/24", "127.0.0.1"] {
        let err = block_with(&lab.nft, &targets(&[rail]), 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied, "{rail}");
    }
    assert!(lab.agent.reaches(CONTROLLER, CONTROL));

    let outcome =
        unblock_with(&lab.nft, &targets(&[TARGET, TARGET6, "10.231.0.77"]), &env).unwrap();
    assert_eq!(outcome.before["targets"][0]["blocked"], true);
    assert_eq!(outcome.after["targets"][0]["blocked"], false);
    assert_eq!(outcome.after["blocked_total"], 0);
    assert!(
        outcome.done.contains("10.231.0.77 was not blocked"),
        "{}",
        outcome.done
    );
    assert!(lab.agent.reaches(TARGET, SERVICE));
    assert!(lab.agent.reaches(TARGET6, SERVICE));
    assert!(lab.peer.reaches(AGENT, SERVICE));

    assert_eq!(bystander(), bystander_before, "another table was changed");
}

#[test]
fn a_block_expires_by_itself_with_nothing_running() {
    let Some(mut lab) = Lab::new() else { return };
    let env = lab.env(&[]);
    block_with(&lab.nft, &targets(&["10.231.0.2/31"]), 2, &env).unwrap();
    let blocked_at = Instant::now();
    assert!(!lab.agent.reaches(TARGET, SERVICE));
    assert!(!lab.agent.reaches(OTHER, SERVICE));
    // From here on, no agent code runs: only the kernel can lift the block.
    wait_for("the block to expire", Duration::from_secs(5), || {
        lab.agent.reaches(TARGET, SERVICE)
    });
    assert!(blocked_at.elapsed() >= Duration::from_millis(1500));
    assert!(lab.agent.reaches(OTHER, SERVICE));
    assert!(!lab.ruleset().contains("10.231.0.2"), "{}", lab.ruleset());
}

#[test]
fn isolation_keeps_only_loopback_the_controller_and_the_allowlist_and_release_restores() {
    let Some(mut lab) = Lab::new() else { return };
    let env = lab.env(&[&format!("{ALLOWED}/32")]);
    let outcome = isolate_with(&lab.nft, 60, &env).unwrap();
    assert_eq!(outcome.before["isolated"], false);
    assert_eq!(outcome.after["isolated"], true, "{}", outcome.after);
    let left = outcome.after["expires_in_secs"].as_u64().unwrap();
    assert!((55..=60).contains(&left), "{left}");
    let recorded = record::load(lab.data.path()).unwrap();
    assert!(recorded.isolated_until_ms.is_some());

    assert!(lab.agent.reaches(CONTROLLER, CONTROL), "the controller");
    assert!(lab.agent.reaches("127.0.0.1", SERVICE), "loopback");
    assert!(lab.agent.reaches(ALLOWED, SERVICE), "the allowlist");
    assert!(
        !lab.agent.reaches(CONTROLLER, SERVICE),
        "the controller's other ports"
    );
    assert!(!lab.agent.reaches(TARGET, SERVICE));
    assert!(!lab.agent.reaches(OTHER, SERVICE));
    assert!(!lab.agent.reaches(TARGET6, SERVICE));
    assert!(!lab.peer.reaches(AGENT, SERVICE), "inbound");
    assert!(!lab.peer.reaches(AGENT6, SERVICE), "inbound IPv6");

    // Isolating again refreshes the time limit; one set of rules remains.
    isolate_with(&lab.nft, 120, &env).unwrap();
    assert_eq!(lab.ruleset().matches("jump isolate_in").count(), 1);

    let outcome = release_with(&lab.nft, &env).unwrap();
    assert_eq!(outcome.before["isolated"], true);
    assert_eq!(outcome.after["isolated"], false);
    assert!(outcome.done.starts_with("released"), "{}", outcome.done);
    assert_eq!(
        record::load(lab.data.path()).unwrap().isolated_until_ms,
        None
    );
    assert!(lab.agent.reaches(TARGET, SERVICE));
    assert!(lab.agent.reaches(TARGET6, SERVICE));
    assert!(lab.peer.reaches(AGENT, SERVICE));

    let again = release_with(&lab.nft, &env).unwrap();
    assert!(again.done.contains("not isolated"), "{}", again.done);
}

#[test]
fn an_isolation_ends_by_itself_and_is_not_reapplied_after_it_ended() {
    let Some(mut lab) = Lab::new() else { return };
    let env = lab.env(&[]);
    isolate_with(&lab.nft, 2, &env).unwrap();
    assert!(!lab.agent.reaches(TARGET, SERVICE));
    assert!(lab.agent.reaches(CONTROLLER, CONTROL));
    wait_for("the isolation to end", Duration::from_secs(5), || {
        lab.agent.reaches(TARGET, SERVICE)
    });
    assert!(lab.peer.reaches(AGENT, SERVICE));
    // The agent starting later finds the record out of date and leaves the host alone.
    thread::sleep(Duration::from_millis(200));
    assert!(reapply_with(&lab.nft, &env).unwrap().is_none());
    assert_eq!(
        record::load(lab.data.path()).unwrap().isolated_until_ms,
        None
    );
    assert!(lab.agent.reaches(TARGET, SERVICE));
}

#[test]
fn a_recorded_isolation_is_reapplied_after_a_reboot_for_the_time_left() {
    let Some(mut lab) = Lab::new() else { return };
    let env = lab.env(&[]);
    isolate_with(&lab.nft, 60, &env).unwrap();
    // A reboot empties the kernel's ruleset; the record in the data dir survives.
    lab.nft_command("delete table inet cordon");
    assert!(lab.agent.reaches(TARGET, SERVICE));
    // At start, even before the controller's name resolves (a name without a port fails at
    // once, with no DNS server involved): the recorded controller addresses are used.
    let mut unresolvable = env.clone();
    unresolvable.controller = "controller.invalid".into();
    let outcome = reapply_with(&lab.nft, &unresolvable).unwrap().unwrap();
    let left = outcome.after["expires_in_secs"].as_u64().unwrap();
    assert!((50..=60).contains(&left), "{left}");
    assert!(!lab.agent.reaches(TARGET, SERVICE));
    assert!(lab.agent.reaches(CONTROLLER, CONTROL));
    // With nothing recorded, start-up changes nothing.
    release_with(&lab.nft, &env).unwrap();
    assert!(reapply_with(&lab.nft, &env).unwrap().is_none());
    assert!(lab.agent.reaches(TARGET, SERVICE));
}

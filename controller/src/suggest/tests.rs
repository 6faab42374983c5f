use super::*;

#[test]
fn the_same_suggestion_has_the_same_id() {
    let block = Action::Block {
        targets: vec!["203.0.113.7".into()],
        ttl_secs: 3600,
    };
    let a = suggestion_id("i1", "h1", &block, 0);
    assert_eq!(a, suggestion_id("i1", "h1", &block, 0));
    assert_ne!(a, suggestion_id("i1", "h2", &block, 0));
    assert_ne!(a, suggestion_id("i2", "h1", &block, 0));
    assert_ne!(a, suggestion_id("i1", "h1", &block, 1));
    assert!(a.parse::<uuid::Uuid>().is_ok());
}

#[test]
fn blocks_repeat_only_what_this_incident_saw_and_quarantines_only_the_same_file() {
    let none = BTreeSet::new();
    let addresses: BTreeSet<String> = ["203.0.113.7/32".to_owned()].into();
    let hosts = ["h".to_owned()];
    let mut here = Here {
        files: &[],
        hashes: &none,
        addresses: &addresses,
        hosts: &hosts,
        quarantined_hashes: &none,
        shares_values: true,
    };
    let block = Action::Block {
        targets: vec!["203.0.113.7".into(), "198.51.100.9".into()],
        ttl_secs: 600,
    };
    let pairs = mapped(&block, &here).unwrap();
    assert_eq!(
        pairs,
        vec![(
            "h".to_owned(),
            Action::Block {
                targets: vec!["203.0.113.7".into()],
                ttl_secs: 600
            }
        )]
    );
    here.shares_values = false;
    assert!(mapped(&block, &here)
        .unwrap_err()
        .contains("share no observable"));

    let hash = "ab".repeat(32);
    let hashes: BTreeSet<String> = [hash.clone()].into();
    let files = [
        NamedFile {
            agent_id: "b".into(),
            path: "/tmp/y/payload.bin".into(),
            sha256: Some(hash.clone()),
        },
        NamedFile {
            agent_id: "b".into(),
            path: "/usr/sbin/sshd".into(),
            sha256: Some("cd".repeat(32)),
        },
    ];
    let here = Here {
        files: &files,
        hashes: &hashes,
        addresses: &none,
        hosts: &hosts,
        quarantined_hashes: &hashes,
        shares_values: true,
    };
    let quarantine = Action::Quarantine {
        path: "/tmp/x/sshd".into(),
    };
    assert_eq!(
        mapped(&quarantine, &here).unwrap(),
        vec![(
            "b".to_owned(),
            Action::Quarantine {
                path: "/tmp/y/payload.bin".into()
            }
        )],
        "by the quarantined file's hash, never by a name alone"
    );
}

#[test]
fn kills_are_not_repeated_blind() {
    let kill = Action::Kill {
        pid: 1,
        start_time_ms: 0,
        tree: false,
    };
    let none = BTreeSet::new();
    let here = Here {
        files: &[],
        hashes: &none,
        addresses: &none,
        hosts: &["h".to_owned()],
        quarantined_hashes: &none,
        shares_values: true,
    };
    let why = mapped(&kill, &here).unwrap_err();
    assert!(why.contains("cordon ps"), "{why}");
}

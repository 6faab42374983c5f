//! Text an attacker controls — file names, process arguments, a failed task's message —
//! shown by the real `cordon` CLI: no escape sequence reaches the terminal and no name forges a
//! row, in tables, in one-line streams, in errors and in `--json`.

use std::{os::unix::fs::PermissionsExt, process::Command};

use cordon_api::agents::AgentStatus;
use cordon_tests::{
    output::{ok, text},
    Deployment,
};

/// What a terminal would act on: ESC, CSI, CR, BEL, DEL and the reordering controls.
const DANGEROUS: &[char] = &[
    '\u{1b}', '\u{9b}', '\r', '\u{7}', '\u{7f}', '\u{202e}', '\u{2066}', '\u{200b}',
];

/// A name that would clear the line, forge a second row and reverse what follows.
const EVIL: &str = "evil\u{1b}[2K\rroot 4242\nforged-row\u{7}\u{202e}gpj.exe\u{9b}31m\u{7f}";

fn assert_clean(what: &str, printed: &str) {
    for c in DANGEROUS {
        assert!(
            !printed.contains(*c),
            "{what}: {c:?} reached the terminal:\n{printed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_reach_the_terminal_escaped() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(EVIL), b"x").unwrap();
    std::fs::write(dir.path().join("plain.txt"), b"y").unwrap();
    let root = dir.path().to_str().unwrap();

    // A listing: one row per file, the hostile one shown with visible escapes.
    let listing = ok(&deployment
        .run_cli(&["files", "ls", "--agent", &agent.id, "--wait", root])
        .await);
    assert_clean("files ls", &listing);
    assert!(
        !listing.lines().any(|l| l.starts_with("forged-row")),
        "{listing}"
    );
    assert!(
        listing.contains("evil\\x1b[2K\\rroot 4242\\nforged-row\\x07\\u{202e}gpj.exe"),
        "{listing}"
    );
    let rows = listing.lines().filter(|l| l.contains(root)).count();
    assert_eq!(rows, 2, "one row per file: {listing}");

    // JSON keeps the exact name, as JSON escapes, and still parses to it.
    let json = ok(&deployment
        .run_cli(&[
            "--json", "files", "ls", "--agent", &agent.id, "--wait", root,
        ])
        .await);
    assert_clean("files ls --json", &json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<String> = value["result"]["entries"]
        .as_array()
        .or_else(|| value["entries"].as_array())
        .expect("entries in the JSON")
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect();
    assert!(names.iter().any(|n| n.ends_with(EVIL)), "{names:?}");

    // A process whose arguments carry the same (the shell's `$0`): `ps` shows one row for it.
    let marker = format!("cordon-hostile-{}", std::process::id());
    let mut child = Command::new("sh")
        .args(["-c", "sleep 300; : \"$0\"", &format!("{marker}{EVIL}")])
        .spawn()
        .unwrap();
    let ps = ok(&deployment
        .run_cli(&["ps", "--agent", &agent.id, "--wait"])
        .await);
    let _ = child.kill();
    let _ = child.wait();
    assert_clean("ps", &ps);
    assert!(ps.contains(&marker), "the process is listed");
    assert!(!ps.lines().any(|l| l.starts_with("forged-row")), "{ps}");

    // A failed task's message names the path: the error line is escaped too.
    let missing = format!("{root}/{EVIL}-missing");
    let out = deployment
        .run_cli(&["files", "hash", "--agent", &agent.id, "--wait", &missing])
        .await;
    assert!(!out.status.success());
    assert_clean("an error", &text(&out.stderr));
    assert_clean("an error's stdout", &text(&out.stdout));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_the_cli_downloads_are_readable_by_their_owner_only() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("evidence.bin");
    std::fs::write(&source, b"bytes from a host").unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dir.path().join("downloaded.bin");
    ok(&deployment
        .run_cli(&[
            "files",
            "fetch",
            "--agent",
            &agent.id,
            source.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "downloaded evidence is 0600, not {mode:o}");
    assert_eq!(std::fs::read(&out).unwrap(), b"bytes from a host");
    agent.stop().await;
}

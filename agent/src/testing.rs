//! Helpers for tests that attack the agent for real.

use std::path::Path;

/// Runs the ignored test `inner` (its full path) of this test binary in a private mount
/// namespace after bind-mounting each `(source, target)`, with `lab` in `CORDON_TEST_LAB`,
/// and asserts that it ran and passed. Needs root.
pub fn in_mount_namespace(mounts: &[(&Path, &Path)], inner: &str, lab: &Path) {
    let mut script = String::new();
    for (source, target) in mounts {
        script.push_str(&format!(
            "mount --bind '{}' '{}' && ",
            source.display(),
            target.display()
        ));
    }
    script.push_str(&format!(
        "exec '{}' --exact {inner} --ignored --nocapture",
        std::env::current_exe().unwrap().display()
    ));
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("CORDON_TEST_LAB", lab)
        .output()
        .expect("unshare (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run: {text}"
    );
}

/// The lab directory [`in_mount_namespace`] hands its inner test.
pub fn lab() -> std::path::PathBuf {
    std::env::var_os("CORDON_TEST_LAB")
        .expect("run by in_mount_namespace")
        .into()
}

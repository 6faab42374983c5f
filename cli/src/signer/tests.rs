//! Encrypted key files and keys in a real ssh-agent.

use std::process::{Child, Command, Stdio};

use ed25519_dalek::Verifier;

use super::*;

#[test]
fn an_encrypted_key_opens_only_with_its_passphrase() {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = encode(&key, Some("correct horse battery staple")).unwrap();
    assert!(
        pem.contains("BEGIN ENCRYPTED PRIVATE KEY"),
        "{}",
        pem.as_str()
    );
    assert!(!pem.contains("BEGIN PRIVATE KEY"));
    let back = open_encrypted(&pem, "correct horse battery staple").unwrap();
    assert_eq!(back.to_bytes(), key.to_bytes());
    let err = open_encrypted(&pem, "wrong").unwrap_err();
    assert!(err.contains("wrong passphrase"), "{err}");
    // A plain key is a plain PKCS#8 block.
    let plain = encode(&key, None).unwrap();
    assert!(plain.contains("BEGIN PRIVATE KEY"));
    assert_eq!(
        SigningKey::from_pkcs8_pem(&plain).unwrap().to_bytes(),
        key.to_bytes()
    );
}

/// An ssh-agent on its own socket, killed when dropped.
struct SshAgent {
    child: Child,
    socket: std::path::PathBuf,
}

impl SshAgent {
    fn start(dir: &Path) -> Option<Self> {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let agent = Self { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !agent.socket.exists() {
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Some(agent)
    }

    fn add(&self, key_file: &Path) -> bool {
        Command::new("ssh-add")
            .arg(key_file)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_keygen(dir: &Path, name: &str, kind: &str) -> std::path::PathBuf {
    let file = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "cordon-test", "-f"])
        .arg(&file)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ssh-keygen -t {kind}");
    file
}

#[test]
fn a_key_in_ssh_agent_signs_what_agents_verify() {
    let dir = tempfile::tempdir().unwrap();
    let Some(agent) = SshAgent::start(dir.path()) else {
        eprintln!("SKIPPED: ssh-agent (openssh-client) is not installed");
        return;
    };
    let private = ssh_keygen(dir.path(), "id_ed25519", "ed25519");
    let public = private.with_extension("pub");

    // Not added yet: refused, saying how to add it.
    let err = AgentKey::at(&agent.socket, &public)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ssh-add"), "{err}");

    assert!(agent.add(&private), "ssh-add");
    let key = AgentKey::at(&agent.socket, &public).unwrap();
    let bytes = b"cordon/action/v1\0some canonical request";
    let signature = key.sign(bytes).unwrap();
    key.public().verify_strict(bytes, &signature).unwrap();
    key.public().verify(bytes, &signature).unwrap();

    // Only Ed25519 keys sign Cordon actions.
    let rsa = ssh_keygen(dir.path(), "id_rsa", "rsa");
    let err = AgentKey::at(&agent.socket, &rsa.with_extension("pub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("only ssh-ed25519"), "{err}");
}

//! Signing with an Ed25519 key held by `ssh-agent` (OpenSSH's agent protocol over
//! `$SSH_AUTH_SOCK`), so the private key never lies in a file Cordon reads. An `ssh-ed25519`
//! signature is a plain Ed25519 signature over the bytes given, the very signature agents
//! verify. Only the two messages needed are spoken: list identities, sign.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use ed25519_dalek::{Signature, VerifyingKey};

use crate::CliError;

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const FAILURE: u8 = 5;
/// Largest agent answer read (a few hundred keys).
const MAX_ANSWER: usize = 256 * 1024;
const ED25519: &[u8] = b"ssh-ed25519";

/// A key the agent holds, named by its public half.
#[derive(Debug, Clone)]
pub struct AgentKey {
    socket: PathBuf,
    public: VerifyingKey,
    /// The SSH wire form of the public key (the agent names keys by it).
    blob: Vec<u8>,
}

impl AgentKey {
    /// The key in the agent at `$SSH_AUTH_SOCK` whose public key is in `public_file` (an
    /// OpenSSH `.pub` line, `ssh-ed25519 AAAA… comment`).
    pub fn from_public_file(public_file: &Path) -> Result<Self, CliError> {
        let socket = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
            CliError::Usage(format!(
                "{}: names a key in ssh-agent, but SSH_AUTH_SOCK is not set (is ssh-agent \
                 running?)",
                public_file.display()
            ))
        })?;
        Self::at(Path::new(&socket), public_file)
    }

    /// As [`AgentKey::from_public_file`], with the agent at `socket`.
    pub fn at(socket: &Path, public_file: &Path) -> Result<Self, CliError> {
        let fail = |why: String| CliError::Usage(format!("{}: {why}", public_file.display()));
        let text = std::fs::read_to_string(public_file).map_err(|e| fail(e.to_string()))?;
        let blob = parse_openssh_public(&text).map_err(fail)?;
        let public = public_from_blob(&blob).map_err(fail)?;
        let socket = socket.to_path_buf();
        let key = Self {
            socket,
            public,
            blob,
        };
        if !key.identities()?.contains(&key.blob) {
            return Err(fail(
                "this key is not in the ssh-agent (add it with: ssh-add PRIVATE_KEY_FILE)".into(),
            ));
        }
        Ok(key)
    }

    pub fn public(&self) -> VerifyingKey {
        self.public
    }

    /// Asks the agent to sign `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Result<Signature, CliError> {
        let mut request = vec![SIGN_REQUEST];
        put_string(&mut request, &self.blob);
        put_string(&mut request, bytes);
        request.extend_from_slice(&0u32.to_be_bytes());
        let answer = self.call(&request)?;
        let mut r = Reader(&answer);
        match r.byte() {
            Some(SIGN_RESPONSE) => {}
            Some(FAILURE) => return Err(CliError::Other(
                "ssh-agent refused to sign (a confirmation was declined, or the key was removed)"
                    .into(),
            )),
            other => {
                return Err(agent_error(format!(
                    "unexpected answer {other:?} to a sign request"
                )))
            }
        }
        let mut sig = Reader(
            r.string()
                .ok_or_else(|| agent_error("short signature".into()))?,
        );
        if sig.string() != Some(ED25519) {
            return Err(agent_error("the signature is not ssh-ed25519".into()));
        }
        let raw: [u8; 64] = sig
            .string()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| agent_error("the signature is not 64 bytes".into()))?;
        let signature = Signature::from_bytes(&raw);
        // Never send on a signature that does not verify under the key we meant.
        self.public
            .verify_strict(bytes, &signature)
            .map_err(|_| agent_error("the signature does not verify under the key".into()))?;
        Ok(signature)
    }

    /// The public key blobs the agent holds.
    fn identities(&self) -> Result<Vec<Vec<u8>>, CliError> {
        let answer = self.call(&[REQUEST_IDENTITIES])?;
        let mut r = Reader(&answer);
        if r.byte() != Some(IDENTITIES_ANSWER) {
            return Err(agent_error("unexpected answer to a list request".into()));
        }
        let count = r
            .u32()
            .ok_or_else(|| agent_error("short identity list".into()))?;
        let mut out = Vec::new();
        for _ in 0..count.min(4096) {
            let blob = r
                .string()
                .ok_or_else(|| agent_error("short identity".into()))?;
            let _comment = r
                .string()
                .ok_or_else(|| agent_error("short identity".into()))?;
            out.push(blob.to_vec());
        }
        Ok(out)
    }

    /// One request and its answer, each a u32 length and the message.
    fn call(&self, message: &[u8]) -> Result<Vec<u8>, CliError> {
        let io = |e: std::io::Error| {
            CliError::Other(format!("ssh-agent at {}: {e}", self.socket.display()))
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io)?;
        let len =
            u32::try_from(message.len()).map_err(|_| agent_error("request too large".into()))?;
        stream.write_all(&len.to_be_bytes()).map_err(io)?;
        stream.write_all(message).map_err(io)?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ANSWER {
            return Err(agent_error(format!("an answer of {len} bytes")));
        }
        let mut answer = vec![0u8; len];
        stream.read_exact(&mut answer).map_err(io)?;
        Ok(answer)
    }
}

fn agent_error(why: String) -> CliError {
    CliError::Other(format!("ssh-agent: {why}"))
}

/// Whether `text` looks like an OpenSSH public key line.
pub fn is_openssh_public(text: &str) -> bool {
    text.trim_start().starts_with("ssh-")
}

/// The key blob of an `ssh-ed25519 BASE64 [comment]` line.
fn parse_openssh_public(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let mut parts = text.split_whitespace();
    match parts.next() {
        Some("ssh-ed25519") => {}
        Some(other) => {
            return Err(format!(
                "a {other} key; only ssh-ed25519 keys sign Cordon actions"
            ))
        }
        None => return Err("empty public key file".into()),
    }
    let b64 = parts.next().ok_or("no key after ssh-ed25519")?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the key is not base64: {e}"))
}

fn public_from_blob(blob: &[u8]) -> Result<VerifyingKey, String> {
    let mut r = Reader(blob);
    if r.string() != Some(ED25519) {
        return Err("the key blob is not ssh-ed25519".into());
    }
    let raw: [u8; 32] = r
        .string()
        .and_then(|s| s.try_into().ok())
        .ok_or("the Ed25519 key is not 32 bytes")?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an Ed25519 point: {e}"))
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads SSH wire types from a slice; `None` when it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head)
    }
}

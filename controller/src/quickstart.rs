//! `cordon-controller quickstart`: a whole deployment on this machine in one command. Creates
//! the data dir if missing, starts the controller on its embedded SQLite store, enrols and runs a
//! local agent in-process, writes a responder config, and runs until Ctrl-C. Run it again and it
//! reuses everything.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use cordon_agent::{enroll::EnrollOptions, identity::AgentDir, AgentConfig};
use cordon_cli::config::ResponderConfig;
use tokio_util::sync::CancellationToken;

use crate::{
    deployment::{self, DataDir, InitOptions},
    now_ms, secret,
    server::{self, ServeConfig},
    store::{NewEnrollmentToken, Role},
};

/// Quickstart settings.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    pub data_dir: PathBuf,
    pub agent_listen: SocketAddr,
    pub api_listen: SocketAddr,
}

/// The local agent's data dir inside the deployment.
pub fn agent_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("local-agent")
}

/// The responder config quickstart writes.
pub fn responder_config_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("responder.toml")
}

/// The quickstart responder's signing key (PKCS#8 PEM, 0600); its public key is beside it.
pub fn responder_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("responder.key")
}

/// How long an action signed by the quickstart responder key may live, and the longest block
/// or isolation it may order on the local agent.
const RESPONDER_MAX_TTL: &str = "1d";

/// Runs until `shutdown`; `ready` is called with the API URL once the agent is enrolled.
pub async fn run(
    options: QuickstartOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&str),
) -> anyhow::Result<()> {
    let dir = DataDir::new(&options.data_dir);
    let report = deployment::init(&dir, &InitOptions::default())
        .await
        .with_context(|| format!("initialising {}", options.data_dir.display()))?;
    if report.created {
        println!("initialised a new deployment in {}", report.data_dir);
    } else {
        println!("reusing the deployment in {}", report.data_dir);
    }

    let mut config = ServeConfig::new(&options.data_dir);
    config.agent_listen = options.agent_listen;
    config.api_listen = options.api_listen;
    let running = server::start(config, shutdown.clone())
        .await
        .context("starting the controller")?;
    let api_url = format!("https://{}", running.api_addr);

    let (responder_key, key_is_new) = responder_key(&options.data_dir)?;
    let responder_path = responder_config_path(&options.data_dir);
    write_responder_config(&running, &dir, &responder_path, &api_url, &responder_key).await?;

    let agent_data = agent_dir(&options.data_dir);
    let agent_is_new = !AgentDir::new(&agent_data).is_enrolled();
    if agent_is_new {
        let token = secret::new_token(secret::ENROLL_TOKEN_PREFIX);
        running
            .controller
            .store
            .create_enrollment_token(&NewEnrollmentToken {
                token_hash: secret::hash_token(&token),
                created_at_ms: now_ms(),
                expires_at_ms: now_ms() + 10 * 60 * 1000,
                created_by: "quickstart".into(),
                note: Some("quickstart local agent".into()),
            })
            .await
            .context("creating the local agent's enrolment token")?;
        let file = cordon_agent::enroll::enroll(&EnrollOptions {
            data_dir: agent_data.clone(),
            controller: running.agent_addr.to_string(),
            ca_fingerprint: running.controller.ca.fingerprint(),
            token,
        })
        .await
        .context("enrolling the local agent")?;
        println!("enrolled the local agent as {}", file.agent_id);
    }
    // Only when the key or the agent is new: later, the host's policy is its owner's to change.
    // Before the agent starts, so its hello already reports the key as trusted.
    if key_is_new || agent_is_new {
        trust_responder_key(&agent_data, &responder_key)?;
    }
    let mut agent_config = AgentConfig::new(&agent_data);
    // The listener may be on another port than at enrolment (e.g. --agent-listen changed).
    agent_config.controller_override = Some(running.agent_addr.to_string());
    let agent = tokio::spawn(cordon_agent::run(agent_config, shutdown.clone()));

    ready(&api_url);
    println!();
    println!("Cordon is running.");
    println!("  API:              {api_url}");
    println!("  agent listener:   {}", running.agent_addr);
    println!(
        "  CA fingerprint:   {}",
        running.controller.ca.fingerprint()
    );
    println!(
        "  responder config: {}  (holds the API token; mode 0600)",
        responder_path.display()
    );
    println!(
        "  signing key:      {}  (trusted by the local agent for every action)",
        responder_key.display()
    );
    println!();
    println!("Try, in another terminal:");
    println!(
        "  export CORDON_CONFIG={}",
        absolute(&responder_path).display()
    );
    println!("  cargo run -q -p cordon-cli -- agents list");
    println!("  cargo run -q -p cordon-cli -- tokens create --ttl 10m");
    println!("  sleep 600 &  cargo run -q -p cordon-cli -- kill --agent AGENT_ID --pid $!");
    println!();
    println!("Press Ctrl-C to stop.");

    shutdown.cancelled().await;
    println!("stopping…");
    match agent.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "local agent stopped with an error"),
        Err(e) => tracing::error!(error = %e, "local agent task failed"),
    }
    running.wait().await;
    println!("stopped.");
    Ok(())
}

/// Writes the responder config with a new admin token the first time; afterwards only keeps
/// its URL current (the API may listen elsewhere this run).
async fn write_responder_config(
    running: &server::Running,
    dir: &DataDir,
    path: &std::path::Path,
    api_url: &str,
    signing_key: &std::path::Path,
) -> anyhow::Result<()> {
    let mut responder = if path.exists() {
        cordon_cli::config::load(path, true).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        ResponderConfig::default()
    };
    if responder.token.is_none() {
        let token = secret::new_token(secret::API_TOKEN_PREFIX);
        running
            .controller
            .store
            .create_api_token(
                &uuid::Uuid::new_v4().to_string(),
                &secret::hash_token(&token),
                "quickstart responder",
                Role::Admin,
                now_ms(),
                None,
            )
            .await
            .context("creating the quickstart API token")?;
        responder.token = Some(token);
    } else if responder.url.as_deref() == Some(api_url) && responder.signing_key.is_some() {
        return Ok(());
    }
    responder.url = Some(api_url.to_string());
    responder.ca_cert = Some(absolute(&dir.ca_cert()));
    if responder.signing_key.is_none() {
        responder.signing_key = Some(absolute(signing_key));
    }
    let text = toml::to_string(&responder).context("encoding the responder config")?;
    secret::write_private_file(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes the quickstart responder's signing key the first time; returns its path and whether
/// it was made now.
fn responder_key(data_dir: &std::path::Path) -> anyhow::Result<(PathBuf, bool)> {
    let path = responder_key_path(data_dir);
    let is_new = !path.exists();
    if is_new {
        let info =
            cordon_cli::keys::generate_key_file(&path, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "made the responder signing key {} (key id {})",
            path.display(),
            info.key_id
        );
    }
    Ok((path, is_new))
}

/// Trusts the responder key on the local agent for every action, unless it already is.
fn trust_responder_key(
    agent_data: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<()> {
    let key = cordon_cli::keys::load_signing_key(key_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = cordon_cli::keys::id_of(&key);
    let policy = cordon_agent::policy::Policy::load(agent_data).with_context(|| {
        format!(
            "reading the local agent's policy in {}",
            agent_data.display()
        )
    })?;
    if policy.signer(&id).is_some() {
        return Ok(());
    }
    let public = cordon_cli::keys::public_path(key_path);
    if !public.exists() {
        let pem = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
            &key.public(),
            ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
        )
        .map_err(|e| anyhow::anyhow!("encoding the responder public key: {e}"))?;
        secret::write_file_mode(&public, pem.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", public.display()))?;
    }
    let said = cordon_agent::trust::add(
        agent_data,
        &cordon_agent::trust::AddOptions {
            public_key_file: &public,
            actions: "all",
            max_ttl: Some(RESPONDER_MAX_TTL),
            name: Some("quickstart responder"),
        },
    )
    .context("trusting the responder key on the local agent")?;
    println!("local agent: {said}");
    Ok(())
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

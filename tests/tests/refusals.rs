//! Every refused handshake and enrolment, each its own test: the controller refuses, says why
//! where it can, and keeps serving everyone else.

use std::sync::Arc;

use cordon_api::agents::AgentStatus;
use cordon_protocol::hello::HelloOutcome;
use cordon_tests::{agent_tls, hello_for, try_session, Deployment};

/// A client certificate from a CA the controller never saw, claiming a real agent's id.
fn foreign_tls(claimed_id: &str, real_ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let (other_ca, _) = cordon_controller::pki::Ca::generate("someone else's CA").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let issued = other_ca.issue_agent(&csr, claimed_id).unwrap();
    let cert = cordon_agent::pem_cert(&issued.cert_pem).unwrap();
    let ca = cordon_agent::pem_cert(real_ca_pem).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    cordon_agent::tls::session_config(ca, cert, key).unwrap()
}

async fn still_serves_a_good_agent(deployment: &Deployment) {
    let good = deployment.enroll_agent().await;
    let outcome = try_session(
        deployment.agent_addr,
        agent_tls(good.data_dir()),
        &hello_for(&good.id),
    )
    .await
    .expect("good agent accepted");
    assert!(
        matches!(outcome, HelloOutcome::Accepted { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    let deployment = Deployment::start().await;
    let ca = cordon_agent::pem_cert(&std::fs::read_to_string(deployment.ca_cert_path()).unwrap())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(cordon_agent::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![cordon_protocol::ALPN_SESSION.to_vec()];
    let result = try_session(
        deployment.agent_addr,
        Arc::new(config),
        &hello_for("anyone"),
    )
    .await;
    let err = result.expect_err("no certificate, no session");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    still_serves_a_good_agent(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let deployment = Deployment::start().await;
    let real = deployment.enroll_agent().await;
    let ca_pem = std::fs::read_to_string(deployment.ca_cert_path()).unwrap();
    let result = try_session(
        deployment.agent_addr,
        foreign_tls(&real.id, &ca_pem),
        &hello_for(&real.id),
    )
    .await;
    let err = result.expect_err("foreign CA must be refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("alert"),
        "{err}"
    );
    still_serves_a_good_agent(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agent_is_disconnected_and_refused_at_its_next_handshake() {
    let deployment = Deployment::start().await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;

    let out = deployment.cli(&["agents", "revoke", &agent.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));

    let view = deployment
        .wait_for_status(&agent.id, AgentStatus::Revoked)
        .await;
    assert!(view.revoked_at_ms.is_some());
    let list = deployment.cli(&["agents", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("revoked"));

    // Its live session is gone and its certificate no longer opens one.
    for _ in 0..100 {
        if !deployment.controller().registry.is_online(&agent.id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!deployment.controller().registry.is_online(&agent.id));
    let result = try_session(
        deployment.agent_addr,
        agent_tls(agent.data_dir()),
        &hello_for(&agent.id),
    )
    .await;
    let err = result.expect_err("revoked certificate must be refused");
    assert!(
        err.to_lowercase().contains("revoked") || err.contains("alert"),
        "{err}"
    );
    agent.stop().await;
    still_serves_a_good_agent(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_naming_another_agent_than_the_certificate_is_refused() {
    let deployment = Deployment::start().await;
    let a = deployment.enroll_agent().await;
    let b = deployment.enroll_agent().await;
    let outcome = try_session(
        deployment.agent_addr,
        agent_tls(a.data_dir()),
        &hello_for(&b.id),
    )
    .await
    .expect("a hello comes back");
    match outcome {
        HelloOutcome::Refused { reason } => {
            assert!(reason.contains(&a.id) && reason.contains(&b.id), "{reason}")
        }
        other => panic!("impersonation accepted: {other:?}"),
    }
    assert!(!deployment.controller().registry.is_online(&b.id));
    still_serves_a_good_agent(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_token_cannot_be_used_twice() {
    let deployment = Deployment::start().await;
    let token = deployment.enrollment_token(600).await;
    let options = |dir: &std::path::Path| cordon_agent::enroll::EnrollOptions {
        data_dir: dir.to_path_buf(),
        controller: deployment.agent_addr.to_string(),
        ca_fingerprint: deployment.ca_fingerprint.clone(),
        token: token.clone(),
    };
    let first = tempfile::tempdir().unwrap();
    cordon_agent::enroll::enroll(&options(first.path()))
        .await
        .expect("first use");
    let second = tempfile::tempdir().unwrap();
    let err = cordon_agent::enroll::enroll(&options(second.path()))
        .await
        .expect_err("second use refused");
    assert!(err.to_string().contains("already used"), "{err}");
    assert!(
        !second.path().join("agent.toml").exists(),
        "nothing half-enrolled left behind"
    );
    let agents: Vec<serde_json::Value> = deployment.api().get_json("/api/v1/agents").await.unwrap();
    assert_eq!(agents.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unknown_enrolment_tokens_are_refused() {
    let deployment = Deployment::start().await;
    let token = deployment.enrollment_token(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = cordon_agent::enroll::EnrollOptions {
        data_dir: dir.path().to_path_buf(),
        controller: deployment.agent_addr.to_string(),
        ca_fingerprint: deployment.ca_fingerprint.clone(),
        token,
    };
    let err = cordon_agent::enroll::enroll(&options)
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");

    options.token = "cordon_enroll_made-up".into();
    let err = cordon_agent::enroll::enroll(&options)
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("unknown enrolment token"), "{err}");
    let agents: Vec<serde_json::Value> = deployment.api().get_json("/api/v1/agents").await.unwrap();
    assert!(agents.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_against_the_wrong_ca_fingerprint_sends_no_token() {
    let deployment = Deployment::start().await;
    let token = deployment.enrollment_token(600).await;
    let dir = tempfile::tempdir().unwrap();
    let err = cordon_agent::enroll::enroll(&cordon_agent::enroll::EnrollOptions {
        data_dir: dir.path().to_path_buf(),
        controller: deployment.agent_addr.to_string(),
        ca_fingerprint: "ab".repeat(32),
        token: token.clone(),
    })
    .await
    .expect_err("pin mismatch");
    assert!(err.to_string().contains("fingerprint"), "{err}");
    // The token was never sent, so it still works with the right pin.
    cordon_agent::enroll::enroll(&cordon_agent::enroll::EnrollOptions {
        data_dir: dir.path().to_path_buf(),
        controller: deployment.agent_addr.to_string(),
        ca_fingerprint: deployment.ca_fingerprint.clone(),
        token,
    })
    .await
    .expect("token unspent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_in_another_protocol_version_is_refused_naming_both_versions() {
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    let mut hello = hello_for(&agent.id);
    hello.protocol_version = cordon_protocol::PROTOCOL_VERSION + 1;
    let outcome = try_session(deployment.agent_addr, agent_tls(agent.data_dir()), &hello)
        .await
        .expect("a hello comes back");
    match outcome {
        HelloOutcome::Refused { reason } => {
            let ours = cordon_protocol::PROTOCOL_VERSION.to_string();
            let theirs = (cordon_protocol::PROTOCOL_VERSION + 1).to_string();
            assert!(
                reason.contains(&ours) && reason.contains(&theirs),
                "{reason}"
            );
        }
        other => panic!("accepted a hello in an unknown version: {other:?}"),
    }
    still_serves_a_good_agent(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_the_connection_and_the_controller_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deployment = Deployment::start().await;
    let agent = deployment.enroll_agent().await;
    for payload in [
        // A frame header claiming 4 GiB: refused before anything is allocated.
        vec![0xff, 0xff, 0xff, 0xff],
        // A hello claiming 1 MiB: within the frame limit, beyond the much smaller hello limit.
        vec![0, 0x10, 0, 0],
        // A well-sized frame of garbage instead of a hello.
        vec![0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef],
    ] {
        let tcp = tokio::net::TcpStream::connect(deployment.agent_addr)
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(agent_tls(agent.data_dir()))
            .connect(cordon_agent::tls::controller_name().unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(&payload).await.unwrap();
        tls.flush().await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tls.read_to_end(&mut buf),
        )
        .await;
        assert!(
            read.is_ok(),
            "controller must close a connection that sent {payload:02x?}"
        );
        assert!(!deployment.controller().registry.is_online(&agent.id));
    }
    still_serves_a_good_agent(&deployment).await;
}

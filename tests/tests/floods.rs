//! Floods on loopback, from other loopback addresses (127.0.0.0/8 is all this machine): idle
//! connections that never handshake, connections that handshake and then sit, and one token
//! taking every live-event stream. Each time, a real user from another address is still served.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use cordon_controller::api::API_BOUNDS;
use cordon_tests::Deployment;
use tokio::{io::AsyncReadExt, net::TcpSocket};

/// A TCP connection to `to` from `from` (any 127.x address is this machine).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// An HTTPS client whose connections come from `from`.
fn client_from(deployment: &Deployment, from: IpAddr) -> reqwest::Client {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let ca = CertificateDer::from_pem_file(deployment.ca_cert_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(cordon_controller::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(from)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn healthy(deployment: &Deployment, from: IpAddr) -> bool {
    client_from(deployment, from)
        .get(format!("{}/api/v1/health", deployment.api_url()))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_from_one_address_leave_the_api_to_everyone_else() {
    let deployment = Deployment::start().await;
    let api = deployment.api_addr;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(stream) = connect_from(ip(2), api).await {
            idle.push(stream);
        }
    }
    assert!(idle.len() > 1000, "the flood connected ({})", idle.len());
    // A real user from another address is served at once, the flood still open.
    assert!(
        healthy(&deployment, ip(1)).await,
        "the API refused a real user"
    );

    // All but the address's handshake allowance were closed at once; the rest are closed
    // once the handshake deadline passes.
    let mut closed_now = 0;
    for stream in &mut idle {
        if closed_by_server(stream, Duration::from_millis(20)).await {
            closed_now += 1;
        }
    }
    let allowance = API_BOUNDS.handshakes_per_peer;
    assert!(
        closed_now >= idle.len() - allowance,
        "{closed_now} of {} closed at once; {allowance} may wait for their handshake",
        idle.len()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for stream in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_by_server(stream, left).await,
            "a connection that never handshakes is closed by the deadline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_handshake_and_sit_are_bounded_per_address() {
    let deployment = Deployment::start().await;
    let per_peer = API_BOUNDS.connections_per_peer.unwrap();
    // Each client keeps its connection open (idle in its pool) after one request.
    let mut clients = Vec::new();
    let mut served = 0;
    for _ in 0..per_peer + 20 {
        let client = client_from(&deployment, ip(3));
        if client
            .get(format!("{}/api/v1/health", deployment.api_url()))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            served += 1;
        }
        clients.push(client);
    }
    assert!(
        served <= per_peer,
        "{served} connections held from one address; at most {per_peer}"
    );
    assert!(
        served >= per_peer / 2,
        "the address was served at all ({served})"
    );
    assert!(
        healthy(&deployment, ip(4)).await,
        "another address is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_take_every_live_event_stream() {
    let deployment = Deployment::start().await;
    let http = client_from(&deployment, ip(1));
    let open = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/events", deployment.api_url());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("the API answers")
        }
    };
    let admin = deployment.admin_token.clone();
    let mut streams = Vec::new();
    for _ in 0..cordon_controller::events::MAX_LIVE_PER_TOKEN {
        let response = open(admin.clone()).await;
        assert!(response.status().is_success(), "{}", response.status());
        streams.push(response);
    }
    let refused = open(admin.clone()).await;
    assert_eq!(refused.status().as_u16(), 503);
    let body = refused.text().await.unwrap();
    assert!(body.contains("this token"), "{body}");
    // Another token still gets a stream.
    let other = deployment.api_token("viewer", "second-consumer").await;
    let response = open(other).await;
    assert!(response.status().is_success(), "{}", response.status());
    drop(streams);
}

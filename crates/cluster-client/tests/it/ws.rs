//! The client over real WebSocket on 127.0.0.1, with its default connector, against the fake
//! config service.

use crate::common::*;
use cluster_client::transport::tls::server_config_from_pem;
use cluster_client::transport::ws::WsServerConfig;
use cluster_client::{Client, ClientState, EventHandler, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

#[tokio::test]
async fn ready_config_routes_and_hosts_over_loopback_websocket() {
    let service = cluster_testkit::FakeConfigService::new();
    let addr = service.listen_ws("127.0.0.1:0").await.unwrap();
    let host = addr.to_string(); // `ip:port`, as in Go: WebSocket

    let a = Client::new(module("A", "127.0.9.1"), config_data("{}"), [host.clone()]).unwrap();
    let run_a = spawn_run(&a, EventHandler::new());
    wait_ready(&a).await;

    let (handler, watched) = watching("A");
    let b = Client::new(
        module("B", "127.0.9.2"),
        config_data(r#"{"someString":"x"}"#),
        [format!("ws://{host}")],
    )
    .unwrap();
    let run_b = spawn_run(&b, handler);
    let ready = wait_ready(&b).await;
    assert!(
        matches!(ready, ClientState::Ready { ref host, .. } if host.starts_with("ws://127.0.0.1:"))
    );
    assert_eq!(watched.hosts.wait_len(1).await[0], ["127.0.9.1:9999"]);
    assert_eq!(watched.routes.wait_len(1).await[0][0].module_name, "A");

    service
        .set_config("B", r#"{"someString":"y"}"#, None)
        .unwrap();
    assert_eq!(
        watched.configs.wait_len(2).await,
        [r#"{"someString":"x"}"#, r#"{"someString":"y"}"#]
    );

    close_and_join(&a, run_a).await;
    assert_eq!(watched.hosts.wait_len(2).await[1], Vec::<String>::new());
    close_and_join(&b, run_b).await;
    service.wait_connections("B", 0, WAIT).await.unwrap();
}

/// A CA, and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cluster-client test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn wss_host_uses_tls_with_the_configured_ca() {
    let (ca, cert, key) = pki();
    let tls = server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let service = cluster_testkit::FakeConfigService::builder()
        .ws_config(WsServerConfig::default().with_tls(tls))
        .build();
    let addr = service.listen_ws("127.0.0.1:0").await.unwrap();
    let host = format!("wss://localhost:{}", addr.port());

    // Without the CA the certificate is refused: the client backs off and retries.
    let untrusted =
        Client::new(module("S", "127.0.9.5"), config_data("{}"), [host.clone()]).unwrap();
    let run = spawn_run(&untrusted, EventHandler::new());
    wait_backing_off(&untrusted).await;
    assert!(service.connections("S").is_empty());
    close_and_join(&untrusted, run).await;

    let client = Client::builder(module("S", "127.0.9.5"), config_data("{}"), [host])
        .tls(TlsConfig::custom_ca_pem(ca))
        .build()
        .unwrap();
    let configs = Configs::new();
    let run = spawn_run(
        &client,
        EventHandler::new().remote_config_receiver(configs.clone()),
    );
    wait_ready(&client).await;
    assert_eq!(configs.wait_len(1).await, ["{}"]);
    service.wait_ready_instances("S", 1, WAIT).await.unwrap();
    close_and_join(&client, run).await;
}

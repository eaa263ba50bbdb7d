//! `wss://` with certificates made at test time (rcgen): a round trip through a custom CA, an
//! untrusted certificate, a wrong name, and no fallback between `ws` and `wss`.

use bytes::Bytes;
use cluster_transport::tls::{TlsConfig, server_config_from_pem};
use cluster_transport::ws::{WsAcceptor, WsConfig, WsConnector, WsServerConfig};
use cluster_transport::{Acceptor, Connector, Endpoint, Incoming, TransportError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a server certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki(names: &[&str]) -> Pki {
    make_pki_with_ca("test CA", names)
}

fn make_pki_with_ca(ca_name: &str, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

async fn wss_acceptor(pki: &Pki) -> (WsAcceptor, u16) {
    let tls = server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let acceptor = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default().with_tls(tls))
        .await
        .unwrap();
    let port = acceptor.local_addr().port();
    (acceptor, port)
}

fn connector(tls: TlsConfig) -> WsConnector {
    WsConnector::new(WsConfig::default().with_tls(tls)).unwrap()
}

#[tokio::test]
async fn wss_round_trip_with_a_custom_ca() {
    let pki = make_pki(&["127.0.0.1"]);
    let (mut acceptor, port) = wss_acceptor(&pki).await;
    let endpoint: Endpoint = format!("wss://127.0.0.1:{port}").parse().unwrap();
    let mut client = connector(TlsConfig::custom_ca_pem(pki.ca_pem.clone()))
        .connect(&endpoint, "secure module")
        .await
        .unwrap();
    let mut accepted = acceptor.accept().await.unwrap();
    assert_eq!(accepted.module_name, "secure module");

    client
        .sink
        .feed(Bytes::from_static(b"EVENT||1||{}"))
        .await
        .unwrap();
    client.sink.flush().await.unwrap();
    assert_eq!(
        accepted.transport.stream.recv().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"EVENT||1||{}"))
    );
    accepted
        .transport
        .sink
        .feed(Bytes::from_static(b"__ack_EVENT||1||ok"))
        .await
        .unwrap();
    accepted.transport.sink.flush().await.unwrap();
    assert_eq!(
        client.stream.recv().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"__ack_EVENT||1||ok"))
    );
    client.sink.close(1000, "bye").await.unwrap();
    match accepted.transport.stream.recv().await.unwrap() {
        Incoming::Closed(info) => assert!(info.is_normal()),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// The CA file is read once, when the connector is built (a sync call: here on the blocking
/// pool, as async code should), never while dialing: the file is gone before the dial.
#[tokio::test]
async fn a_custom_ca_file_added_to_the_webpki_roots_is_read_when_the_connector_is_built() {
    let pki = make_pki(&["127.0.0.1"]);
    let dir = std::env::temp_dir().join(format!("cluster-transport-tls-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let ca_file = dir.join("ca.pem");
    tokio::fs::write(&ca_file, &pki.ca_pem).await.unwrap();
    let tls = TlsConfig::new().add_ca_file(&ca_file);
    let built = tokio::task::spawn_blocking(move || connector(tls))
        .await
        .unwrap();
    tokio::fs::remove_dir_all(&dir).await.unwrap();
    let (mut acceptor, port) = wss_acceptor(&pki).await;
    let endpoint: Endpoint = format!("wss://127.0.0.1:{port}").parse().unwrap();
    let _client = built.connect(&endpoint, "m").await.unwrap();
    assert_eq!(acceptor.accept().await.unwrap().module_name, "m");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let pki = make_pki(&["127.0.0.1"]);
    // Same CA name, another key: the signature does not verify.
    let same_name = make_pki(&["127.0.0.1"]);
    // Another CA altogether: the issuer is unknown.
    let other = make_pki_with_ca("another CA", &["127.0.0.1"]);
    let (_acceptor, port) = wss_acceptor(&pki).await;
    let endpoint: Endpoint = format!("wss://127.0.0.1:{port}").parse().unwrap();
    for tls in [
        TlsConfig::new(),
        TlsConfig::custom_ca_pem(same_name.ca_pem.clone()),
        TlsConfig::custom_ca_pem(other.ca_pem.clone()),
    ] {
        match connector(tls).connect(&endpoint, "m").await {
            Err(TransportError::Tls { reason, source, .. }) => {
                assert!(reason.contains("untrusted certificate"), "{reason}");
                assert!(
                    matches!(source, rustls::Error::InvalidCertificate(_)),
                    "{source:?}"
                );
            }
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_server_name_is_refused() {
    let pki = make_pki(&["config.example"]);
    let (mut acceptor, port) = wss_acceptor(&pki).await;
    let endpoint: Endpoint = format!("wss://127.0.0.1:{port}").parse().unwrap();
    match connector(TlsConfig::custom_ca_pem(pki.ca_pem.clone()))
        .connect(&endpoint, "m")
        .await
    {
        Err(err @ TransportError::Tls { .. }) => {
            let source = std::error::Error::source(&err).expect("rustls's error is the source");
            assert!(
                matches!(
                    source.downcast_ref::<rustls::Error>(),
                    Some(rustls::Error::InvalidCertificate(_))
                ),
                "{source:?}"
            );
            let TransportError::Tls { reason, .. } = err else {
                unreachable!()
            };
            assert!(reason.contains("wrong name"), "{reason}");
            assert!(reason.contains("127.0.0.1"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // Naming the server explicitly makes the same certificate acceptable.
    let _client =
        connector(TlsConfig::custom_ca_pem(pki.ca_pem.clone()).server_name("config.example"))
            .connect(&endpoint, "named")
            .await
            .unwrap();
    assert_eq!(acceptor.accept().await.unwrap().module_name, "named");
}

#[tokio::test]
async fn ws_and_wss_never_fall_back_to_each_other() {
    let pki = make_pki(&["127.0.0.1"]);
    let (_tls_acceptor, tls_port) = wss_acceptor(&pki).await;
    let plain = WsAcceptor::bind("127.0.0.1:0", WsServerConfig::default())
        .await
        .unwrap();
    let trusting = connector(TlsConfig::custom_ca_pem(pki.ca_pem.clone()));

    // ws:// to a TLS server: the plain upgrade fails, no TLS is attempted.
    let endpoint: Endpoint = format!("ws://127.0.0.1:{tls_port}").parse().unwrap();
    assert!(matches!(
        trusting.connect(&endpoint, "m").await,
        Err(TransportError::Handshake { .. })
    ));
    // wss:// to a plain server: TLS fails, no plain upgrade is attempted.
    let endpoint: Endpoint = format!("wss://{}", plain.local_addr()).parse().unwrap();
    match trusting.connect(&endpoint, "m").await {
        Err(TransportError::Tls { .. } | TransportError::Handshake { .. }) => {}
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

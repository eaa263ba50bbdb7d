//! What the bootstrap's tests share: a temporary module folder, a fake config service on a
//! loopback WebSocket, a plain HTTP/1.1 GET.

#![allow(dead_code, unreachable_pub)]

use cluster_testkit::FakeConfigService;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh folder for one test's module files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cluster-bootstrap-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    dir
}

/// Writes `text` at `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// A module's `config.yml` in the shape of isp-kit's test data, on loopback ports the system
/// picks, against the config service at `config_service` (its port; `0` for none).
pub fn go_config(module: &str, config_service_port: u16) -> String {
    format!(
        "\
configServiceAddress:
  ip: 127.0.0.1
  port: {config_service_port}
grpcOuterAddress:
  ip: 127.0.0.1
  port: 0
grpcInnerAddress:
  ip: 127.0.0.1
  port: 0
moduleName: {module}
infraServerIp: 127.0.0.1
logLevel: info
healthcheckHandlerTimeout: 500ms
remoteConfigReceiverTimeout: 3s

logfile:
  maxSizeMb: 512
  maxBackups: 4
  compress: true

metricsAutodiscovery:
  enable: true
  additionalLabels:
    team: core
"
    )
}

/// A fake config service on `127.0.0.1`, its WebSocket port.
pub async fn fake_service() -> (FakeConfigService, SocketAddr) {
    let service = FakeConfigService::new();
    let addr = service.listen_ws("127.0.0.1:0").await.unwrap();
    (service, addr)
}

/// `GET path` over a new connection: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

//! The addresses a module declares: its outer IP (isp-kit's "broadcast host") and its
//! `metricsAutodiscovery`.

use crate::local::{LocalConfig, METRICS_PATH};
use cluster_client::MetricsAutodiscovery;
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

/// The IP other modules dial: `grpcOuterAddress.ip` when set, else, as isp-kit does, the
/// address this machine would use to reach the first config service host (a UDP socket
/// "connected" to it: nothing is sent).
///
/// # Errors
/// When the host does not resolve or there is no route to it.
pub(crate) fn outer_ip(local: &LocalConfig, first_host: Option<&str>) -> io::Result<String> {
    if !local.grpc_outer_address.ip.is_empty() {
        return Ok(local.grpc_outer_address.ip.clone());
    }
    let Some(host) = first_host else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no config service host to resolve it against",
        ));
    };
    local_ip_towards(host)
}

/// The local address of a UDP socket connected to `host` (`ip:port`, `[v6]:port`, or a
/// URL `ws://host:port`).
fn local_ip_towards(host: &str) -> io::Result<String> {
    let without_scheme = host.split_once("://").map_or(host, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or(without_scheme);
    let target: SocketAddr = authority.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{authority} resolves to nothing"),
        )
    })?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip().to_string())
}

/// What `MODULE:READY` declares for Prometheus when `metricsAutodiscovery.enable`: the
/// address (`address`, else the outer IP and the infra server's port) and the labels
/// `__metrics_path__` = `/internal/metrics`, `app` = the module's name, and the additional
/// ones (which may override those two, as in Go).
pub(crate) fn metrics_autodiscovery(
    local: &LocalConfig,
    outer_ip: &str,
    infra_port: u16,
) -> Option<MetricsAutodiscovery> {
    let config = &local.metrics_autodiscovery;
    if !config.enable {
        return None;
    }
    let mut labels = BTreeMap::from([
        ("__metrics_path__".to_owned(), METRICS_PATH.to_owned()),
        ("app".to_owned(), local.module_name.clone()),
    ]);
    labels.extend(config.additional_labels.clone());
    let address = if config.address.is_empty() {
        join_host_port(outer_ip, infra_port)
    } else {
        config.address.clone()
    };
    Some(MetricsAutodiscovery { address, labels })
}

/// `host:port`, with brackets around an IPv6 host (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(yaml_like: serde_json::Value) -> LocalConfig {
        let mut base = serde_json::json!({
            "moduleName": "orders",
            "grpcOuterAddress": {"port": 9000},
            "grpcInnerAddress": {"ip": "0.0.0.0", "port": 9000},
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), yaml_like.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn outer_ip_is_configured_or_resolved_towards_the_config_service() {
        let configured =
            local(serde_json::json!({"grpcOuterAddress": {"ip": "10.1.2.3", "port": 9000}}));
        assert_eq!(outer_ip(&configured, None).unwrap(), "10.1.2.3");
        let empty = local(serde_json::json!({}));
        assert_eq!(
            outer_ip(&empty, Some("127.0.0.1:9001")).unwrap(),
            "127.0.0.1"
        );
        assert_eq!(
            outer_ip(&empty, Some("ws://127.0.0.1:9001/isp-etp/")).unwrap(),
            "127.0.0.1"
        );
        assert!(outer_ip(&empty, None).is_err());
    }

    #[test]
    fn autodiscovery_labels_and_address_as_isp_kit() {
        let off = local(serde_json::json!({}));
        assert!(metrics_autodiscovery(&off, "10.0.0.5", 9001).is_none());
        let on = local(serde_json::json!({
            "metricsAutodiscovery": {"enable": true, "additionalLabels": {"zone": "a"}}
        }));
        let declared = metrics_autodiscovery(&on, "10.0.0.5", 9001).unwrap();
        assert_eq!(declared.address, "10.0.0.5:9001");
        assert_eq!(declared.labels["__metrics_path__"], "/internal/metrics");
        assert_eq!(declared.labels["app"], "orders");
        assert_eq!(declared.labels["zone"], "a");
        let explicit = local(serde_json::json!({
            "metricsAutodiscovery": {"enable": true, "address": "metrics.local:80"}
        }));
        assert_eq!(
            metrics_autodiscovery(&explicit, "10.0.0.5", 9001)
                .unwrap()
                .address,
            "metrics.local:80"
        );
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
    }
}

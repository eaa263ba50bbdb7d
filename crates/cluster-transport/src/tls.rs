//! TLS for `wss://` endpoints, with rustls and its `ring` crypto provider.
//!
//! Every config is built with an explicit provider
//! (`builder_with_provider(ring::default_provider())`), so no process-wide default provider
//! is needed and nothing can panic for the lack of one.
//!
//! A [`TlsConfig`] says which certificate authorities the client trusts: the Mozilla roots of
//! `webpki-roots` (the default), custom CAs given as PEM bytes or a PEM file, or both.
//! Handshake failures are [`TransportError::Tls`] with a reason that names the cause
//! ("untrusted certificate ...", "certificate is not valid for name ...").

use crate::TransportError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// The `endpoint` of [`TransportError::Tls`] errors raised while building a config, before
/// any connection.
pub const CONFIG_ENDPOINT: &str = "<tls configuration>";

/// Which certificate authorities a client trusts, and how it names the server.
///
/// The default trusts the `webpki-roots` (Mozilla) roots only. Adding a custom CA keeps
/// them unless [`TlsConfig::webpki_roots`] turns them off; [`TlsConfig::custom_ca_pem`]
/// starts from a custom CA alone.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    webpki_roots: bool,
    ca_pems: Vec<Vec<u8>>,
    ca_files: Vec<PathBuf>,
    server_name: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            webpki_roots: true,
            ca_pems: Vec::new(),
            ca_files: Vec::new(),
            server_name: None,
        }
    }
}

impl TlsConfig {
    /// Trusts the `webpki-roots` roots only (the default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts only the CA certificates in `pem` (one or more `CERTIFICATE` blocks).
    #[must_use]
    pub fn custom_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self::default().webpki_roots(false).add_ca_pem(pem)
    }

    /// Whether to trust the `webpki-roots` roots (default `true`).
    #[must_use]
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.webpki_roots = enabled;
        self
    }

    /// Also trusts the CA certificates in `pem`.
    #[must_use]
    pub fn add_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pems.push(pem.into());
        self
    }

    /// Also trusts the CA certificates in the PEM file at `path`, read when the config is
    /// built ([`TlsConfig::client_config`], called by `WsConnector::new` and the client's
    /// `ClientBuilder::build`), once: never while dialing. That read is a blocking file read:
    /// in async code, build on the blocking pool (`tokio::task::spawn_blocking`), or read the
    /// file with `tokio::fs::read` and pass the bytes to [`TlsConfig::add_ca_pem`].
    #[must_use]
    pub fn add_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Verifies the server certificate against `name` instead of the endpoint's host (for a
    /// host given by IP whose certificate carries a DNS name). Default: the endpoint's host.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The name to verify the certificate of `host` against.
    ///
    /// # Errors
    /// [`TransportError::Tls`] when the name is neither a DNS name nor an IP address.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, TransportError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|_| TransportError::Tls {
            endpoint: host.to_owned(),
            reason: format!("{name:?} is not a valid server name"),
        })
    }

    /// Builds the rustls client config (ring provider, safe default protocol versions).
    /// Reads the files of [`TlsConfig::add_ca_file`] with blocking `std::fs` reads: call it
    /// from sync code or the blocking pool, not from a task on a runtime thread.
    ///
    /// # Errors
    /// [`TransportError::Tls`] (endpoint [`CONFIG_ENDPOINT`]) when a CA file cannot be read,
    /// a PEM holds no certificate or a bad one, or no CA is trusted at all.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TransportError> {
        let mut roots = RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for path in &self.ca_files {
            let pem = std::fs::read(path).map_err(|e| {
                config_error(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            add_pem_certs(&mut roots, &pem, &path.display().to_string())?;
        }
        for pem in &self.ca_pems {
            add_pem_certs(&mut roots, pem, "CA PEM")?;
        }
        if roots.is_empty() {
            return Err(config_error("no trusted certificate authority".to_owned()));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("cannot set up TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(reason: String) -> TransportError {
    TransportError::Tls {
        endpoint: CONFIG_ENDPOINT.to_owned(),
        reason,
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("{what}: malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(format!("{what}: no CERTIFICATE in PEM")));
    }
    Ok(certs)
}

fn add_pem_certs(roots: &mut RootCertStore, pem: &[u8], what: &str) -> Result<(), TransportError> {
    for cert in parse_certs(pem, what)? {
        roots
            .add(cert)
            .map_err(|e| config_error(format!("{what}: unusable CA certificate: {e}")))?;
    }
    Ok(())
}

/// Builds a rustls server config (ring provider) from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), for [`crate::ws::WsServerConfig::tls`].
///
/// # Errors
/// [`TransportError::Tls`] (endpoint [`CONFIG_ENDPOINT`]) when the PEM holds no certificate
/// or no key, or rustls refuses them.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TransportError> {
    let chain = parse_certs(cert_chain_pem, "certificate chain")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut io::BufReader::new(key_pem))
        .map_err(|e| config_error(format!("private key: malformed PEM: {e}")))?
        .ok_or_else(|| config_error("private key: no key in PEM".to_owned()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| config_error(format!("certificate or key refused: {e}")))?;
    Ok(Arc::new(config))
}

/// Turns an IO error from a TLS handshake into [`TransportError::Tls`] with a readable
/// reason when rustls caused it, or `None` when it is a plain IO error.
pub(crate) fn classify(err: &io::Error, endpoint: &str, name: &str) -> Option<TransportError> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    let reason = match tls {
        // A chain to an unknown CA, or to a CA of the same name but another key.
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            "untrusted certificate: it is not issued by a trusted certificate authority".to_owned()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("wrong name: the certificate is not valid for {name:?}"),
        rustls::Error::InvalidCertificate(other) => format!("invalid certificate: {other}"),
        other => format!("TLS handshake failed: {other}"),
    };
    Some(TransportError::Tls {
        endpoint: endpoint.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_builds_with_webpki_roots() {
        assert!(TlsConfig::new().client_config().is_ok());
    }

    #[test]
    fn bad_ca_input_is_a_tls_error() {
        let err = TlsConfig::custom_ca_pem(b"not a pem".to_vec())
            .client_config()
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Tls { ref reason, .. } if reason.contains("no CERTIFICATE")),
            "{err}"
        );
        let err = TlsConfig::new()
            .add_ca_file("/nonexistent/ca.pem")
            .client_config()
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Tls { ref reason, .. } if reason.contains("cannot read CA file")),
            "{err}"
        );
        let err = TlsConfig::new()
            .webpki_roots(false)
            .client_config()
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Tls { ref reason, .. } if reason.contains("no trusted")),
            "{err}"
        );
    }

    #[test]
    fn server_name_override_and_validation() {
        let config = TlsConfig::new();
        assert!(config.name_for("127.0.0.1").is_ok());
        assert!(config.name_for("bad name!").is_err());
        let named = TlsConfig::new().server_name("config.local");
        assert_eq!(
            named.name_for("127.0.0.1").unwrap().to_str(),
            "config.local"
        );
    }
}

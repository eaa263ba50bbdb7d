//! TLS for `wss://` endpoints, with rustls and its `ring` crypto provider.
//!
//! Every config is built with an explicit provider
//! (`builder_with_provider(ring::default_provider())`), so no process-wide default provider
//! is needed and nothing can panic for the lack of one.
//!
//! A [`TlsConfig`] says which certificate authorities the client trusts: the Mozilla roots of
//! `webpki-roots` (the default), custom CAs given as PEM bytes or a PEM file, or both.
//! Handshake failures are [`TransportError::Tls`] with a reason that names the cause
//! ("untrusted certificate ...", "wrong name ...") and rustls's error as its source. A
//! setting that does not load (a CA file, a PEM, a server name) is a [`SetupError`]: the
//! caller's to fix.

use crate::{SetupError, TransportError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// [`SetupError::ServerName`] when the name is neither a DNS name nor an IP address.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, SetupError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|source| SetupError::ServerName {
            name: name.to_owned(),
            source,
        })
    }

    /// Builds the rustls client config (ring provider, safe default protocol versions).
    /// Reads the files of [`TlsConfig::add_ca_file`] with blocking `std::fs` reads: call it
    /// from sync code or the blocking pool, not from a task on a runtime thread.
    ///
    /// # Errors
    /// A [`SetupError`] when a CA file cannot be read ([`SetupError::ReadCaFile`]), a PEM
    /// holds no certificate or a bad one, or no CA is trusted at all
    /// ([`SetupError::NoTrustedCa`]).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, SetupError> {
        let mut roots = RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for path in &self.ca_files {
            let pem = std::fs::read(path).map_err(|source| SetupError::ReadCaFile {
                path: path.clone(),
                source,
            })?;
            add_pem_certs(&mut roots, &pem, &path.display().to_string())?;
        }
        for pem in &self.ca_pems {
            add_pem_certs(&mut roots, pem, "CA PEM")?;
        }
        if roots.is_empty() {
            return Err(SetupError::NoTrustedCa);
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(SetupError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// ring, the crypto library already in the tree (rustls 0.23.48 deprecates its ring provider
/// for lack of post-quantum key exchange, which only its aws-lc provider has; ours talks
/// to config services, none of which offers it).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SetupError::MalformedPem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(SetupError::MissingPemItem {
            what: what.to_owned(),
            item: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn add_pem_certs(roots: &mut RootCertStore, pem: &[u8], what: &str) -> Result<(), SetupError> {
    for cert in parse_certs(pem, what)? {
        roots.add(cert).map_err(|source| SetupError::UnusableCa {
            what: what.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Builds a rustls server config (ring provider) from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), for [`crate::ws::WsServerConfig::tls`].
///
/// # Errors
/// A [`SetupError`] when the PEM holds no certificate or no key, or rustls refuses them
/// ([`SetupError::Tls`]).
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, SetupError> {
    let chain = parse_certs(cert_chain_pem, "certificate chain")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut io::BufReader::new(key_pem))
        .map_err(|source| SetupError::MalformedPem {
            what: "private key".to_owned(),
            source,
        })?
        .ok_or_else(|| SetupError::MissingPemItem {
            what: "private key".to_owned(),
            item: "key",
        })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(SetupError::Tls)?;
    Ok(Arc::new(config))
}

/// Turns an IO error from a TLS handshake into [`TransportError::Tls`] with a readable
/// reason and rustls's error as its source when rustls caused it, or `None` when it is a
/// plain IO error.
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
        source: tls.clone(),
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
    fn bad_ca_input_is_a_setup_error() {
        let err = TlsConfig::custom_ca_pem(b"not a pem".to_vec())
            .client_config()
            .unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::MissingPemItem {
                    item: "CERTIFICATE",
                    ..
                }
            ),
            "{err}"
        );
        let err = TlsConfig::new()
            .add_ca_file("/nonexistent/ca.pem")
            .client_config()
            .unwrap_err();
        assert!(
            matches!(&err, SetupError::ReadCaFile { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
        let err = TlsConfig::new()
            .webpki_roots(false)
            .client_config()
            .unwrap_err();
        assert!(matches!(err, SetupError::NoTrustedCa), "{err}");
    }

    /// A CA file that reads but does not parse is the caller's mistake, typed as such: a
    /// `SetupError` (not a `TransportError`), with the PEM parser's error as its source.
    #[test]
    fn a_ca_file_that_does_not_parse_is_a_setup_error_with_the_parse_error_as_source() {
        let path = std::env::temp_dir().join(format!(
            "cluster-transport-bad-ca-{}.pem",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n%%% not base64 %%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let result = TlsConfig::new().add_ca_file(&path).client_config();
        std::fs::remove_file(&path).unwrap();
        let err: SetupError = result.unwrap_err();
        assert!(
            matches!(&err, SetupError::MalformedPem { what, .. } if what == &path.display().to_string()),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).expect("the parse error is the source");
        assert!(source.downcast_ref::<io::Error>().is_some(), "{source:?}");
        assert!(err.to_string().contains(&source.to_string()), "{err}");
    }

    #[test]
    fn a_ca_file_that_does_not_read_keeps_the_io_error() {
        let err = TlsConfig::new()
            .add_ca_file("/nonexistent/ca.pem")
            .client_config()
            .unwrap_err();
        let source = std::error::Error::source(&err).expect("the io error is the source");
        assert_eq!(
            source.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn server_name_override_and_validation() {
        let config = TlsConfig::new();
        assert!(config.name_for("127.0.0.1").is_ok());
        assert!(matches!(
            config.name_for("bad name!"),
            Err(SetupError::ServerName { ref name, .. }) if name == "bad name!"
        ));
        let named = TlsConfig::new().server_name("config.local");
        assert_eq!(
            named.name_for("127.0.0.1").unwrap().to_str(),
            "config.local"
        );
    }
}

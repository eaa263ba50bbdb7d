//! The caller's mistakes in setting up a transport, apart from what the peer or the network
//! does ([`TransportError`](crate::TransportError)).

use crate::EndpointParseError;
use std::io;
use std::path::PathBuf;

/// A mistake in what the caller gave: a CA, certificate or key that does not read or parse, a
/// server name or host that is not valid, a module name the server would refuse. Building
/// (TLS configs, [`WsConnector::new`](crate::ws::WsConnector::new)) reports it; trying again
/// does not help, fixing the setting does.
///
/// Where a library reported it, the variant keeps that error as its
/// [`source`](std::error::Error::source); `Display` includes the source's message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// A PEM (CA, certificate chain, key) is not well-formed.
    #[error("{what}: malformed PEM: {source}")]
    MalformedPem {
        /// Which PEM: a CA file's path, `CA PEM`, `certificate chain`, `private key`.
        what: String,
        /// What the PEM parser reported.
        #[source]
        source: io::Error,
    },
    /// A PEM holds no item of the kind needed (no `CERTIFICATE`, no key).
    #[error("{what}: no {item} in PEM")]
    MissingPemItem {
        /// Which PEM.
        what: String,
        /// What it lacks: `CERTIFICATE` or `key`.
        item: &'static str,
    },
    /// A CA certificate parsed but cannot be used as a trust anchor.
    #[error("{what}: unusable CA certificate: {source}")]
    UnusableCa {
        /// Which PEM it came from.
        what: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// No certificate authority is trusted at all (the `webpki-roots` off and no custom CA).
    #[error("no trusted certificate authority")]
    NoTrustedCa,
    /// rustls refused the protocol versions or the certificate and key of a server config.
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The name to verify a server's certificate against is neither a DNS name nor an IP
    /// address.
    #[error("{name:?} is not a valid TLS server name")]
    ServerName {
        /// The name.
        name: String,
        /// What rustls reported.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// A host entry does not parse.
    #[error(transparent)]
    Endpoint(#[from] EndpointParseError),
    /// The module name cannot be used on the wire (the server would refuse it).
    #[error("invalid module name {name:?}: {reason}")]
    ModuleName {
        /// The name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
}

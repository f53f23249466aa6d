//! vipcast's PKI and mutual TLS.
//!
//! * [`pki`]: a CA and the certificates it issues (`vipcast pki init|issue`),
//!   as PEM files; private keys mode 0600. Each client certificate names its
//!   holder in a URI subject alternative name `vipcast://<role>/<name>`
//!   ([`vipcast_api::Identity`]); the subject says the same for people
//!   (CN = name, OU = role). The controller's certificate carries its IP
//!   and DNS names instead.
//! * [`server_config`] / [`client_config`]: rustls configurations (aws-lc-rs
//!   provider, TLS 1.2 and 1.3). The server asks every client for a
//!   certificate and verifies it against the CA; a certificate from another
//!   CA never completes the handshake; no certificate is allowed through so
//!   that `/healthz` can answer, and everything else answers 401.
//! * [`identity_of`]: the identity of a verified peer certificate — the only
//!   identity the controller believes.
//! * [`heartbeat`]: per-chassis heartbeat keys derived from one controller
//!   secret, and the HMAC-SHA256 that authenticates each heartbeat.

pub mod heartbeat;
pub mod pki;
pub mod sign;

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use vipcast_api::Identity;

pub use rustls;
pub use tokio_rustls;

/// Why certificates or keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> Error {
        Error::File { path: path.display().to_string(), message: message.to_string() }
    }
}

/// The certificates in a PEM file (a leaf first, then any chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::file(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::file(path, e))?;
    if certs.is_empty() {
        return Err(Error::file(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::file(path, e))
}

/// A root store holding the CA certificates in `ca`.
pub fn roots(ca: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store.add(cert).map_err(|e| Error::file(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The controller's TLS configuration: its certificate and key, clients'
/// certificates verified against `client_ca` (requested, not required: a
/// request without one is answered 401 by the API, `/healthz` excepted).
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Invalid(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files a client presents and trusts: `--ca`, `--cert`, `--key`
/// (env `VIPCAST_CA`, `VIPCAST_CERT`, `VIPCAST_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl ClientFiles {
    /// The three files, if all are given; an error naming what is missing
    /// if only some are.
    pub fn from_parts(
        ca: Option<std::path::PathBuf>,
        cert: Option<std::path::PathBuf>,
        key: Option<std::path::PathBuf>,
    ) -> Result<Option<ClientFiles>, Error> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(ClientFiles { ca, cert, key })),
            _ => Err(Error::Invalid("--ca, --cert and --key go together".into())),
        }
    }

    /// Its rustls configuration.
    pub fn config(&self) -> Result<rustls::ClientConfig, Error> {
        client_config(&self.ca, &self.cert, &self.key)
    }
}

/// A client's TLS configuration: servers verified against `ca`, and this
/// client's certificate and key.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The identity a (verified) certificate names: its `vipcast://` URI
/// subject alternative name, if it has exactly one.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => Identity::from_uri(uri),
        _ => None,
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// When a certificate expires, in seconds since the Unix epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(x509.validity().not_after.timestamp())
}

//! The controller over mutual TLS.
//!
//! ```text
//!  accept (http.rs) ──► the connection's task: handshake (10 s bound; a
//!                       client certificate from another CA fails here)
//!                          │ TLS stream + the peer's identity (from the
//!                          │ verified certificate only)
//!                          v
//!                       every request gets ConnectInfo<Peer> ──► authz
//! ```
//! Handshakes never hold up the accept loop. [`TlsServer::reload`] (SIGHUP)
//! swaps certificate, key and CA for new connections; established ones
//! (watch streams) keep theirs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vipcast_api::Identity;
use vipcast_tls::{rustls, tokio_rustls};

use crate::metrics::CertLabels;

/// The files of the controller's TLS and the configuration made of them.
#[derive(Debug)]
pub struct TlsServer {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
    /// When the loaded certificate expires (Unix seconds).
    not_after: std::sync::atomic::AtomicI64,
    /// The expiry gauges, set at every load once attached.
    gauges: std::sync::OnceLock<Family<CertLabels, Gauge>>,
}

impl TlsServer {
    /// Loads certificate, key and the CA clients are checked against.
    pub fn load(cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Result<Arc<TlsServer>, vipcast_tls::Error> {
        let config = vipcast_tls::server_config(&cert, &key, &client_ca)?;
        let not_after = expiry(&cert);
        Ok(Arc::new(TlsServer {
            cert,
            key,
            client_ca,
            config: RwLock::new(config),
            not_after: std::sync::atomic::AtomicI64::new(not_after),
            gauges: std::sync::OnceLock::new(),
        }))
    }

    /// Publishes the certificate's and the client CA's expiry in `gauges`,
    /// now and after every reload.
    pub(crate) fn attach(&self, gauges: Family<CertLabels, Gauge>) {
        let _ = self.gauges.set(gauges);
        self.publish();
    }

    fn publish(&self) {
        if let Some(g) = self.gauges.get() {
            g.get_or_create(&CertLabels { certificate: "server" }).set(self.not_after());
            g.get_or_create(&CertLabels { certificate: "client_ca" }).set(expiry(&self.client_ca));
        }
    }

    /// Loads the files again; on success new connections use them, on
    /// failure nothing changes.
    pub fn reload(&self) -> Result<(), vipcast_tls::Error> {
        let config = vipcast_tls::server_config(&self.cert, &self.key, &self.client_ca)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.not_after.store(expiry(&self.cert), std::sync::atomic::Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    /// When the certificate in use expires (Unix seconds; 0 if unknown).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// When the first certificate in `cert` expires (Unix seconds; 0 if unknown).
pub fn expiry(cert: &std::path::Path) -> i64 {
    vipcast_tls::load_certs(cert).ok().and_then(|c| c.first().and_then(vipcast_tls::not_after)).unwrap_or(0)
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// From the verified client certificate; `None` without one (or
    /// without TLS).
    pub identity: Option<Identity>,
}

//! The controller over mutual TLS.
//!
//! ```text
//!  TcpListener ──accept──► handshake task (own task, 10 s bound; a client
//!                          certificate from another CA fails here)
//!                             │ TLS stream + the peer's identity (from the
//!                             │ verified certificate only)
//!                             v
//!  TlsListener::accept ◄── channel ── axum::serve ── ConnectInfo<Peer> ──► authz
//! ```
//! Handshakes never hold up the accept loop. [`TlsServer::reload`] (SIGHUP)
//! swaps certificate, key and CA for new connections; established ones
//! (watch streams) keep theirs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use vipcast_api::Identity;
use vipcast_tls::{rustls, tokio_rustls};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed and not yet taken by the server.
const READY_QUEUE: usize = 256;

/// The files of the controller's TLS and the configuration made of them.
#[derive(Debug)]
pub struct TlsServer {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
    /// When the loaded certificate expires (Unix seconds).
    not_after: std::sync::atomic::AtomicI64,
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
        }))
    }

    /// Loads the files again; on success new connections use them, on
    /// failure nothing changes.
    pub fn reload(&self) -> Result<(), vipcast_tls::Error> {
        let config = vipcast_tls::server_config(&self.cert, &self.key, &self.client_ca)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.not_after.store(expiry(&self.cert), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// When the certificate in use expires (Unix seconds; 0 if unknown).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn expiry(cert: &std::path::Path) -> i64 {
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

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer { addr: *stream.remote_addr(), identity: None }
    }
}

/// A listener whose connections are TLS streams with a known peer.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Accepts on `listener`, handshaking with `server`'s current
    /// configuration.
    pub fn new(listener: TcpListener, server: Arc<TlsServer>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (server.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(vipcast_tls::identity_of);
                            let _ = tx.send((stream, Peer { addr, identity })).await;
                        }
                        Ok(Err(e)) => tracing::info!(%addr, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (the listener failed): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, identity: None })
    }
}

//! `vipcast controller`: flags -> store -> controller -> serve.

use std::sync::Arc;

use anyhow::{Context, bail};
use vipcast_store::{EtcdStore, FileStore, Store};

/// Where the controller keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// An embedded redb file under this directory.
    File(std::path::PathBuf),
    /// etcd endpoints (`http://host:port`).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory, e.g. file:./vipcast-data".into());
            }
            return Ok(StoreSpec::File(dir.into()));
        }
        if let Some(list) = s.strip_prefix("etcd://") {
            let endpoints: Vec<String> = list
                .split(',')
                .map(|hp| {
                    let hp = hp.trim();
                    if hp.is_empty() || !hp.contains(':') {
                        Err(format!("etcd endpoint {hp:?} must be HOST:PORT"))
                    } else {
                        Ok(format!("http://{hp}"))
                    }
                })
                .collect::<Result<_, _>>()?;
            return Ok(StoreSpec::Etcd(endpoints));
        }
        Err(format!("store {s:?} must be file:DIR or etcd://HOST:PORT[,HOST:PORT...]"))
    }
}

pub async fn open_store(spec: &StoreSpec) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match spec {
        StoreSpec::File(dir) => {
            Arc::new(FileStore::open(dir).with_context(|| format!("opening store in {}", dir.display()))?)
        }
        StoreSpec::Etcd(eps) => {
            Arc::new(EtcdStore::connect(eps).await.with_context(|| format!("connecting to etcd at {}", eps.join(",")))?)
        }
    })
}

/// The controller's TLS flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsFlags {
    /// The controller's certificate (`vipcast pki issue --role controller`):
    /// serve over mutual TLS and authorize every request by its client
    /// certificate.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The controller's private key.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The CA clients' certificates must be signed by.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<std::path::PathBuf>,
    /// Serve plain HTTP on an address other than loopback (anyone who can
    /// reach it can change anything).
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,
}

pub async fn run(
    listen: std::net::SocketAddr,
    store: StoreSpec,
    liveness_timeout: std::time::Duration,
    tls: TlsFlags,
) -> anyhow::Result<()> {
    let server_tls = match (&tls.tls_cert, &tls.tls_key, &tls.client_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(
            vipcast_controller::tls::TlsServer::load(cert.clone(), key.clone(), ca.clone())
                .context("loading the TLS certificate, key and client CA")?,
        ),
        _ => None,
    };
    if server_tls.is_none() && !listen.ip().is_loopback() && !tls.insecure_plaintext {
        bail!(
            "refusing to serve plain HTTP on {listen}: give --tls-cert, --tls-key and --client-ca (vipcast pki), \
             or --insecure-plaintext"
        );
    }
    let store = open_store(&store).await?;
    let config = vipcast_controller::Config { authorize: server_tls.is_some(), ..Default::default() };
    let controller = vipcast_controller::Controller::new(store, config).await.context("loading state")?;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => bail!("cannot listen on {listen}: {e}"),
    };
    let bound = listener.local_addr()?;
    let heartbeats = match tokio::net::UdpSocket::bind(bound).await {
        Ok(s) => s,
        Err(e) => bail!("cannot receive heartbeats on UDP {bound}: {e}"),
    };
    let cfg = vipcast_controller::liveness::LivenessConfig { timeout: liveness_timeout, ..Default::default() };
    let c = controller.clone();
    tokio::spawn(async move {
        let e = vipcast_controller::liveness::run(c, heartbeats, cfg).await;
        tracing::error!(error = %e, "heartbeat socket failed; chassis liveness is no longer kept");
    });
    tracing::info!(%listen, tls = server_tls.is_some(), revision = controller.cache().current().revision, "controller serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    match server_tls {
        Some(t) => {
            let reload = t.clone();
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    match reload.reload() {
                        Ok(()) => {
                            tracing::info!(not_after = reload.not_after(), "TLS certificate, key and CA reloaded")
                        }
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; the loaded files stay in use"),
                    }
                }
            });
            vipcast_controller::serve_tls(listener, controller, t, shutdown).await?
        }
        None => vipcast_controller::serve(listener, controller, shutdown).await?,
    }
    Ok(())
}

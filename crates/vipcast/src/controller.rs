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

pub async fn run(
    listen: std::net::SocketAddr,
    store: StoreSpec,
    liveness_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let store = open_store(&store).await?;
    let controller = vipcast_controller::Controller::new(store, Default::default()).await.context("loading state")?;
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
    tracing::info!(%listen, revision = controller.cache().current().revision, "controller serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    vipcast_controller::serve(listener, controller, shutdown).await?;
    Ok(())
}

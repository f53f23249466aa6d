//! `vipcast controller`: flags -> store -> controller -> serve.

use std::sync::Arc;

use anyhow::{Context, bail};
use vipcast_store::{EtcdStore, FileOptions, FileStore, Store};

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

/// What to do about a store that cannot be trusted.
const RECOVER_HINT: &str = "nothing was changed. Start with --store-recover to drop what cannot be read (the \
     controller then says what it dropped), or put back a copy of the store from before";

/// The error for a store that failed verification, with what to do.
fn refused(e: vipcast_store::Error) -> anyhow::Error {
    match e {
        vipcast_store::Error::Corrupt { .. } => anyhow::anyhow!("{e}; {RECOVER_HINT}"),
        other => other.into(),
    }
}

/// Opens the store; with `recover`, a file store that fails verification is
/// opened anyway, what was dropped being logged.
pub async fn open_store(spec: &StoreSpec, recover: bool) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match spec {
        StoreSpec::File(dir) => {
            let options = FileOptions { recover, ..FileOptions::default() };
            let store = FileStore::open_with(dir, options)
                .map_err(refused)
                .with_context(|| format!("opening store in {}", dir.display()))?;
            if recover {
                report_recovery("store file", store.recovery());
            }
            Arc::new(store)
        }
        StoreSpec::Etcd(eps) => {
            Arc::new(EtcdStore::connect(eps).await.with_context(|| format!("connecting to etcd at {}", eps.join(",")))?)
        }
    })
}

/// Logs what `--store-recover` dropped (each line was logged as it was done).
fn report_recovery(what: &str, dropped: &[String]) {
    if dropped.is_empty() {
        tracing::info!("--store-recover: the {what} needed no recovery");
    } else {
        tracing::warn!(changes = dropped.len(), "--store-recover: the {what} was recovered: {}", dropped.join("; "));
    }
}

pub async fn run(
    listen: std::net::SocketAddr,
    store: StoreSpec,
    liveness_timeout: std::time::Duration,
    recover: bool,
) -> anyhow::Result<()> {
    let store = open_store(&store, recover).await?;
    let config = vipcast_controller::Config { recover, ..Default::default() };
    let controller =
        vipcast_controller::Controller::new(store, config).await.map_err(refused).context("loading state")?;
    if recover {
        report_recovery("stored objects", controller.recovery());
    }
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

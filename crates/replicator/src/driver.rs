//! The pieces joined: [`run`] and [`start`].

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub use crate::dataplane::{Dataplane, IoConfig, bind_sockets};
use crate::engine::{Config, Table};
use crate::{admin, sniff, sync};

/// How a replicator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Its name in the controller.
    pub name: String,
    /// Controller base URL, e.g. `http://10.255.0.254:7600`.
    pub controller: String,
    /// The address chassis send to (registered with the controller).
    pub address: SocketAddr,
    pub engine: Config,
    pub io: IoConfig,
    /// Re-registration interval. Default 3 s.
    pub heartbeat: Duration,
    /// Repeats of a VIP's last claim within this are not sent. Default 1 s.
    pub claim_window: Duration,
    /// Mutual TLS to the controller (`https://` URL). Default none.
    pub tls: Option<vipcast_tls::ClientFiles>,
}

impl Options {
    /// Defaults for everything but who and where.
    pub fn new(name: impl Into<String>, controller: impl Into<String>, address: SocketAddr) -> Options {
        Options {
            name: name.into(),
            controller: controller.into().trim_end_matches('/').to_string(),
            address,
            engine: Config { ipv6_sockets: address.is_ipv6(), ..Config::default() },
            io: IoConfig::default(),
            heartbeat: Duration::from_secs(3),
            claim_window: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// A running replicator, for tests and the binary.
#[derive(Debug)]
pub struct Running {
    pub admin: Arc<admin::Admin>,
}

/// Runs a replicator on `sockets` (see [`bind_sockets`]: one worker each)
/// until `shutdown` completes, serving the admin endpoint on `admin` if
/// given. Fails if the controller refuses the registration for good.
pub async fn run(
    opts: Options,
    sockets: Vec<UdpSocket>,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (running, done) = start(opts, sockets, admin)?;
    tokio::select! {
        () = shutdown => {}
        e = done => return Err(e),
    }
    let dp = running.admin.dataplane.clone();
    tokio::task::spawn_blocking(move || dp.stop()).await?;
    Ok(())
}

/// Starts a replicator's tasks on the current runtime; the future completes
/// with an error if the controller refuses the registration for good.
pub fn start(
    opts: Options,
    sockets: Vec<UdpSocket>,
    admin_listener: Option<tokio::net::TcpListener>,
) -> anyhow::Result<(Running, impl Future<Output = anyhow::Error>)> {
    let client = vipcast_client::ControllerClient::with_tls(&opts.controller, opts.tls.as_ref())?;
    if let Some(files) = opts.tls.clone() {
        tokio::spawn(reload_on_hangup(client.clone(), files));
    }
    let (sniff_tx, sniff_rx) = mpsc::channel::<sniff::SniffEvent>(4096);
    let sniff_tx_gre = sniff_tx.clone();
    let dataplane =
        Arc::new(Dataplane::start(sockets, Table::new(opts.engine, Instant::now()), opts.io.clone(), Some(sniff_tx))?);
    // GRE VPCs (Open vSwitch chassis): needs CAP_NET_RAW and an IPv4 address.
    let gre = match opts.address.ip() {
        std::net::IpAddr::V4(v4) if !v4.is_unspecified() => {
            match crate::gre::start(v4, dataplane.clone(), Some(sniff_tx_gre)) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "no GRE socket: GRE VPCs are not replicated here");
                    None
                }
            }
        }
        _ => None,
    };
    let claims = Arc::new(sniff::ClaimStats::default());
    let admin = Arc::new(admin::Admin {
        dataplane: dataplane.clone(),
        claims: claims.clone(),
        revision: AtomicI64::new(0),
        gre,
    });
    let id = sync::Identity { name: opts.name.clone(), address: opts.address };
    let (state_tx, state_rx) = watch::channel(sync::Synced::default());
    tokio::spawn(vipcast_client::WatchFollower::replicator(client.clone(), &opts.name).run(state_tx));
    tokio::spawn(sniff::run(client.clone(), sniff_rx, state_rx.clone(), claims, opts.claim_window));
    tokio::spawn(install_tables(state_rx, admin.clone()));
    if let Some(l) = admin_listener {
        let app = admin::router(admin.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::warn!(error = %e, "admin endpoint stopped");
            }
        });
    }
    let heartbeat = tokio::spawn(sync::heartbeat(client, id, opts.heartbeat));
    let done = async move {
        match heartbeat.await {
            Ok(e) => e,
            Err(e) => anyhow::anyhow!("heartbeat task: {e}"),
        }
    };
    Ok((Running { admin }, done))
}

/// Updates the table at every revision: rebuilt from a snapshot, else only
/// the VPCs the changes since the last revision touched; installs it when
/// what the data path uses changed (a VIP changing owner does not).
async fn install_tables(mut rx: watch::Receiver<sync::Synced>, admin: Arc<admin::Admin>) {
    let mut last: Option<Arc<vipcast_model::State>> = None;
    while rx.changed().await.is_ok() {
        let synced = rx.borrow_and_update().clone();
        if !synced.received {
            continue;
        }
        let old = admin.dataplane.table();
        let new = match &last {
            Some(prev) if !synced.snapshot => old.update(prev, &synced.state, synced.revision),
            _ => Some(old.rebuild_from_state(&synced.state, synced.revision)).filter(|t| !t.same_as(&old)),
        };
        last = Some(synced.state.clone());
        admin.revision.store(synced.revision, Ordering::Relaxed);
        if let Some(new) = new {
            tracing::info!(revision = synced.revision, vnis = new.slots().len(), "replication table updated");
            admin.dataplane.set_table(new);
        }
    }
}

/// SIGHUP: the certificate and key again (a renewed certificate); the
/// connections made from now on present it. On error the old one stays.
async fn reload_on_hangup(client: vipcast_client::ControllerClient, files: vipcast_tls::ClientFiles) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match client.reload_tls(&files) {
            Ok(()) => tracing::info!(cert = %files.cert.display(), "SIGHUP: certificate and key reloaded"),
            Err(e) => tracing::warn!(error = %e, "SIGHUP: certificate not reloaded; keeping the one in use"),
        }
    }
}

//! `vipcast replicator`: flags -> [`Options`] -> [`run`] until SIGINT / SIGTERM.

use std::net::SocketAddr;

use clap::Args as ClapArgs;

use crate::{Options, bind_sockets, run};

/// Flags of `vipcast replicator`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// This replicator's name in the controller.
    #[arg(long)]
    name: String,
    /// Where to receive VXLAN from the chassis, e.g. 10.255.0.100:4789.
    #[arg(long)]
    listen: SocketAddr,
    /// The address registered with the controller (default: --listen, which
    /// then must not be a wildcard).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Controller URL.
    #[arg(long, env = "VIPCAST_CONTROLLER")]
    controller: String,
    /// Worker threads, each on its own SO_REUSEPORT socket (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve /healthz and /metrics here, e.g. 127.0.0.1:7610.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Storm control: frames per second admitted per VNI (0: off).
    #[arg(long, default_value_t = 10_000)]
    storm_pps: u64,
    /// Storm control: frames admitted back to back above the rate.
    #[arg(long, default_value_t = 1_000)]
    storm_burst: u64,
    /// UDP port of the chassis' VXLAN devices (where copies are sent).
    #[arg(long, default_value_t = 4789)]
    vxlan_port: u16,
    /// Batch each burst's copies per destination with UDP GSO.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// Datagrams taken per recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Run inside this network namespace (as made by `ip netns add`).
    #[arg(long)]
    netns: Option<String>,
    /// CA certificate the controller's is checked against (mutual TLS: the
    /// controller URL is then https://).
    #[arg(long, env = "VIPCAST_CA")]
    ca: Option<std::path::PathBuf>,
    /// This replicator's certificate (`vipcast pki issue --role replicator`).
    #[arg(long, env = "VIPCAST_CERT")]
    cert: Option<std::path::PathBuf>,
    /// This replicator's private key.
    #[arg(long, env = "VIPCAST_KEY")]
    key: Option<std::path::PathBuf>,
}

/// Enters the namespace (before any thread starts), then runs the replicator.
pub fn main(a: Args) -> anyhow::Result<()> {
    if let Some(ns) = &a.netns {
        vipcast_sys::enter_netns(ns).map_err(|e| anyhow::anyhow!("entering network namespace {ns:?}: {e}"))?;
    }
    let address = a.advertise.unwrap_or(a.listen);
    if address.ip().is_unspecified() {
        anyhow::bail!("--listen {} is a wildcard: give --advertise, the address chassis send to", a.listen);
    }
    let workers = a.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut opts = Options::new(a.name, a.controller, address);
    opts.engine.dst_port = a.vxlan_port;
    opts.engine.storm_pps = a.storm_pps;
    opts.engine.storm_burst = a.storm_burst;
    opts.engine.ipv6_sockets = a.listen.is_ipv6();
    opts.io.gso = a.gso;
    opts.io.batch = a.batch;
    opts.tls = vipcast_tls::ClientFiles::from_parts(a.ca, a.cert, a.key)?;
    let sockets = bind_sockets(a.listen, workers).map_err(|e| anyhow::anyhow!("binding {}: {e}", a.listen))?;
    tracing::info!(listen = %a.listen, workers, "replicator starting");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let admin = match a.admin {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding admin {addr}: {e}"))?,
            ),
            None => None,
        };
        run(opts, sockets, admin, shutdown_signal()).await
    })?;
    // The workers are joined; what is left (HTTP retries, sleeps) can go.
    rt.shutdown_background();
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
}

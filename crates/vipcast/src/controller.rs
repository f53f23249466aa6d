//! `vipcast controller`: flags -> store -> controller -> serve.

use std::sync::Arc;

use std::time::Duration;

use anyhow::{Context, bail};
use vipcast_controller::HttpLimits;
use vipcast_controller::liveness::{LivenessConfig, SourcePolicy};
use vipcast_store::{EtcdStore, FileOptions, FileStore, Store};

/// Limits on the API's connections and requests, and on heartbeats.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most HTTP connections open at once (at the cap a new one closes the
    /// connection idle the longest); 0: all but a quarter (at most 256) of
    /// the descriptors the process may open, after raising its soft limit
    /// to the hard one.
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// An HTTP connection with no request in progress is closed after this
    /// long without receiving anything, ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub idle_timeout_ms: u64,
    /// A request head must be complete this long after its first byte, ms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub header_timeout_ms: u64,
    /// A request body must be complete this long after its head, ms (408).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub body_timeout_ms: u64,
    /// A connection whose writes make no progress this long (a watch
    /// subscriber that stopped reading) is closed, ms; it resumes with
    /// `?from=REV` when it comes back.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub write_stall_timeout_ms: u64,
    /// Each connection's kernel send buffer (SO_SNDBUF), bytes: what a
    /// client that stops reading can hold before its writes block; 0: the
    /// kernel's autotuning.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(0..=64 << 20))]
    pub send_buffer_bytes: u64,
    /// Largest request body, bytes (413, refused from Content-Length).
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub max_body_bytes: u64,
    /// Which heartbeats count for a chassis: `underlay` (only from its
    /// registered underlay_ip) or `any` (agents behind NAT or reaching the
    /// controller from another address).
    #[arg(long, default_value = "underlay", value_parser = ["underlay", "any"])]
    pub heartbeat_source: String,
    /// Port of the agents' admin endpoint (`vipcast agent --metrics-listen`)
    /// on each chassis' underlay address, asked by `GET /v1/vips/NAME/check`.
    #[arg(long, default_value_t = 7611)]
    pub agent_admin_port: u16,
    /// Port of the replicators' admin endpoint (`vipcast replicator
    /// --admin`) on their addresses, asked by the same check.
    #[arg(long, default_value_t = 7610)]
    pub replicator_admin_port: u16,
}

impl LimitArgs {
    /// The HTTP limits, the connection cap fitted to `soft` descriptors
    /// unless given.
    pub fn http(&self, soft: u64) -> HttpLimits {
        let mut l = HttpLimits {
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            write_stall_timeout: Duration::from_millis(self.write_stall_timeout_ms),
            send_buffer: usize::try_from(self.send_buffer_bytes).unwrap_or(usize::MAX),
            max_body: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            ..Default::default()
        }
        .fit_descriptors(soft);
        if self.max_connections > 0 {
            l.max_connections = self.max_connections;
        }
        l
    }

    pub fn heartbeat_source(&self) -> SourcePolicy {
        if self.heartbeat_source == "any" { SourcePolicy::Any } else { SourcePolicy::Underlay }
    }
}

/// Where the controller keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// An embedded redb file under this directory.
    File(std::path::PathBuf),
    /// etcd endpoints (`host:port`; `https://` with `--etcd-ca`).
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
                        Ok(hp.to_string())
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
/// opened anyway, what was dropped being logged; etcd over mutual TLS with
/// `etcd_tls`.
pub async fn open_store(
    spec: &StoreSpec,
    recover: bool,
    etcd_tls: Option<&vipcast_tls::ClientFiles>,
) -> anyhow::Result<Arc<dyn Store>> {
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
            let tls = match etcd_tls {
                Some(files) => Some(files.config().context("loading --etcd-ca, --etcd-cert and --etcd-key")?),
                None => None,
            };
            let how = if tls.is_some() { "over mutual TLS" } else { "over plain HTTP" };
            let store = EtcdStore::connect_tls(eps, tls)
                .await
                .with_context(|| format!("connecting to etcd at {} {how}", eps.join(",")))?;
            Arc::new(store)
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
    /// The heartbeat secret (`heartbeat.secret` of `vipcast pki init`):
    /// only heartbeats signed with a chassis' key derived from it, never
    /// seen before and within 10 s of this clock, keep that chassis alive.
    /// Required with --tls-cert.
    #[arg(long)]
    pub heartbeat_secret: Option<std::path::PathBuf>,
    /// The CA etcd's certificate is signed by: speak to an etcd store over
    /// TLS (https), presenting --etcd-cert (etcd's `--client-cert-auth`).
    #[arg(long, requires_all = ["etcd_cert", "etcd_key"])]
    pub etcd_ca: Option<std::path::PathBuf>,
    /// The certificate presented to etcd (a `--role controller` certificate
    /// serves: it is valid for client authentication too).
    #[arg(long, requires = "etcd_ca")]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// The key of --etcd-cert.
    #[arg(long, requires = "etcd_ca")]
    pub etcd_key: Option<std::path::PathBuf>,
}

impl TlsFlags {
    /// The files for etcd over mutual TLS, if given.
    pub fn etcd_files(&self) -> Option<vipcast_tls::ClientFiles> {
        match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(vipcast_tls::ClientFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            _ => None,
        }
    }
}

/// Logs what `--store-recover` dropped (each line was logged as it was done).
fn report_recovery(what: &str, dropped: &[String]) {
    if dropped.is_empty() {
        tracing::info!("--store-recover: the {what} needed no recovery");
    } else {
        tracing::warn!(changes = dropped.len(), "--store-recover: the {what} was recovered: {}", dropped.join("; "));
    }
}

/// Connections the kernel may hold for the accept loop (capped by
/// `net.core.somaxconn`): a region's agents reconnecting at once after a
/// restart must not find the queue full (tokio's default is 1024).
const LISTEN_BACKLOG: u32 = 8192;

/// The API's listening socket, with [`LISTEN_BACKLOG`].
fn listener(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub async fn run(
    listen: std::net::SocketAddr,
    store: StoreSpec,
    liveness_timeout: Duration,
    limits: LimitArgs,
    tls: TlsFlags,
    recover: bool,
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
    let secret = match &tls.heartbeat_secret {
        Some(f) => Some(vipcast_tls::heartbeat::read_secret(f).context("reading the heartbeat secret")?),
        None => None,
    };
    if server_tls.is_some() && secret.is_none() {
        bail!(
            "with --tls-cert, heartbeats must be signed too: give --heartbeat-secret (the heartbeat.secret of              vipcast pki init); unsigned heartbeats would let anyone who can send a datagram keep a dead chassis alive"
        );
    }
    // Descriptors first: the connection cap is sized by them.
    let soft = match vipcast_sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "raising the descriptor limit");
            vipcast_sys::nofile_limit().map_or(1024, |(soft, _)| soft)
        }
    };
    let http = limits.http(soft);
    tracing::info!(descriptors = soft, max_connections = http.max_connections, "connection limits");
    let etcd_tls = tls.etcd_files();
    if etcd_tls.is_some() && matches!(store, StoreSpec::File(_)) {
        bail!("--etcd-ca, --etcd-cert and --etcd-key are for an etcd store (--store etcd://HOST:PORT)");
    }
    let store = open_store(&store, recover, etcd_tls.as_ref()).await?;
    let check = vipcast_controller::CheckConfig {
        agent_port: limits.agent_admin_port,
        replicator_port: limits.replicator_admin_port,
        ..Default::default()
    };
    let config =
        vipcast_controller::Config { http, authorize: server_tls.is_some(), recover, check, ..Default::default() };
    let controller =
        vipcast_controller::Controller::new(store, config).await.map_err(refused).context("loading state")?;
    if recover {
        report_recovery("stored objects", controller.recovery());
    }
    if let Some(files) = &etcd_tls {
        controller.note_etcd_certificate(&files.cert);
    }
    let listener = match listener(listen) {
        Ok(l) => l,
        Err(e) => bail!("cannot listen on {listen}: {e}"),
    };
    let bound = listener.local_addr()?;
    let heartbeats = match tokio::net::UdpSocket::bind(bound).await {
        Ok(s) => s,
        Err(e) => bail!("cannot receive heartbeats on UDP {bound}: {e}"),
    };
    let cfg = LivenessConfig {
        timeout: liveness_timeout,
        source: limits.heartbeat_source(),
        secret,
        ..LivenessConfig::hardened()
    };
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        tls: TlsFlags,
    }

    #[test]
    fn etcd_stores_and_their_tls_flags() {
        let spec: StoreSpec = "etcd://10.0.0.1:2379,10.0.0.2:2379".parse().unwrap();
        assert_eq!(spec, StoreSpec::Etcd(vec!["10.0.0.1:2379".into(), "10.0.0.2:2379".into()]));
        assert!("etcd://".parse::<StoreSpec>().is_err());
        assert!("etcd://host".parse::<StoreSpec>().is_err());
        assert!("file:".parse::<StoreSpec>().is_err());
        assert!("redis://x:1".parse::<StoreSpec>().is_err());
        let f = Flags::try_parse_from(["x", "--etcd-ca", "ca", "--etcd-cert", "c", "--etcd-key", "k"]).unwrap();
        let files = f.tls.etcd_files().unwrap();
        assert_eq!((files.ca.to_str(), files.key.to_str()), (Some("ca"), Some("k")));
        assert!(Flags::try_parse_from(["x"]).unwrap().tls.etcd_files().is_none());
        assert!(Flags::try_parse_from(["x", "--etcd-ca", "ca"]).is_err(), "a CA without a certificate");
        assert!(Flags::try_parse_from(["x", "--etcd-cert", "c", "--etcd-key", "k"]).is_err(), "no CA");
    }

    #[test]
    fn limit_flags_default_to_the_documented_values_and_fit_the_descriptors() {
        let f = Flags::try_parse_from(["x"]).unwrap().limits;
        let l = f.http(1024);
        assert_eq!(l.max_connections, 768);
        assert_eq!(
            (l.idle_timeout, l.header_timeout, l.body_timeout),
            (Duration::from_secs(60), Duration::from_secs(10), Duration::from_secs(10))
        );
        assert_eq!(l.max_body, 1024 * 1024);
        assert_eq!(l.write_stall_timeout, Duration::from_secs(10));
        assert_eq!(f.heartbeat_source(), SourcePolicy::Underlay);
        let f = Flags::try_parse_from([
            "x",
            "--max-connections",
            "10",
            "--heartbeat-source",
            "any",
            "--idle-timeout-ms",
            "500",
        ])
        .unwrap()
        .limits;
        let l = f.http(1024);
        assert_eq!((l.max_connections, l.idle_timeout), (10, Duration::from_millis(500)));
        assert_eq!(f.heartbeat_source(), SourcePolicy::Any);
        assert!(Flags::try_parse_from(["x", "--heartbeat-source", "nat"]).is_err());
        assert!(Flags::try_parse_from(["x", "--max-body-bytes", "10"]).is_err());
    }
}

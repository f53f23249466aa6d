//! vipcast's controller: the northbound REST API, the southbound watch
//! streams, and VIP ownership arbitration, over a [`vipcast_store::Store`].
//!
//! ```text
//!  REST (axum) ──parse/validate──► Command ──► Controller::write ──txn──► store
//!       ▲                 command::apply(state, command, now_ms)              │
//!       └── HTTP answer ◄── Outcome          (vipcast-model: pure)            │
//!  watch streams ◄── per-subscriber filter ◄── Cache (applied batches) ◄─watch┘
//! ```
//! [`serve`] takes a bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0`; it serves every connection under [`HttpLimits`] (timeouts,
//! a connection cap, body and head sizes; see `http.rs`). Several controllers may share one etcd: every write is a
//! transaction conditional on the revision of a guard key the writer's state
//! was read at, so two controllers can never both apply writes validated
//! against the same state (one retries on the newer state).

mod api;
pub use api::CheckConfig;
pub mod authz;
mod cache;
mod error;
mod fanout;
pub mod health;
pub mod heartbeat_auth;
mod http;
pub mod liveness;
mod metrics;
mod openapi;
pub mod tls;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use vipcast_model::command::{self, Command, Outcome};
use vipcast_model::{Invalid, State};
use vipcast_store::{Compare, Op, Revision, Store};

pub use cache::{Applied, Cache, GUARD_KEY, Snapshot};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use http::HttpLimits;
pub use openapi::document as openapi_document;
pub use vipcast_api::{Message, VrrpReport, WireKey, now_ms};

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Split-brain detection for VIP claims.
    pub damping: vipcast_model::claim::Damping,
    /// Interval of keep-alive lines on idle watch streams.
    pub watch_ping: Duration,
    /// Authorize every request by the identity of its TLS client
    /// certificate ([`authz`]); on with TLS. Default off (plain HTTP, for
    /// tests and a loopback-only controller).
    pub authorize: bool,
    /// Limits on connections and requests.
    pub http: HttpLimits,
    /// Interval of the store probes behind `/healthz` and `/readyz` (a
    /// write that creates no revision, and a read). Default 1 s.
    pub store_probe: Duration,
    /// How long a store probe may take before the store counts as unable
    /// to answer. Default 1 s.
    pub store_probe_timeout: Duration,
    /// Start even if stored objects cannot be decoded, deleting them (each
    /// is logged and listed by [`Controller::recovery`]); otherwise
    /// [`Controller::new`] refuses them. Default `false`.
    pub recover: bool,
    /// Where `GET /v1/vips/{name}/check` asks agents and replicators.
    pub check: api::CheckConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            damping: Default::default(),
            watch_ping: Duration::from_secs(5),
            authorize: false,
            http: HttpLimits::default(),
            store_probe: Duration::from_secs(1),
            store_probe_timeout: Duration::from_secs(1),
            recover: false,
            check: api::CheckConfig::default(),
        }
    }
}

/// A running controller's shared state.
/// Watch snapshots written at once. A snapshot in progress holds its
/// stream's pieces in flight (up to 5 of 16 KiB): a region's agents
/// reconnecting together would otherwise hold that many times 80 KiB at
/// once; the others wait their turn (the work is CPU-bound anyway).
pub const SNAPSHOTS_AT_ONCE: usize = 256;

pub struct Controller {
    store: Arc<dyn Store>,
    cache: Cache,
    /// Snapshots being written at once ([`SNAPSHOTS_AT_ONCE`]).
    snapshots: tokio::sync::Semaphore,
    config: Config,
    write_lock: tokio::sync::Mutex<()>,
    metrics: metrics::Metrics,
    health: Arc<health::Health>,
    recovery: Vec<String>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("revision", &self.cache.current().revision).finish_non_exhaustive()
    }
}

impl Controller {
    /// Loads the state from `store` and starts following it, and probing
    /// the store's health (probed once before this returns). A stored object
    /// that cannot be decoded fails with [`vipcast_store::Error::Corrupt`],
    /// unless [`Config::recover`].
    pub async fn new(store: Arc<dyn Store>, config: Config) -> vipcast_store::Result<Arc<Controller>> {
        let (cache, recovery) = Cache::start_with(store.clone(), config.recover).await?;
        let mut metrics = metrics::Metrics::default();
        metrics.register_watch_dropped(cache.watch_dropped());
        let stale = config.store_probe * 3 + config.store_probe_timeout;
        let c = Arc::new(Controller {
            store,
            cache,
            snapshots: tokio::sync::Semaphore::new(SNAPSHOTS_AT_ONCE),
            config,
            write_lock: tokio::sync::Mutex::new(()),
            metrics,
            health: Arc::new(health::Health::new(stale)),
            recovery,
        });
        health::probe(&c).await;
        tokio::spawn(health::run(Arc::downgrade(&c), c.health.clone()));
        Ok(c)
    }

    /// What [`Config::recover`] deleted, one sentence each; empty when every
    /// stored object could be decoded.
    pub fn recovery(&self) -> &[String] {
        &self.recovery
    }

    /// The store's health now (what `/healthz` and `/readyz` answer).
    pub fn store_health(&self) -> health::Status {
        self.health.status(self.cache.following())
    }

    /// Publishes when the certificate presented to etcd (`--etcd-cert`)
    /// expires, in `vipcast_controller_certificate_expiry_timestamp_seconds`.
    pub fn note_etcd_certificate(&self, cert: &std::path::Path) {
        let labels = metrics::CertLabels { certificate: "etcd_client" };
        self.metrics.certificate_expiry.get_or_create(&labels).set(tls::expiry(cert));
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Executes `command`: [`command::apply`] checks it against the current
    /// state (with the clock read at each attempt) and says what to write,
    /// which is written in one transaction guarded by [`GUARD_KEY`]. If
    /// another controller wrote in between, the command is checked again
    /// on the newer state. Returns what it did and the revision it was
    /// applied at (the current one if it wrote nothing), once this
    /// controller's cache has reached that revision.
    pub async fn write(&self, command: Command) -> Result<Written, ApiError> {
        self.write_with(|s| command::apply(s, &command, now_ms())).await
    }

    /// [`Controller::write`] with `plan` deciding what to write (for
    /// instance a command applied at a fixed time); it may be called again
    /// on a newer state if another controller wrote in between.
    pub async fn write_with<F>(&self, plan: F) -> Result<Written, ApiError>
    where
        F: Fn(&State) -> Result<command::Applied, Invalid>,
    {
        let _one_at_a_time = self.write_lock.lock().await;
        for _ in 0..50 {
            let snap = self.cache.current();
            let command::Applied { puts, deletes, outcome } = plan(&snap.state)?;
            let mut ops: Vec<Op> = puts
                .iter()
                .map(|obj| Op::Put { key: obj.key().store_key(), value: obj.to_value(), lease: 0 })
                .chain(deletes.iter().map(|key| Op::Delete { key: key.store_key() }))
                .collect();
            if ops.is_empty() {
                return Ok(Written { revision: snap.revision, outcome });
            }
            ops.push(Op::Put { key: GUARD_KEY.to_string(), value: Vec::new(), lease: 0 });
            let started = std::time::Instant::now();
            let res = self
                .store
                .txn(vec![Compare::ModRevision { key: GUARD_KEY.to_string(), revision: snap.guard }], ops)
                .await;
            self.health.wrote(&res);
            let res = res?;
            self.metrics.store_txn_seconds.observe(started.elapsed().as_secs_f64());
            self.cache.wait_for(res.revision).await;
            if res.succeeded {
                return Ok(Written { revision: res.revision, outcome });
            }
            self.metrics.write_conflicts.inc();
        }
        Err(ApiError::unavailable("too many conflicting writes; try again"))
    }
}

/// A write done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The revision it was applied at (the current one if it wrote nothing).
    pub revision: Revision,
    /// What it did.
    pub outcome: Outcome,
}

/// Serves the API on `listener` until `shutdown` completes, under the
/// controller's [`HttpLimits`]; then waits for requests in progress up to
/// [`HttpLimits::shutdown_grace`] and closes what is left (watch streams).
pub async fn serve(
    listener: TcpListener,
    controller: Arc<Controller>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::router(controller.clone());
    http::serve(listener, app, controller, None, shutdown).await
}

/// Like [`serve`], over mutual TLS: every connection's client certificate
/// (if any) is verified against the CA and its identity handed to
/// authorization (turn it on with [`Config::authorize`]).
pub async fn serve_tls(
    listener: TcpListener,
    controller: Arc<Controller>,
    tls: Arc<tls::TlsServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tls.attach(controller.metrics.certificate_expiry.clone());
    let app = api::router(controller.clone());
    http::serve(listener, app, controller, Some(tls), shutdown).await
}

#[cfg(test)]
mod tests {
    use vipcast_model::{BumMode, Encap, Vpc};
    use vipcast_store::FileStore;

    use super::*;

    #[tokio::test]
    async fn write_returns_the_outcome_and_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let c = Controller::new(Arc::new(FileStore::open(dir.path()).unwrap()), Config::default()).await.unwrap();
        let vpc = Vpc {
            name: "prod".into(),
            vni: 100,
            bum: BumMode::Headend,
            arp_suppression: true,
            assist: true,
            encap: Encap::Vxlan,
        };
        let created = c.write(Command::CreateVpc(vpc.clone())).await.unwrap();
        assert_eq!(created.outcome, Outcome::Created);
        assert_eq!(c.cache().current().revision, created.revision, "answered once the cache has it");
        assert_eq!(c.cache().current().state.vpcs.get("prod"), Some(&vpc));
        // Nothing to write: the current revision, no new one.
        let patch = Command::PatchVpc { name: "prod".into(), assist: Some(true), arp_suppression: None };
        let same = c.write(patch).await.unwrap();
        assert_eq!(same, Written { revision: created.revision, outcome: Outcome::Unchanged });
        let patch = Command::PatchVpc { name: "prod".into(), assist: Some(false), arp_suppression: None };
        let changed = c.write(patch).await.unwrap();
        assert!(changed.revision > created.revision && changed.outcome == Outcome::Updated, "{changed:?}");
        // Refused: nothing written.
        let e = c.write(Command::CreateVpc(vpc)).await.unwrap_err();
        assert_eq!((e.status, e.code), (axum::http::StatusCode::CONFLICT, "exists"));
        assert_eq!(c.cache().current().revision, changed.revision);
        // A plan at a fixed time.
        let at = |s: &State| command::apply(s, &Command::DeleteVpc("prod".into()), 7);
        assert_eq!(c.write_with(at).await.unwrap().outcome, Outcome::Deleted);
    }
}

//! The agent's counters and its endpoint: `GET /metrics` (Prometheus text)
//! and `GET /healthz`, on `vipcast agent --metrics-listen ADDR`.
//!
//! The driver counts into [`Stats`] (atomics) as it goes; the endpoint reads
//! them at each scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kernel::Changes;

/// What the agent counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// What full reads of the data plane repaired although it should have
    /// held the plan already, by kind: links, FDB, neighbours, addresses.
    drift: [AtomicU64; 4],
    reconciles_read: AtomicU64,
    reconciles_delta: AtomicU64,
    reconcile_failures: AtomicU64,
    peers_watched: AtomicI64,
    peer_down: AtomicU64,
    assists_port_down: AtomicU64,
    assists_chassis_dead: AtomicU64,
    revision: AtomicI64,
    /// Provisional owners (controller away): decided here from a local
    /// announcement, or told by another chassis; notices not believed.
    provisional_own: AtomicU64,
    provisional_told: AtomicU64,
    notices_refused: AtomicU64,
}

const DRIFT_KINDS: [&str; 4] = ["link", "fdb", "neigh", "addr"];

/// How one programming of the data plane went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramReport {
    /// The data plane was read back in full.
    pub read: bool,
    pub failed: bool,
    /// What the read repaired that should have been there.
    pub drift: Changes,
}

impl Stats {
    pub fn programmed(&self, r: &ProgramReport) {
        let add = |c: &AtomicU64, n: usize| c.fetch_add(n as u64, Ordering::Relaxed);
        add(if r.read { &self.reconciles_read } else { &self.reconciles_delta }, 1);
        add(&self.reconcile_failures, usize::from(r.failed));
        let d = &r.drift;
        for (c, n) in self.drift.iter().zip([d.links, d.fdb, d.neigh, d.addrs]) {
            add(c, n);
        }
    }

    pub fn peers_watched(&self, n: usize) {
        self.peers_watched.store(n as i64, Ordering::Relaxed);
    }

    pub fn peer_went_down(&self) {
        self.peer_down.fetch_add(1, Ordering::Relaxed);
    }

    /// An assisted handover: `chassis_dead`, or a port down.
    pub fn assisted(&self, chassis_dead: bool) {
        let c = if chassis_dead { &self.assists_chassis_dead } else { &self.assists_port_down };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A provisional owner: decided here (`own`) or told by another chassis.
    pub fn provisional(&self, own: bool) {
        let c = if own { &self.provisional_own } else { &self.provisional_told };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A notice from another chassis not believed (malformed, not from the
    /// chassis it names, not signed by it, over the rate).
    pub fn notice_refused(&self) {
        self.notices_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn revision(&self, r: i64) {
        self.revision.store(r, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut r = Registry::with_prefix("vipcast_agent");
        let drift = Family::<KindLabels, Counter>::default();
        for (kind, c) in DRIFT_KINDS.into_iter().zip(&self.drift) {
            drift.get_or_create(&KindLabels { kind }).inc_by(get(c));
        }
        r.register(
            "drift",
            "Data plane entries a full read found wrong or missing although programmed, repaired",
            drift,
        );
        let rec = Family::<ReadLabels, Counter>::default();
        rec.get_or_create(&ReadLabels { read: "true" }).inc_by(get(&self.reconciles_read));
        rec.get_or_create(&ReadLabels { read: "false" }).inc_by(get(&self.reconciles_delta));
        r.register("reconciles", "Data plane programmings: reading it back in full, or writing what changed", rec);
        let failures = Counter::<u64>::default();
        failures.inc_by(get(&self.reconcile_failures));
        r.register("reconcile_failures", "Programmings that failed (repaired by the next, which reads)", failures);
        let watched = Gauge::<i64>::default();
        watched.set(self.peers_watched.load(Ordering::Relaxed));
        r.register("peers_watched", "Chassis watched by the peer echo", watched);
        let down = Counter::<u64>::default();
        down.inc_by(get(&self.peer_down));
        r.register("peer_down", "Watched chassis that stopped answering the echo", down);
        let assists = Family::<FaultLabels, Counter>::default();
        assists.get_or_create(&FaultLabels { fault: "port-down" }).inc_by(get(&self.assists_port_down));
        assists.get_or_create(&FaultLabels { fault: "chassis-dead" }).inc_by(get(&self.assists_chassis_dead));
        r.register("assisted_handovers", "Priority-0 adverts sent for a master, by fault", assists);
        let prov = Family::<FromLabels, Counter>::default();
        prov.get_or_create(&FromLabels { from: "here" }).inc_by(get(&self.provisional_own));
        prov.get_or_create(&FromLabels { from: "told" }).inc_by(get(&self.provisional_told));
        r.register(
            "provisional_owners",
            "VIP owners decided without the controller (it was away): from an announcement here, or told by another chassis",
            prov,
        );
        let refused = Counter::<u64>::default();
        refused.inc_by(get(&self.notices_refused));
        r.register("notices_refused", "Provisional-owner notices from other chassis not believed", refused);
        let rev = Gauge::<i64>::default();
        rev.set(self.revision.load(Ordering::Relaxed));
        r.register("view_revision", "Store revision of the view in use", rev);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    read: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FromLabels {
    from: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: &'static str,
}

/// Asks the driver for its forwarding report ([`crate::Driver`] answers
/// between two events).
pub type Queries = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<serde_json::Value>>;

/// The routes: `/healthz`, `/metrics`, and `/forwarding` (where this
/// chassis sends each VIP of its view, read back from the data plane, next
/// to the owner its view names; what `vipcast ctl vip check` compares).
pub fn router(stats: Arc<Stats>, queries: Queries) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(|State((s, _)): State<(Arc<Stats>, Queries)>| async move { s.encode() }))
        .route("/forwarding", get(forwarding))
        .with_state((stats, queries))
}

async fn forwarding(State((_, q)): State<(Arc<Stats>, Queries)>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // One query waits at a time behind the agent's events, at most 2 s.
    let answer = async {
        q.try_send(tx).ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.ok()?.ok()
    };
    match answer.await {
        Some(v) => axum::Json(v).into_response(),
        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "the agent is busy: try again\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_is_told() {
        let s = Stats::default();
        s.programmed(&ProgramReport { read: true, failed: false, drift: Changes { neigh: 2, ..Default::default() } });
        s.programmed(&ProgramReport { read: false, failed: true, drift: Changes::default() });
        s.peers_watched(3);
        s.peer_went_down();
        s.assisted(true);
        let text = s.encode();
        for line in [
            "vipcast_agent_drift_total{kind=\"neigh\"} 2",
            "vipcast_agent_drift_total{kind=\"fdb\"} 0",
            "vipcast_agent_reconciles_total{read=\"true\"} 1",
            "vipcast_agent_reconciles_total{read=\"false\"} 1",
            "vipcast_agent_reconcile_failures_total 1",
            "vipcast_agent_peers_watched 3",
            "vipcast_agent_peer_down_total 1",
            "vipcast_agent_assisted_handovers_total{fault=\"chassis-dead\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}

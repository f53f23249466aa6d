//! Counters the controller keeps, exported at `/metrics` in Prometheus text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// accepted, unchanged, damped, refused
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// heartbeats: ok, malformed, unknown_chassis; liveness changes: alive, dead
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// port-down, chassis-dead
    pub fault: &'static str,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub claims: Family<ClaimLabels, Counter>,
    pub watchers: Gauge,
    pub store_txn_seconds: Histogram,
    pub write_conflicts: Counter,
    pub heartbeats: Family<HeartbeatLabels, Counter>,
    pub liveness_changes: Family<HeartbeatLabels, Counter>,
    pub vrrp_routers: Gauge,
    pub vrrp_master_changes: Counter,
    pub assists: Family<FaultLabels, Counter>,
    /// Changes of a VIP's owner to another (a VIP's first owner is none).
    pub vip_moves: Counter,
    /// Claims damped: the VIP was on hold.
    pub vip_damped: Counter,
    /// VIPs flagged split-brain now (set when scraped).
    pub vip_split_brain: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let claims = Family::<ClaimLabels, Counter>::default();
        let watchers = Gauge::default();
        let store_txn_seconds = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        let write_conflicts = Counter::default();
        let heartbeats = Family::<HeartbeatLabels, Counter>::default();
        let liveness_changes = Family::<HeartbeatLabels, Counter>::default();
        let vrrp_routers = Gauge::default();
        let vrrp_master_changes = Counter::default();
        let assists = Family::<FaultLabels, Counter>::default();
        let (vip_moves, vip_damped, vip_split_brain) = (Counter::default(), Counter::default(), Gauge::default());
        let mut registry = Registry::with_prefix("vipcast_controller");
        registry.register("vip_moves", "Changes of a VIP's owner to another member", vip_moves.clone());
        registry.register("vip_damped", "Claims damped because their VIP was on hold (flapping)", vip_damped.clone());
        registry.register(
            "vip_split_brain",
            "VIPs whose members keep taking them from each other",
            vip_split_brain.clone(),
        );
        registry.register("vrrp_routers", "VRRP virtual routers in the VRRP view", vrrp_routers.clone());
        registry.register("vrrp_master_changes", "New VRRP masters reported by agents", vrrp_master_changes.clone());
        registry.register(
            "assisted_handovers",
            "Assisted VRRP handovers reported by agents, by fault",
            assists.clone(),
        );
        registry.register("chassis_heartbeats", "Chassis heartbeat datagrams by result", heartbeats.clone());
        registry.register("chassis_liveness_changes", "Chassis declared alive or dead", liveness_changes.clone());
        registry.register("http_requests", "HTTP requests by method and status", requests.clone());
        registry.register("claims", "VIP claims by result", claims.clone());
        registry.register("watchers", "Open watch streams", watchers.clone());
        registry.register("store_txn_seconds", "Latency of store write transactions", store_txn_seconds.clone());
        registry.register("write_conflicts", "Writes retried because another writer won", write_conflicts.clone());
        Metrics {
            requests,
            claims,
            watchers,
            store_txn_seconds,
            write_conflicts,
            heartbeats,
            liveness_changes,
            vrrp_routers,
            vrrp_master_changes,
            assists,
            vip_moves,
            vip_damped,
            vip_split_brain,
            registry,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

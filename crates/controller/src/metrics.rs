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
    /// accepted, unchanged, refused
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// admin, viewer, agent, replicator, controller, none
    pub role: &'static str,
    /// no_certificate, read_only, role, not_own, not_own_port, not_own_vpc, source, not_replicated
    pub reason: &'static str,
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
    pub denied: Family<DeniedLabels, Counter>,
    /// When the TLS certificate in use expires (Unix seconds).
    pub certificate_expiry: Gauge,
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
        let denied = Family::<DeniedLabels, Counter>::default();
        let certificate_expiry = Gauge::default();
        let mut registry = Registry::with_prefix("vipcast_controller");
        registry.register("requests_denied", "Requests refused by authorization, by role and reason", denied.clone());
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the controller's TLS certificate expires (0 without TLS)",
            certificate_expiry.clone(),
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
            denied,
            certificate_expiry,
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

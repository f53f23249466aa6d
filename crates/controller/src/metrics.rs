//! Counters the controller keeps, exported at `/metrics` in Prometheus text.
//!
//! Every label takes its values from a closed set (a method from a fixed
//! list, a route template, a status, a result named in the code), never from
//! what a client sends: the number of series cannot grow with the traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// [`method_label`]: GET, PUT, POST, PATCH, DELETE or other.
    pub method: &'static str,
    /// The route template that matched (`/v1/vips/{name}`), or `unmatched`.
    pub route: String,
    pub status: u16,
}

/// The `method` label of a request: one of five, or `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// idle_timeout, header_timeout, evicted (to make room at the cap),
    /// refused (at the cap with no idle connection)
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// accepted, unchanged, damped, refused
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// heartbeats: ok, malformed, unknown_chassis, wrong_source (not from the
    /// chassis' underlay address), too_soon (within the minimum gap of the
    /// last one taken), unsigned, bad_tag, replayed, stale (signed with a
    /// sequence far from the controller's clock); liveness changes: alive, dead
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// port-down, chassis-dead
    pub fault: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LivenessLabels {
    /// alive, dead, unknown
    pub liveness: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// admin, viewer, agent, replicator, controller, none
    pub role: &'static str,
    /// no_certificate, read_only, role, not_own, not_own_port, not_own_vpc, source, not_replicated
    pub reason: &'static str,
}

/// Which loaded certificate.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// server (`--tls-cert`), client_ca (`--client-ca`), etcd_client (`--etcd-cert`)
    pub certificate: &'static str,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub connections: Gauge,
    pub connections_closed: Family<CloseLabels, Counter>,
    pub accept_errors: Counter,
    pub claims: Family<ClaimLabels, Counter>,
    pub watchers: Gauge,
    pub store_txn_seconds: Histogram,
    pub write_conflicts: Counter,
    pub heartbeats: Family<HeartbeatLabels, Counter>,
    pub heartbeat_drops: Counter,
    pub liveness_changes: Family<HeartbeatLabels, Counter>,
    pub vrrp_routers: Gauge,
    pub vrrp_master_changes: Counter,
    pub assists: Family<FaultLabels, Counter>,
    pub denied: Family<DeniedLabels, Counter>,
    /// When each loaded certificate expires (Unix seconds).
    pub certificate_expiry: Family<CertLabels, Gauge>,
    /// Changes of a VIP's owner to another (a VIP's first owner is none).
    pub vip_moves: Counter,
    /// Claims damped: the VIP was on hold.
    pub vip_damped: Counter,
    /// VIPs flagged split-brain now (set when scraped).
    pub vip_split_brain: Gauge,
    /// Chassis by liveness (`alive`, `dead`, `unknown`: no heartbeat yet),
    /// and VIPs without an owner: set from the state at each scrape.
    pub chassis: Family<LivenessLabels, Gauge>,
    pub vips: Gauge,
    pub vips_without_owner: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let connections = Gauge::default();
        let connections_closed = Family::<CloseLabels, Counter>::default();
        let accept_errors = Counter::default();
        let heartbeat_drops = Counter::default();
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
        let denied = Family::<DeniedLabels, Counter>::default();
        let certificate_expiry = Family::<CertLabels, Gauge>::default();
        let (chassis, vips, vips_without_owner) =
            (Family::<LivenessLabels, Gauge>::default(), Gauge::default(), Gauge::default());
        let mut registry = Registry::with_prefix("vipcast_controller");
        registry.register("chassis", "Registered chassis by liveness (alive, dead, unknown)", chassis.clone());
        registry.register("vips", "VIPs defined", vips.clone());
        registry.register(
            "vips_without_owner",
            "VIPs no member has claimed yet (or whose owner was removed)",
            vips_without_owner.clone(),
        );
        registry.register("requests_denied", "Requests refused by authorization, by role and reason", denied.clone());
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate the controller loaded expires: its own, the client CA's, the one it presents to etcd",
            certificate_expiry.clone(),
        );
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
        registry.register(
            "heartbeat_socket_drops",
            "Datagrams the kernel dropped at the heartbeat socket (receive queue full)",
            heartbeat_drops.clone(),
        );
        registry.register("http_requests", "HTTP requests by method, route and status", requests.clone());
        registry.register("http_connections", "Open HTTP connections", connections.clone());
        registry.register(
            "http_connections_closed",
            "HTTP connections closed by the controller, by reason",
            connections_closed.clone(),
        );
        registry.register(
            "http_accept_errors",
            "Failed accepts (out of descriptors, or another error than the connection's)",
            accept_errors.clone(),
        );
        registry.register("claims", "VIP claims by result", claims.clone());
        registry.register("watchers", "Open watch streams", watchers.clone());
        registry.register("store_txn_seconds", "Latency of store write transactions", store_txn_seconds.clone());
        registry.register("write_conflicts", "Writes retried because another writer won", write_conflicts.clone());
        // Known label values start at zero, so rates and alerts work before
        // the first event.
        for fault in ["port-down", "chassis-dead"] {
            let _ = assists.get_or_create(&FaultLabels { fault });
        }
        for result in ["accepted", "unchanged", "damped", "refused"] {
            let _ = claims.get_or_create(&ClaimLabels { result });
        }
        Metrics {
            requests,
            connections,
            connections_closed,
            accept_errors,
            heartbeat_drops,
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
            vip_moves,
            vip_damped,
            vip_split_brain,
            chassis,
            vips,
            vips_without_owner,
            registry,
        }
    }
}

impl Metrics {
    /// Sets the gauges that describe `state` (chassis liveness, VIPs).
    pub fn set_state(&self, state: &vipcast_model::State) {
        let mut n = [0i64; 3];
        for c in state.chassis.values() {
            let i = match c.liveness {
                None => 2,
                Some(l) if l.alive => 0,
                Some(_) => 1,
            };
            if let Some(x) = n.get_mut(i) {
                *x += 1;
            }
        }
        for (liveness, count) in ["alive", "dead", "unknown"].into_iter().zip(n) {
            self.chassis.get_or_create(&LivenessLabels { liveness }).set(count);
        }
        self.vips.set(state.vips.len() as i64);
        self.vips_without_owner.set(state.vips.values().filter(|v| v.owner.is_none()).count() as i64);
    }

    /// Exports the count of watch streams cut for a full queue (kept by the
    /// cache's fan-out).
    pub fn register_watch_dropped(&mut self, dropped: Counter) {
        self.registry.register(
            "watch_dropped",
            "Watch streams cut because they fell too far behind (their queue of revisions was full)",
            dropped,
        );
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! The admin endpoint: `GET /healthz`, `GET /metrics` (Prometheus text) and
//! `GET /members` (the table in use: per VNI its VPC, encapsulation, the
//! members copies go to and the VIPs sniffed for, to compare with the
//! controller's view).
//!
//! Metrics are read from the counters the workers, the table and the sniff
//! task keep (atomics) at each scrape; nothing on the data path knows about
//! Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dataplane::Dataplane;
use crate::engine::DropReason;
use crate::sniff::ClaimStats;

/// What the endpoint reads.
#[derive(Debug)]
pub struct Admin {
    pub dataplane: Arc<Dataplane>,
    pub claims: Arc<ClaimStats>,
    /// Revision of the last state received from the controller (0: none yet).
    pub revision: AtomicI64,
    /// The GRE path, if its socket could be opened.
    pub gre: Option<crate::gre::GreWorker>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VniLabels {
    vni: String,
    vpc: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/members", get(members))
        .with_state(admin)
}

async fn healthz(State(a): State<Arc<Admin>>) -> Response {
    let table = a.dataplane.table();
    let healthy = a.dataplane.healthy();
    let status = match (healthy, table.synced()) {
        (true, true) => "ok",
        (true, false) => "waiting for the controller's view",
        (false, _) => "a worker stopped",
    };
    let body = serde_json::json!({
        "status": status,
        "revision": a.revision.load(Ordering::Relaxed),
        "vnis": table.slots().len(),
        "members": table.slots().iter().map(|s| s.members().len()).sum::<usize>(),
        "workers": a.dataplane.workers(),
    });
    let code = if status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

async fn members(State(a): State<Arc<Admin>>) -> Response {
    let table = a.dataplane.table();
    let vnis: Vec<serde_json::Value> = table
        .slots()
        .iter()
        .map(|s| {
            serde_json::json!({
                "vni": s.vni,
                "vpc": s.vpc,
                "encap": s.encap,
                "members": s.members(),
                "vips": s.vips(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "synced": table.synced(),
        "revision": table.revision(),
        "vnis": vnis,
    });
    axum::Json(body).into_response()
}

async fn metrics(State(a): State<Arc<Admin>>) -> Response {
    let body = encode(&a);
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

fn counter(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    registry.register(name, help, g);
}

/// The Prometheus text exposition of everything.
pub fn encode(a: &Admin) -> String {
    let t = a.dataplane.totals();
    let table = a.dataplane.table();
    let mut r = Registry::with_prefix("vipcast_replicator");
    counter(&mut r, "rx_datagrams", "Datagrams received", t.rx_datagrams);
    counter(&mut r, "rx_batches", "recvmmsg calls that returned datagrams", t.rx_batches);
    counter(
        &mut r,
        "tx_datagrams",
        "Datagrams sent (copies and probe echoes; a GSO train counts its frames)",
        t.tx_datagrams,
    );
    counter(&mut r, "tx_messages", "sendmmsg messages (one per datagram or GSO train)", t.tx_messages);
    counter(&mut r, "tx_syscalls", "sendmmsg calls", t.tx_syscalls);
    counter(&mut r, "tx_errors", "Datagrams the kernel refused to send", t.tx_errors);
    counter(&mut r, "probes_echoed", "Health probes (VNI 0) echoed", t.echoes);
    counter(&mut r, "sniff_overflow", "Sniffed announcements lost to a full queue", t.sniff_overflow);
    let drops = Family::<ReasonLabels, Counter>::default();
    for reason in DropReason::ALL {
        drops.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc_by(t.drops[reason.index()]);
    }
    drops.get_or_create(&ReasonLabels { reason: "socket_overflow" }).inc_by(t.socket_drops);
    if let Some(g) = &a.gre {
        let s = &g.stats;
        counter(&mut r, "gre_rx_packets", "GRE packets received", s.rx_packets.load(Ordering::Relaxed));
        counter(&mut r, "gre_tx_copies", "GRE copies sent", s.tx_copies.load(Ordering::Relaxed));
        for reason in DropReason::ALL {
            let n = s.drops.get(reason.index()).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0);
            drops.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc_by(n);
        }
    }
    r.register("drops", "Datagrams dropped, by reason (socket_overflow: by the kernel, receive queue full)", drops);
    let rx = Family::<VniLabels, Counter>::default();
    let tx = Family::<VniLabels, Counter>::default();
    let storm = Family::<VniLabels, Counter>::default();
    for s in table.slots() {
        let l = VniLabels { vni: s.vni.to_string(), vpc: s.vpc.clone() };
        rx.get_or_create(&l).inc_by(s.counters.rx_frames.load(Ordering::Relaxed));
        tx.get_or_create(&l).inc_by(s.counters.tx_copies.load(Ordering::Relaxed));
        storm.get_or_create(&l).inc_by(s.counters.storm_drops.load(Ordering::Relaxed));
    }
    r.register("vni_rx_frames", "Frames received from members, per VNI (rate() gives the VNI's BUM rate)", rx);
    r.register("vni_tx_copies", "Copies sent, per VNI", tx);
    r.register("vni_storm_drops", "Frames dropped by storm control, per VNI", storm);
    let c = &a.claims;
    counter(
        &mut r,
        "announcements_sniffed",
        "GARP / NA of VIPs seen in the BUM stream",
        c.sniffed.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "announcements_suppressed",
        "Announcements not claimed: repeats, the known owner, or unknown to the view",
        c.suppressed.load(Ordering::Relaxed),
    );
    let claims = Family::<ResultLabels, Counter>::default();
    for (result, v) in
        [("accepted", &c.accepted), ("unchanged", &c.unchanged), ("refused", &c.refused), ("failed", &c.failed)]
    {
        claims.get_or_create(&ResultLabels { result }).inc_by(v.load(Ordering::Relaxed));
    }
    r.register("claims", "Claims sent to the controller, by answer", claims);
    gauge(&mut r, "view_revision", "Store revision of the view in use", a.revision.load(Ordering::Relaxed));
    gauge(&mut r, "vnis", "VNIs in the table", table.slots().len() as i64);
    gauge(&mut r, "workers", "Worker threads", a.dataplane.workers() as i64);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

//! Announcements sniffed in the BUM stream, turned into claims.
//!
//! ```text
//!  workers ──try_send(Sniffed)──► sniff task ── VNI -> VPC -> VIP name,
//!                                    │          chassis underlay IP -> chassis name
//!                                    │ Dedup: not the same (MAC, chassis) as the last
//!                                    │        claim for this VIP within `window`,
//!                                    │        and not the owner the view already shows
//!                                    v
//!                     POST /v1/vips/{vip}/claims {mac, chassis, source: replicator, observed_at}
//! ```
//! keepalived sends its gratuitous ARPs in bursts of five; the first makes
//! the claim, the other four are absorbed here. A claim that could not be
//! delivered is forgotten, so the next announcement tries again.
//!
//! VRRP adverts crossing the replicator feed the VRRP view the same way:
//! a master new or changed for its (VNI, VRID, family) is reported with
//! `POST /v1/vrrp` for the chassis it came from (the same report that
//! chassis' agent makes; the controller checks the MAC is a port there), so
//! the view is kept even where an agent is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vipcast_api::{Claim, ClaimResult, ClaimSource, Event, SniffedAt, VrrpReport};
use vipcast_client::ControllerClient;
use vipcast_model::{RouterKey, State};
use vipcast_packet::MacAddr;
use vipcast_packet::announce::AnnounceKind;

use crate::engine::Sniffed;
use crate::sync::Synced;
use vipcast_packet::vrrp::{self, ChecksumPolicy, VrrpRepr};

/// A VRRP advert seen in a VNI's BUM stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpSeen {
    pub vni: u32,
    /// Underlay IP of the chassis that sent it.
    pub chassis_ip: std::net::IpAddr,
    pub eth_src: MacAddr,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub advert: VrrpRepr,
}

/// What workers hand to the sniff task.
#[derive(Debug, Clone)]
pub enum SniffEvent {
    Announcement(Sniffed),
    Vrrp(VrrpSeen),
}

/// The VRRP advert in `inner` (an Ethernet frame), if it is one: a
/// two-byte test first, so other frames cost next to nothing.
pub fn vrrp_of(vni: u32, chassis_ip: std::net::IpAddr, inner: &[u8]) -> Option<VrrpSeen> {
    let is_vrrp = match (inner.get(12), inner.get(13)) {
        (Some(0x08), Some(0x00)) => inner.get(23) == Some(&112),
        (Some(0x86), Some(0xdd)) => inner.get(20) == Some(&112),
        _ => false,
    };
    if !is_vrrp {
        return None;
    }
    let (eth, ip, advert) = vrrp::parse_frame(inner, ChecksumPolicy::AllowLegacyUnicast).ok()?;
    Some(VrrpSeen { vni, chassis_ip, eth_src: eth.src, src: ip.src(), dst: ip.dst(), advert })
}

/// The masters last reported, by router: source, MAC, advert and the
/// destinations seen.
type Reported = HashMap<RouterKey, (std::net::IpAddr, MacAddr, VrrpRepr, std::collections::BTreeSet<std::net::IpAddr>)>;

/// The report for `v` if it is a new master or tells something new.
fn vrrp_report_of(reported: &mut Reported, state: &State, v: &VrrpSeen) -> Option<VrrpReport> {
    let vpc = state.vpcs.values().find(|p| p.vni == v.vni)?;
    let key = RouterKey::new(&vpc.name, v.advert.vrid, v.src);
    if v.advert.priority == 0 {
        reported.remove(&key);
        return None;
    }
    let dsts = match reported.get_mut(&key) {
        Some((src, mac, advert, dsts)) if *src == v.src && *mac == v.eth_src && *advert == v.advert => {
            if !dsts.insert(v.dst) {
                return None;
            }
            dsts.clone()
        }
        _ => {
            let dsts = std::collections::BTreeSet::from([v.dst]);
            reported.insert(key, (v.src, v.eth_src, v.advert.clone(), dsts.clone()));
            dsts
        }
    };
    let chassis = state.chassis.values().find(|c| c.underlay_ip.to_canonical() == v.chassis_ip.to_canonical())?;
    Some(VrrpReport::new(&vpc.name, &chassis.name, v.eth_src, v.src, &v.advert, dsts))
}

/// [`vrrp_report_of`] as the JSON body sent.
#[cfg(test)]
fn vrrp_report(reported: &mut Reported, state: &State, v: &VrrpSeen) -> Option<serde_json::Value> {
    vrrp_report_of(reported, state, v).and_then(|r| serde_json::to_value(r).ok())
}

/// Suppresses repeats of the last claim made for each VIP.
pub use vipcast_client::ClaimDedup as Dedup;

/// A claim to make: which VIP, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFor {
    pub vip: String,
    pub mac: MacAddr,
    pub chassis: String,
}

/// What `s` means in `state`: the VIP's name and the sending chassis' name,
/// or `None` if the state does not know them (any more), or if the view
/// already shows this owner.
pub fn resolve(state: &State, s: &Sniffed) -> Option<ClaimFor> {
    let vpc = state.vpcs.values().find(|v| v.vni == s.vni)?;
    let vip = state.vips.values().find(|v| v.spec.vpc == vpc.name && v.spec.ip == s.vip)?;
    let chassis = state.chassis.values().find(|c| c.underlay_ip.to_canonical() == s.chassis_ip)?;
    if vip.owner.as_ref().is_some_and(|o| o.mac == s.mac && o.chassis == chassis.name) {
        return None;
    }
    Some(ClaimFor { vip: vip.spec.name.clone(), mac: s.mac, chassis: chassis.name.clone() })
}

/// Claim counters.
#[derive(Debug, Default)]
pub struct ClaimStats {
    /// Announcements of VIPs received from the workers.
    pub sniffed: AtomicU64,
    /// Suppressed as repeats (or as the current owner).
    pub suppressed: AtomicU64,
    /// Claims answered `accepted`.
    pub accepted: AtomicU64,
    /// Claims answered `unchanged`.
    pub unchanged: AtomicU64,
    /// Claims refused (4xx: not a member, unknown VIP).
    pub refused: AtomicU64,
    /// Claims that got no answer after retries.
    pub failed: AtomicU64,
}

impl ClaimStats {
    /// Claims sent (every answer or failure).
    pub fn sent(&self) -> u64 {
        [&self.accepted, &self.unchanged, &self.refused, &self.failed].iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// Runs until `rx` closes: resolves, deduplicates and posts claims.
pub async fn run(
    client: ControllerClient,
    mut rx: mpsc::Receiver<SniffEvent>,
    state: watch::Receiver<Synced>,
    stats: Arc<ClaimStats>,
    window: Duration,
) {
    let mut dedup = Dedup::new(window);
    let mut reported = Reported::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(ClaimFor, bool)>();
    loop {
        tokio::select! {
            s = rx.recv() => {
                let s = match s {
                    None => return,
                    Some(SniffEvent::Announcement(s)) => s,
                    Some(SniffEvent::Vrrp(v)) => {
                        let report = vrrp_report_of(&mut reported, &state.borrow().state, &v);
                        if let Some(report) = report {
                            let client = client.clone();
                            tokio::spawn(async move {
                                match client.report_vrrp(&report).await {
                                    Ok(()) => tracing::info!(vpc = report.vpc, vrid = report.vrid, master = %report.master_ip, "VRRP master reported"),
                                    Err(e) => tracing::warn!(error = %e, "VRRP report not taken"),
                                }
                            });
                        }
                        continue;
                    }
                };
                stats.sniffed.fetch_add(1, Ordering::Relaxed);
                let observed_at = vipcast_api::now_ms();
                let claim = resolve(&state.borrow().state, &s);
                let Some(claim) = claim else {
                    stats.suppressed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if !dedup.should_claim(Instant::now(), &claim.vip, claim.mac, &claim.chassis) {
                    stats.suppressed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let why = match s.kind {
                    AnnounceKind::GratuitousRequest => "gratuitous ARP request",
                    AnnounceKind::GratuitousReply => "gratuitous ARP reply",
                    AnnounceKind::BroadcastReply => "broadcast ARP reply",
                    AnnounceKind::UnsolicitedNa => "unsolicited NA",
                };
                Event::Sniffed { vip: &claim.vip, mac: claim.mac, at: SniffedAt::Chassis(&claim.chassis), why }.log();
                let (client, stats, done) = (client.clone(), stats.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let ok = post(&client, &claim, observed_at, &stats).await;
                    let _ = done.send((claim, ok));
                });
            }
            Some((claim, ok)) = done_rx.recv() => {
                if !ok {
                    dedup.forget(&claim.vip, claim.mac, &claim.chassis);
                }
            }
        }
    }
}

/// Posts one claim ([`vipcast_client::Retry::FAILOVER`]); whether it was answered.
async fn post(client: &ControllerClient, c: &ClaimFor, observed_at: u64, stats: &ClaimStats) -> bool {
    let claim = Claim { mac: c.mac, chassis: c.chassis.clone(), source: ClaimSource::Replicator, observed_at };
    match client.claim(&c.vip, &claim).await {
        Ok(answer) => {
            let counter = match answer.result {
                ClaimResult::Accepted => &stats.accepted,
                // Damped: the VIP is on hold, nothing changed.
                ClaimResult::Unchanged | ClaimResult::Damped => &stats.unchanged,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Event::ClaimAnswered { vip: &c.vip, result: answer.result, generation: answer.owner.map(|o| o.generation) }
                .log();
            true
        }
        Err(e @ vipcast_client::Error::Refused { .. }) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(vip = c.vip, mac = %c.mac, chassis = c.chassis, error = %e, "claim refused");
            true
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(vip = c.vip, error = %e, "claim failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipcast_model::{Chassis, Object, Owner, Port, Role, Vip, VipSpec, Vpc};
    use vipcast_packet::announce::AnnounceKind;
    use vipcast_packet::vrrp::Version;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn a_burst_of_five_is_one_claim_and_a_new_claimant_always_passes() {
        let mut d = Dedup::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let claims = (0..5).filter(|i| d.should_claim(ms(i * 10), "vip", A, "hv1")).count();
        assert_eq!(claims, 1);
        // B takes over, then A again at once: both pass (the last claim differs).
        assert!(d.should_claim(ms(100), "vip", B, "hv2"));
        assert!(d.should_claim(ms(120), "vip", A, "hv1"));
        assert!(!d.should_claim(ms(130), "vip", A, "hv1"));
        // After the window the same claim is made again (a periodic refresh).
        assert!(d.should_claim(ms(1200), "vip", A, "hv1"));
        // Other VIPs are independent; a failed claim is forgotten.
        assert!(d.should_claim(ms(1200), "other", A, "hv1"));
        d.forget("other", A, "hv1");
        assert!(d.should_claim(ms(1201), "other", A, "hv1"));
        d.forget("other", B, "hv1");
        assert!(!d.should_claim(ms(1202), "other", A, "hv1"));
    }

    #[test]
    fn vrrp_adverts_are_reported_once_per_change() {
        let mut s = State::default();
        s.put(Object::Vpc(Vpc {
            name: "prod".into(),
            vni: 100,
            bum: vipcast_model::BumMode::Replicator,
            arp_suppression: false,
            assist: false,
            encap: vipcast_model::Encap::Vxlan,
        }));
        s.put(Object::Chassis(Chassis {
            name: "hv1".into(),
            underlay_ip: "10.0.0.1".parse().unwrap(),
            role: Role::Hypervisor,
            dataplane: vipcast_model::Dataplane::Kernel,
            liveness: None,
        }));
        let advert = |priority| VrrpRepr {
            version: Version::V3,
            vrid: 51,
            priority,
            interval_cs: 10,
            auth_type: 0,
            auth_data: [0; 8],
            addresses: vec!["192.168.10.100".parse().unwrap()],
        };
        let frame = |priority, dst: &str| {
            vipcast_packet::build::vrrp_frame(
                A,
                None,
                "192.168.10.11".parse().unwrap(),
                dst.parse().unwrap(),
                &advert(priority),
            )
            .unwrap()
        };
        let hv1: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let seen = |priority, dst: &str| vrrp_of(100, hv1, &frame(priority, dst)).unwrap();
        // Not VRRP: nothing.
        assert_eq!(
            vrrp_of(
                100,
                hv1,
                &vipcast_packet::build::garp(A, "192.168.10.100".parse().unwrap(), vipcast_packet::arp::ArpOp::Request)
            ),
            None
        );
        let mut r = Reported::new();
        let first = vrrp_report(&mut r, &s, &seen(150, "224.0.0.18")).unwrap();
        assert_eq!(
            (first["vpc"].clone(), first["chassis"].clone(), first["priority"].clone()),
            (serde_json::json!("prod"), serde_json::json!("hv1"), serde_json::json!(150))
        );
        // The same advert again: nothing; another destination or priority: a report.
        assert!(vrrp_report(&mut r, &s, &seen(150, "224.0.0.18")).is_none());
        assert!(vrrp_report(&mut r, &s, &seen(150, "192.168.10.12")).is_some());
        assert!(vrrp_report(&mut r, &s, &seen(140, "224.0.0.18")).is_some());
        // A master leaving is forgotten; its return is new again.
        assert!(vrrp_report(&mut r, &s, &seen(0, "224.0.0.18")).is_none());
        assert!(vrrp_report(&mut r, &s, &seen(140, "224.0.0.18")).is_some());
        // From an unknown chassis or VNI: nothing to say.
        assert!(
            vrrp_report(
                &mut Reported::new(),
                &s,
                &vrrp_of(100, "10.9.9.9".parse().unwrap(), &frame(150, "224.0.0.18")).unwrap()
            )
            .is_none()
        );
        assert!(vrrp_report(&mut Reported::new(), &s, &vrrp_of(7, hv1, &frame(150, "224.0.0.18")).unwrap()).is_none());
    }

    #[test]
    fn resolves_names_and_skips_the_known_owner() {
        let mut s = State::default();
        s.put(Object::Vpc(Vpc {
            name: "prod".into(),
            vni: 100,
            bum: vipcast_model::BumMode::Replicator,
            arp_suppression: false,
            assist: false,
            encap: vipcast_model::Encap::Vxlan,
        }));
        for (n, ip) in [("hv1", "10.0.0.1"), ("hv2", "10.0.0.2")] {
            s.put(Object::Chassis(Chassis {
                name: n.into(),
                underlay_ip: ip.parse().unwrap(),
                role: Role::Hypervisor,
                dataplane: vipcast_model::Dataplane::Kernel,
                liveness: None,
            }));
        }
        for (n, c, mac, ip) in [("p1", "hv1", A, "192.168.10.11"), ("p2", "hv2", B, "192.168.10.12")] {
            s.put(Object::Port(Port::vm(n, "prod", "web", c, mac, ip.parse().unwrap())));
        }
        let mut vip = Vip::new(VipSpec {
            name: "pay-vip".into(),
            vpc: "prod".into(),
            subnet: "web".into(),
            ip: "192.168.10.100".parse().unwrap(),
            members: vec!["p1".into(), "p2".into()],
        });
        s.put(Object::Vip(vip.clone()));
        let sniffed = Sniffed {
            vni: 100,
            vip: "192.168.10.100".parse().unwrap(),
            mac: B,
            kind: AnnounceKind::GratuitousRequest,
            chassis_ip: "10.0.0.2".parse().unwrap(),
        };
        assert_eq!(resolve(&s, &sniffed), Some(ClaimFor { vip: "pay-vip".into(), mac: B, chassis: "hv2".into() }));
        assert_eq!(resolve(&s, &Sniffed { vni: 101, ..sniffed }), None);
        assert_eq!(resolve(&s, &Sniffed { chassis_ip: "10.0.0.3".parse().unwrap(), ..sniffed }), None);
        vip.owner = Some(Owner { port: "p2".into(), mac: B, chassis: "hv2".into(), generation: 1, since: 0 });
        s.put(Object::Vip(vip));
        assert_eq!(resolve(&s, &sniffed), None);
        assert!(resolve(&s, &Sniffed { mac: A, chassis_ip: "10.0.0.1".parse().unwrap(), ..sniffed }).is_some());
    }
}

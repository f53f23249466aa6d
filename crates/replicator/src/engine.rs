//! The replication decision, with no I/O and no clock: a VXLAN datagram and
//! where it came from go in, what to do with it comes out.
//!
//! ```text
//!  (now, from, datagram) ──► Table::handle ──► Decision { action, sniffed }
//!                                                 │          └─ Some(Sniffed): a GARP / NA for a VIP of that VNI
//!                                                 ├─ Replicate { slot, skip }: to every member of the VNI but the sender
//!                                                 ├─ Echo: a health probe (VNI 0), back to where it came from
//!                                                 └─ Drop(reason)
//! ```
//!
//! Checks, in order (each failure is a [`DropReason`]):
//! 1. the datagram holds a VXLAN header (RFC 7348 §5) with the I flag set, and
//!    at least an Ethernet header after it — else `malformed`;
//! 2. VNI 0 is a health probe: echoed once the table has come from the
//!    controller (`not_synced` before);
//! 3. the VNI is a VPC in replicator mode — else `unknown_vni`;
//! 4. the sender is a member chassis of that VNI (matched by underlay IP) —
//!    else `not_member` (a registered chassis of other VPCs only) or
//!    `unregistered_source`. Copies therefore only ever go to members of the
//!    frame's own VNI, and a chassis cannot inject into a VPC it is not in;
//! 5. announcements (gratuitous ARP, broadcast ARP reply, unsolicited NA) of
//!    one of the VNI's VIPs are reported as [`Sniffed`] — before storm
//!    control, so a VIP move is seen even while its VPC storms;
//! 6. storm control: a per-VNI rate limit (GCRA, shared by every worker
//!    through one atomic per VNI) — else `storm`.
//!
//! A [`Table`] is immutable but for its per-VNI atomics; the driver builds a
//! new one from each revision of the controller's view
//! ([`Table::rebuild`]), which keeps each VNI's storm-control state and
//! counters.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use vipcast_model::{Encap, State};

/// Largest VNI (24 bits; a GRE key is 32).
const MAX_VNI: u32 = 0x00ff_ffff;
use vipcast_model::view::{self, VniEntry};
use vipcast_packet::MacAddr;
use vipcast_packet::announce::{self, AnnounceKind};
use vipcast_packet::ethernet::{self, ethertype};
use vipcast_packet::vxlan::{self, VxlanPacket};

/// The VNI of health probes: never a VPC's (VPC VNIs are 1..=16777215).
pub const PROBE_VNI: u32 = 0;

/// How the engine decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// UDP port copies are sent to: the chassis' VXLAN port. Default 4789.
    pub dst_port: u16,
    /// Storm control: frames per second admitted per VNI, counted on the way
    /// in (before replication) and shared by all workers of this node; 0
    /// turns it off. Default 10,000 — a healthy VPC's broadcast (ARP, ND,
    /// VRRP adverts, DHCP) is tens to hundreds of frames per second.
    pub storm_pps: u64,
    /// Frames admitted back to back above that rate. Default 1,000 (0.1 s at
    /// the default rate).
    pub storm_burst: u64,
    /// The sockets are IPv6: IPv4 members are sent to as `::ffff:a.b.c.d`.
    pub ipv6_sockets: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { dst_port: 4789, storm_pps: 10_000, storm_burst: 1_000, ipv6_sockets: false }
    }
}

/// Why a datagram was not replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not VXLAN with the I flag, no inner Ethernet header, or truncated.
    Malformed,
    /// A VNI no VPC in replicator mode has.
    UnknownVni,
    /// The sender is no registered chassis.
    UnregisteredSource,
    /// The sender is a registered chassis, but not a member of this VNI.
    NotMember,
    /// Over the VNI's storm-control rate.
    Storm,
    /// A probe before the first view from the controller.
    NotSynced,
    /// VXLAN for a GRE VPC, or GRE for a VXLAN VPC.
    WrongEncap,
}

impl DropReason {
    /// Every reason, in the order of [`index`](Self::index).
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::UnknownVni,
        DropReason::UnregisteredSource,
        DropReason::NotMember,
        DropReason::Storm,
        DropReason::NotSynced,
        DropReason::WrongEncap,
    ];

    /// A dense index, for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::UnregisteredSource => "unregistered_source",
            DropReason::NotMember => "not_member",
            DropReason::Storm => "storm",
            DropReason::NotSynced => "not_synced",
            DropReason::WrongEncap => "wrong_encap",
        }
    }
}

/// A VIP announcement seen in a VNI's broadcast stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub vni: u32,
    /// The announced VIP.
    pub vip: IpAddr,
    /// The MAC it is announced at.
    pub mac: MacAddr,
    pub kind: AnnounceKind,
    /// Underlay IP of the chassis that sent the frame.
    pub chassis_ip: IpAddr,
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it unchanged to every destination of VNI slot `slot` except
    /// number `skip` (the sender): see [`Table::destinations`].
    Replicate {
        slot: usize,
        skip: usize,
    },
    /// A probe: send it unchanged back to where it came from.
    Echo,
    Drop(DropReason),
}

/// The outcome for one datagram.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// An announcement of a VIP, to report to the controller (off the hot path).
    pub sniffed: Option<Sniffed>,
}

impl Decision {
    fn drop(reason: DropReason) -> Decision {
        Decision { action: Action::Drop(reason), sniffed: None }
    }
}

/// Per-VNI state shared by every worker and kept across table rebuilds.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct VniCounters {
    /// GCRA theoretical arrival time, ns since the table's origin.
    tat: AtomicU64,
    /// Frames accepted from members (before storm control).
    pub rx_frames: AtomicU64,
    /// Copies decided (frames admitted x destinations).
    pub tx_copies: AtomicU64,
    /// Frames dropped by storm control.
    pub storm_drops: AtomicU64,
}

/// One VNI of the table.
#[derive(Debug)]
pub struct VniSlot {
    pub vni: u32,
    pub vpc: String,
    pub encap: Encap,
    /// Member underlay IPs, sorted.
    members: Vec<IpAddr>,
    /// Where copies go, in the order of `members`.
    dests: Vec<SocketAddr>,
    /// The VPC's VIPs, sorted.
    vips: Vec<IpAddr>,
    pub counters: Arc<VniCounters>,
}

impl VniSlot {
    /// Whether the data path would treat `other` as this.
    fn same_as(&self, other: &VniSlot) -> bool {
        self.vni == other.vni
            && self.vpc == other.vpc
            && self.encap == other.encap
            && self.members == other.members
            && self.vips == other.vips
    }

    /// Member underlay IPs, sorted.
    pub fn members(&self) -> &[IpAddr] {
        &self.members
    }

    /// The VPC's VIPs, sorted.
    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }
}

/// VNI -> members and VIPs, as the data path uses it.
#[derive(Debug)]
pub struct Table {
    cfg: Config,
    origin: Instant,
    /// Sorted by VNI; shared with the table it was updated from where
    /// nothing changed.
    slots: Vec<Arc<VniSlot>>,
    /// The slots' VNIs, in their order (searched without touching the slots).
    vnis: Vec<u32>,
    /// Underlay IPs of every registered chassis, sorted.
    chassis: Vec<IpAddr>,
    synced: bool,
    revision: i64,
}

impl Table {
    /// An empty table, before any view: every frame is dropped, probes are
    /// not answered. `origin` is the zero of storm control's clock.
    pub fn new(cfg: Config, origin: Instant) -> Table {
        Table { cfg, origin, slots: Vec::new(), vnis: Vec::new(), chassis: Vec::new(), synced: false, revision: 0 }
    }

    /// The slot for `vni`'s entry `e`, keeping the storm-control state and
    /// counters of `vni` in `self`.
    fn make_slot(&self, vni: u32, e: &VniEntry) -> VniSlot {
        let mut members: Vec<IpAddr> = e.members.iter().map(|ip| ip.to_canonical()).collect();
        members.sort_unstable();
        members.dedup();
        let dests = members
            .iter()
            .map(|&ip| match ip {
                IpAddr::V4(v4) if self.cfg.ipv6_sockets => {
                    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), self.cfg.dst_port)
                }
                _ => SocketAddr::new(ip, self.cfg.dst_port),
            })
            .collect();
        let mut vips = e.vips.clone();
        vips.sort_unstable();
        let counters = self.slot(vni).map(|s| s.counters.clone()).unwrap_or_default();
        VniSlot { vni, vpc: e.vpc.clone(), encap: e.encap, members, dests, vips, counters }
    }

    fn registered(chassis: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut chassis: Vec<IpAddr> = chassis.into_iter().map(|ip| ip.to_canonical()).collect();
        chassis.sort_unstable();
        chassis.dedup();
        chassis
    }

    /// The table for `view` (what [`view::replicator_view`] computes) and the
    /// registered chassis' underlay IPs, at `revision`. Storm-control state
    /// and counters of VNIs already in `self` carry over.
    pub fn rebuild(
        &self,
        view: &BTreeMap<u32, VniEntry>,
        chassis: impl IntoIterator<Item = IpAddr>,
        revision: i64,
    ) -> Table {
        // A BTreeMap: already in VNI order.
        let slots: Vec<Arc<VniSlot>> = view.iter().map(|(&vni, e)| Arc::new(self.make_slot(vni, e))).collect();
        let vnis = slots.iter().map(|s| s.vni).collect();
        let chassis = Table::registered(chassis);
        Table { cfg: self.cfg, origin: self.origin, slots, vnis, chassis, synced: true, revision }
    }

    /// [`rebuild`](Self::rebuild) from a whole state.
    pub fn rebuild_from_state(&self, state: &State, revision: i64) -> Table {
        self.rebuild(&view::replicator_view(state), state.chassis.values().map(|c| c.underlay_ip), revision)
    }

    /// The table for `new`, from this one (built for `old`), recomputing
    /// only the VPCs whose entries may differ ([`view::replicator_changes`]:
    /// for two states a delta apart, the work is that of the VPCs the delta
    /// touched, not of the region); the other slots are shared. `None` when
    /// nothing the data path uses changed (a VIP changing owner).
    pub fn update(&self, old: &State, new: &State, revision: i64) -> Option<Table> {
        let changes = view::replicator_changes(old, new);
        let Some(vpcs) = changes.vpcs.filter(|_| self.synced) else {
            let t = self.rebuild_from_state(new, revision);
            return (!t.same_as(self)).then_some(t);
        };
        let (mut slots, mut vnis) = (self.slots.clone(), self.vnis.clone());
        let mut changed = false;
        // First every touched VPC's slot out, then its slot (if any) in:
        // two VPCs may have swapped VNIs.
        let mut gone: BTreeMap<&str, Arc<VniSlot>> = BTreeMap::new();
        for name in &vpcs {
            let Some(v) = old.vpcs.get(name) else { continue };
            if let Ok(i) = vnis.binary_search(&v.vni)
                && slots.get(i).is_some_and(|s| s.vpc == *name)
            {
                vnis.remove(i);
                gone.insert(name, slots.remove(i));
            }
        }
        for name in &vpcs {
            let now = new.vpcs.get(name).and_then(|v| view::replicator_entry(new, v)).map(|(vni, e)| {
                let s = Arc::new(self.make_slot(vni, &e));
                match vnis.binary_search(&vni) {
                    Ok(i) => {
                        if let Some(there) = slots.get_mut(i) {
                            *there = s.clone();
                        }
                    }
                    Err(i) => {
                        vnis.insert(i, vni);
                        slots.insert(i, s.clone());
                    }
                }
                s
            });
            changed |= match (gone.get(name.as_str()), &now) {
                (None, None) => false,
                (Some(a), Some(b)) => !a.same_as(b),
                _ => true,
            };
        }
        let chassis = if changes.chassis {
            Table::registered(new.chassis.values().map(|c| c.underlay_ip))
        } else {
            self.chassis.clone()
        };
        changed |= chassis != self.chassis;
        changed.then_some(Table { cfg: self.cfg, origin: self.origin, slots, vnis, chassis, synced: true, revision })
    }

    /// Whether this table came from the controller.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The store revision it was built from.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The engine's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every VNI, sorted.
    pub fn slots(&self) -> &[Arc<VniSlot>] {
        &self.slots
    }

    fn slot(&self, vni: u32) -> Option<&VniSlot> {
        self.vnis.binary_search(&vni).ok().and_then(|i| self.slots.get(i)).map(|s| &**s)
    }

    /// The destinations of slot `slot`; a copy goes to each but number `skip`.
    pub fn destinations(&self, slot: usize) -> &[SocketAddr] {
        self.slots.get(slot).map(|s| s.dests.as_slice()).unwrap_or_default()
    }

    /// Whether the member lists and VIPs are those of `other` (a rebuild
    /// that changes nothing the data path uses need not be installed).
    pub fn same_as(&self, other: &Table) -> bool {
        self.synced == other.synced
            && self.chassis == other.chassis
            && self.slots.len() == other.slots.len()
            && self.slots.iter().zip(&other.slots).all(|(a, b)| Arc::ptr_eq(a, b) || a.same_as(b))
    }

    /// Decides what to do with `datagram` (a UDP payload) from `from`, at `now`.
    pub fn handle(&self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Decision {
        let Ok(p) = VxlanPacket::new_checked(datagram) else { return Decision::drop(DropReason::Malformed) };
        if !p.vni_valid() {
            return Decision::drop(DropReason::Malformed);
        }
        let vni = p.vni();
        if vni == PROBE_VNI {
            return if self.synced {
                Decision { action: Action::Echo, sniffed: None }
            } else {
                Decision::drop(DropReason::NotSynced)
            };
        }
        let inner = datagram.get(vxlan::HEADER_LEN..).unwrap_or_default();
        self.decide(now, vni, inner, from.ip(), Encap::Vxlan)
    }

    /// The same for a GRE packet (RFC 2784/2890: transparent Ethernet
    /// bridging, key = VNI) from chassis `from`: `packet` starts at the GRE
    /// header. GRE has no health probes (they travel as VXLAN).
    pub fn handle_gre(&self, now: Instant, from: IpAddr, packet: &[u8]) -> Decision {
        let Ok(p) = vipcast_packet::gre::GrePacket::new_checked(packet) else {
            return Decision::drop(DropReason::Malformed);
        };
        let (Some(key), 0, vipcast_packet::gre::PROTO_ETHERNET) = (p.key(), p.version(), p.protocol()) else {
            return Decision::drop(DropReason::Malformed);
        };
        if key == PROBE_VNI || key > MAX_VNI {
            return Decision::drop(DropReason::UnknownVni);
        }
        let inner = packet.get(p.header_len()..).unwrap_or_default();
        self.decide(now, key, inner, from, Encap::Gre)
    }

    /// Checks 3 to 6 for the inner frame of VNI `vni` from chassis `from`.
    fn decide(&self, now: Instant, vni: u32, inner: &[u8], from: IpAddr, encap: Encap) -> Decision {
        if inner.len() < ethernet::HEADER_LEN {
            return Decision::drop(DropReason::Malformed);
        }
        let Ok(slot) = self.vnis.binary_search(&vni) else {
            return Decision::drop(DropReason::UnknownVni);
        };
        let Some(s) = self.slots.get(slot) else { return Decision::drop(DropReason::UnknownVni) };
        if s.encap != encap {
            return Decision::drop(DropReason::WrongEncap);
        }
        let src = from.to_canonical();
        let Ok(skip) = s.members.binary_search(&src) else {
            let reason = if self.chassis.binary_search(&src).is_ok() {
                DropReason::NotMember
            } else {
                DropReason::UnregisteredSource
            };
            return Decision::drop(reason);
        };
        s.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        let sniffed = if s.vips.is_empty() || !may_announce(inner) {
            None
        } else {
            match announce::classify(inner) {
                Ok(Some(a)) if s.vips.binary_search(&a.ip).is_ok() => {
                    Some(Sniffed { vni, vip: a.ip, mac: a.mac, kind: a.kind, chassis_ip: src })
                }
                _ => None,
            }
        };
        if !self.admit(&s.counters, now) {
            s.counters.storm_drops.fetch_add(1, Ordering::Relaxed);
            return Decision { action: Action::Drop(DropReason::Storm), sniffed };
        }
        s.counters.tx_copies.fetch_add(s.dests.len().saturating_sub(1) as u64, Ordering::Relaxed);
        Decision { action: Action::Replicate { slot, skip }, sniffed }
    }

    /// Storm control: the generic cell rate algorithm on one atomic. A frame
    /// is admitted when the VNI's theoretical arrival time is at most
    /// `(burst - 1)` emission intervals ahead of `now`.
    fn admit(&self, c: &VniCounters, now: Instant) -> bool {
        if self.cfg.storm_pps == 0 {
            return true;
        }
        let now = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        let interval = (1_000_000_000 / self.cfg.storm_pps).max(1);
        let tolerance = interval.saturating_mul(self.cfg.storm_burst.saturating_sub(1));
        let mut tat = c.tat.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now);
            if base - now > tolerance {
                return false;
            }
            match c.tat.compare_exchange_weak(tat, base + interval, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(t) => tat = t,
            }
        }
    }
}

/// A cheap look at the inner frame: could it be an ARP, or an ICMPv6
/// neighbour advertisement without extension headers? Only those are given
/// to [`announce::classify`].
fn may_announce(inner: &[u8]) -> bool {
    let at = |i: usize| inner.get(i).copied().unwrap_or(0);
    let et = |i: usize| u16::from_be_bytes([at(i), at(i + 1)]);
    let mut l3 = ethernet::HEADER_LEN;
    let mut ty = et(12);
    if ty == ethertype::VLAN {
        ty = et(16);
        l3 += ethernet::VLAN_TAG_LEN;
    }
    match ty {
        ethertype::ARP => true,
        // IPv6 next header (byte 6) ICMPv6, type (byte 40) 136.
        ethertype::IPV6 => at(l3 + 6) == 58 && at(l3 + 40) == 136,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use vipcast_packet::arp::ArpOp;
    use vipcast_packet::build;

    pub(crate) const C1: &str = "10.0.0.1";
    pub(crate) const C2: &str = "10.0.0.2";
    pub(crate) const C3: &str = "10.0.0.3";
    pub(crate) const C9: &str = "10.0.0.9";

    /// VNI 100: c1, c2, c3 with VIP 192.168.10.100; VNI 200: c1, c3; c9 registered, in no VPC.
    pub(crate) fn table(cfg: Config) -> Table {
        let mut view = BTreeMap::new();
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        view.insert(
            100,
            VniEntry {
                vpc: "prod".into(),
                encap: vipcast_model::Encap::Vxlan,
                members: ips(&[C3, C1, C2]),
                vips: ips(&["192.168.10.100", "fd00::100"]),
            },
        );
        view.insert(
            200,
            VniEntry { vpc: "dev".into(), encap: vipcast_model::Encap::Vxlan, members: ips(&[C1, C3]), vips: vec![] },
        );
        Table::new(cfg, Instant::now()).rebuild(&view, ips(&[C1, C2, C3, C9]), 7)
    }

    pub(crate) fn frame(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        vipcast_packet::vxlan::VxlanRepr { vni }.emit(&mut d).unwrap();
        d.extend_from_slice(inner);
        d
    }

    pub(crate) fn bcast() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    pub(crate) fn from(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn dests(t: &Table, d: Decision) -> Vec<String> {
        match d.action {
            Action::Replicate { slot, skip } => t
                .destinations(slot)
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, a)| a.to_string())
                .collect(),
            other => panic!("not replicated: {other:?}"),
        }
    }

    #[test]
    fn gre_packets_replicate_within_gre_vpcs_only() {
        let mut view = BTreeMap::new();
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        view.insert(
            300,
            VniEntry { vpc: "tun".into(), encap: Encap::Gre, members: ips(&[C1, C2, C3]), vips: ips(&["10.1.0.100"]) },
        );
        view.insert(100, VniEntry { vpc: "prod".into(), encap: Encap::Vxlan, members: ips(&[C1, C2]), vips: vec![] });
        let t = Table::new(Config::default(), Instant::now()).rebuild(&view, ips(&[C1, C2, C3]), 1);
        let gre = |key: Option<u32>, protocol: u16| {
            let mut p = Vec::new();
            vipcast_packet::gre::GreRepr { protocol, checksum: false, key, sequence: None }.emit(&mut p, &bcast());
            p
        };
        let now = Instant::now();
        let c2: IpAddr = C2.parse().unwrap();
        let d = t.handle_gre(now, c2, &gre(Some(300), vipcast_packet::gre::PROTO_ETHERNET));
        assert_eq!(dests(&t, d), ["10.0.0.1:4789", "10.0.0.3:4789"]);
        // A GARP for the VPC's VIP inside GRE is sniffed like one inside VXLAN.
        let garp = vipcast_packet::build::garp(
            MacAddr([2, 0, 0, 0, 0, 9]),
            "10.1.0.100".parse().unwrap(),
            vipcast_packet::arp::ArpOp::Request,
        );
        let mut p = Vec::new();
        vipcast_packet::gre::GreRepr { protocol: 0x6558, checksum: false, key: Some(300), sequence: None }
            .emit(&mut p, &garp);
        assert!(t.handle_gre(now, c2, &p).sniffed.is_some_and(|s| s.vni == 300 && s.chassis_ip == c2));
        let drop = |d: Decision| match d.action {
            Action::Drop(r) => r,
            other => panic!("not dropped: {other:?}"),
        };
        // No key, not Ethernet, truncated: malformed. Key 0 or over 24 bits: no such VNI.
        assert_eq!(drop(t.handle_gre(now, c2, &gre(None, 0x6558))), DropReason::Malformed);
        assert_eq!(drop(t.handle_gre(now, c2, &gre(Some(300), 0x0800))), DropReason::Malformed);
        assert_eq!(drop(t.handle_gre(now, c2, &[0x20, 0])), DropReason::Malformed);
        assert_eq!(drop(t.handle_gre(now, c2, &gre(Some(0), 0x6558))), DropReason::UnknownVni);
        assert_eq!(drop(t.handle_gre(now, c2, &gre(Some(0x0100_0000), 0x6558))), DropReason::UnknownVni);
        // The encapsulation must be the VPC's.
        assert_eq!(drop(t.handle_gre(now, c2, &gre(Some(100), 0x6558))), DropReason::WrongEncap);
        assert_eq!(drop(t.handle(now, from(C2), &frame(300, &bcast()))), DropReason::WrongEncap);
    }

    #[test]
    fn copies_go_to_every_member_of_the_vni_but_the_sender() {
        let t = table(Config::default());
        let now = Instant::now();
        let d = t.handle(now, from(C2), &frame(100, &bcast()));
        assert_eq!(dests(&t, d), ["10.0.0.1:4789", "10.0.0.3:4789"]);
        assert_eq!(d.sniffed, None);
        let d = t.handle(now, from(C3), &frame(200, &bcast()));
        assert_eq!(dests(&t, d), ["10.0.0.1:4789"]);
        assert_eq!(t.slots()[0].counters.rx_frames.load(Ordering::Relaxed), 1);
        assert_eq!(t.slots()[0].counters.tx_copies.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn drops_and_their_reasons() {
        let t = table(Config::default());
        let now = Instant::now();
        let drop = |d: Decision| match d.action {
            Action::Drop(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(drop(t.handle(now, from(C1), &frame(300, &bcast()))), DropReason::UnknownVni);
        assert_eq!(drop(t.handle(now, from(C2), &frame(200, &bcast()))), DropReason::NotMember);
        assert_eq!(drop(t.handle(now, from("10.9.9.9"), &frame(100, &bcast()))), DropReason::UnregisteredSource);
        assert_eq!(drop(t.handle(now, from(C1), &[0x08, 0, 0])), DropReason::Malformed);
        assert_eq!(drop(t.handle(now, from(C1), &frame(100, &[0u8; 13]))), DropReason::Malformed);
        let mut no_i = frame(100, &bcast());
        no_i[0] = 0;
        assert_eq!(drop(t.handle(now, from(C1), &no_i)), DropReason::Malformed);
        // Reserved bits are ignored (RFC 7348 §5).
        let mut reserved = frame(100, &bcast());
        reserved[0] = 0xff;
        reserved[7] = 0xff;
        assert!(matches!(t.handle(now, from(C1), &reserved).action, Action::Replicate { .. }));
    }

    #[test]
    fn probes_are_echoed_once_synced() {
        let probe = frame(PROBE_VNI, b"probe");
        let unsynced = Table::new(Config::default(), Instant::now());
        assert_eq!(unsynced.handle(Instant::now(), from(C1), &probe).action, Action::Drop(DropReason::NotSynced));
        let t = table(Config::default());
        // From anyone: agents probe before their registration is visible.
        assert_eq!(t.handle(Instant::now(), from("10.9.9.9"), &probe).action, Action::Echo);
        assert_eq!(t.handle(Instant::now(), from(C1), &probe[..8]).action, Action::Echo);
        let mut no_i = probe.clone();
        no_i[0] = 0;
        assert_eq!(t.handle(Instant::now(), from(C1), &no_i).action, Action::Drop(DropReason::Malformed));
    }

    #[test]
    fn ipv4_mapped_sources_and_v6_sockets() {
        let t = table(Config { ipv6_sockets: true, ..Config::default() });
        let src: SocketAddr = "[::ffff:10.0.0.1]:4789".parse().unwrap();
        let d = t.handle(Instant::now(), src, &frame(200, &bcast()));
        assert_eq!(dests(&t, d), ["[::ffff:10.0.0.3]:4789"]);
    }

    #[test]
    fn vip_announcements_are_sniffed_others_not() {
        let t = table(Config::default());
        let now = Instant::now();
        let mac = MacAddr([2, 0, 0, 0, 0, 0x42]);
        let garp = build::garp(mac, "192.168.10.100".parse().unwrap(), ArpOp::Request);
        let d = t.handle(now, from(C2), &frame(100, &garp));
        assert_eq!(
            d.sniffed,
            Some(Sniffed {
                vni: 100,
                vip: "192.168.10.100".parse().unwrap(),
                mac,
                kind: AnnounceKind::GratuitousRequest,
                chassis_ip: C2.parse().unwrap()
            })
        );
        assert!(matches!(d.action, Action::Replicate { .. }));
        let na = build::unsolicited_na(mac, "fd00::100".parse().unwrap(), "fe80::42".parse().unwrap(), false).unwrap();
        assert_eq!(
            t.handle(now, from(C1), &frame(100, &na)).sniffed.map(|s| s.kind),
            Some(AnnounceKind::UnsolicitedNa)
        );
        // Not a VIP, or not this VNI's VIP, or from a non-member: nothing.
        let other = build::garp(mac, "192.168.10.7".parse().unwrap(), ArpOp::Request);
        assert_eq!(t.handle(now, from(C2), &frame(100, &other)).sniffed, None);
        assert_eq!(t.handle(now, from(C1), &frame(200, &garp)).sniffed, None);
        assert_eq!(t.handle(now, from(C9), &frame(100, &garp)).sniffed, None);
    }

    #[test]
    fn storm_control_admits_burst_then_rate() {
        let t = table(Config { storm_pps: 1000, storm_burst: 10, ..Config::default() });
        let t0 = Instant::now();
        let f = frame(100, &bcast());
        let admitted = |at: Instant, n: usize| {
            (0..n).filter(|_| t.handle(at, from(C1), &f).action != Action::Drop(DropReason::Storm)).count()
        };
        assert_eq!(admitted(t0, 50), 10);
        // 1 ms later: one more (1000/s).
        assert_eq!(admitted(t0 + Duration::from_millis(1), 5), 1);
        // 100 ms later: the burst is back (capped at 10).
        assert_eq!(admitted(t0 + Duration::from_millis(101), 50), 10);
        // Other VNIs are not affected.
        assert!(matches!(t.handle(t0, from(C1), &frame(200, &bcast())).action, Action::Replicate { .. }));
        assert_eq!(t.slots()[0].counters.storm_drops.load(Ordering::Relaxed), 40 + 4 + 40);
        // A GARP during a storm is still sniffed.
        let garp = build::garp(MacAddr([2, 0, 0, 0, 0, 1]), "192.168.10.100".parse().unwrap(), ArpOp::Request);
        let d = t.handle(t0 + Duration::from_millis(101), from(C1), &frame(100, &garp));
        assert_eq!(d.action, Action::Drop(DropReason::Storm));
        assert!(d.sniffed.is_some());
        // Off: everything passes.
        let open = table(Config { storm_pps: 0, ..Config::default() });
        assert_eq!(
            (0..10_000).filter(|_| open.handle(t0, from(C1), &f).action == Action::Drop(DropReason::Storm)).count(),
            0
        );
    }

    #[test]
    fn rebuild_keeps_counters_and_storm_state() {
        let t = table(Config { storm_pps: 1000, storm_burst: 5, ..Config::default() });
        let t0 = Instant::now();
        let f = frame(100, &bcast());
        for _ in 0..5 {
            let _ = t.handle(t0, from(C1), &f);
        }
        let mut view = BTreeMap::new();
        view.insert(
            100,
            VniEntry {
                vpc: "prod".into(),
                encap: vipcast_model::Encap::Vxlan,
                members: vec![C1.parse().unwrap(), C9.parse().unwrap()],
                vips: vec![],
            },
        );
        let t2 = t.rebuild(&view, [C1.parse().unwrap(), C9.parse().unwrap()], 8);
        assert_eq!(t2.handle(t0, from(C1), &f).action, Action::Drop(DropReason::Storm));
        assert_eq!(t2.slots()[0].counters.rx_frames.load(Ordering::Relaxed), 6);
        assert!(!t2.same_as(&t));
        assert!(t2.same_as(&t2.rebuild(&view, [C9.parse().unwrap(), C1.parse().unwrap()], 9)));
        assert_eq!(t2.handle(t0 + Duration::from_secs(1), from(C9), &f).action, Action::Replicate { slot: 0, skip: 1 });
    }

    /// A region of three replicator-mode VPCs (VNIs 100, 200, 300) with a
    /// port of each on hv1 and hv2, and a VIP in vpc100.
    fn region() -> State {
        use vipcast_model::{BumMode, Chassis, Object, Port, Role, Vip, VipSpec, Vpc};
        let mut s = State::default();
        for (i, name) in ["hv1", "hv2", "hv3"].into_iter().enumerate() {
            s.put(Object::Chassis(Chassis {
                name: name.into(),
                underlay_ip: format!("10.0.0.{}", i + 1).parse().unwrap(),
                role: Role::Hypervisor,
                dataplane: vipcast_model::Dataplane::Kernel,
                liveness: None,
            }));
        }
        for vni in [100u32, 200, 300] {
            let vpc = format!("vpc{vni}");
            s.put(Object::Vpc(Vpc {
                name: vpc.clone(),
                vni,
                bum: BumMode::Replicator,
                arp_suppression: true,
                assist: true,
                encap: Encap::Vxlan,
            }));
            for (j, hv) in ["hv1", "hv2"].into_iter().enumerate() {
                s.put(Object::Port(Port::vm(
                    format!("{vpc}-{hv}"),
                    vpc.clone(),
                    "net",
                    hv,
                    MacAddr([2, 0, 0, 0, (vni / 100) as u8, j as u8]),
                    format!("192.168.{}.{}", vni / 100, j + 10).parse().unwrap(),
                )));
            }
        }
        s.put(Object::Vip(Vip::new(VipSpec {
            name: "vip".into(),
            vpc: "vpc100".into(),
            subnet: "net".into(),
            ip: "192.168.1.100".parse().unwrap(),
            members: vec![],
        })));
        s
    }

    #[test]
    fn updates_touch_only_the_vpcs_that_changed() {
        use vipcast_model::{Object, ObjectKey, Owner, Port};
        let s0 = region();
        let t0 = Table::new(Config::default(), Instant::now()).rebuild_from_state(&s0, 1);
        let f = frame(200, &bcast());
        let _ = t0.handle(Instant::now(), from(C1), &f);

        // The VIP changes owner: nothing the data path uses.
        let mut s1 = s0.clone();
        let mut vip = s1.vips["vip"].clone();
        vip.owner = Some(Owner {
            port: "vpc100-hv1".into(),
            mac: MacAddr([2, 0, 0, 0, 1, 0]),
            chassis: "hv1".into(),
            generation: 1,
            since: 0,
        });
        s1.put(Object::Vip(vip));
        assert!(t0.update(&s0, &s1, 2).is_none());

        // vpc200 gains hv3: only its slot is new, the others are shared,
        // and the result is what a rebuild gives.
        let mut s2 = s1.clone();
        s2.put(Object::Port(Port::vm(
            "vpc200-hv3",
            "vpc200",
            "net",
            "hv3",
            MacAddr([2, 0, 0, 0, 2, 3]),
            "192.168.2.13".parse().unwrap(),
        )));
        let t2 = t0.update(&s1, &s2, 3).expect("a member joined");
        assert!(t2.same_as(&t0.rebuild_from_state(&s2, 3)));
        assert_eq!(t2.slots()[1].members(), &[C1, C2, C3].map(|c| c.parse::<IpAddr>().unwrap()));
        assert!(Arc::ptr_eq(&t2.slots()[0], &t0.slots()[0]) && Arc::ptr_eq(&t2.slots()[2], &t0.slots()[2]));
        // Its counters carried over.
        assert_eq!(t2.slots()[1].counters.rx_frames.load(Ordering::Relaxed), 1);

        // vpc300 goes, and a VPC takes VNI 300 under another name.
        let mut s3 = s2.clone();
        let _ = s3.delete(&ObjectKey::Vpc("vpc300".into()));
        let mut other = s2.vpcs["vpc300"].clone();
        other.name = "renamed".into();
        s3.put(Object::Vpc(other));
        let t3 = t2.update(&s2, &s3, 4).expect("a VPC went");
        assert!(t3.same_as(&t0.rebuild_from_state(&s3, 4)));
        assert_eq!(t3.slots().iter().map(|s| s.vpc.as_str()).collect::<Vec<_>>(), ["vpc100", "vpc200", "renamed"]);

        // A chassis registers: the registered list follows, VPCs untouched.
        let mut s4 = s3.clone();
        let mut hv9 = s4.chassis["hv3"].clone();
        (hv9.name, hv9.underlay_ip) = ("hv9".into(), C9.parse().unwrap());
        s4.put(Object::Chassis(hv9));
        let t4 = t3.update(&s3, &s4, 5).expect("a chassis registered");
        assert!(t4.same_as(&t0.rebuild_from_state(&s4, 5)));
        assert!(t4.slots().iter().zip(t3.slots()).all(|(a, b)| Arc::ptr_eq(a, b)));
        assert_eq!(t4.handle(Instant::now(), from(C9), &f).action, Action::Drop(DropReason::NotMember));
    }
}

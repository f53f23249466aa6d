//! The agent's decisions, with no I/O and no clock.
//!
//! [`AgentCore`] is fed what the driver observes — a new revision of the
//! chassis' objects ([`AgentCore::on_revision`]), a frame sniffed on a local
//! port ([`AgentCore::on_seen`]), a port's carrier ([`AgentCore::on_link`]),
//! the passing of time ([`AgentCore::on_tick`]) — each with `now`, and
//! answers with [`Action`]s for the driver to carry out: reconcile the data
//! plane, re-announce a moved VIP into local ports, claim a VIP, report a
//! VRRP master, speak for a master that can no longer speak (assisted
//! handover). Call order: `on_revision` whenever the watch follower has a
//! new revision; `on_seen` / `on_link` as events arrive; `on_tick` while
//! [`AgentCore::wants_tick`] says a master on a dead chassis may still need
//! speaking for (every [`TICK`]); `on_claim_failed` when a claim got no
//! answer; `on_ports` after the data plane listed its open ports;
//! `on_peer` when a watched chassis went down or came back (peer liveness,
//! [`crate::peer`]), and after each input the driver hands
//! [`AgentCore::peers_wanted`] to the peer watch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vipcast_api::{Claim, ClaimSource, VrrpReport};
use vipcast_client::{ClaimDedup, Synced};
use vipcast_model::view::{self, ChassisView};
use vipcast_model::{AssistFault, RouterKey, State};
use vipcast_packet::MacAddr;
use vipcast_packet::arp::ArpOp;

use crate::assist::{self, Master, RemoteMaster};
use crate::ports::{Frame, Seen};
use crate::provisional::{self, Notice, Proposed};

/// How often a master on a dead chassis is looked at while its adverts may
/// still come.
pub const TICK: Duration = Duration::from_millis(1);

/// Repeats of the same claim within this window are not sent again.
pub const CLAIM_WINDOW: Duration = Duration::from_millis(500);

/// How often provisional owners are looked at (claimed and told again,
/// expired) while there are any.
pub const PROVISIONAL_TICK: Duration = Duration::from_millis(100);

/// Each priority-0 advert is sent this many times.
pub const ADVERT_REPEAT: usize = 3;

/// What the core needs to know about its chassis.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub chassis: String,
    /// Claim VIPs from sniffed announcements and adverts.
    pub sniff: bool,
    /// Speak for VRRP masters that can no longer (assisted handover).
    pub assist: bool,
}

/// What the driver must do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Program the data plane for the current view; with `read`, reading
    /// it back in full and repairing what differs (a snapshot: the stream
    /// was cut, and the data plane may have changed meanwhile).
    Reconcile { why: &'static str, read: bool },
    /// A VIP has a new owner: send its announcement `frame` into `ports`.
    Reannounce(Reannounce),
    /// Claim a VIP (announced, or advertised by a master behind `port`).
    Claim { vip: String, port: String, why: &'static str, claim: Claim },
    /// Claim again a VIP provisionally owned here (the controller has not
    /// answered yet).
    ClaimAgain { vip: String, claim: Claim },
    /// Tell the agents at `to` (underlay addresses) about a provisional
    /// owner: the driver numbers, dates, signs and sends the notice.
    Notify { notice: Notice, to: Vec<IpAddr> },
    /// Tell the controller about a VRRP master.
    ReportVrrp(VrrpReport),
    /// Send `frames` (each [`ADVERT_REPEAT`] times) as if from the master's
    /// own port `port` of VNI `vni` — to local ports and the overlay — then
    /// record the assisted handover.
    AssistPortDown { master: Master, vni: u32, frames: Vec<Vec<u8>> },
    /// Send each frame (each [`ADVERT_REPEAT`] times) into the local port
    /// that received the master's adverts, then record the assisted
    /// handover.
    AssistChassisDead {
        master: RemoteMaster,
        /// The master's port, if known.
        master_port: Option<String>,
        frames: Vec<(String, Vec<u8>)>,
        silent_ms: u64,
    },
}

/// A VIP's new owner, to announce locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reannounce {
    pub vip: String,
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub owner_chassis: String,
    pub generation: u64,
    /// The gratuitous ARP / unsolicited NA.
    pub frame: Vec<u8>,
    /// The local ports of the VIP's VPC, but the owner's own.
    pub ports: Vec<String>,
}

impl Action {
    /// The router an assisted handover was for, and the fault.
    pub fn assist_record(&self) -> Option<(RouterKey, AssistFault, IpAddr)> {
        match self {
            Action::AssistPortDown { master, .. } => {
                Some((RouterKey::new(&master.vpc, master.advert.vrid, master.src), AssistFault::PortDown, master.src))
            }
            Action::AssistChassisDead { master, .. } => Some((
                RouterKey::new(&master.vpc, master.advert.vrid, master.src),
                AssistFault::ChassisDead,
                master.src,
            )),
            _ => None,
        }
    }
}

/// The owner of a VIP as last programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Programmed {
    generation: u64,
    mac: MacAddr,
}

/// The agent's state and decisions (see the module doc).
#[derive(Debug)]
pub struct AgentCore {
    cfg: CoreConfig,
    synced: Synced,
    /// VIP -> its owner as last programmed.
    owners: HashMap<String, Programmed>,
    claims: ClaimDedup,
    /// VRRP masters behind local ports, learned from their adverts.
    masters: assist::Masters,
    /// VRRP masters elsewhere, learned from the adverts local VMs receive.
    remotes: assist::Remotes,
    /// A master on a dead chassis is waiting for its adverts to stop.
    remote_waiting: bool,
    /// Last known carrier of local ports.
    port_up: HashMap<String, bool>,
    /// Chassis the peer watch says are down.
    peers_down: HashSet<String>,
    /// Owners decided while the controller was away ([`provisional`]).
    provisional: provisional::Table,
    /// Whether the controller's watch stream is up.
    controller_up: bool,
    /// The controller's state with the provisional owners in place: what
    /// is programmed.
    effective: Arc<State>,
}

impl AgentCore {
    pub fn new(cfg: CoreConfig) -> AgentCore {
        AgentCore {
            cfg,
            synced: Synced::default(),
            owners: HashMap::new(),
            claims: ClaimDedup::new(CLAIM_WINDOW),
            masters: assist::Masters::default(),
            remotes: assist::Remotes::default(),
            remote_waiting: false,
            port_up: HashMap::new(),
            peers_down: HashSet::new(),
            provisional: provisional::Table::default(),
            controller_up: true,
            effective: Arc::new(State::default()),
        }
    }

    /// The objects this chassis holds and their revision.
    pub fn synced(&self) -> &Synced {
        &self.synced
    }

    /// What this chassis must program now, if it is registered: the
    /// controller's view, with provisional owners in place.
    pub fn view(&self) -> Option<ChassisView> {
        view::chassis_view(&self.effective, &self.cfg.chassis)
    }

    /// Whether [`AgentCore::on_tick`] must be called (every [`TICK`]).
    pub fn wants_tick(&self) -> bool {
        self.remote_waiting
    }

    /// Whether [`AgentCore::on_tick`] must be called at least every
    /// [`PROVISIONAL_TICK`] (provisional owners to claim again or expire).
    pub fn wants_slow_tick(&self) -> bool {
        !self.provisional.is_empty()
    }

    /// The provisional owners (for status and tests).
    pub fn provisional(&self) -> &provisional::Table {
        &self.provisional
    }

    /// Whether the controller's watch stream is up.
    pub fn controller_up(&self) -> bool {
        self.controller_up
    }

    /// The masters behind local ports (for status and tests).
    pub fn masters(&self) -> &assist::Masters {
        &self.masters
    }

    /// The masters elsewhere whose adverts local VMs receive.
    pub fn remotes(&self) -> &assist::Remotes {
        &self.remotes
    }

    /// A new revision: reconcile, re-announce every VIP whose owner changed
    /// since the last one programmed, and speak for masters on chassis that
    /// just died.
    pub fn on_revision(&mut self, synced: Synced, now: Instant) -> Vec<Action> {
        let (why, read) = if synced.snapshot { ("snapshot", true) } else { ("watch", false) };
        self.synced = synced;
        // The controller's verdict wins over a provisional owner.
        self.provisional.on_state(&self.synced.state);
        let known = self.synced.state.chassis.clone();
        self.provisional.retain_senders(&|c| known.contains_key(c));
        self.set_effective();
        let mut actions = vec![Action::Reconcile { why, read }];
        if self.view().is_none() {
            return actions;
        }
        actions.extend(self.speak_for_dead_chassis(now));
        actions.extend(self.moves());
        actions
    }

    /// The programmed state again: the controller's, with the provisional
    /// owners that still hold.
    fn set_effective(&mut self) {
        self.effective = match self.provisional.apply(&self.synced.state) {
            Some(s) => Arc::new(s),
            None => self.synced.state.clone(),
        };
    }

    /// Re-announcements of every VIP whose programmed owner changed since
    /// the last call. The first time, every VIP with an owner: an agent
    /// (re)started does not know what its VMs were told while it was away
    /// (a failover then reached every chassis but this one), and announcing
    /// the owner they already know changes nothing.
    fn moves(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(view) = self.view() else { return actions };
        let mut moved = Vec::new();
        for vpc in view.vpcs.values() {
            for vip in &vpc.vips {
                let Some((mac, chassis, generation)) = &vip.owner else { continue };
                let now = Programmed { generation: *generation, mac: *mac };
                let prev = self.owners.insert(vip.name.clone(), now);
                if prev != Some(now) {
                    moved.push((vpc, vip, *mac, chassis.clone(), *generation));
                }
            }
        }
        for (vpc, vip, mac, owner_chassis, generation) in moved {
            // An IPv6 VIP is re-announced with the Router flag set, as its
            // VRRP master announces it (RFC 5798 §6.4.2; vipcast vrrpd and
            // keepalived on a forwarding interface). Never clearing it
            // matters: a host that learns R=0 for an address it uses as its
            // default router drops that router (RFC 4861 §7.2.5), while R=1
            // for a master that sent R=0 (keepalived, forwarding off) only
            // marks the neighbour entry as a router.
            let frame = match vip.ip {
                IpAddr::V4(v4) => vipcast_packet::build::garp(mac, v4, ArpOp::Request),
                IpAddr::V6(v6) => match vipcast_packet::build::unsolicited_na(mac, v6, v6, true) {
                    Ok(f) => f,
                    Err(_) => continue,
                },
            };
            let own = owner_chassis == self.cfg.chassis;
            let ports = vpc.local_ports.iter().filter(|p| !(own && p.mac == mac)).map(|p| p.name.clone()).collect();
            actions.push(Action::Reannounce(Reannounce {
                vip: vip.name.clone(),
                ip: vip.ip,
                mac,
                owner_chassis,
                generation,
                frame,
                ports,
            }));
        }
        actions
    }

    /// Time passed: speak for masters on dead chassis whose adverts
    /// stopped; claim and tell provisional owners again, drop expired ones.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.speak_for_dead_chassis(now);
        if self.provisional.is_empty() {
            return actions;
        }
        if self.provisional.expire(now) {
            actions.extend(self.provisional_changed("provisional owner expired"));
        }
        for (vip, claim, base) in self.provisional.due(now) {
            actions.extend(self.notify(&vip, &claim, base));
            actions.push(Action::ClaimAgain { vip, claim });
        }
        actions
    }

    /// The controller's watch stream went down (or came back). While it is
    /// down, announcements seen here are decided here ([`provisional`]);
    /// when it is back, provisional claims are made again at once.
    pub fn on_controller(&mut self, up: bool) -> Vec<Action> {
        let was = std::mem::replace(&mut self.controller_up, up);
        if !up || was {
            return Vec::new();
        }
        self.provisional
            .all()
            .filter(|e| e.own)
            .map(|e| Action::ClaimAgain { vip: e.vip.spec.name.clone(), claim: e.claim.clone() })
            .collect()
    }

    /// The controller answered a claim on `vip` at `mac`; `owner` is the
    /// VIP's owner (MAC, chassis) after it. A provisional owner it confirms
    /// stays until the revision saying so arrives; one it did not take is
    /// dropped.
    pub fn on_claim_answered(
        &mut self,
        vip: &str,
        mac: MacAddr,
        owner: Option<(MacAddr, &str)>,
        now: Instant,
    ) -> Vec<Action> {
        let confirmed = owner == Some((mac, self.cfg.chassis.as_str()));
        if self.provisional.answered(vip, mac, confirmed, now) {
            return self.provisional_changed("provisional owner not confirmed");
        }
        Vec::new()
    }

    /// Another chassis' agent decided a claim while the controller was
    /// away (the driver checked that the notice is signed by that chassis).
    /// Decided again here by the same rules; a move is programmed and
    /// re-announced into the local ports.
    pub fn on_notice(&mut self, notice: Notice, now_ms: u64, now: Instant) -> Vec<Action> {
        let Notice { seq, sent_ms, vip, base, claim } = notice;
        let state = self.synced.state.clone();
        let from = claim.chassis.as_str();
        if from == self.cfg.chassis || !state.chassis.contains_key(from) {
            tracing::warn!(from, vip, "provisional owner notice from an unknown chassis: ignored");
            return Vec::new();
        }
        if sent_ms.abs_diff(now_ms) > vipcast_model::claim::CLOCK_SKEW_MS {
            tracing::warn!(from, vip, sent_ms, now_ms, "provisional owner notice too far off this clock: ignored");
            return Vec::new();
        }
        if !self.provisional.fresh(from, seq) {
            return Vec::new();
        }
        let Some(v) = state.vips.get(&vip) else { return Vec::new() };
        let current = v.owner.as_ref().map_or(0, |o| o.generation);
        let here = self.view().is_some_and(|view| view.vpcs.contains_key(&v.spec.vpc));
        if current > base || !here {
            // The controller has moved on, or the VIP is not ours to program.
            return Vec::new();
        }
        match self.provisional.propose(&state, &vip, &claim, now_ms, false, now) {
            Proposed::Moved => {
                tracing::warn!(vip, from, mac = %claim.mac, "controller away: VIP re-pointed provisionally, as told");
                self.provisional_changed("provisional owner told")
            }
            Proposed::Refreshed | Proposed::Refused => Vec::new(),
        }
    }

    /// Decides here a claim the controller cannot take now (see
    /// [`provisional`]): programs and re-announces it, and tells the
    /// VPC's other chassis.
    fn propose_own(&mut self, vip: &str, claim: &Claim, now: Instant) -> Vec<Action> {
        let state = self.synced.state.clone();
        match self.provisional.propose(&state, vip, claim, claim.observed_at, true, now) {
            Proposed::Moved => {
                tracing::warn!(vip, mac = %claim.mac, "controller away: VIP re-pointed provisionally");
                let base = self.provisional.get(vip).map_or(0, |e| e.base);
                let mut actions = self.provisional_changed("provisional owner");
                actions.extend(self.notify(vip, claim, base));
                actions
            }
            Proposed::Refreshed | Proposed::Refused => Vec::new(),
        }
    }

    /// Provisional owners changed: program and re-announce.
    fn provisional_changed(&mut self, why: &'static str) -> Vec<Action> {
        self.set_effective();
        let mut actions = vec![Action::Reconcile { why, read: false }];
        actions.extend(self.moves());
        actions
    }

    /// The notice telling the other chassis of `vip`'s VPC about a
    /// provisional claim.
    fn notify(&self, vip: &str, claim: &Claim, base: u64) -> Option<Action> {
        let state = &self.synced.state;
        let vpc = &state.vips.get(vip)?.spec.vpc;
        let to: Vec<IpAddr> = view::participants(state, vpc)
            .iter()
            .filter(|c| **c != self.cfg.chassis)
            .filter_map(|c| state.chassis.get(c).map(|c| c.underlay_ip))
            .collect();
        let notice = Notice { seq: 0, sent_ms: 0, vip: vip.to_string(), base, claim: claim.clone() };
        (!to.is_empty()).then_some(Action::Notify { notice, to })
    }

    /// The peer watch says `chassis` went down (or came back): a master
    /// there whose adverts stopped is spoken for at once, without waiting
    /// for the controller's verdict.
    pub fn on_peer(&mut self, chassis: &str, down: bool, now: Instant) -> Vec<Action> {
        if !down {
            self.peers_down.remove(chassis);
            self.remotes.peer_up();
            return Vec::new();
        }
        self.peers_down.insert(chassis.to_string());
        self.speak_for_dead_chassis(now)
    }

    /// Forgets that chassis the peer watch no longer follows are down
    /// (`watched` says which it still follows): a chassis seen down, then
    /// no longer watched once its masters were spoken for, must not count
    /// as down when a master there is heard again.
    pub fn forget_peers(&mut self, watched: &dyn Fn(&str) -> bool) {
        self.peers_down.retain(|c| watched(c));
    }

    /// The chassis to watch directly: those hosting a VRRP master whose
    /// adverts local VMs receive, in a VPC with assistance on, with their
    /// underlay addresses. Only these pairs, never a full mesh.
    pub fn peers_wanted(&self) -> BTreeMap<String, IpAddr> {
        let state = &self.synced.state;
        self.remotes
            .all()
            .filter(|m| self.assist_on(&m.vpc))
            .filter_map(|m| {
                let port = port_by_mac(state, &m.vpc, m.eth_src)?;
                let c = state.chassis.get(&port.chassis)?;
                (c.name != self.cfg.chassis).then(|| (c.name.clone(), c.underlay_ip))
            })
            .collect()
    }

    /// A local port's carrier. Losing it is a certain fault: speak for the
    /// VRRP masters behind it.
    pub fn on_link(&mut self, port: &str, up: bool, now: Instant) -> Vec<Action> {
        let was = self.port_up.insert(port.to_string(), up);
        if up || was == Some(false) {
            return Vec::new();
        }
        let (ok, refused) = self.masters.take_for_port(port, now);
        for m in refused {
            tracing::info!(port, vrid = m.advert.vrid, "port down: no assistance (stale, or v2 authentication)");
        }
        let mut actions = Vec::new();
        for m in ok {
            if !self.assist_on(&m.vpc) {
                tracing::info!(port, vpc = m.vpc, vrid = m.advert.vrid, "port down: assistance is off");
                continue;
            }
            if let Some(vip) = no_eligible_successor(&self.synced.state, &m.vpc, &m.advert.addresses, Some(&m.port)) {
                tracing::info!(
                    port,
                    vip,
                    vrid = m.advert.vrid,
                    "port down: no assistance (no other member is eligible)"
                );
                continue;
            }
            match priority_zero_frames(&self.synced.state, &m) {
                Ok((vni, frames)) => actions.push(Action::AssistPortDown { master: m, vni, frames }),
                Err(e) => tracing::warn!(port, vrid = m.advert.vrid, error = %e, "assisted handover failed"),
            }
        }
        actions
    }

    /// A frame from (or to) a local VM: learn VRRP masters; claim announced
    /// VIPs, and the VIPs a master advertises.
    ///
    /// Claiming from adverts too matters after a split heals: the loser
    /// steps down silently and the winner, already master, sends no GARP
    /// (keepalived's next one comes `vrrp_garp_master_delay`, 5 s, later),
    /// so without it the VIP could keep pointing at the loser. A master
    /// advertises every interval, so its own chassis corrects that within one.
    pub fn on_seen(&mut self, seen: Seen, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match seen.frame {
            Frame::Announcement(a) => {
                actions.extend(self.claim(&seen.port, a.ip, a.mac, seen.at_ms, "announcement", now));
                if !self.controller_up
                    && self.cfg.sniff
                    && let Some(vip) = self.vip_of(&seen.port, a.ip)
                {
                    let claim = self.own_claim(a.mac, seen.at_ms);
                    actions.extend(self.propose_own(&vip, &claim, now));
                }
            }
            Frame::Advert { eth_src, src, dst, advert } => {
                let Some(port) = self.synced.state.ports.get(&seen.port) else { return actions };
                let origin = assist::Origin { vpc: port.vpc.clone(), port: seen.port.clone(), eth_src, src, dst };
                if let Some(m) = self.masters.observe(origin, &advert, now) {
                    let mut report =
                        VrrpReport::new(&m.vpc, &self.cfg.chassis, m.eth_src, m.src, &m.advert, m.dsts.iter().copied());
                    report.observed_at = seen.at_ms;
                    actions.push(Action::ReportVrrp(report));
                }
                if advert.priority > 0 {
                    for ip in &advert.addresses {
                        actions.extend(self.claim(&seen.port, *ip, eth_src, seen.at_ms, "VRRP master advert", now));
                    }
                }
            }
            Frame::Delivered { eth_src, eth_dst, src, dst, advert } => {
                let state = &self.synced.state;
                let Some(port) = state.ports.get(&seen.port) else { return actions };
                // A master on this chassis is covered by its port's carrier.
                let local = state
                    .ports
                    .values()
                    .any(|p| p.vpc == port.vpc && p.mac == eth_src && p.chassis == self.cfg.chassis);
                if !local {
                    let d = assist::Delivery { vpc: port.vpc.clone(), port: seen.port, eth_src, eth_dst, src, dst };
                    self.remotes.observe(d, &advert, now);
                }
            }
        }
        actions
    }

    /// A claim got no answer: the next announcement claims again, and
    /// the claim is decided here meanwhile ([`provisional`]).
    pub fn on_claim_failed(&mut self, vip: &str, claim: &Claim, now: Instant) -> Vec<Action> {
        self.claims.forget(vip, claim.mac, &self.cfg.chassis);
        if !self.cfg.sniff {
            return Vec::new();
        }
        self.propose_own(vip, claim, now)
    }

    /// The local ports the data plane has open: adverts delivered to others
    /// are forgotten.
    pub fn on_ports(&mut self, open: &dyn Fn(&str) -> bool) {
        self.remotes.retain_ports(open);
        self.masters.retain_ports(open);
    }

    fn assist_on(&self, vpc: &str) -> bool {
        self.cfg.assist && self.synced.state.vpcs.get(vpc).is_some_and(|v| v.assist)
    }

    /// Claims `ip` at `mac` for local port `port`, if `ip` is a VIP of the
    /// port's VPC not already owned so, and not just claimed so.
    fn claim(
        &mut self,
        port: &str,
        ip: IpAddr,
        mac: MacAddr,
        at_ms: u64,
        why: &'static str,
        now: Instant,
    ) -> Option<Action> {
        if !self.cfg.sniff {
            return None;
        }
        let name = self.vip_of(port, ip)?;
        let vip = self.synced.state.vips.get(&name)?;
        if vip.owner.as_ref().is_some_and(|o| o.mac == mac && o.chassis == self.cfg.chassis) {
            return None;
        }
        // A provisional claim is made again on its own schedule.
        if self.provisional.get(&name).is_some_and(|e| e.own && e.claim.mac == mac) {
            return None;
        }
        if !self.claims.should_claim(now, &name, mac, &self.cfg.chassis) {
            return None;
        }
        let claim = self.own_claim(mac, at_ms);
        Some(Action::Claim { vip: name, port: port.to_string(), why, claim })
    }

    /// The VIP `ip` of local port `port`'s VPC, if there is one.
    fn vip_of(&self, port: &str, ip: IpAddr) -> Option<String> {
        let state: &Arc<State> = &self.synced.state;
        let p = state.ports.get(port)?;
        state.vpc_vips(&p.vpc).find(|v| v.spec.ip == ip).map(|v| v.spec.name.clone())
    }

    /// A claim by this chassis of an announcement at `mac` seen at `at_ms`.
    fn own_claim(&self, mac: MacAddr, at_ms: u64) -> Claim {
        Claim { mac, chassis: self.cfg.chassis.clone(), source: ClaimSource::Agent, observed_at: at_ms }
    }

    /// Speaks for the VRRP masters on chassis the controller declared dead,
    /// or the peer watch sees down, into the local ports that received
    /// their adverts (see [`assist::Remotes`]); in either case only once
    /// their adverts have stopped.
    fn speak_for_dead_chassis(&mut self, now: Instant) -> Vec<Action> {
        let state = self.synced.state.clone();
        let me = self.cfg.chassis.as_str();
        let peers_down = &self.peers_down;
        let dead = |vpc: &str, mac: MacAddr| {
            port_by_mac(&state, vpc, mac)
                .and_then(|p| state.chassis.get(&p.chassis))
                .is_some_and(|c| c.name != me && (c.is_dead() || peers_down.contains(&c.name)))
        };
        // The local backups' shortest Skew_Time, if every one's priority is
        // known (from its adverts when it was master).
        let masters = &self.masters;
        let skew = |m: &RemoteMaster| {
            let key = RouterKey::new(&m.vpc, m.advert.vrid, m.src);
            m.receivers
                .keys()
                .map(|p| masters.priority(&key, p))
                .collect::<Option<Vec<u8>>>()
                .and_then(|ps| ps.into_iter().max())
                .map_or(Duration::ZERO, |p| vipcast_vrrp::timing::skew_time(m.advert.version, p, m.advert.interval_cs))
        };
        let (verdicts, waiting) = self.remotes.due(&dead, &skew, now);
        self.remote_waiting = waiting;
        let mut actions = Vec::new();
        for v in verdicts {
            let m = match v {
                assist::Verdict::Refuse(m) => {
                    tracing::info!(
                        vpc = m.vpc,
                        vrid = m.advert.vrid,
                        master = %m.src,
                        "master's chassis dead: no assistance (stale, or v2 authentication)"
                    );
                    continue;
                }
                assist::Verdict::Speak(m) => m,
            };
            if !self.assist_on(&m.vpc) {
                tracing::info!(vpc = m.vpc, vrid = m.advert.vrid, "master's chassis dead: assistance is off");
                continue;
            }
            let master_port = port_by_mac(&state, &m.vpc, m.eth_src).map(|p| p.name.clone());
            if let Some(vip) = no_eligible_successor(&state, &m.vpc, &m.advert.addresses, master_port.as_deref()) {
                tracing::info!(
                    vip,
                    vrid = m.advert.vrid,
                    "master's chassis dead: no assistance (no other member is eligible)"
                );
                continue;
            }
            let advert = m.priority_zero();
            let mut frames = Vec::new();
            for (port, (eth_dst, dst)) in &m.receivers {
                let dst_mac = if dst.is_multicast() { None } else { Some(*eth_dst) };
                match vipcast_packet::build::vrrp_frame(m.eth_src, dst_mac, m.src, *dst, &advert) {
                    Ok(f) => frames.push((port.clone(), f)),
                    Err(e) => tracing::warn!(port, error = %e, "building a priority-0 advert"),
                }
            }
            let silent_ms = now.saturating_duration_since(m.last).as_millis() as u64;
            actions.push(Action::AssistChassisDead { master: m, master_port, frames, silent_ms });
        }
        actions
    }
}

/// A VIP among `addresses` (of VPC `vpc`) whose members other than the
/// master's port are all marked not eligible: speaking for the master would
/// hand the VIP to a member the controller refuses.
fn no_eligible_successor(state: &State, vpc: &str, addresses: &[IpAddr], master_port: Option<&str>) -> Option<String> {
    state
        .vips
        .values()
        .filter(|v| v.spec.vpc == vpc && addresses.contains(&v.spec.ip))
        .find(|v| {
            let mut others = v.spec.members.iter().filter(|p| Some(p.as_str()) != master_port).peekable();
            others.peek().is_some() && others.all(|p| !v.eligible(p))
        })
        .map(|v| v.spec.name.clone())
}

/// The port of VPC `vpc` with MAC `mac`, if any.
fn port_by_mac<'a>(state: &'a State, vpc: &str, mac: MacAddr) -> Option<&'a vipcast_model::Port> {
    state.vpc_ports(vpc).find(|p| p.mac == mac)
}

/// The VNI of `m`'s VPC and the priority-0 advert frames `m` would send, one
/// per destination it used (multicast, or each unicast peer at its port's MAC).
fn priority_zero_frames(state: &State, m: &Master) -> Result<(u32, Vec<Vec<u8>>), String> {
    let vni = state.vpcs.get(&m.vpc).map(|v| v.vni).ok_or_else(|| format!("unknown VPC {}", m.vpc))?;
    let advert = m.priority_zero();
    let mut frames = Vec::new();
    for dst in &m.dsts {
        let dst_mac = if dst.is_multicast() {
            None
        } else {
            let by_port = state.ports.values().find(|p| p.vpc == m.vpc && p.ip == *dst).map(|p| p.mac);
            Some(by_port.ok_or_else(|| format!("no MAC known for unicast peer {dst}"))?)
        };
        frames.push(
            vipcast_packet::build::vrrp_frame(m.eth_src, dst_mac, m.src, *dst, &advert).map_err(|e| e.to_string())?,
        );
    }
    Ok((vni, frames))
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

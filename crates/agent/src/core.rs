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

/// How often a master on a dead chassis is looked at while its adverts may
/// still come.
pub const TICK: Duration = Duration::from_millis(1);

/// Repeats of the same claim within this window are not sent again.
pub const CLAIM_WINDOW: Duration = Duration::from_millis(500);

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
    /// No revision handled yet: owners seen now are not moves.
    first: bool,
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
}

impl AgentCore {
    pub fn new(cfg: CoreConfig) -> AgentCore {
        AgentCore {
            cfg,
            synced: Synced::default(),
            owners: HashMap::new(),
            first: true,
            claims: ClaimDedup::new(CLAIM_WINDOW),
            masters: assist::Masters::default(),
            remotes: assist::Remotes::default(),
            remote_waiting: false,
            port_up: HashMap::new(),
            peers_down: HashSet::new(),
        }
    }

    /// The objects this chassis holds and their revision.
    pub fn synced(&self) -> &Synced {
        &self.synced
    }

    /// What this chassis must program now, if it is registered.
    pub fn view(&self) -> Option<ChassisView> {
        view::chassis_view(&self.synced.state, &self.cfg.chassis)
    }

    /// Whether [`AgentCore::on_tick`] must be called (every [`TICK`]).
    pub fn wants_tick(&self) -> bool {
        self.remote_waiting
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
        let mut actions = vec![Action::Reconcile { why, read }];
        let Some(view) = self.view() else { return actions };
        let mut moved = Vec::new();
        for vpc in view.vpcs.values() {
            for vip in &vpc.vips {
                let Some((mac, chassis, generation)) = &vip.owner else { continue };
                let prev = self.owners.insert(vip.name.clone(), Programmed { generation: *generation, mac: *mac });
                if prev.map(|p| p.generation) != Some(*generation) && !self.first {
                    moved.push((vpc, vip, *mac, chassis.clone(), *generation));
                }
            }
        }
        self.first = false;
        actions.extend(self.speak_for_dead_chassis(now));
        for (vpc, vip, mac, owner_chassis, generation) in moved {
            let frame = match vip.ip {
                IpAddr::V4(v4) => vipcast_packet::build::garp(mac, v4, ArpOp::Request),
                IpAddr::V6(v6) => match vipcast_packet::build::unsolicited_na(mac, v6, v6) {
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

    /// Time passed: speak for masters on dead chassis whose adverts stopped.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.speak_for_dead_chassis(now)
    }

    /// The peer watch says `chassis` went down (or came back): a master
    /// there whose adverts stopped is spoken for at once, without waiting
    /// for the controller's verdict.
    pub fn on_peer(&mut self, chassis: &str, down: bool, now: Instant) -> Vec<Action> {
        if !down {
            self.peers_down.remove(chassis);
            return Vec::new();
        }
        self.peers_down.insert(chassis.to_string());
        self.speak_for_dead_chassis(now)
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

    /// A claim got no answer: the next announcement claims again.
    pub fn on_claim_failed(&mut self, vip: &str, mac: MacAddr) {
        self.claims.forget(vip, mac, &self.cfg.chassis);
    }

    /// The local ports the data plane has open: adverts delivered to others
    /// are forgotten.
    pub fn on_ports(&mut self, open: &dyn Fn(&str) -> bool) {
        self.remotes.retain_ports(open);
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
        let state: &Arc<State> = &self.synced.state;
        let p = state.ports.get(port)?;
        let vip = state.vips.values().find(|v| v.spec.vpc == p.vpc && v.spec.ip == ip)?;
        if vip.owner.as_ref().is_some_and(|o| o.mac == mac && o.chassis == self.cfg.chassis) {
            return None;
        }
        if !self.claims.should_claim(now, &vip.spec.name, mac, &self.cfg.chassis) {
            return None;
        }
        let claim = Claim { mac, chassis: self.cfg.chassis.clone(), source: ClaimSource::Agent, observed_at: at_ms };
        Some(Action::Claim { vip: vip.spec.name.clone(), port: port.to_string(), why, claim })
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
        let (verdicts, waiting) = self.remotes.due(&dead, now);
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
            let advert = m.priority_zero();
            let mut frames = Vec::new();
            for (port, (eth_dst, dst)) in &m.receivers {
                let dst_mac = if dst.is_multicast() { None } else { Some(*eth_dst) };
                match vipcast_packet::build::vrrp_frame(m.eth_src, dst_mac, m.src, *dst, &advert) {
                    Ok(f) => frames.push((port.clone(), f)),
                    Err(e) => tracing::warn!(port, error = %e, "building a priority-0 advert"),
                }
            }
            let master_port = port_by_mac(&state, &m.vpc, m.eth_src).map(|p| p.name.clone());
            let silent_ms = now.saturating_duration_since(m.last).as_millis() as u64;
            actions.push(Action::AssistChassisDead { master: m, master_port, frames, silent_ms });
        }
        actions
    }
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

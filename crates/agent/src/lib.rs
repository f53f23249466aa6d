//! vipcast's chassis agent.
//!
//! ```text
//!  controller ──watch──► sync (local copy of this chassis' objects)
//!                          │ every revision
//!                          v
//!              chassis_view ─► plan ─► kernel.reconcile (rtnetlink: bridges,
//!                          │            VXLAN devices, FDB, neighbours)
//!                          └─► VIP owner changed? ─► GARP / NA into local ports
//!  VM ports ──AF_PACKET──► announcements ─► VIP of that VPC? ─► POST claim
//! ```
//! Everything the agent does is driven by the watch stream and by frames;
//! a 5 s tick only repairs drift and picks up VM ports that appeared.

pub mod assist;
pub mod kernel;
pub mod links;
pub mod ovs;
pub mod ovs_flows;
pub mod plan;
pub mod ports;
pub mod probe;
pub mod sync;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vipcast_model::view::{self, ChassisView};
use vipcast_model::{ClaimSource, Role, State};
use vipcast_packet::MacAddr;
use vipcast_packet::arp::ArpOp;

use crate::kernel::Kernel;
use crate::ports::{PortIo, Seen};
use crate::sync::{Identity, Synced};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Controller base URL, e.g. `http://10.255.0.254:7600`.
    pub controller: String,
    pub chassis: String,
    pub underlay_ip: IpAddr,
    pub role: Role,
    /// Sniff GARP / NA on VM ports and claim VIPs (default on).
    pub sniff: bool,
    /// Announcements sent into each local port when a VIP moves (default 3).
    pub announce_burst: u32,
    /// Send the priority-0 advert of a VRRP master whose port went down
    /// (platform-assisted handover; default on).
    pub assist: bool,
    /// Interval of liveness heartbeats to the controller (UDP, to the
    /// controller's port number); default 50 ms.
    pub heartbeat: Duration,
    /// What programs the chassis: the kernel (default) or a local Open vSwitch.
    pub dataplane: vipcast_model::Dataplane,
    /// Where the agent listens for its Open vSwitch (OpenFlow, out of band).
    pub openflow_listen: std::net::SocketAddr,
}

/// Runs the agent until the process ends.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let kernel = Kernel::open()?;
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build()?;
    let id = Identity {
        controller: cfg.controller.trim_end_matches('/').to_string(),
        chassis: cfg.chassis.clone(),
        underlay_ip: cfg.underlay_ip,
        role: cfg.role,
        dataplane: cfg.dataplane,
    };
    let prober = probe::Prober::start(cfg.underlay_ip).await?;
    let mut health = prober.changed.clone();
    sync::register(&http, &id).await?;
    tracing::info!(chassis = cfg.chassis, "registered");
    tokio::spawn(sync::heartbeats(id.clone(), cfg.heartbeat));
    let (tx, mut rx) = watch::channel(Synced::default());
    tokio::spawn(sync::follow(http.clone(), id.clone(), tx));
    let (seen_tx, mut seen_rx) = mpsc::channel::<Seen>(1024);
    let mut link_rx = links::watch()?;
    let ovs = match cfg.dataplane {
        vipcast_model::Dataplane::Kernel => None,
        vipcast_model::Dataplane::Ovs => {
            let o = ovs::Ovs::start(cfg.openflow_listen, seen_tx.clone())?;
            tracing::info!(listen = %cfg.openflow_listen, "waiting for Open vSwitch (OpenFlow 1.3)");
            Some(o)
        }
    };
    let mut switch = ovs.as_ref().map(|o| o.subscribe());
    let mut agent = Agent {
        cfg,
        kernel,
        http,
        ports: BTreeMap::new(),
        seen_tx,
        synced: Synced::default(),
        owners: HashMap::new(),
        recent_claims: HashMap::new(),
        first: true,
        prober,
        replicator_choice: BTreeMap::new(),
        unrouted: Vec::new(),
        unsupported: Vec::new(),
        masters: assist::Masters::default(),
        remotes: assist::Remotes::default(),
        remote_waiting: false,
        port_up: HashMap::new(),
        ovs,
        vm_ifnames: BTreeMap::new(),
        send_socks: std::sync::Mutex::new(HashMap::new()),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // Only while a master on a dead chassis may still need speaking for.
    let mut assist_tick = tokio::time::interval(Duration::from_millis(5));
    assist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    anyhow::bail!("watch task ended");
                }
                let synced = rx.borrow_and_update().clone();
                agent.on_revision(synced).await;
            }
            Some(seen) = seen_rx.recv() => agent.on_seen(seen),
            Some((ifindex, up)) = link_rx.recv() => agent.on_link(ifindex, up),
            Ok(()) = health.changed() => agent.reconcile("replicator health").await,
            _ = assist_tick.tick(), if agent.remote_waiting => agent.speak_for_dead_chassis(),
            Some(true) = async { match switch.as_mut() {
                Some(w) => w.changed().await.ok().map(|()| *w.borrow_and_update()),
                None => std::future::pending().await,
            } } => agent.reconcile("switch connected").await,
            _ = tick.tick() => agent.reconcile("periodic").await,
        }
    }
}

struct Agent {
    cfg: Config,
    kernel: Kernel,
    http: reqwest::Client,
    ports: BTreeMap<String, PortIo>,
    seen_tx: mpsc::Sender<Seen>,
    synced: Synced,
    /// VIP -> (generation, owner MAC) as last programmed.
    owners: HashMap<String, (u64, MacAddr)>,
    /// (VIP, MAC) -> when we last claimed it.
    recent_claims: HashMap<(String, MacAddr), Instant>,
    first: bool,
    prober: probe::Prober,
    /// VNI -> replicator in use, as last reported.
    replicator_choice: BTreeMap<u32, String>,
    /// Subnets this gateway cannot route, as last reported.
    unrouted: Vec<(String, String, ipnet::IpNet)>,
    /// VPCs this data plane cannot carry, as last reported.
    unsupported: Vec<String>,
    /// VRRP masters behind local ports, learned from their adverts.
    masters: assist::Masters,
    /// VRRP masters elsewhere, learned from the adverts local VMs receive.
    remotes: assist::Remotes,
    /// A master on a dead chassis is waiting for its adverts to stop.
    remote_waiting: bool,
    /// Last known carrier of local ports, by ifindex.
    port_up: HashMap<u32, bool>,
    /// The Open vSwitch data plane, when this chassis has one (else the kernel).
    ovs: Option<ovs::Ovs>,
    /// Local ports -> (ifindex, interface), as last listed (Open vSwitch mode).
    vm_ifnames: BTreeMap<String, (u32, String)>,
    /// Send-only packet sockets on VPC bridges, by ifindex (assisted adverts).
    send_socks: std::sync::Mutex<HashMap<u32, vipcast_sys::PacketSocket>>,
}

impl Agent {
    fn view(&self) -> Option<ChassisView> {
        view::chassis_view(&self.synced.state, &self.cfg.chassis)
    }

    async fn on_revision(&mut self, synced: Synced) {
        let started = Instant::now();
        self.synced = synced;
        self.reconcile("watch").await;
        let Some(view) = self.view() else { return };
        // VIPs whose owner changed since the last revision we programmed.
        let mut moved = Vec::new();
        for vpc in view.vpcs.values() {
            for vip in &vpc.vips {
                let Some((mac, chassis, generation)) = &vip.owner else { continue };
                let prev = self.owners.insert(vip.name.clone(), (*generation, *mac));
                if prev.map(|p| p.0) != Some(*generation) && !self.first {
                    moved.push((vpc.name.clone(), vip.ip, *mac, chassis.clone(), *generation, vip.name.clone()));
                }
            }
        }
        self.first = false;
        self.speak_for_dead_chassis();
        for (vpc, ip, mac, owner_chassis, generation, name) in moved {
            let n = self.reannounce(&view, &vpc, ip, mac, &owner_chassis);
            tracing::info!(
                vip = name,
                %ip,
                %mac,
                owner_chassis,
                generation,
                ports = n,
                elapsed_us = started.elapsed().as_micros() as u64,
                "VIP re-pointed and re-announced"
            );
        }
    }

    async fn reconcile(&mut self, why: &str) {
        let Some(view) = self.view() else { return };
        let replicators: BTreeMap<String, std::net::SocketAddr> = view
            .vpcs
            .values()
            .flat_map(|v| match &v.flood {
                view::Flood::Replicator(r) => r.clone(),
                view::Flood::Headend(_) => Vec::new(),
            })
            .collect();
        self.prober.set_targets(replicators.clone());
        let prober = self.prober.clone();
        let plan = plan::plan(&view, &|n| prober.healthy(n));
        for v in view.vpcs.values() {
            if let view::Flood::Replicator(r) = &v.flood
                && let Some((name, addr)) = plan::choose_replicator(v.vni, r, &|n| prober.healthy(n))
                && self.replicator_choice.insert(v.vni, name.clone()).as_ref() != Some(&name)
            {
                tracing::info!(vni = v.vni, replicator = name, %addr, "BUM via replicator");
            }
        }
        if self.ovs.is_none() && plan.unsupported != self.unsupported {
            for vpc in &plan.unsupported {
                tracing::warn!(vpc, "VPC uses GRE, which the kernel data plane cannot carry: not programmed here");
            }
            self.unsupported = plan.unsupported.clone();
        }
        if plan.unrouted != self.unrouted {
            for (vpc, subnet, cidr) in &plan.unrouted {
                tracing::warn!(vpc, subnet, %cidr, "not routed here: overlaps a subnet of another VPC (no VRFs)");
            }
            self.unrouted = plan.unrouted.clone();
        }
        if let Some(ovs) = &self.ovs {
            match self.kernel.ports().await {
                Ok(p) => self.vm_ifnames = p,
                Err(e) => tracing::warn!(error = %e, "listing ports"),
            }
            let ifnames: BTreeMap<String, String> =
                self.vm_ifnames.iter().map(|(p, (_, n))| (p.clone(), n.clone())).collect();
            let chosen: BTreeMap<u32, IpAddr> = view
                .vpcs
                .values()
                .filter_map(|v| match &v.flood {
                    view::Flood::Replicator(r) => {
                        plan::choose_replicator(v.vni, r, &|n| prober.healthy(n)).map(|(_, a)| (v.vni, a.ip()))
                    }
                    view::Flood::Headend(_) => None,
                })
                .collect();
            match ovs.apply(&view, &ifnames, &|vni| chosen.get(&vni).copied()).await {
                Ok(ch) if ch.total() > 0 => {
                    tracing::info!(why, ?ch, revision = self.synced.revision, "data plane updated (Open vSwitch)")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(why, error = %e, "programming Open vSwitch"),
            }
            return;
        }
        match self.kernel.reconcile(&plan).await {
            Ok(ch) if ch.total() > 0 => tracing::info!(why, ?ch, revision = self.synced.revision, "data plane updated"),
            Ok(_) => {}
            Err(e) => tracing::warn!(why, error = %e, "reconciling the data plane"),
        }
        if self.cfg.sniff || self.cfg.announce_burst > 0 {
            self.sync_ports(&view).await;
        }
    }

    /// A link changed. A local VM port losing its carrier is a certain fault:
    /// speak for the VRRP masters behind it.
    fn on_link(&mut self, ifindex: u32, up: bool) {
        let port = match &self.ovs {
            None => self.ports.iter().find(|(_, io)| io.ifindex == ifindex).map(|(p, _)| p.clone()),
            Some(_) => self.vm_ifnames.iter().find(|(_, (i, _))| *i == ifindex).map(|(p, _)| p.clone()),
        };
        let Some(port) = port else { return };
        let was = self.port_up.insert(ifindex, up);
        if up || was == Some(false) {
            return;
        }
        let started = Instant::now();
        let (ok, refused) = self.masters.take_for_port(&port, started);
        for m in refused {
            tracing::info!(port, vrid = m.advert.vrid, "port down: no assistance (stale, or v2 authentication)");
        }
        for m in ok {
            let vpc_assist = self.synced.state.vpcs.get(&m.vpc).is_some_and(|v| v.assist);
            if !self.cfg.assist || !vpc_assist {
                tracing::info!(port, vpc = m.vpc, vrid = m.advert.vrid, "port down: assistance is off");
                continue;
            }
            match self.send_priority_zero(&m) {
                Ok(n) => {
                    self.report_assist(&m.vpc, &m.advert, m.src, "port-down");
                    tracing::info!(
                    port,
                    vpc = m.vpc,
                    vrid = m.advert.vrid,
                    master = %m.src,
                    frames = n,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "port down: assisted handover, priority-0 advert sent for the master"
                    )
                }
                Err(e) => tracing::warn!(port, vrid = m.advert.vrid, error = %e, "assisted handover failed"),
            }
        }
    }

    /// Speaks for the VRRP masters on chassis the controller declared dead,
    /// into the local ports that received their adverts (see
    /// [`assist::Remotes`]).
    fn speak_for_dead_chassis(&mut self) {
        let state = &self.synced.state;
        let me = self.cfg.chassis.as_str();
        let dead = |vpc: &str, mac: MacAddr| {
            state
                .ports
                .values()
                .find(|p| p.vpc == vpc && p.mac == mac)
                .and_then(|p| state.chassis.get(&p.chassis))
                .is_some_and(|c| c.name != me && c.is_dead())
        };
        let now = Instant::now();
        let (verdicts, waiting) = self.remotes.due(&dead, now);
        self.remote_waiting = waiting;
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
            let vpc_assist = state.vpcs.get(&m.vpc).is_some_and(|v| v.assist);
            if !self.cfg.assist || !vpc_assist {
                tracing::info!(vpc = m.vpc, vrid = m.advert.vrid, "master's chassis dead: assistance is off");
                continue;
            }
            let advert = m.priority_zero();
            let mut frames = 0;
            for (port, (eth_dst, dst)) in &m.receivers {
                let dst_mac = if dst.is_multicast() { None } else { Some(*eth_dst) };
                let frame = match vipcast_packet::build::vrrp_frame(m.eth_src, dst_mac, m.src, *dst, &advert) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(port, error = %e, "building a priority-0 advert");
                        continue;
                    }
                };
                for _ in 0..3 {
                    let sent = match (&self.ovs, self.vm_ifnames.get(port), self.ports.get(port)) {
                        (Some(ovs), Some((_, ifname)), _) => ovs.packet_out(ifname, &frame),
                        (None, _, Some(io)) => io.send(&frame).map_err(anyhow::Error::from),
                        _ => break,
                    };
                    match sent {
                        Ok(()) => frames += 1,
                        Err(e) => tracing::warn!(port, error = %e, "sending a priority-0 advert"),
                    }
                }
            }
            let master_port =
                state.ports.values().find(|p| p.vpc == m.vpc && p.mac == m.eth_src).map(|p| p.name.as_str());
            tracing::info!(
                port = master_port.unwrap_or("?"),
                vpc = m.vpc,
                vrid = m.advert.vrid,
                master = %m.src,
                silent_ms = now.saturating_duration_since(m.last).as_millis() as u64,
                receivers = m.receivers.len(),
                frames,
                "master's chassis dead: assisted handover, priority-0 advert sent for the master"
            );
            self.report_assist(&m.vpc, &m.advert, m.src, "chassis-dead");
        }
    }

    /// POSTs `body` to the controller in the background (3 tries, 50 ms
    /// apart), handing the answer to `answered` and logging refusals.
    fn post(
        &self,
        path: String,
        body: serde_json::Value,
        what: &'static str,
        answered: impl FnOnce(serde_json::Value) + Send + 'static,
    ) {
        let url = format!("{}{path}", self.cfg.controller.trim_end_matches('/'));
        let http = self.http.clone();
        tokio::spawn(async move {
            for attempt in 0..3 {
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        answered(r.json().await.unwrap_or_default());
                        return;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!(what, %status, text, "controller refused");
                        return;
                    }
                    Err(e) => tracing::warn!(what, attempt, error = %e, "controller unreachable; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Records an assisted handover with the controller (after the fact).
    fn report_assist(&self, vpc: &str, advert: &vipcast_packet::vrrp::VrrpRepr, master: IpAddr, fault: &str) {
        let id = vipcast_model::vrrp_router_id(advert.vrid, master.is_ipv6());
        let body = serde_json::json!({
            "fault": fault,
            "by": self.cfg.chassis,
            "master": master,
            "at_ms": vipcast_api::now_ms(),
        });
        self.post(format!("/v1/vrrp/{vpc}/{id}/assists"), body, "assisted handover report", |_| {});
    }

    /// Sends, three times, the master's priority-0 advert to each destination
    /// it used, through the VPC's bridge (to local ports and the overlay).
    fn send_priority_zero(&self, m: &assist::Master) -> anyhow::Result<usize> {
        let state = &self.synced.state;
        let vni = state.vpcs.get(&m.vpc).map(|v| v.vni).ok_or_else(|| anyhow::anyhow!("unknown VPC {}", m.vpc))?;
        let advert = m.priority_zero();
        let mut frames = Vec::new();
        for dst in &m.dsts {
            let dst_mac = if dst.is_multicast() {
                None
            } else {
                let by_port = state.ports.values().find(|p| p.vpc == m.vpc && p.ip == *dst).map(|p| p.mac);
                Some(by_port.ok_or_else(|| anyhow::anyhow!("no MAC known for unicast peer {dst}"))?)
            };
            frames.push(vipcast_packet::build::vrrp_frame(m.eth_src, dst_mac, m.src, *dst, &advert)?);
        }
        if let Some(ovs) = &self.ovs {
            // Through the pipeline as if from the master's own port.
            let ifname = self.vm_ifnames.get(&m.port).map(|(_, n)| n.clone());
            let ifname = ifname.ok_or_else(|| anyhow::anyhow!("no interface for port {}", m.port))?;
            for _ in 0..3 {
                for f in &frames {
                    ovs.packet_out_from(&ifname, f)?;
                }
            }
            return Ok(frames.len() * 3);
        }
        let bridge = vipcast_sys::ifindex(&plan::bridge_name(vni))?;
        let mut socks = self.send_socks.lock().unwrap_or_else(|p| p.into_inner());
        // Kept per bridge, and bound with protocol 0 (send only): opening an
        // ETH_P_ALL socket and binding it waits for an RCU grace period
        // (~30 ms here), which would delay the advert that much.
        let sock = match socks.entry(bridge) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(vipcast_sys::PacketSocket::bind(bridge, 0)?),
        };
        let mut sent = 0;
        for _ in 0..3 {
            for f in &frames {
                if let Err(e) = sock.send(f) {
                    // The bridge may have been recreated: open again next time.
                    socks.remove(&bridge);
                    return Err(e.into());
                }
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Opens sockets on local ports that appeared, closes those that went.
    async fn sync_ports(&mut self, view: &ChassisView) {
        if self.ovs.is_some() {
            // Open vSwitch sends what the agent sniffs as PACKET_IN, and
            // takes what it sends as PACKET_OUT.
            return;
        }
        let wanted: BTreeMap<&str, ()> =
            view.vpcs.values().flat_map(|v| v.local_ports.iter().map(|p| (p.name.as_str(), ()))).collect();
        let present = match self.kernel.ports().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing ports");
                return;
            }
        };
        self.ports.retain(|name, io| {
            wanted.contains_key(name.as_str()) && present.get(name).map(|p| p.0) == Some(io.ifindex)
        });
        let ports = &self.ports;
        self.remotes.retain_ports(&|p| ports.contains_key(p));
        for name in wanted.keys() {
            if self.ports.contains_key(*name) {
                continue;
            }
            let Some((ifindex, ifname)) = present.get(*name) else { continue };
            match PortIo::open(name, *ifindex, self.seen_tx.clone()) {
                Ok(io) => {
                    tracing::info!(port = name, ifname, "port sockets open");
                    self.ports.insert(name.to_string(), io);
                }
                Err(e) => tracing::warn!(port = name, error = %e, "opening port sockets"),
            }
        }
    }

    /// Sends the new owner's announcement into every local port of `vpc`
    /// except the owner's own; returns how many ports got it.
    fn reannounce(&self, view: &ChassisView, vpc: &str, ip: IpAddr, mac: MacAddr, owner_chassis: &str) -> usize {
        let Some(v) = view.vpcs.get(vpc) else { return 0 };
        let frame = match ip {
            IpAddr::V4(v4) => vipcast_packet::build::garp(mac, v4, ArpOp::Request),
            IpAddr::V6(v6) => match vipcast_packet::build::unsolicited_na(mac, v6, v6) {
                Ok(f) => f,
                Err(_) => return 0,
            },
        };
        let mut n = 0;
        for p in &v.local_ports {
            if owner_chassis == self.cfg.chassis && p.mac == mac {
                continue;
            }
            let sent = if let Some(ovs) = &self.ovs {
                let Some((_, ifname)) = self.vm_ifnames.get(&p.name) else { continue };
                (0..self.cfg.announce_burst).try_for_each(|_| ovs.packet_out(ifname, &frame))
            } else {
                let Some(io) = self.ports.get(&p.name) else { continue };
                (0..self.cfg.announce_burst).try_for_each(|_| io.send(&frame).map_err(anyhow::Error::from))
            };
            if let Err(e) = sent {
                tracing::warn!(port = p.name, error = %e, "re-announcing");
            }
            n += 1;
        }
        n
    }

    /// A frame from a local VM: learn VRRP masters; claim announced VIPs,
    /// and the VIPs a master advertises.
    ///
    /// Claiming from adverts too matters after a split heals: the loser
    /// steps down silently and the winner, already master, sends no GARP
    /// (keepalived's next one comes `vrrp_garp_master_delay`, 5 s, later),
    /// so without it the VIP could keep pointing at the loser. A master
    /// advertises every interval, so its own chassis corrects that within one.
    fn on_seen(&mut self, seen: Seen) {
        match seen.frame {
            ports::Frame::Announcement(a) => {
                self.claim(&seen.port, a.ip, a.mac, seen.at_ms, "announcement");
            }
            ports::Frame::Advert { eth_src, src, dst, advert } => {
                let Some(port) = self.synced.state.ports.get(&seen.port) else { return };
                let origin = assist::Origin { vpc: port.vpc.clone(), port: seen.port.clone(), eth_src, src, dst };
                if let Some(m) = self.masters.observe(origin, &advert, Instant::now()) {
                    let report = vipcast_api::VrrpReport::new(
                        &m.vpc,
                        &self.cfg.chassis,
                        m.eth_src,
                        m.src,
                        &m.advert,
                        m.dsts.iter().copied(),
                    );
                    let report = serde_json::to_value(report).unwrap_or_default();
                    self.post("/v1/vrrp".to_string(), report, "VRRP master report", |_| {});
                }
                if advert.priority > 0 {
                    for ip in &advert.addresses {
                        self.claim(&seen.port, *ip, eth_src, seen.at_ms, "VRRP master advert");
                    }
                }
            }
            ports::Frame::Delivered { eth_src, eth_dst, src, dst, advert } => {
                let Some(port) = self.synced.state.ports.get(&seen.port) else { return };
                // A master on this chassis is covered by its port's carrier.
                let local = self
                    .synced
                    .state
                    .ports
                    .values()
                    .any(|p| p.vpc == port.vpc && p.mac == eth_src && p.chassis == self.cfg.chassis);
                if local {
                    return;
                }
                let d = assist::Delivery { vpc: port.vpc.clone(), port: seen.port.clone(), eth_src, eth_dst, src, dst };
                self.remotes.observe(d, &advert, Instant::now());
            }
        }
    }

    /// Claims `ip` at `mac` for local port `port`, if `ip` is a VIP of the
    /// port's VPC not already owned so, and not claimed in the last 500 ms.
    fn claim(&mut self, port_name: &str, ip: IpAddr, mac: MacAddr, at_ms: u64, why: &'static str) {
        if !self.cfg.sniff {
            return;
        }
        let state: &State = &self.synced.state;
        let Some(port) = state.ports.get(port_name) else { return };
        let Some(vip) = state.vips.values().find(|v| v.spec.vpc == port.vpc && v.spec.ip == ip) else { return };
        if vip.owner.as_ref().is_some_and(|o| o.mac == mac && o.chassis == self.cfg.chassis) {
            return;
        }
        let key = (vip.spec.name.clone(), mac);
        if self.recent_claims.get(&key).is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        self.recent_claims.insert(key, Instant::now());
        if self.recent_claims.len() > 4096 {
            self.recent_claims.retain(|_, t| t.elapsed() < Duration::from_secs(5));
        }
        let body = serde_json::json!({
            "mac": mac,
            "chassis": self.cfg.chassis,
            "source": ClaimSource::Agent,
            "observed_at": at_ms,
        });
        let name = vip.spec.name.clone();
        tracing::info!(vip = name, %mac, port = port_name, why, "announcement sniffed; claiming");
        self.post(format!("/v1/vips/{name}/claims"), body, "claim", move |v| {
            tracing::info!(vip = name, result = %v["result"], generation = %v["owner"]["generation"], "claim answered");
        });
    }
}

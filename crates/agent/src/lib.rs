//! vipcast's chassis agent.
//!
//! ```text
//!  controller ──watch──► WatchFollower ──Synced──┐
//!  VM ports / OVS ──sniffed frames (Seen)────────┤        ┌──────────────────────────┐
//!  rtnetlink ──carrier (ifindex, up)─────────────┼──now──►│ AgentCore (core.rs)      │
//!  timers: 1 ms assist tick, 5 s repair tick ────┘        │ no I/O, no clock         │
//!                                                         └────────────┬─────────────┘
//!                                                                      │ Actions
//!            ┌───────────────────────────┬─────────────────────────────┼───────────────────┐
//!            v                           v                             v                   v
//!   Reconcile: chassis_view ─► plan   Reannounce: GARP / NA      Claim / ReportVrrp:   Assist*: priority-0
//!   ─► Dataplane::program            into local ports            ControllerClient      adverts, then the
//!   (kernel: rtnetlink; OVS: flows)  (Dataplane::send_to_port)   (spawned, retried)    assist record
//! ```
//! Everything the agent does is driven by the watch stream, by frames and by
//! carrier events; a 5 s tick only repairs drift and picks up VM ports that
//! appeared. [`run_until`] is the driver; the decisions are in [`core`].

pub mod assist;
pub mod core;
pub mod dataplane;
pub mod fence;
pub mod kernel;
pub mod links;
pub mod metrics;
pub mod ovs;
pub mod ovs_flows;
pub mod peer;
pub mod plan;
pub mod ports;
pub mod probe;
pub mod provisional;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vipcast_api::{AssistRecord, ChassisRegistration, Event, SniffedAt};
use vipcast_client::{ControllerClient, Synced, WatchFollower};
use vipcast_model::view;
use vipcast_model::{PortKind, Role};
use vipcast_packet::MacAddr;

use crate::core::{ADVERT_REPEAT, Action, AgentCore, CoreConfig, Reannounce};
use crate::dataplane::{Dataplane, KernelDataplane, OvsDataplane};
use crate::kernel::Kernel;
use crate::ports::Seen;

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
    /// Gateways on Open vSwitch: its database, where router ports are added
    /// (`ovs-vsctl --db=`; default `unix:/var/run/openvswitch/db.sock`).
    pub ovsdb: String,
    /// Peer liveness: the chassis of remote VRRP masters watched directly.
    pub peer: peer::PeerConfig,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs the agent until the process ends.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    run_until(cfg, std::future::pending()).await
}

/// How the agent proves who it is.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Mutual TLS to the controller (`https://` URL).
    pub tls: Option<vipcast_tls::ClientFiles>,
    /// The chassis' heartbeat key: heartbeats are signed.
    pub heartbeat_key: Option<[u8; vipcast_tls::heartbeat::LEN]>,
}

/// Runs the agent (without TLS) until `shutdown` resolves; see [`run_with`].
pub async fn run_until(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    run_with(cfg, Security::default(), shutdown).await
}

/// Runs the agent until `shutdown` resolves (then returns `Ok`), or until
/// it cannot go on (the controller refused the chassis for good, the
/// kernel cannot be opened).
pub async fn run_with(
    cfg: Config,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let kernel = Kernel::open()?;
    let client = ControllerClient::with_tls(&cfg.controller, security.tls.as_ref())?;
    let prober = probe::Prober::start(cfg.underlay_ip).await?;
    let registration =
        ChassisRegistration { underlay_ip: cfg.underlay_ip, role: cfg.role, dataplane: cfg.dataplane, name: None };
    client
        .register_chassis_until_accepted(&cfg.chassis, &registration)
        .await
        .map_err(|e| anyhow::anyhow!("the controller refused chassis {:?}: {e}", cfg.chassis))?;
    tracing::info!(chassis = cfg.chassis, "registered");
    let (seen_tx, seen_rx) = mpsc::channel::<Seen>(1024);
    match cfg.dataplane {
        vipcast_model::Dataplane::Kernel => {
            let dp = KernelDataplane::new(kernel, cfg.sniff || cfg.announce_burst > 0, seen_tx);
            drive(cfg, client, prober, dp, seen_rx, &security, shutdown).await
        }
        vipcast_model::Dataplane::Ovs => {
            let ovs = ovs::Ovs::start(cfg.openflow_listen, seen_tx)?;
            tracing::info!(listen = %cfg.openflow_listen, "waiting for Open vSwitch (OpenFlow 1.3)");
            let dp = OvsDataplane::new(ovs, kernel, cfg.ovsdb.clone());
            drive(cfg, client, prober, dp, seen_rx, &security, shutdown).await
        }
    }
}

/// The event loop: observations in, [`AgentCore`] decides, actions out.
async fn drive<D: Dataplane>(
    cfg: Config,
    client: ControllerClient,
    prober: probe::Prober,
    dp: D,
    mut seen_rx: mpsc::Receiver<Seen>,
    security: &Security,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let heartbeat_key = security.heartbeat_key;
    // Provisional-owner notices are signed with the agent's certificate key
    // and checked against its CA (without TLS, neither).
    let (signer, verifier) = match &security.tls {
        Some(f) => {
            (Some(vipcast_tls::sign::Signer::load(&f.cert, &f.key)?), Some(vipcast_tls::sign::Verifier::load(&f.ca)?))
        }
        None => (None, None),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(vipcast_client::heartbeats(
        cfg.controller.clone(),
        cfg.chassis.clone(),
        cfg.heartbeat,
        heartbeat_key,
        stopped,
    ));
    let (tx, mut rx) = watch::channel(Synced::default());
    let (up_tx, mut up_rx) = watch::channel(false);
    let follower = tokio::spawn(WatchFollower::chassis(client.clone(), &cfg.chassis).run_reporting(tx, Some(up_tx)));
    let mut link_rx = links::watch()?;
    let mut health = prober.changed.clone();
    let mut switch = dp.reconnects();
    // Peer liveness: its own task; the core says whom to watch.
    let (wanted_tx, wanted_rx) = watch::channel(BTreeMap::new());
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<peer::Change>();
    let (notice_in_tx, mut notice_in_rx) = mpsc::channel(256);
    let (notice_out_tx, notice_out_rx) = mpsc::channel(256);
    if cfg.peer.enabled {
        let (pc, me, ip) = (cfg.peer, cfg.chassis.clone(), cfg.underlay_ip);
        let notices = peer::Notices { inbound: notice_in_tx, outbound: notice_out_rx };
        tokio::spawn(async move {
            if let Err(e) = peer::run(pc, me, ip, wanted_rx, peer_tx, notices).await {
                tracing::warn!(error = %e, port = pc.port, "peer liveness is off: cannot use its socket");
            }
        });
    }
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<(String, vipcast_api::Claim)>();
    let (answered_tx, mut answered_rx) = mpsc::unbounded_channel::<Answered>();
    let (fresh_view_tx, mut fresh_view_rx) = mpsc::unbounded_channel::<view::ChassisView>();
    let core = AgentCore::new(CoreConfig { chassis: cfg.chassis.clone(), sniff: cfg.sniff, assist: cfg.assist });
    let stats = std::sync::Arc::new(metrics::Stats::default());
    let (query_tx, mut query_rx) = mpsc::channel(1);
    if let Some(addr) = cfg.metrics_listen {
        // Fails the agent when it cannot listen: asked for, so expected.
        let l = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(listen = %addr, "metrics endpoint");
        let app = metrics::router(stats.clone(), query_tx);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let mut agent = Driver {
        cfg,
        core,
        dp,
        client,
        prober,
        failed_tx,
        answered_tx,
        notices: NoticeIo {
            out: notice_out_tx,
            signer,
            verifier,
            seq: vipcast_api::now_ms().saturating_mul(1000),
            budget: (Instant::now(), 0),
        },
        replicator_choice: BTreeMap::new(),
        unrouted: Vec::new(),
        underlay: None,
        fence: fence::Fence::default(),
        fresh_view_tx,
        stats: stats.clone(),
    };
    // SIGHUP: the certificate and key again (a renewed certificate).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // Only while a master on a dead chassis may still need speaking for.
    let mut assist_tick = tokio::time::interval(core::TICK);
    assist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only while there are provisional owners.
    let mut provisional_tick = tokio::time::interval(core::PROVISIONAL_TICK);
    provisional_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        // Whom to watch changes only with the state and the adverts seen
        // (and ports going away): not on ticks, carrier or peer events
        // unless they brought queued frames in.
        let mut peers_may_change = true;
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            r = rx.changed() => {
                if r.is_err() {
                    break Err(anyhow::anyhow!("watch task ended"));
                }
                let synced = rx.borrow_and_update().clone();
                let now = Instant::now();
                let actions = agent.core.on_revision(synced, now);
                agent.execute(actions, now).await;
            }
            Some(seen) = seen_rx.recv() => {
                let now = Instant::now();
                let actions = agent.core.on_seen(seen, now);
                agent.execute(actions, now).await;
            }
            Some((ifindex, up)) = link_rx.recv() => {
                let now = Instant::now();
                peers_may_change = false;
                if agent.underlay_link(ifindex, up) {
                    agent.reconcile("underlay link", false).await;
                    agent.fetch_view_for_fence();
                    continue;
                }
                let Some(port) = agent.dp.port_of(ifindex) else { continue };
                let actions = agent.core.on_link(&port, up, now);
                agent.execute(actions, now).await;
            }
            Some(change) = peer_rx.recv() => {
                let now = Instant::now();
                let silent_ms = change.silent.as_millis() as u64;
                if change.down {
                    tracing::warn!(peer = change.chassis, silent_ms, "peer chassis down (no echo)");
                    stats.peer_went_down();
                } else {
                    tracing::info!(peer = change.chassis, down_ms = silent_ms, "peer chassis answers again");
                }
                peers_may_change = agent.drain_seen(&mut seen_rx).await;
                let actions = agent.core.on_peer(&change.chassis, change.down, now);
                agent.execute(actions, now).await;
            }
            Some((vip, claim)) = failed_rx.recv() => {
                peers_may_change = false;
                let now = Instant::now();
                let actions = agent.core.on_claim_failed(&vip, &claim, now);
                agent.execute(actions, now).await;
            }
            Some(a) = answered_rx.recv() => {
                peers_may_change = false;
                let now = Instant::now();
                let owner = a.owner.as_ref().map(|(m, c)| (*m, c.as_str()));
                let actions = agent.core.on_claim_answered(&a.vip, a.mac, owner, now);
                agent.execute(actions, now).await;
            }
            Ok(()) = up_rx.changed() => {
                peers_may_change = false;
                let up = *up_rx.borrow_and_update();
                if !up {
                    tracing::warn!("controller unreachable: failovers seen here are decided here until it is back");
                }
                let actions = agent.core.on_controller(up);
                agent.execute(actions, Instant::now()).await;
            }
            Some((from, datagram)) = notice_in_rx.recv() => {
                peers_may_change = false;
                let now = Instant::now();
                match agent.check_notice(from, &datagram) {
                    Some(notice) => {
                        let actions = agent.core.on_notice(notice, vipcast_api::now_ms(), now);
                        agent.execute(actions, now).await;
                    }
                    None => stats.notice_refused(),
                }
            }
            Some(()) = async { match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            } } => {
                peers_may_change = false;
                agent.reload_tls(security);
            }
            Some(reply) = query_rx.recv() => {
                peers_may_change = false;
                let _ = reply.send(agent.forwarding_report().await);
            }
            _ = provisional_tick.tick(), if agent.core.wants_slow_tick() => {
                peers_may_change = false;
                let now = Instant::now();
                let actions = agent.core.on_tick(now);
                agent.execute(actions, now).await;
            }
            Ok(()) = health.changed() => agent.reconcile("replicator health", false).await,
            _ = assist_tick.tick(), if agent.core.wants_tick() => {
                peers_may_change = agent.drain_seen(&mut seen_rx).await;
                let now = Instant::now();
                let actions = agent.core.on_tick(now);
                agent.execute(actions, now).await;
            }
            Some(true) = async { match switch.as_mut() {
                Some(w) => w.changed().await.ok().map(|()| *w.borrow_and_update()),
                None => std::future::pending().await,
            } } => agent.reconcile("switch connected", true).await,
            Some(fresh) = fresh_view_rx.recv() => {
                agent.fence.fresh_view(&fresh);
                agent.reconcile("fresh view", false).await;
            }
            _ = tick.tick() => {
                agent.reconcile("periodic", true).await;
                agent.fetch_view_for_fence();
            }
        }
        if !peers_may_change {
            continue;
        }
        let wanted = agent.core.peers_wanted();
        // A chassis no longer watched is no longer known to be down: the
        // watch forgets it, and will report it up only if asked again.
        agent.core.forget_peers(&|c| wanted.contains_key(c));
        let watched = wanted.len();
        if wanted_tx.send_if_modified(|w| {
            let changed = *w != wanted;
            if changed {
                *w = wanted;
            }
            changed
        }) {
            stats.peers_watched(watched);
        }
    };
    let _ = stop_tx.send(true);
    follower.abort();
    result
}

/// The driver's side: the data plane, the controller client, and what it
/// reports about BUM paths and unroutable subnets.
struct Driver<D> {
    cfg: Config,
    core: AgentCore,
    dp: D,
    client: ControllerClient,
    prober: probe::Prober,
    /// Claims that got no answer, back to the core.
    failed_tx: mpsc::UnboundedSender<(String, vipcast_api::Claim)>,
    /// Claims the controller answered, back to the core.
    answered_tx: mpsc::UnboundedSender<Answered>,
    notices: NoticeIo,
    /// VNI -> replicator in use, as last reported.
    replicator_choice: BTreeMap<u32, String>,
    /// Subnets this gateway cannot route, as last reported.
    unrouted: Vec<(String, String, ipnet::IpNet)>,
    stats: std::sync::Arc<metrics::Stats>,
    /// The interface holding the underlay address (see
    /// [`Driver::underlay_link`]), and what its carrier fences.
    underlay: Option<u32>,
    fence: fence::Fence,
    /// Views fetched for the fence.
    fresh_view_tx: mpsc::UnboundedSender<view::ChassisView>,
}

impl<D: Dataplane> Driver<D> {
    /// Frames already waiting go to the core before a decision to speak
    /// for a master: an advert among them (the machine was busy, say) says
    /// the master is alive. Returns whether there were any.
    async fn drain_seen(&mut self, seen_rx: &mut mpsc::Receiver<Seen>) -> bool {
        let mut any = false;
        while let Ok(seen) = seen_rx.try_recv() {
            any = true;
            let now = Instant::now();
            let actions = self.core.on_seen(seen, now);
            self.execute(actions, now).await;
        }
        any
    }

    async fn execute(&mut self, actions: Vec<Action>, now: Instant) {
        for action in actions {
            if let Action::Reconcile { why, read } = action {
                match why {
                    "provisional owner" => self.stats.provisional(true),
                    "provisional owner told" => self.stats.provisional(false),
                    _ => {}
                }
                self.reconcile(why, read).await;
                continue;
            }
            if let Action::Notify { notice, to } = action {
                self.notices.send(notice, &to, self.cfg.peer);
                continue;
            }

            match &action {
                Action::AssistPortDown { .. } => self.stats.assisted(false),
                Action::AssistChassisDead { .. } => self.stats.assisted(true),
                _ => {}
            }
            if let Some(call) = perform(&mut self.dp, &self.cfg, action, now) {
                self.spawn(call);
            }
        }
    }

    /// Programs the data plane for the current view (`read`: reading it
    /// back in full, to repair drift).
    async fn reconcile(&mut self, why: &str, read: bool) {
        let Some(view) = self.core.view() else { return };
        let replicators: BTreeMap<String, std::net::SocketAddr> = view
            .vpcs
            .values()
            .flat_map(|v| match &v.flood {
                view::Flood::Replicator(r) => r.clone(),
                view::Flood::Headend(_) => Vec::new(),
            })
            .collect();
        self.prober.set_targets(replicators);
        let prober = self.prober.clone();
        let healthy = |n: &str| prober.healthy(n);
        let mut plan = plan::plan(&view, &healthy);
        self.find_underlay(&view);
        for port in self.fence.apply(&view, &mut plan) {
            tracing::warn!(port, "underlay link down: physical attachment released to its standby gateway");
        }
        let mut bum = BTreeMap::new();
        for v in view.vpcs.values() {
            if let view::Flood::Replicator(r) = &v.flood
                && let Some((name, addr)) = plan::choose_replicator(v.vni, r, &healthy)
            {
                bum.insert(v.vni, addr.ip());
                if self.replicator_choice.insert(v.vni, name.clone()).as_ref() != Some(&name) {
                    Event::BumPath { vni: v.vni, replicator: &name, addr }.log();
                }
            }
        }
        if plan.unrouted != self.unrouted {
            for (vpc, subnet, cidr) in &plan.unrouted {
                tracing::warn!(vpc, subnet, %cidr, "not routed here: overlaps a subnet of another VPC (no VRFs)");
            }
            self.unrouted = plan.unrouted.clone();
        }
        let revision = self.core.synced().revision;
        let report = self.dp.program(&view, plan, &bum, why, revision, read).await;
        self.stats.programmed(&report);
        self.stats.revision(revision);
        let dp = &self.dp;
        self.core.on_ports(&|p| dp.has_port(p));
    }

    /// A carrier change of interface `ifindex`: whether it is the
    /// underlay's and changes the fence (cheap: on every carrier event,
    /// before the link-down assist).
    fn underlay_link(&mut self, ifindex: u32, up: bool) -> bool {
        self.underlay == Some(ifindex) && self.fence.underlay(up)
    }

    /// The underlay's interface, found by its address the first time the
    /// view has physical ports here (only gateways serve them).
    fn find_underlay(&mut self, view: &view::ChassisView) {
        if self.underlay.is_some() || view.role != Role::Gateway {
            return;
        }
        if view.vpcs.values().flat_map(|v| &v.local_ports).any(|p| p.kind == PortKind::Physical)
            && let Ok(Some(i)) = vipcast_sys::ifindex_of_addr(view.underlay_ip)
        {
            self.underlay = Some(i);
        }
    }

    /// Fetches this chassis' view afresh when the fence waits for one.
    fn fetch_view_for_fence(&self) {
        if !self.fence.wants_view() {
            return;
        }
        let client = self.client.clone();
        let tx = self.fresh_view_tx.clone();
        let path = format!("/v1/views/chassis/{}", self.cfg.chassis);
        tokio::spawn(async move {
            let none: Option<&()> = None;
            match client
                .call_typed::<view::ChassisView>(reqwest::Method::GET, &path, none, vipcast_client::Retry::FAILOVER)
                .await
            {
                Ok(v) => {
                    let _ = tx.send(v);
                }
                Err(e) => tracing::warn!(error = %e, "fetching the view for fenced physical ports"),
            }
        });
    }

    /// Makes a call to the controller in the background.
    fn spawn(&self, call: Call) {
        let client = self.client.clone();
        match call {
            Call::Claim { vip, claim } => {
                let failed = self.failed_tx.clone();
                let answered = self.answered_tx.clone();
                tokio::spawn(async move {
                    match client.claim(&vip, &claim).await {
                        Ok(answer) => {
                            Event::ClaimAnswered {
                                vip: &vip,
                                result: answer.result,
                                generation: answer.owner.as_ref().map(|o| o.generation),
                            }
                            .log();
                            let owner = answer.owner.map(|o| (o.mac, o.chassis));
                            let _ = answered.send(Answered { vip, mac: claim.mac, owner });
                        }
                        Err(e @ vipcast_client::Error::Refused { .. }) => {
                            tracing::warn!(what = "claim", vip, error = %e, "controller refused");
                            let _ = answered.send(Answered { vip, mac: claim.mac, owner: None });
                        }
                        Err(e) => {
                            tracing::warn!(what = "claim", vip, error = %e, "controller unreachable");
                            let _ = failed.send((vip, claim));
                        }
                    }
                });
            }
            Call::ReportVrrp(report) => {
                tokio::spawn(async move {
                    if let Err(e) = client.report_vrrp(&report).await {
                        tracing::warn!(what = "VRRP master report", error = %e, "controller did not take it");
                    }
                });
            }
            Call::ReportAssist { vpc, router_id, record } => {
                tokio::spawn(async move {
                    if let Err(e) = client.report_assist(&vpc, &router_id, &record).await {
                        tracing::warn!(what = "assisted handover report", error = %e, "controller did not take it");
                    }
                });
            }
        }
    }
}

/// A call to the controller that an action asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Claim { vip: String, claim: vipcast_api::Claim },
    ReportVrrp(vipcast_api::VrrpReport),
    ReportAssist { vpc: String, router_id: String, record: AssistRecord },
}

/// Carries out the data-plane side of `action` on `dp` (everything but
/// [`Action::Reconcile`], which needs the plan), logging its event; returns
/// the call to the controller it asks for, if any. `now` is when the
/// observation that led to it was made (for the logged latencies).
pub fn perform(dp: &mut impl Dataplane, cfg: &Config, action: Action, now: Instant) -> Option<Call> {
    let record = action.assist_record();
    match action {
        Action::Reconcile { .. } => None,
        Action::Reannounce(r) => {
            let Reannounce { vip, ip, mac, owner_chassis, generation, frame, ports } = r;
            let mut n = 0;
            for port in &ports {
                if !dp.has_port(port) {
                    continue;
                }
                let sent = (0..cfg.announce_burst).try_for_each(|_| dp.send_to_port(port, &frame));
                if let Err(e) = sent {
                    tracing::warn!(port, error = %e, "re-announcing");
                }
                n += 1;
            }
            let elapsed_us = now.elapsed().as_micros() as u64;
            Event::Repointed { vip: &vip, ip, mac, owner_chassis: &owner_chassis, generation, ports: n, elapsed_us }
                .log();
            None
        }
        Action::Claim { vip, port, why, claim } => {
            Event::Sniffed { vip: &vip, mac: claim.mac, at: SniffedAt::Port(&port), why }.log();
            Some(Call::Claim { vip, claim })
        }
        Action::ReportVrrp(report) => Some(Call::ReportVrrp(report)),
        Action::ClaimAgain { vip, claim } => {
            tracing::info!(vip, mac = %claim.mac, "claiming a provisional owner again");
            Some(Call::Claim { vip, claim })
        }
        // Sent by the driver (it holds the socket and the key).
        Action::Notify { .. } => None,
        Action::AssistPortDown { master, vni, frames } => {
            let mut sent = 0;
            for _ in 0..ADVERT_REPEAT {
                for f in &frames {
                    match dp.send_from_port(vni, &master.port, f) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            tracing::warn!(port = master.port, vrid = master.advert.vrid, error = %e, "assisted handover failed");
                            return None;
                        }
                    }
                }
            }
            Event::AssistPortDown {
                port: &master.port,
                vpc: &master.vpc,
                vrid: master.advert.vrid,
                master: master.src,
                frames: sent,
                elapsed_us: now.elapsed().as_micros() as u64,
            }
            .log();
            assist_call(cfg, record)
        }
        Action::AssistChassisDead { master, master_port, frames, silent_ms } => {
            let mut sent = 0;
            for (port, frame) in &frames {
                if !dp.has_port(port) {
                    continue;
                }
                for _ in 0..ADVERT_REPEAT {
                    match dp.send_to_port(port, frame) {
                        Ok(()) => sent += 1,
                        Err(e) => tracing::warn!(port, error = %e, "sending a priority-0 advert"),
                    }
                }
            }
            Event::AssistChassisDead {
                port: master_port.as_deref().unwrap_or("?"),
                vpc: &master.vpc,
                vrid: master.advert.vrid,
                master: master.src,
                silent_ms,
                receivers: master.receivers.len(),
                frames: sent,
            }
            .log();
            assist_call(cfg, record)
        }
    }
}

/// The assist record to send for an assisted handover.
fn assist_call(
    cfg: &Config,
    record: Option<(vipcast_model::RouterKey, vipcast_model::AssistFault, IpAddr)>,
) -> Option<Call> {
    let (key, fault, master) = record?;
    let record = AssistRecord { fault, by: cfg.chassis.clone(), master, at_ms: vipcast_api::now_ms() };
    Some(Call::ReportAssist { router_id: key.id(), vpc: key.vpc, record })
}

/// A claim the controller answered: the VIP's owner (MAC, chassis) after it
/// (`None`: refused).
#[derive(Debug)]
struct Answered {
    vip: String,
    mac: MacAddr,
    owner: Option<(MacAddr, String)>,
}

/// Notices checked per second at most (a signature check each).
const NOTICES_PER_SECOND: u32 = 200;

/// The sending and checking of provisional-owner notices.
struct NoticeIo {
    out: mpsc::Sender<(std::net::SocketAddr, Vec<u8>)>,
    signer: Option<vipcast_tls::sign::Signer>,
    verifier: Option<vipcast_tls::sign::Verifier>,
    /// The last sequence number sent (starts at the clock in µs, so a
    /// restarted agent goes on above its predecessor).
    seq: u64,
    /// Start of the current second and notices checked in it.
    budget: (Instant, u32),
}

impl NoticeIo {
    /// Numbers, dates, signs and sends `notice` to the agents at `to`.
    fn send(&mut self, mut notice: provisional::Notice, to: &[IpAddr], peer: peer::PeerConfig) {
        if !peer.enabled {
            tracing::warn!(
                vip = notice.vip,
                "provisional owner not told: the agent's underlay port is off (--peer-liveness)"
            );
            return;
        }
        self.seq += 1;
        notice.seq = self.seq;
        notice.sent_ms = vipcast_api::now_ms();
        let body = notice.body();
        let datagram = match &self.signer {
            Some(s) => match s.sign(&body) {
                Ok(sig) => notice.encode(s.cert(), &sig),
                Err(e) => {
                    tracing::warn!(error = %e, "signing a notice");
                    return;
                }
            },
            None => notice.encode(&[], &[]),
        };
        for ip in to {
            let _ = self.out.try_send((std::net::SocketAddr::new(*ip, peer.port), datagram.clone()));
        }
        tracing::info!(vip = notice.vip, mac = %notice.claim.mac, chassis = to.len(), "provisional owner told");
    }
}

impl<D: Dataplane> Driver<D> {
    /// SIGHUP: reads the certificate, key and CA again; connections made
    /// from now on, and notices, use them. On any error nothing changes.
    fn reload_tls(&mut self, security: &Security) {
        let Some(files) = &security.tls else {
            tracing::info!("SIGHUP: no certificate to reload (plain HTTP)");
            return;
        };
        let loaded = vipcast_tls::sign::Signer::load(&files.cert, &files.key)
            .and_then(|s| Ok((s, vipcast_tls::sign::Verifier::load(&files.ca)?)));
        let (signer, verifier) = match loaded {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: certificate not reloaded; keeping the one in use");
                return;
            }
        };
        if let Err(e) = self.client.reload_tls(files) {
            tracing::warn!(error = %e, "SIGHUP: certificate not reloaded; keeping the one in use");
            return;
        }
        self.notices.signer = Some(signer);
        self.notices.verifier = Some(verifier);
        tracing::info!(cert = %files.cert.display(), "SIGHUP: certificate, key and CA reloaded");
    }

    /// Where this chassis sends each VIP of its view, read back from the
    /// data plane, next to the owner the view names (see
    /// [`metrics::router`]).
    async fn forwarding_report(&mut self) -> serde_json::Value {
        let me = self.cfg.chassis.clone();
        let state = self.core.synced().state.clone();
        let mut out = serde_json::json!({
            "chassis": me,
            "revision": self.core.synced().revision,
            "controller_up": self.core.controller_up(),
            "vips": [],
        });
        let Some(view) = self.core.view() else { return out };
        let prober = self.prober.clone();
        let plan = plan::plan(&view, &|n: &str| prober.healthy(n));
        let vips: Vec<(&str, &view::VipEntry, u32)> =
            view.vpcs.values().flat_map(|v| v.vips.iter().map(move |e| (v.name.as_str(), e, v.vni))).collect();
        let wanted: Vec<(u32, IpAddr)> = vips.iter().map(|(_, e, vni)| (*vni, e.ip)).collect();
        let read = self.dp.forwarding(&plan, &wanted).await;
        let chassis_at = |ip: IpAddr| state.chassis.values().find(|c| c.underlay_ip == ip).map(|c| c.name.clone());
        let local = |vpc: &str, mac| view.vpcs.get(vpc).is_some_and(|v| v.local_ports.iter().any(|p| p.mac == mac));
        let mut list = Vec::new();
        for (i, (vpc, e, _)) in vips.iter().enumerate() {
            // An owner on this chassis is answered by its VM, on its port of
            // the VPC's bridge: no neighbour entry here, the port is the path.
            let local_owner = e.owner.as_ref().filter(|(_, c, _)| *c == me).and_then(|(mac, ..)| {
                let port = &state.vips.get(&e.name)?.owner.as_ref()?.port;
                self.dp.has_port(port).then_some(*mac)
            });
            let forwards = match &read {
                Ok(f) => f.get(i).map(|f| {
                    let mut f = f.clone();
                    if f.mac.is_none() && f.underlay.is_none() {
                        f.mac = local_owner;
                    }
                    let chassis = match (f.mac, f.underlay) {
                        (_, Some(u)) => chassis_at(u),
                        (Some(m), None) if local(vpc, m) || Some(m) == local_owner => Some(me.clone()),
                        _ => None,
                    };
                    serde_json::json!({
                        "mac": f.mac, "chassis": chassis, "underlay": f.underlay,
                        "routed_mac": f.routed_mac, "read_back": f.read_back,
                    })
                }),
                Err(_) => None,
            };
            list.push(serde_json::json!({
                "name": e.name,
                "vpc": vpc,
                "ip": e.ip,
                "owner": e.owner.as_ref().map(|(mac, chassis, generation)| serde_json::json!({
                    "mac": mac, "chassis": chassis, "generation": generation,
                })),
                "provisional": self.core.provisional().get(&e.name).is_some(),
                "forwards": forwards,
            }));
        }
        out["vips"] = serde_json::Value::Array(list);
        if let Err(e) = read {
            out["error"] = serde_json::Value::String(format!("reading the data plane: {e}"));
        }
        out
    }

    /// A notice received from `from`, if it is to be believed: well formed,
    /// from the underlay address of the chassis it names, within the rate,
    /// and (with TLS) signed by that chassis' agent.
    fn check_notice(&mut self, from: std::net::SocketAddr, datagram: &[u8]) -> Option<provisional::Notice> {
        let (notice, signed) = match provisional::Notice::decode(datagram) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%from, error = e, "not a notice");
                return None;
            }
        };
        let chassis = &notice.claim.chassis;
        let underlay = self.core.synced().state.chassis.get(chassis).map(|c| c.underlay_ip);
        if underlay != Some(from.ip()) {
            tracing::warn!(%from, chassis, "notice not from the chassis it names: ignored");
            return None;
        }
        let io = &mut self.notices;
        let now = Instant::now();
        if now.duration_since(io.budget.0) >= Duration::from_secs(1) {
            io.budget = (now, 0);
        }
        if io.budget.1 >= NOTICES_PER_SECOND {
            return None;
        }
        io.budget.1 += 1;
        match &mut io.verifier {
            Some(v) => match v.verify(signed.cert, signed.body, signed.sig) {
                Ok(who) if who.role == vipcast_api::PeerRole::Agent && who.name == *chassis => Some(notice),
                Ok(who) => {
                    tracing::warn!(%from, chassis, signer = who.actor(), "notice signed by another holder: ignored");
                    None
                }
                Err(e) => {
                    tracing::warn!(%from, chassis, error = e, "notice not authenticated: ignored");
                    None
                }
            },
            None => Some(notice),
        }
    }
}

//! The daemon: one event loop drives every VRRP instance.
//!
//! ```text
//!  per interface: raw socket (proto 112) ──reader task──► parse_ip ──┐
//!  netlink RTNLGRP_LINK ──link watcher task──► (ifname, up) ─────────┤
//!  vrrp_script tasks (interval, timeout, fall/rise) ──► (name, up) ──┤
//!  SIGTERM / SIGINT / SIGHUP ────────────────────────────────────────┤
//!  one sleep, re-armed to the earliest Instance::poll_timeout ───────┤
//!                                                                    v
//!                                   event loop: Instance::handle_*(now, ..)
//!                                      │ poll_action() until None
//!        SendAdvert ──► IPPROTO_RAW socket of the interface (inline, non-blocking)
//!        Add/RemoveAddresses, Announce ──► effects worker, in order:
//!             rtnetlink address add/del, then gratuitous ARP bursts (AF_PACKET)
//!        Notify ──► log, status file, notify scripts (/bin/sh, not waited for),
//!                   sync group state and notify
//! ```
//!
//! Timers: every instance's next deadline is kept in one ordered set; the
//! loop sleeps until the first, then fires every instance that is due.
//!
//! Sync groups: a member whose own weight-0 tracker (its interface, a
//! `track_interface` or `track_script` of weight 0) is down puts the other
//! members in FAULT too (a hidden weight-0 tracker per group). keepalived's
//! other sync-group rule — members follow each other into MASTER/BACKUP — is
//! not implemented; the group's notify scripts run on the group's state
//! (FAULT if a member is, MASTER if all are, else BACKUP).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vipcast_packet::MacAddr;
use vipcast_sys::PacketSocket;
use vipcast_vrrp::{Action, Config, Instance, Reason, State, StateChange, Track, Tracked, Version};

use crate::conf::{Conf, InstanceConf, ScriptConf};
use crate::kernel::{Kernel, Link, primary_address};
use crate::net::{IfSockets, Received, announce, spawn_receiver, spawn_receiver_v6};
use crate::scripts;
use crate::status::{HISTORY, InstanceStatus, Status, Transition, now_us};

/// What the daemon needs besides the configuration's content.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub status: PathBuf,
}

/// State names as keepalived prints them.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Initialize => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}

fn reason_text(r: Reason) -> &'static str {
    match r {
        Reason::Startup => "startup",
        Reason::AddressOwner => "address owner",
        Reason::MasterDown => "master down",
        Reason::MasterStopped => "master stopped (priority 0)",
        Reason::Preempting => "preempting a lower priority",
        Reason::HigherPriority => "higher priority advert",
        Reason::Shutdown => "shutdown",
        Reason::TrackFailed => "tracker down",
        Reason::TrackRecovered => "trackers up",
    }
}

/// The hidden tracker of a sync group.
fn sync_tracker(group: &str) -> Tracked {
    Tracked::Script(format!("sync group {group}"))
}

/// Address changes and announcements, carried out in order by one worker.
#[derive(Debug)]
enum Effect {
    Add(Vec<(u32, IpNet)>),
    Remove(Vec<(u32, IpNet)>),
    Announce { ifindex: u32, mac: MacAddr, ips: Vec<IpAddr>, repeat: u32, src6: Option<std::net::Ipv6Addr> },
}

fn spawn_effects(kernel: Kernel) -> (mpsc::UnboundedSender<Effect>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Effect>();
    let task = tokio::spawn(async move {
        let mut packet: HashMap<u32, PacketSocket> = HashMap::new();
        while let Some(e) = rx.recv().await {
            match e {
                Effect::Add(list) => {
                    for (ifindex, net) in list {
                        if let Err(e) = kernel.add_addr(ifindex, net).await {
                            tracing::error!("{e}");
                        }
                    }
                }
                Effect::Remove(list) => {
                    for (ifindex, net) in list {
                        if let Err(e) = kernel.del_addr(ifindex, net).await {
                            tracing::error!("{e}");
                        }
                    }
                }
                Effect::Announce { ifindex, mac, ips, repeat, src6 } => {
                    let sock = match packet.entry(ifindex) {
                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => match PacketSocket::bind(ifindex, 0) {
                            Ok(s) => v.insert(s),
                            Err(e) => {
                                tracing::error!("packet socket on interface {ifindex}: {e}");
                                continue;
                            }
                        },
                    };
                    if let Err(e) = announce(sock, mac, &ips, repeat, src6) {
                        tracing::warn!("announcing on interface {ifindex}: {e}");
                    }
                }
            }
        }
    });
    (tx, task)
}

/// An interface adverts are sent and received on.
#[derive(Debug)]
struct Iface {
    name: String,
    sockets: IfSockets,
    /// The IPv4 and IPv6 receivers, once an instance of the family is here.
    rx4: Option<JoinHandle<()>>,
    rx6: Option<JoinHandle<()>>,
    invalid: Arc<AtomicU64>,
}

/// One running instance.
#[derive(Debug)]
struct Slot {
    conf: InstanceConf,
    inst: Instance,
    ifindex: u32,
    /// Each virtual address: its interface and prefix.
    vips: HashMap<IpAddr, (u32, IpNet)>,
    armed: Option<Instant>,
    reason: Reason,
    since_us: u64,
    group: Option<String>,
}

/// The daemon's state.
struct Daemon {
    opts: Options,
    conf: Conf,
    kernel: Kernel,
    links: HashMap<String, Link>,
    ifaces: HashMap<u32, Iface>,
    slots: Vec<Option<Slot>>,
    /// (interface, VRID, IPv6) -> slot
    by_key: HashMap<(u32, u8, bool), usize>,
    timers: BTreeSet<(Instant, usize)>,
    link_up: HashMap<String, bool>,
    script_up: HashMap<String, bool>,
    trackers: HashMap<String, (ScriptConf, JoinHandle<()>)>,
    group_state: HashMap<String, State>,
    effects: mpsc::UnboundedSender<Effect>,
    adverts_tx: mpsc::UnboundedSender<Received>,
    scripts_tx: mpsc::UnboundedSender<(String, bool)>,
    transitions: Vec<Transition>,
    dirty: bool,
}

/// Runs the daemon until SIGTERM / SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let (conf, warnings) = Conf::load(&opts.config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if conf.instances.is_empty() {
        bail!("{}: no vrrp_instance", opts.config.display());
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let kernel = Kernel::open().context("netlink")?;
    // Subscribe to link events before reading the links: no change is missed.
    let (links_tx, mut links_rx) = mpsc::unbounded_channel();
    crate::kernel::watch_links(HashMap::new(), links_tx).context("netlink link events")?;
    let (effects, effects_task) = spawn_effects(kernel.clone());
    let (adverts_tx, mut adverts_rx) = mpsc::unbounded_channel();
    let (scripts_tx, mut scripts_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        opts,
        conf: Conf::default(),
        kernel,
        links: HashMap::new(),
        ifaces: HashMap::new(),
        slots: Vec::new(),
        by_key: HashMap::new(),
        timers: BTreeSet::new(),
        link_up: HashMap::new(),
        script_up: HashMap::new(),
        trackers: HashMap::new(),
        group_state: HashMap::new(),
        effects,
        adverts_tx,
        scripts_tx,
        transitions: Vec::new(),
        dirty: true,
    };
    d.refresh_links().await?;
    d.apply_conf(conf, true).await?;
    tracing::info!("vrrpd started: {} instances on {} interfaces", d.slots.iter().flatten().count(), d.ifaces.len());
    d.write_status();

    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    loop {
        let deadline = d.timers.first().map(|(t, _)| tokio::time::Instant::from_std(*t)).unwrap_or_else(far);
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading {}", d.opts.config.display());
                match Conf::load(&d.opts.config) {
                    Ok((conf, warnings)) => {
                        for w in &warnings {
                            tracing::warn!("{w}");
                        }
                        if let Err(e) = d.refresh_links().await {
                            tracing::error!("reload: {e:#}");
                        } else if let Err(e) = d.apply_conf(conf, false).await {
                            tracing::error!("reload: {e:#}");
                        }
                    }
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
                }
            }
            Some(r) = adverts_rx.recv() => {
                d.advert(r);
                // Take whatever else is queued before looking at timers.
                while let Ok(r) = adverts_rx.try_recv() {
                    d.advert(r);
                }
            }
            Some((name, up)) = links_rx.recv() => d.link_changed(name, up),
            Some((name, up)) = scripts_rx.recv() => d.script_changed(name, up),
            _ = &mut sleep => d.fire_timers(),
        }
        if d.dirty {
            d.write_status();
        }
    }
    tracing::info!("stopping: priority-0 adverts, removing virtual addresses");
    let now = Instant::now();
    for i in 0..d.slots.len() {
        if let Some(s) = d.slots.get_mut(i).and_then(Option::as_mut) {
            s.inst.handle_shutdown(now);
            d.drain(i);
        }
    }
    d.write_status();
    drop(d);
    // The worker ends once every queued removal is done.
    if tokio::time::timeout(Duration::from_secs(5), effects_task).await.is_err() {
        tracing::warn!("virtual address removal did not finish within 5 s");
    }
    Ok(())
}

impl Daemon {
    async fn refresh_links(&mut self) -> anyhow::Result<()> {
        let links = self.kernel.links().await?;
        for l in &links {
            self.link_up.entry(l.name.clone()).or_insert(l.up);
        }
        self.links = links.into_iter().map(|l| (l.name.clone(), l)).collect();
        Ok(())
    }

    fn link(&self, name: &str) -> anyhow::Result<&Link> {
        self.links.get(name).ok_or_else(|| anyhow::anyhow!("interface {name} does not exist"))
    }

    /// The engine's configuration of `c`.
    async fn engine_config(&self, c: &InstanceConf, group: Option<&str>) -> anyhow::Result<Config> {
        let link = self.link(&c.interface)?;
        let v6 = c.is_ipv6();
        let vip_ips: Vec<IpAddr> = c.vips.iter().map(|v| v.net.addr()).collect();
        let primary = match c.unicast_src_ip {
            Some(ip) => ip,
            None => {
                let addrs = self.kernel.addrs(link.index).await?;
                primary_address(&addrs, v6, &vip_ips).ok_or_else(|| {
                    let what = if v6 { "link-local IPv6" } else { "IPv4" };
                    anyhow::anyhow!("vrrp_instance {}: {} has no {what} address", c.name, c.interface)
                })?
            }
        };
        let mut cfg = Config::new(c.version, c.vrid, primary, vip_ips);
        cfg.priority = c.priority;
        cfg.advert_interval_cs = c.advert_interval_cs;
        cfg.preempt = c.preempt;
        cfg.preempt_delay = c.preempt_delay;
        cfg.accept = c.accept;
        cfg.unicast_peers = c.unicast_peers.clone();
        cfg.start_as = c.start_as;
        cfg.garp = c.garp.clone();
        cfg.lower_prio_no_advert = c.lower_prio_no_advert;
        if c.track_primary && !c.track_interfaces.iter().any(|t| t.name == c.interface) {
            cfg.tracks.push(Track { what: Tracked::Interface(c.interface.clone()), weight: 0 });
        }
        for t in &c.track_interfaces {
            cfg.tracks.push(Track { what: Tracked::Interface(t.name.clone()), weight: t.weight.unwrap_or(0) });
        }
        for t in &c.track_scripts {
            let w = t.weight.or_else(|| self.conf_script(&t.name).map(|s| s.weight)).unwrap_or(0);
            cfg.tracks.push(Track { what: Tracked::Script(t.name.clone()), weight: w });
        }
        if let Some(g) = group {
            cfg.tracks.push(Track { what: sync_tracker(g), weight: 0 });
        }
        cfg.validate().map_err(|e| anyhow::anyhow!("vrrp_instance {}: {e}", c.name))?;
        Ok(cfg)
    }

    fn conf_script(&self, name: &str) -> Option<&ScriptConf> {
        self.conf.scripts.get(name).or_else(|| self.trackers.get(name).map(|(s, _)| s))
    }

    fn vip_map(&self, c: &InstanceConf) -> anyhow::Result<HashMap<IpAddr, (u32, IpNet)>> {
        let own = self.link(&c.interface)?.index;
        let mut m = HashMap::new();
        for v in &c.vips {
            let ifindex = match &v.dev {
                Some(d) => self.link(d)?.index,
                None => own,
            };
            m.insert(v.net.addr(), (ifindex, v.net));
        }
        Ok(m)
    }

    /// Opens the sockets of interface `name` and its receiver for the family.
    fn ensure_iface(&mut self, name: &str, index: u32, v6: bool) -> anyhow::Result<()> {
        let f = match self.ifaces.entry(index) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let sockets = IfSockets::open(name, index).with_context(|| format!("sockets on {name}"))?;
                let invalid = Arc::new(AtomicU64::new(0));
                v.insert(Iface { name: name.to_string(), sockets, rx4: None, rx6: None, invalid })
            }
        };
        let tx = self.adverts_tx.clone();
        if v6 && f.rx6.is_none() {
            f.rx6 = Some(
                spawn_receiver_v6(&f.name, index, tx, f.invalid.clone())
                    .with_context(|| format!("IPv6 receive socket on {name}"))?,
            );
        } else if !v6 && f.rx4.is_none() {
            f.rx4 = Some(
                spawn_receiver(&f.name, index, tx, f.invalid.clone())
                    .with_context(|| format!("IPv4 receive socket on {name}"))?,
            );
        }
        Ok(())
    }

    /// Starts, reconfigures, replaces or stops instances to match `conf`.
    async fn apply_conf(&mut self, conf: Conf, first: bool) -> anyhow::Result<()> {
        // Build every engine configuration first: a reload with an error
        // changes nothing.
        let group_of = |name: &str| conf.sync_groups.iter().find(|g| g.members.iter().any(|m| m == name));
        let old_conf = std::mem::replace(&mut self.conf, conf.clone());
        let mut planned = Vec::new();
        for c in &conf.instances {
            let group = group_of(&c.name).map(|g| g.name.clone());
            let cfg = match self.engine_config(c, group.as_deref()).await {
                Ok(cfg) => cfg,
                Err(e) => {
                    self.conf = old_conf;
                    return Err(e);
                }
            };
            let vips = match self.vip_map(c) {
                Ok(v) => v,
                Err(e) => {
                    self.conf = old_conf;
                    return Err(e);
                }
            };
            planned.push((c.clone(), cfg, vips, group));
        }
        // Scripts: keep unchanged ones (and their state), restart the others.
        let mut keep = HashMap::new();
        for (name, (old, task)) in std::mem::take(&mut self.trackers) {
            if conf.scripts.get(&name) == Some(&old) {
                keep.insert(name, (old, task));
            } else {
                task.abort();
                self.script_up.remove(&name);
            }
        }
        for (name, s) in &conf.scripts {
            if !keep.contains_key(name) {
                let up = !s.init_fail;
                self.script_up.insert(name.clone(), up);
                keep.insert(name.clone(), (s.clone(), scripts::spawn_tracker(s.clone(), up, self.scripts_tx.clone())));
            }
        }
        self.trackers = keep;

        let now = Instant::now();
        if first {
            // A previous run may have died holding addresses: start clean.
            let all: Vec<(u32, IpNet)> = planned.iter().flat_map(|(_, _, v, _)| v.values().copied()).collect();
            let _ = self.effects.send(Effect::Remove(all));
        }
        // Stop instances that are gone or must be replaced.
        let mut reuse: HashMap<String, usize> = HashMap::new();
        for i in 0..self.slots.len() {
            let Some(s) = self.slots.get(i).and_then(Option::as_ref) else { continue };
            let keep = planned.iter().any(|(c, cfg, _, _)| {
                c.name == s.conf.name && c.interface == s.conf.interface && s.inst.config().same_router(cfg)
            });
            if keep {
                reuse.insert(s.conf.name.clone(), i);
            } else {
                tracing::info!(instance = %s.conf.name, "removed or replaced by the reload: stopping it");
                self.stop_slot(i, now);
            }
        }
        for (c, cfg, vips, group) in planned {
            let ifindex = self.link(&c.interface)?.index;
            if let Some(&i) = reuse.get(&c.name) {
                let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { continue };
                if s.inst.config() != &cfg {
                    tracing::info!(instance = %c.name, "reconfigured");
                }
                s.inst.reconfigure(now, cfg).map_err(|e| anyhow::anyhow!("vrrp_instance {}: {e}", c.name))?;
                s.conf = c;
                // Removed addresses must still be found (on their
                // interface) while this reload's actions are carried out.
                let old = std::mem::replace(&mut s.vips, vips.clone());
                for (a, at) in old {
                    s.vips.entry(a).or_insert(at);
                }
                s.group = group;
                self.report_trackers(i, now);
                self.drain(i);
                if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
                    s.vips = vips;
                }
                continue;
            }
            self.ensure_iface(&c.interface, ifindex, c.is_ipv6())?;
            let key = (ifindex, c.vrid, c.is_ipv6());
            if let Some(&other) = self.by_key.get(&key)
                && self.slots.get(other).is_some_and(Option::is_some)
            {
                bail!("vrrp_instance {}: virtual_router_id {} on {} is taken", c.name, c.vrid, c.interface);
            }
            let inst = Instance::new(cfg, now).map_err(|e| anyhow::anyhow!("vrrp_instance {}: {e}", c.name))?;
            let i = self.slots.len();
            self.slots.push(Some(Slot {
                conf: c,
                inst,
                ifindex,
                vips,
                armed: None,
                reason: Reason::Startup,
                since_us: now_us(),
                group,
            }));
            self.by_key.insert(key, i);
            self.report_trackers(i, now);
            if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
                s.inst.handle_startup(now);
            }
            self.drain(i);
        }
        self.sync_groups(now);
        self.dirty = true;
        Ok(())
    }

    fn stop_slot(&mut self, i: usize, now: Instant) {
        if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
            s.inst.handle_shutdown(now);
        }
        self.drain(i);
        if let Some(s) = self.slots.get_mut(i).and_then(Option::take) {
            if let Some(t) = s.armed {
                self.timers.remove(&(t, i));
            }
            self.by_key.remove(&(s.ifindex, s.conf.vrid, s.conf.is_ipv6()));
        }
    }

    /// Tells instance `i` the current state of each of its trackers.
    fn report_trackers(&mut self, i: usize, now: Instant) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { return };
        let tracks: Vec<Tracked> = s.inst.config().tracks.iter().map(|t| t.what.clone()).collect();
        for what in tracks {
            let up = match &what {
                Tracked::Interface(n) => self.link_up.get(n).copied().unwrap_or(false),
                Tracked::Script(n) => self.script_up.get(n).copied().unwrap_or(true),
            };
            let _ = s.inst.set_tracked_state(now, &what, up);
        }
    }

    /// Carries out every queued action of instance `i`, then re-arms its timer.
    fn drain(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { return };
        let mut actions = Vec::new();
        while let Some(a) = s.inst.poll_action() {
            actions.push(a);
        }
        let next = s.inst.poll_timeout();
        if next != s.armed {
            if let Some(t) = s.armed {
                self.timers.remove(&(t, i));
            }
            if let Some(t) = next {
                self.timers.insert((t, i));
            }
            s.armed = next;
        }
        for a in actions {
            self.act(i, a);
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { return };
        match a {
            Action::SendAdvert(adv) => {
                let Some(iface) = self.ifaces.get_mut(&s.ifindex) else { return };
                for dst in &adv.destinations {
                    if let Err(e) = iface.sockets.send_advert(&adv.repr, adv.src, *dst) {
                        tracing::warn!(instance = %s.conf.name, "sending advert to {dst}: {e}");
                    }
                }
            }
            Action::AddAddresses { addresses, .. } => {
                let list = addresses.iter().filter_map(|a| s.vips.get(a).copied()).collect();
                let _ = self.effects.send(Effect::Add(list));
            }
            Action::RemoveAddresses { addresses } => {
                let list = addresses.iter().filter_map(|a| s.vips.get(a).copied()).collect();
                let _ = self.effects.send(Effect::Remove(list));
            }
            Action::Announce { addresses, repeat, .. } => {
                let mut per_if: HashMap<u32, Vec<IpAddr>> = HashMap::new();
                for a in addresses {
                    if let Some((ifindex, _)) = s.vips.get(&a) {
                        per_if.entry(*ifindex).or_default().push(a);
                    }
                }
                for (ifindex, ips) in per_if {
                    let Some(mac) = self.links.values().find(|l| l.index == ifindex).and_then(|l| l.mac) else {
                        continue;
                    };
                    let src6 = match s.inst.config().primary_ip {
                        IpAddr::V6(a) => Some(a),
                        IpAddr::V4(_) => None,
                    };
                    let _ = self.effects.send(Effect::Announce { ifindex, mac, ips, repeat, src6 });
                }
            }
            Action::Notify(change) => self.transition(i, change),
        }
    }

    fn transition(&mut self, i: usize, change: StateChange) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { return };
        let at = now_us();
        s.reason = change.reason;
        s.since_us = at;
        let (from, to) = (state_name(change.from), state_name(change.to));
        tracing::info!(
            instance = %s.conf.name,
            "{from} -> {to} ({}, priority {})",
            reason_text(change.reason),
            change.priority
        );
        self.transitions.push(Transition {
            instance: s.conf.name.clone(),
            from: from.into(),
            to: to.into(),
            reason: reason_text(change.reason).into(),
            priority: change.priority,
            at_us: at,
        });
        if self.transitions.len() > HISTORY {
            let extra = self.transitions.len() - HISTORY;
            self.transitions.drain(..extra);
        }
        let n = &s.conf.notify;
        let specific = match change.to {
            State::Master => n.master.as_deref(),
            State::Backup => n.backup.as_deref(),
            State::Fault => n.fault.as_deref(),
            State::Initialize => None,
        };
        if let Some(cmd) = specific {
            scripts::notify(cmd, &[]);
        }
        if let Some(cmd) = n.any.as_deref()
            && change.to != State::Initialize
        {
            scripts::notify(cmd, &["INSTANCE", &s.conf.name, to, &change.priority.to_string()]);
        }
        if let Some(g) = s.group.clone() {
            self.group_notify(&g);
        }
        self.dirty = true;
    }

    /// Runs a sync group's notify scripts when its state changes.
    fn group_notify(&mut self, group: &str) {
        let members: Vec<State> =
            self.slots.iter().flatten().filter(|s| s.group.as_deref() == Some(group)).map(|s| s.inst.state()).collect();
        let state = if members.contains(&State::Fault) {
            State::Fault
        } else if !members.is_empty() && members.iter().all(|s| *s == State::Master) {
            State::Master
        } else if members.iter().all(|s| *s == State::Initialize) {
            State::Initialize
        } else {
            State::Backup
        };
        if self.group_state.insert(group.to_string(), state) == Some(state) {
            return;
        }
        let Some(g) = self.conf.sync_groups.iter().find(|g| g.name == group) else { return };
        tracing::info!(group, "sync group is {}", state_name(state));
        let specific = match state {
            State::Master => g.notify.master.as_deref(),
            State::Backup => g.notify.backup.as_deref(),
            State::Fault => g.notify.fault.as_deref(),
            State::Initialize => None,
        };
        if let Some(cmd) = specific {
            scripts::notify(cmd, &[]);
        }
        if let Some(cmd) = g.notify.any.as_deref()
            && state != State::Initialize
        {
            scripts::notify(cmd, &["GROUP", group, state_name(state), "0"]);
        }
    }

    /// Whether a weight-0 tracker of instance `s` of its own is down.
    fn own_fault(&self, s: &Slot) -> bool {
        s.inst.config().tracks.iter().filter(|t| t.weight == 0).any(|t| match &t.what {
            Tracked::Interface(n) => !self.link_up.get(n).copied().unwrap_or(false),
            Tracked::Script(n) if self.trackers.contains_key(n) => !self.script_up.get(n).copied().unwrap_or(true),
            Tracked::Script(_) => false,
        })
    }

    /// Puts every member of a sync group in FAULT while one of them has a
    /// weight-0 tracker down.
    fn sync_groups(&mut self, now: Instant) {
        let groups: Vec<String> = self.conf.sync_groups.iter().map(|g| g.name.clone()).collect();
        for g in groups {
            let members: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots.get(i).and_then(Option::as_ref).is_some_and(|s| s.group.as_deref() == Some(&g)))
                .collect();
            let fault =
                members.iter().any(|&i| self.slots.get(i).and_then(Option::as_ref).is_some_and(|s| self.own_fault(s)));
            for i in members {
                if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
                    let _ = s.inst.set_tracked_state(now, &sync_tracker(&g), !fault);
                }
                self.drain(i);
            }
        }
    }

    fn advert(&mut self, r: Received) {
        let Some(&i) = self.by_key.get(&(r.ifindex, r.repr.vrid, r.src.is_ipv6())) else {
            tracing::trace!("advert for VRID {} on interface {}: no such instance", r.repr.vrid, r.ifindex);
            return;
        };
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else { return };
        if let Err(e) = s.inst.handle_advert(Instant::now(), r.src, &r.repr) {
            tracing::debug!(instance = %s.conf.name, "advert from {} discarded: {e}", r.src);
        }
        self.drain(i);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, i));
            if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) {
                s.armed = None;
                s.inst.handle_timeout(now);
            }
            self.drain(i);
        }
    }

    fn link_changed(&mut self, name: String, up: bool) {
        if self.link_up.insert(name.clone(), up) == Some(up) {
            return;
        }
        tracing::info!(interface = %name, "link is {}", if up { "up" } else { "down" });
        let now = Instant::now();
        let what = Tracked::Interface(name);
        for i in 0..self.slots.len() {
            if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut)
                && s.inst.set_tracked_state(now, &what, up).is_ok()
            {
                self.drain(i);
            }
        }
        self.sync_groups(now);
    }

    fn script_changed(&mut self, name: String, up: bool) {
        if !self.trackers.contains_key(&name) || self.script_up.insert(name.clone(), up) == Some(up) {
            return;
        }
        let now = Instant::now();
        let what = Tracked::Script(name);
        for i in 0..self.slots.len() {
            if let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut)
                && s.inst.set_tracked_state(now, &what, up).is_ok()
            {
                self.drain(i);
            }
        }
        self.sync_groups(now);
    }

    fn status(&self) -> Status {
        let invalid: u64 = self.ifaces.values().map(|f| f.invalid.load(Ordering::Relaxed)).sum();
        Status {
            pid: std::process::id(),
            config: self.opts.config.display().to_string(),
            router_id: self.conf.global.router_id.clone(),
            updated_us: now_us(),
            invalid_packets: invalid,
            instances: self
                .slots
                .iter()
                .flatten()
                .map(|s| {
                    let st = s.inst.stats();
                    let d = st.discarded;
                    InstanceStatus {
                        name: s.conf.name.clone(),
                        interface: s.conf.interface.clone(),
                        vrid: s.conf.vrid,
                        version: match s.conf.version {
                            Version::V2 => 2,
                            Version::V3 => 3,
                        },
                        family: if s.conf.is_ipv6() { "ipv6" } else { "ipv4" }.into(),
                        state: state_name(s.inst.state()).into(),
                        reason: reason_text(s.reason).into(),
                        since_us: s.since_us,
                        priority: s.conf.priority,
                        effective_priority: s.inst.effective_priority(),
                        primary_ip: s.inst.config().primary_ip.to_string(),
                        master: match s.inst.state() {
                            State::Backup => s.inst.master().map(|m| m.addr.to_string()),
                            State::Master => Some(s.inst.config().primary_ip.to_string()),
                            _ => None,
                        },
                        addresses: s.conf.vips.iter().map(|v| v.net.to_string()).collect(),
                        adverts_sent: st.adverts_sent,
                        adverts_received: st.adverts_received,
                        adverts_discarded: d.inactive
                            + d.version
                            + d.vrid
                            + d.family
                            + d.address_owner
                            + d.own_address
                            + d.auth_type
                            + d.interval
                            + d.address_list,
                        became_master: st.became_master,
                    }
                })
                .collect(),
            transitions: self.transitions.clone(),
        }
    }

    fn write_status(&mut self) {
        self.dirty = false;
        if let Err(e) = self.status().write(&self.opts.status) {
            tracing::warn!("status file {}: {e}", self.opts.status.display());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for f in self.ifaces.values() {
            for t in f.rx4.iter().chain(&f.rx6) {
                t.abort();
            }
        }
        for (_, t) in self.trackers.values() {
            t.abort();
        }
    }
}

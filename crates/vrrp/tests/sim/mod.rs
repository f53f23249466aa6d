//! A simulated Ethernet segment of VRRP routers in virtual time.
//!
//! ```text
//!   Router 0 ──┐                       each router: an Instance, the addresses its
//!   Router 1 ──┼── segment (latency,    actions configured, what it announced
//!   Router 2 ──┘   loss, partitions,
//!                  a drop filter)
//! ```
//!
//! Time jumps from one event to the next: the earliest in-flight advert or
//! the earliest `poll_timeout()` of a running router. Adverts in flight at the
//! same instant as a timer are delivered first. Every advert is encoded into
//! an Ethernet frame with `vipcast_packet::build::vrrp_frame` and parsed back
//! with `vrrp::parse_frame` (strict checksums) before delivery, so only
//! wire-valid adverts travel. After every drained call the simulator checks:
//! addresses are configured exactly while Master, announcements come only
//! from a master, and non-zero-priority adverts only from a master.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vipcast_packet::MacAddr;
use vipcast_packet::build;
use vipcast_packet::vrrp::{ChecksumPolicy, parse_frame};
use vipcast_vrrp::{
    Action, AnnounceReason, Config, Discard, Family, Instance, Reason, State, StateChange, Tracked, Version, VrrpRepr,
};

/// A tiny deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u32) -> bool {
        (self.next_u64() % 1000) < u64::from(permille)
    }
}

/// A state change seen on the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Virtual time since the start of the simulation.
    pub at: Duration,
    pub router: usize,
    pub change: StateChange,
}

#[derive(Debug)]
pub struct Router {
    pub inst: Instance,
    /// False after `crash`: no timers, no traffic (a dead VM; its addresses stay).
    pub alive: bool,
    /// Not processing anything until then (a paused VM); its timers fire late.
    pub frozen_until: Option<Instant>,
    /// Addresses configured by AddAddresses / RemoveAddresses.
    pub vips: BTreeSet<IpAddr>,
    pub accept: bool,
    /// (time, reason, repeat) of each Announce.
    pub announces: Vec<(Duration, AnnounceReason, u32)>,
    /// (time, priority) of each advert sent.
    pub sent: Vec<(Duration, u8)>,
    /// (time, sender, priority) of each advert accepted by `handle_advert`.
    pub heard: Vec<(Duration, usize, u8)>,
    pub discards: Vec<(Duration, Discard)>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    src: IpAddr,
    repr: VrrpRepr,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Drops an advert from `from` to `to` sent at virtual time `t` when it returns true.
pub type Filter = Box<dyn FnMut(usize, usize, Duration) -> bool>;

pub struct Segment {
    pub t0: Instant,
    pub now: Instant,
    pub routers: Vec<Router>,
    /// One-way delivery delay.
    pub latency: Duration,
    /// Random loss per delivery, per mille.
    pub loss_permille: u32,
    /// Partition: routers talk only within the same group.
    pub group_of: Vec<u32>,
    pub filter: Option<Filter>,
    pub log: Vec<Transition>,
    rng: XorShift,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
}

/// `s` seconds, `us` microseconds: exact virtual times for asserts.
pub fn us(us: u64) -> Duration {
    Duration::from_micros(us)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A VRRPv3 IPv4 config: VRID 51, VIP 10.0.0.100, from 10.0.0.`host`.
pub fn v3(host: u8, priority: u8) -> Config {
    let mut c = Config::new(Version::V3, 51, ip(&format!("10.0.0.{host}")), vec![ip("10.0.0.100")]);
    c.priority = priority;
    c
}

/// The protocol variants the scenario tests run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    V2,
    V3Ipv4,
    V3Ipv6,
    /// VRRPv3 IPv4 with unicast peers instead of multicast.
    V3Unicast,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::V2, Variant::V3Ipv4, Variant::V3Ipv6, Variant::V3Unicast];

    /// Router `host` (1..) of `n`, priority `priority`, 1 s interval.
    pub fn config(self, host: u8, n: u8, priority: u8) -> Config {
        let (version, primary, vip) = match self {
            Variant::V2 => (Version::V2, format!("10.0.0.{host}"), "10.0.0.100".to_string()),
            Variant::V3Ipv4 | Variant::V3Unicast => (Version::V3, format!("10.0.0.{host}"), "10.0.0.100".to_string()),
            Variant::V3Ipv6 => (Version::V3, format!("fe80::{host}"), "fd00::100".to_string()),
        };
        let mut c = Config::new(version, 51, ip(&primary), vec![ip(&vip)]);
        c.priority = priority;
        if self == Variant::V3Unicast {
            c.unicast_peers = (1..=n).filter(|h| *h != host).map(|h| ip(&format!("10.0.0.{h}"))).collect();
        }
        c
    }
}

impl Segment {
    pub fn new(configs: Vec<Config>) -> Segment {
        let t0 = Instant::now();
        let n = configs.len();
        let routers = configs
            .into_iter()
            .map(|c| Router {
                inst: Instance::new(c, t0).expect("valid config"),
                alive: true,
                frozen_until: None,
                vips: BTreeSet::new(),
                accept: false,
                announces: Vec::new(),
                sent: Vec::new(),
                heard: Vec::new(),
                discards: Vec::new(),
            })
            .collect();
        Segment {
            t0,
            now: t0,
            routers,
            latency: Duration::ZERO,
            loss_permille: 0,
            group_of: vec![0; n],
            filter: None,
            log: Vec::new(),
            rng: XorShift::new(0x5eed),
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Segment {
        self.rng = XorShift::new(seed);
        self
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn state(&self, i: usize) -> State {
        self.routers[i].inst.state()
    }

    /// Live routers in Master.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.routers.len()).filter(|i| self.routers[*i].alive && self.state(*i) == State::Master).collect()
    }

    /// Transitions of router `i` into `to`, in order.
    pub fn entered(&self, i: usize, to: State) -> Vec<Transition> {
        self.log.iter().filter(|t| t.router == i && t.change.to == to).copied().collect()
    }

    /// Transitions at or after `since`.
    pub fn transitions_since(&self, since: Duration) -> Vec<Transition> {
        self.log.iter().filter(|t| t.at >= since).copied().collect()
    }

    // ----- inputs -------------------------------------------------------

    pub fn startup(&mut self, i: usize) {
        let now = self.now;
        self.routers[i].inst.handle_startup(now);
        self.drain(i);
    }

    pub fn startup_all(&mut self) {
        for i in 0..self.routers.len() {
            self.startup(i);
        }
    }

    pub fn shutdown(&mut self, i: usize) {
        let now = self.now;
        self.routers[i].inst.handle_shutdown(now);
        self.drain(i);
    }

    /// The router dies silently (no priority 0): a killed VM.
    pub fn crash(&mut self, i: usize) {
        self.routers[i].alive = false;
    }

    /// A crashed (or running) router boots again with its current config.
    pub fn restart(&mut self, i: usize) {
        let config = self.routers[i].inst.config().clone();
        let r = &mut self.routers[i];
        r.inst = Instance::new(config, self.now).expect("valid config");
        r.alive = true;
        r.frozen_until = None;
        r.vips.clear();
        self.startup(i);
    }

    /// The router processes nothing for `d`: its timers and deliveries wait.
    pub fn freeze(&mut self, i: usize, d: Duration) {
        self.routers[i].frozen_until = Some(self.now + d);
    }

    pub fn set_track(&mut self, i: usize, what: &Tracked, up: bool) {
        let now = self.now;
        self.routers[i].inst.set_tracked_state(now, what, up).expect("known tracker");
        self.drain(i);
    }

    pub fn reconfigure(&mut self, i: usize, config: Config) {
        let now = self.now;
        self.routers[i].inst.reconfigure(now, config).expect("valid reconfiguration");
        self.drain(i);
    }

    /// Routers in different groups cannot hear each other.
    pub fn partition(&mut self, groups: &[u32]) {
        self.group_of = groups.to_vec();
    }

    pub fn heal(&mut self) {
        self.group_of = vec![0; self.routers.len()];
    }

    // ----- running ------------------------------------------------------

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Runs to `t0 + at`.
    pub fn run_to(&mut self, at: Duration) {
        let end = self.t0 + at;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Instant) {
        let (mut steps, mut same_instant, mut last) = (0u64, 0u32, self.now);
        loop {
            steps += 1;
            assert!(steps < 500_000, "too many events: an advert storm?");
            let next_msg = self.queue.peek().map(|m| m.0.at);
            let next_timer = (0..self.routers.len()).filter_map(|i| self.wake_time(i)).min();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            same_instant = if self.now == last { same_instant + 1 } else { 0 };
            last = self.now;
            assert!(same_instant < 10_000, "simulation does not advance at {:?}", self.now - self.t0);
            while self.queue.peek().is_some_and(|m| m.0.at <= self.now) {
                same_instant += 1;
                assert!(same_instant < 10_000, "advert storm at {:?}", self.now - self.t0);
                let Reverse(m) = self.queue.pop().unwrap();
                self.deliver(m);
            }
            for i in 0..self.routers.len() {
                if self.wake_time(i).is_some_and(|t| t <= self.now) {
                    self.routers[i].frozen_until = None;
                    let now = self.now;
                    self.routers[i].inst.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// When router `i` next needs the CPU: its timeout, or the end of a freeze.
    fn wake_time(&self, i: usize) -> Option<Instant> {
        let r = &self.routers[i];
        if !r.alive {
            return None;
        }
        let t = r.inst.poll_timeout()?;
        Some(match r.frozen_until {
            Some(f) => t.max(f),
            None => t,
        })
    }

    fn deliver(&mut self, m: InFlight) {
        let r = &mut self.routers[m.to];
        if !r.alive {
            return;
        }
        if let Some(f) = r.frozen_until {
            if f > self.now {
                // Held in the socket buffer until the router runs again.
                self.queue.push(Reverse(InFlight { at: f, ..m }));
                return;
            }
            r.frozen_until = None;
        }
        let at = self.now - self.t0;
        match r.inst.handle_advert(self.now, m.src, &m.repr) {
            Ok(()) => r.heard.push((at, m.from, m.repr.priority)),
            Err(d) => r.discards.push((at, d)),
        }
        self.drain(m.to);
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.group_of.get(a) == self.group_of.get(b)
    }

    /// Carries out every pending action of router `i` and checks the invariants.
    fn drain(&mut self, i: usize) {
        let at = self.now - self.t0;
        while let Some(action) = self.routers[i].inst.poll_action() {
            let state = self.routers[i].inst.state();
            match action {
                Action::SendAdvert(adv) => {
                    assert!(
                        adv.priority() == 0 || state == State::Master,
                        "router {i} sent priority {} in {state:?}",
                        adv.priority()
                    );
                    let sent = &mut self.routers[i].sent;
                    sent.push((at, adv.priority()));
                    if let Some(first) = sent.len().checked_sub(200).map(|k| sent[k].0) {
                        assert!(at - first > Duration::from_secs(1), "router {i}: 200 adverts within 1 s (a storm)");
                    }
                    for dst in &adv.destinations {
                        self.transmit(i, adv.src, *dst, &adv.repr);
                    }
                }
                Action::AddAddresses { addresses, accept } => {
                    let r = &mut self.routers[i];
                    r.vips.extend(addresses);
                    r.accept = accept;
                }
                Action::RemoveAddresses { addresses } => {
                    for a in addresses {
                        self.routers[i].vips.remove(&a);
                    }
                }
                Action::Announce { addresses, repeat, reason } => {
                    assert_eq!(state, State::Master, "router {i} announced {addresses:?} in {state:?}");
                    self.routers[i].announces.push((at, reason, repeat));
                }
                Action::Notify(change) => self.log.push(Transition { at, router: i, change }),
            }
        }
        let r = &self.routers[i];
        let want: BTreeSet<IpAddr> = match r.inst.state() {
            State::Master => r.inst.config().addresses.iter().copied().collect(),
            _ => BTreeSet::new(),
        };
        assert_eq!(r.vips, want, "router {i} in {:?} holds {:?}", r.inst.state(), r.vips);
    }

    /// Puts an advert on the wire (as a real frame) towards `dst`.
    fn transmit(&mut self, from: usize, src: IpAddr, dst: IpAddr, repr: &VrrpRepr) {
        let mac = match Family::of(src) {
            Family::V4 => MacAddr::vrrp_v4(repr.vrid),
            Family::V6 => MacAddr::vrrp_v6(repr.vrid),
        };
        let frame = build::vrrp_frame(mac, Some(MacAddr([2, 0, 0, 0, 0, 1])), src, dst, repr).expect("advert encodes");
        let (_, ipr, parsed) = parse_frame(&frame, ChecksumPolicy::Strict).expect("advert parses");
        assert_eq!((&parsed, ipr.src(), ipr.dst()), (repr, src, dst));
        let targets: Vec<usize> = (0..self.routers.len())
            .filter(|j| *j != from)
            .filter(|j| dst.is_multicast() || self.routers[*j].inst.config().primary_ip == dst)
            .collect();
        let at = self.now - self.t0;
        for to in targets {
            if !self.connected(from, to) || self.rng.chance(self.loss_permille) {
                continue;
            }
            if let Some(f) = self.filter.as_mut()
                && f(from, to, at)
            {
                continue;
            }
            self.seq += 1;
            let m = InFlight { at: self.now + self.latency, seq: self.seq, from, to, src, repr: parsed.clone() };
            self.queue.push(Reverse(m));
        }
    }
}

/// Asserts a transition of router `i` to `to` at exactly `at` with `reason`.
#[track_caller]
pub fn assert_transition(seg: &Segment, i: usize, to: State, at: Duration, reason: Reason) {
    let found = seg.log.iter().any(|t| t.router == i && t.change.to == to && t.at == at && t.change.reason == reason);
    assert!(found, "no transition of router {i} to {to:?} at {at:?} ({reason:?}); log: {:#?}", seg.log);
}

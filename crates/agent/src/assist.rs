//! Platform-assisted VRRP handover.
//!
//! The agent learns, passively, which VM is the VRRP master of each virtual
//! router in its VPCs (from the adverts its local VMs send). When the port of
//! such a master goes down — a certain fault, seen by netlink here before any
//! guest can notice — the agent sends, on the dead master's behalf, the
//! priority-0 advertisement the master can no longer send: same version,
//! VRID, source IP and MAC, interval and addresses, to the same destinations
//! (the multicast group, or each unicast peer), with a correct checksum.
//! RFC 5798 §6.4.2: a backup receiving priority 0 takes over after Skew_Time
//! instead of Master_Down_Interval (~0.06 s instead of ~0.36 s at 0.1 s).
//!
//! Never for VRRPv2 with authentication it cannot reproduce; never when the
//! master's last advert is older than its Master_Down_Interval (the backups
//! may already have replaced it). A frozen VM whose port stays up gets no
//! assistance (no certain fault).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vipcast_model::RouterKey;
use vipcast_packet::MacAddr;
use vipcast_packet::vrrp::{Version, VrrpRepr};
use vipcast_vrrp::timing;

/// A virtual router's master as last seen: what it sends and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub vpc: String,
    pub port: String,
    pub eth_src: MacAddr,
    pub src: IpAddr,
    /// Destinations its adverts went to since the advert last changed.
    pub dsts: BTreeSet<IpAddr>,
    pub advert: VrrpRepr,
    pub last: Instant,
}

impl Master {
    /// Master_Down_Interval of the backups (RFC 5798 §6.1; v2: RFC 3768 §6.1),
    /// computed with the master's own priority as the worst case.
    pub fn down_interval(&self) -> Duration {
        timing::master_down_interval(self.advert.version, self.advert.priority, self.advert.interval_cs)
    }

    /// Whether the agent can speak for it.
    pub fn assistable(&self) -> bool {
        !(self.advert.version == Version::V2 && self.advert.auth_type != 0)
    }

    /// The advert it would send on shutdown.
    pub fn priority_zero(&self) -> VrrpRepr {
        VrrpRepr { priority: 0, ..self.advert.clone() }
    }
}

/// Where an advert was seen and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub vpc: String,
    pub port: String,
    pub eth_src: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// The masters this chassis has seen.
#[derive(Debug, Default)]
pub struct Masters {
    by_router: HashMap<RouterKey, Master>,
    /// The priority each local port last advertised with, per router: what
    /// its VM will wait as a backup after a priority-0 advert (Skew_Time).
    priorities: HashMap<(RouterKey, String), u8>,
}

/// Priorities remembered at most (local ports x routers).
pub const MAX_PRIORITIES: usize = 4096;

impl Masters {
    /// Records an advert sent by a VM behind `port` of `vpc`; returns the
    /// master if it is new or what it advertises (or where) changed.
    pub fn observe(&mut self, o: Origin, advert: &VrrpRepr, now: Instant) -> Option<&Master> {
        let Origin { vpc, port, eth_src, src, dst } = o;
        let key = RouterKey::new(&vpc, advert.vrid, src);
        let seen = (key.clone(), port.clone());
        if advert.priority > 0 && (self.priorities.len() < MAX_PRIORITIES || self.priorities.contains_key(&seen)) {
            self.priorities.insert(seen, advert.priority);
        }
        if advert.priority == 0 {
            // The master is leaving by itself.
            if self.by_router.get(&key).is_some_and(|m| m.src == src) {
                self.by_router.remove(&key);
            }
            return None;
        }
        let changed = match self.by_router.get_mut(&key) {
            Some(m) if m.src == src && m.advert == *advert => {
                m.last = now;
                m.dsts.insert(dst)
            }
            _ => {
                self.by_router.insert(
                    key.clone(),
                    Master { vpc, port, eth_src, src, dsts: BTreeSet::from([dst]), advert: advert.clone(), last: now },
                );
                true
            }
        };
        if changed { self.by_router.get(&key) } else { None }
    }

    /// The masters behind `port` that may be spoken for now (and forgets
    /// every master behind it).
    pub fn take_for_port(&mut self, port: &str, now: Instant) -> (Vec<Master>, Vec<Master>) {
        let keys: Vec<RouterKey> =
            self.by_router.iter().filter(|(_, m)| m.port == port).map(|(k, _)| k.clone()).collect();
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for k in keys {
            if let Some(m) = self.by_router.remove(&k) {
                if m.assistable() && now.saturating_duration_since(m.last) < m.down_interval() {
                    ok.push(m);
                } else {
                    refused.push(m);
                }
            }
        }
        (ok, refused)
    }

    /// Every master known (for status and tests).
    pub fn all(&self) -> impl Iterator<Item = &Master> {
        self.by_router.values()
    }

    /// The priority local port `port` last advertised with for `router`.
    pub fn priority(&self, router: &RouterKey, port: &str) -> Option<u8> {
        self.priorities.get(&(router.clone(), port.to_string())).copied()
    }

    /// Forgets the priorities of ports no longer local.
    pub fn retain_ports(&mut self, local: &dyn Fn(&str) -> bool) {
        self.priorities.retain(|(_, p), _| local(p));
    }
}

/// An advert delivered to a local VM: from whom, to which local port, and
/// addressed how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub vpc: String,
    /// The local port it was delivered to.
    pub port: String,
    pub eth_src: MacAddr,
    pub eth_dst: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// A master elsewhere, as its adverts reach local VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMaster {
    pub vpc: String,
    pub eth_src: MacAddr,
    pub src: IpAddr,
    pub advert: VrrpRepr,
    pub last: Instant,
    /// Local port -> (Ethernet destination, IP destination) of the adverts
    /// it receives.
    pub receivers: BTreeMap<String, (MacAddr, IpAddr)>,
}

impl RemoteMaster {
    fn as_master(&self) -> Master {
        Master {
            vpc: self.vpc.clone(),
            port: String::new(),
            eth_src: self.eth_src,
            src: self.src,
            dsts: BTreeSet::new(),
            advert: self.advert.clone(),
            last: self.last,
        }
    }

    /// The advertised interval.
    pub fn interval(&self) -> Duration {
        timing::centis(self.advert.interval_cs)
    }

    /// See [`Master::down_interval`].
    pub fn down_interval(&self) -> Duration {
        self.as_master().down_interval()
    }

    /// The priority-0 advert.
    pub fn priority_zero(&self) -> VrrpRepr {
        VrrpRepr { priority: 0, ..self.advert.clone() }
    }
}

/// A master's adverts have stopped when the next one is this much overdue
/// (at most a quarter of its interval): masters send on a timer, so later
/// than that is not jitter. With a chassis seen down, this is what is left
/// to wait: half an interval on average.
pub const STOPPED_MARGIN: Duration = Duration::from_millis(10);

/// What to do about a master whose chassis was declared dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Speak for it now.
    Speak(RemoteMaster),
    /// Too late (its backups may already have replaced it) or not
    /// reproducible (VRRPv2 authentication).
    Refuse(RemoteMaster),
}

/// The masters elsewhere whose adverts reach local VMs.
#[derive(Debug, Default)]
pub struct Remotes {
    by_router: HashMap<RouterKey, RemoteMaster>,
    /// Spoken for before its next advert was due (see [`Remotes::due`]),
    /// and when.
    early: HashMap<RouterKey, Instant>,
    /// Spoken for early, then heard again (alive after all: a path that
    /// carries adverts but not the echo): not early again until then.
    not_early_until: HashMap<RouterKey, Instant>,
}

/// Of the backups' Skew_Time, how much is kept as the live master's margin
/// when speaking early: a master whose next advert is up to this much (and
/// [`STOPPED_MARGIN`]) late still cancels the takeover.
pub const EARLY_KEEP: Duration = Duration::from_millis(20);

/// How long a master heard after being spoken for early is only spoken for
/// once its adverts are overdue (unless a watched chassis answers again
/// before: [`Remotes::peer_up`]).
pub const NOT_EARLY_FOR: Duration = Duration::from_secs(60);

impl Remotes {
    /// Records an advert delivered to a local port.
    pub fn observe(&mut self, d: Delivery, advert: &VrrpRepr, now: Instant) {
        let key = RouterKey::new(&d.vpc, advert.vrid, d.src);
        // The next advert of a master spoken for early, within an interval:
        // it was alive (a master back after a real death advertises much
        // later, once its chassis is reachable again).
        if let Some(at) = self.early.remove(&key)
            && advert.priority > 0
            && now.saturating_duration_since(at) < timing::centis(advert.interval_cs)
        {
            tracing::warn!(vpc = d.vpc, vrid = advert.vrid, master = %d.src, "a master spoken for early advertises again: \
                its chassis answers no echo but it is alive; waiting for overdue adverts from now on");
            self.not_early_until.insert(key.clone(), now + NOT_EARLY_FOR);
        }
        if self.not_early_until.len() > 1024 {
            self.not_early_until.retain(|_, t| *t > now);
        }
        if advert.priority == 0 {
            if self.by_router.get(&key).is_some_and(|m| m.src == d.src) {
                self.by_router.remove(&key);
            }
            return;
        }
        match self.by_router.get_mut(&key) {
            Some(m) if m.src == d.src && m.advert == *advert => {
                m.receivers.insert(d.port, (d.eth_dst, d.dst));
                m.last = now;
            }
            _ => {
                self.by_router.insert(
                    key,
                    RemoteMaster {
                        vpc: d.vpc,
                        eth_src: d.eth_src,
                        src: d.src,
                        advert: advert.clone(),
                        last: now,
                        receivers: BTreeMap::from([(d.port, (d.eth_dst, d.dst))]),
                    },
                );
            }
        }
    }

    /// Forgets the receivers no longer local (ports that went away).
    pub fn retain_ports(&mut self, local: &dyn Fn(&str) -> bool) {
        for m in self.by_router.values_mut() {
            m.receivers.retain(|p, _| local(p));
        }
        self.by_router.retain(|_, m| !m.receivers.is_empty());
    }

    /// Decides for the masters `dead` says are on a dead chassis: speak
    /// (their adverts stopped, in time) or refuse (forgotten either way);
    /// the others, whose adverts may still come, stay and are asked about
    /// again later. Returns the verdicts and whether any dead-chassis master
    /// is still waiting.
    ///
    /// `skew` is the shortest Skew_Time of the local backups receiving a
    /// master's adverts, when their priorities are known (zero if not).
    /// A backup told priority 0 takes over only Skew_Time later, and a live
    /// master's next advert in between cancels it (RFC 5798 §6.4.2: it
    /// resets the Master_Down_Timer). So the priority-0 advert may go out
    /// up to that much (less [`EARLY_KEEP`]) before the next advert is
    /// overdue: a master that was alive after all is still safe if its
    /// advert is at most 30 ms late, and a dead one is replaced ~40 ms
    /// sooner (at 0.1 s, priority 100).
    /// A master heard again after that is not spoken for early for
    /// [`NOT_EARLY_FOR`].
    pub fn due(
        &mut self,
        dead: &dyn Fn(&str, MacAddr) -> bool,
        skew: &dyn Fn(&RemoteMaster) -> Duration,
        now: Instant,
    ) -> (Vec<Verdict>, bool) {
        let mut out = Vec::new();
        let mut waiting = false;
        let keys: Vec<RouterKey> =
            self.by_router.iter().filter(|(_, m)| dead(&m.vpc, m.eth_src)).map(|(k, _)| k.clone()).collect();
        for k in keys {
            let Some(m) = self.by_router.get(&k) else { continue };
            let age = now.saturating_duration_since(m.last);
            let overdue = m.interval() + STOPPED_MARGIN.min(m.interval() / 4);
            let ahead = if self.not_early_until.get(&k).is_some_and(|t| *t > now) {
                Duration::ZERO
            } else {
                skew(m).saturating_sub(EARLY_KEEP)
            };
            let stopped = age > overdue.saturating_sub(ahead);
            let early = age <= overdue;
            if !m.as_master().assistable() || age >= m.down_interval() {
                if let Some(m) = self.by_router.remove(&k) {
                    out.push(Verdict::Refuse(m));
                }
            } else if stopped {
                if early {
                    self.early.insert(k.clone(), now);
                }
                if let Some(m) = self.by_router.remove(&k) {
                    out.push(Verdict::Speak(m));
                }
            } else {
                waiting = true;
            }
        }
        (out, waiting)
    }

    /// Every master followed (for status and tests).
    pub fn all(&self) -> impl Iterator<Item = &RemoteMaster> {
        self.by_router.values()
    }

    /// A watched chassis answers the echo again: whatever cut it is over,
    /// masters may be spoken for early again.
    pub fn peer_up(&mut self) {
        self.not_early_until.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(mac: MacAddr, src: IpAddr, dst: IpAddr) -> Origin {
        Origin { vpc: "prod".into(), port: "pay1".into(), eth_src: mac, src, dst }
    }

    fn advert(version: Version, priority: u8, auth_type: u8) -> VrrpRepr {
        VrrpRepr {
            version,
            vrid: 51,
            priority,
            interval_cs: if version == Version::V3 { 10 } else { 100 },
            auth_type,
            auth_data: [0; 8],
            addresses: vec!["192.168.10.100".parse().unwrap()],
        }
    }

    #[test]
    fn learns_masters_and_speaks_only_when_it_may() {
        let t0 = Instant::now();
        let mut m = Masters::default();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let (src, group) = ("192.168.10.11".parse().unwrap(), "224.0.0.18".parse().unwrap());
        assert!(m.observe(origin(mac, src, group), &advert(Version::V3, 150, 0), t0).is_some(), "new");
        assert!(m.observe(origin(mac, src, group), &advert(Version::V3, 150, 0), t0).is_none(), "the same again");
        assert!(m.observe(origin(mac, src, group), &advert(Version::V3, 151, 0), t0).is_some(), "changed");
        m.observe(origin(mac, src, group), &advert(Version::V3, 150, 0), t0);
        assert_eq!(m.all().count(), 1);
        // Down interval at 0.1 s, priority 150: 0.3 s + 0.041 s.
        let master = m.all().next().unwrap().clone();
        assert_eq!(master.down_interval(), Duration::from_nanos(341_406_250));
        assert_eq!(master.priority_zero().priority, 0);
        // Too late: the backups may already have taken over.
        let (ok, refused) = m.take_for_port("pay1", t0 + Duration::from_millis(400));
        assert!(ok.is_empty() && refused.len() == 1);
        // In time.
        m.observe(origin(mac, src, group), &advert(Version::V3, 150, 0), t0);
        let (ok, _) = m.take_for_port("pay1", t0 + Duration::from_millis(50));
        assert_eq!(ok.len(), 1);
        assert_eq!(m.all().count(), 0);
        // Another port's fault does not concern it.
        m.observe(origin(mac, src, group), &advert(Version::V3, 150, 0), t0);
        assert!(m.take_for_port("pay2", t0).0.is_empty());
    }

    #[test]
    fn no_assistance_for_v2_with_authentication_or_after_priority_zero() {
        let t0 = Instant::now();
        let mut m = Masters::default();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let (src, group) = ("192.168.10.11".parse().unwrap(), "224.0.0.18".parse().unwrap());
        m.observe(origin(mac, src, group), &advert(Version::V2, 150, 1), t0);
        let (ok, refused) = m.take_for_port("pay1", t0);
        assert!(ok.is_empty() && refused.len() == 1);
        m.observe(origin(mac, src, group), &advert(Version::V2, 150, 0), t0);
        m.observe(origin(mac, src, group), &advert(Version::V2, 0, 0), t0);
        assert_eq!(m.all().count(), 0);
    }

    fn delivery(port: &str, dst: &str) -> Delivery {
        Delivery {
            vpc: "prod".into(),
            port: port.into(),
            eth_src: MacAddr([2, 0, 0, 0, 0, 1]),
            eth_dst: MacAddr([1, 0, 0x5e, 0, 0, 18]),
            src: "192.168.10.11".parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn a_dead_chassis_master_is_spoken_for_only_once_its_adverts_stop_and_in_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Remotes::default();
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        r.observe(delivery("pay3", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        assert_eq!(r.all().next().unwrap().receivers.len(), 2);
        let dead = |_: &str, _: MacAddr| true;
        let alive = |_: &str, _: MacAddr| false;
        let none = |_: &RemoteMaster| Duration::ZERO;
        // Its chassis is fine: nothing to do.
        assert_eq!(r.due(&alive, &none, t0 + ms(200)), (vec![], false));
        // Declared dead, but the last advert came 110 ms ago (interval
        // 100 ms): the next one may still come.
        let (v, waiting) = r.due(&dead, &none, t0 + ms(110));
        assert!(v.is_empty() && waiting);
        // More than 10 ms overdue, well within the down interval: speak.
        let (v, waiting) = r.due(&dead, &none, t0 + ms(111));
        assert!(!waiting);
        let [Verdict::Speak(m)] = v.as_slice() else { panic!("{v:?}") };
        assert_eq!(m.priority_zero().priority, 0);
        assert_eq!(m.receivers.len(), 2);
        assert_eq!(r.all().count(), 0, "spoken for once");
        // Too late: the backups may have taken over already.
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        let (v, _) = r.due(&dead, &none, t0 + ms(400));
        assert!(matches!(v.as_slice(), [Verdict::Refuse(_)]));
        // VRRPv2 with authentication: never.
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V2, 150, 1), t0);
        let (v, _) = r.due(&dead, &none, t0 + ms(1200));
        assert!(matches!(v.as_slice(), [Verdict::Refuse(_)]));
        // A master leaving by itself is forgotten.
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 0, 0), t0);
        assert_eq!(r.all().count(), 0);
        // Ports that went away stop receiving; no receiver, no master.
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        r.retain_ports(&|p| p != "pay2");
        assert_eq!(r.all().count(), 0);
    }

    #[test]
    fn with_the_backups_skew_known_a_dead_master_is_spoken_for_before_its_advert_is_overdue() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Remotes::default();
        let dead = |_: &str, _: MacAddr| true;
        // The backup's priority 100: Skew_Time 60.9 ms at 0.1 s.
        let skew = |m: &RemoteMaster| timing::skew_time(m.advert.version, 100, m.advert.interval_cs);
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0);
        // Overdue at 110 ms; 60.9 - 20 ms ahead of that is 69.1 ms.
        assert!(r.due(&dead, &skew, t0 + ms(69)).0.is_empty());
        let (v, _) = r.due(&dead, &skew, t0 + ms(70));
        assert!(matches!(v.as_slice(), [Verdict::Speak(_)]), "{v:?}");
        // It advertises again (alive: only the echo was cut): from now on
        // it is spoken for only once its adverts are overdue.
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), t0 + ms(100));
        assert!(r.due(&dead, &skew, t0 + ms(160)).0.is_empty());
        let (v, _) = r.due(&dead, &skew, t0 + ms(211));
        assert!(matches!(v.as_slice(), [Verdict::Speak(_)]), "{v:?}");
        // The watched chassis answers again: early again. Spoken for early,
        // then heard only 830 ms later (dead, back with its chassis): that
        // says nothing against it, early again at once.
        r.peer_up();
        let back = t0 + ms(1000);
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), back);
        let (v, _) = r.due(&dead, &skew, back + ms(70));
        assert!(matches!(v.as_slice(), [Verdict::Speak(_)]), "{v:?}");
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), back + ms(900));
        let (v, _) = r.due(&dead, &skew, back + ms(970));
        assert!(matches!(v.as_slice(), [Verdict::Speak(_)]), "{v:?}");
        // Heard again within an interval of an early advert: not early
        // until NOT_EARLY_FOR has passed (or a peer comes back).
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), back + ms(1000));
        assert!(r.due(&dead, &skew, back + ms(1070)).0.is_empty());
        let _ = r.due(&dead, &skew, back + ms(1111));
        let later = back + ms(1111) + NOT_EARLY_FOR;
        r.observe(delivery("pay2", "224.0.0.18"), &advert(Version::V3, 150, 0), later);
        assert!(matches!(r.due(&dead, &skew, later + ms(70)).0.as_slice(), [Verdict::Speak(_)]));
    }

    #[test]
    fn local_priorities_are_remembered_per_router_and_port() {
        let t0 = Instant::now();
        let mut m = Masters::default();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let (src, group) = ("192.168.10.11".parse().unwrap(), "224.0.0.18".parse().unwrap());
        m.observe(origin(mac, src, group), &advert(Version::V3, 120, 0), t0);
        let key = RouterKey::new("prod", 51, src);
        assert_eq!(m.priority(&key, "pay1"), Some(120));
        assert_eq!(m.priority(&key, "pay2"), None);
        m.observe(origin(mac, src, group), &advert(Version::V3, 0, 0), t0);
        assert_eq!(m.priority(&key, "pay1"), Some(120), "leaving keeps what it will be as a backup");
        m.retain_ports(&|p| p != "pay1");
        assert_eq!(m.priority(&key, "pay1"), None);
    }

    #[test]
    fn unicast_destinations_accumulate() {
        let t0 = Instant::now();
        let mut m = Masters::default();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let src: IpAddr = "192.168.10.11".parse().unwrap();
        for peer in ["192.168.10.12", "192.168.10.13"] {
            m.observe(origin(mac, src, peer.parse().unwrap()), &advert(Version::V3, 150, 0), t0);
        }
        assert_eq!(m.all().next().unwrap().dsts.len(), 2);
    }
}

//! Peer liveness: an agent watches, directly over the underlay, the
//! chassis that host the VRRP masters its local backups listen to, so a
//! dead chassis is known in tens of milliseconds without the controller.
//!
//! Echo in the style of BFD (RFC 5880/5881, much reduced): the watcher sends
//! a request to each watched peer every `interval`; the peer's agent answers
//! it at once. A peer that answered once and then leaves `multiplier`
//! requests in a row unanswered (each given half an interval) is down: 25
//! to 35 ms after it died at the defaults; a flap that swallows fewer
//! requests is not seen. The next valid answer brings it up. A peer that never
//! answered is unknown, never down (an agent without this, or a filter,
//! only costs the speed-up).
//!
//! Only the pairs the VRRP view needs are watched (see
//! [`crate::core::AgentCore::peers_wanted`]): never a full mesh.
//!
//! Authentication: a reply counts only when it comes from the peer's
//! underlay address and port, names that peer, and echoes the 64-bit
//! random nonce of one of the last [`OUTSTANDING`] requests; someone off
//! the path cannot forge one. What a forgery could do is keep a dead peer
//! up, which only falls back to the controller's verdict: a peer is never
//! made down by anything but silence.
//!
//! [`PeerWatch`] is the detector, in explicit time; the socket and the
//! timer are in [`run`].
//!
//! ```text
//!  0      4   5    6      8          16         24   25
//!  "VCPL" ver kind  0  0  nonce (u64) sent_us    len  chassis name (1..=63)
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

const MAGIC: &[u8; 4] = b"VCPL";
const VERSION: u8 = 1;
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
const HEADER: usize = 25;
/// Longest chassis name.
const MAX_NAME: usize = 63;
/// Requests a reply may answer (later replies to older ones are ignored).
pub const OUTSTANDING: usize = 8;

/// The default UDP port of the echo.
pub const DEFAULT_PORT: u16 = 4797;

/// How the detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// Off: no socket, nothing watched, nothing answered.
    pub enabled: bool,
    pub port: u16,
    pub interval: Duration,
    pub multiplier: u32,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig { enabled: true, port: DEFAULT_PORT, interval: Duration::from_millis(10), multiplier: 3 }
    }
}

impl PeerConfig {
    /// Time from a peer's death to its being down, at most (at least one
    /// interval less).
    pub fn detection(&self) -> Duration {
        self.interval * self.multiplier + self.interval / 2
    }
}

/// One echo datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub reply: bool,
    pub nonce: u64,
    /// The sender's clock (request), echoed (reply).
    pub sent_us: u64,
    /// The sender: the watcher (request) or the watched (reply).
    pub chassis: String,
}

impl Echo {
    pub fn encode(&self) -> Vec<u8> {
        let name = self.chassis.as_bytes();
        let name = name.get(..name.len().min(MAX_NAME)).unwrap_or_default();
        let mut b = Vec::with_capacity(HEADER + name.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(if self.reply { REPLY } else { REQUEST });
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b.extend_from_slice(&self.sent_us.to_be_bytes());
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        b
    }

    /// Decodes `b`; `None` for anything that is not exactly an echo of this
    /// version (never panics).
    pub fn decode(b: &[u8]) -> Option<Echo> {
        let magic = b.get(..4)?;
        let version = *b.get(4)?;
        let kind = *b.get(5)?;
        if magic != MAGIC || version != VERSION || !(kind == REQUEST || kind == REPLY) {
            return None;
        }
        let nonce = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        let sent_us = u64::from_be_bytes(b.get(16..24)?.try_into().ok()?);
        let len = usize::from(*b.get(24)?);
        if len == 0 || len > MAX_NAME || b.len() != HEADER + len {
            return None;
        }
        let chassis = std::str::from_utf8(b.get(HEADER..)?).ok()?.to_string();
        Some(Echo { reply: kind == REPLY, nonce, sent_us, chassis })
    }
}

/// A peer turned down or up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub chassis: String,
    pub down: bool,
    /// Its last valid answer (down), or how long it had been down (up).
    pub silent: Duration,
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    /// (number, nonce) of the last requests, newest last.
    outstanding: VecDeque<(u64, u64)>,
    /// Requests sent so far (the next one's number).
    sent: u64,
    /// The newest request answered, and when.
    answered: Option<(u64, Instant)>,
    /// When the newest request was sent.
    last_sent: Option<Instant>,
    down_since: Option<Instant>,
}

/// The detector: which peers to watch, what to send, what they answered.
#[derive(Debug)]
pub struct PeerWatch {
    cfg: PeerConfig,
    me: String,
    peers: BTreeMap<String, Peer>,
    /// Nonce generator state (splitmix64 from a random seed).
    nonce: u64,
    /// Answers sent per requester address in the current tick (bounded).
    answered: HashMap<IpAddr, u32>,
    /// When requests are next due.
    next_send: Option<Instant>,
}

/// Answers per requester and interval: a watcher sends one; a few more
/// allow for timer drift, the rest are dropped (no reflection flood).
const ANSWERS_PER_INTERVAL: u32 = 4;
/// Requesters remembered for rate limiting (an interval's worth).
const MAX_REQUESTERS: usize = 4096;

impl PeerWatch {
    pub fn new(cfg: PeerConfig, me: &str, seed: u64) -> PeerWatch {
        PeerWatch {
            cfg,
            me: me.to_string(),
            peers: BTreeMap::new(),
            nonce: seed,
            answered: HashMap::new(),
            next_send: None,
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce = self.nonce.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.nonce;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Watches exactly `wanted` (chassis -> underlay address): new ones
    /// start unknown, gone ones are forgotten, a changed address restarts.
    pub fn set_peers(&mut self, wanted: &BTreeMap<String, IpAddr>) {
        self.peers.retain(|c, p| wanted.get(c).is_some_and(|ip| *ip == p.addr.ip()));
        for (c, ip) in wanted {
            if c != &self.me && !self.peers.contains_key(c) {
                let addr = SocketAddr::new(*ip, self.cfg.port);
                self.peers.insert(
                    c.clone(),
                    Peer {
                        addr,
                        outstanding: VecDeque::new(),
                        sent: 0,
                        answered: None,
                        last_sent: None,
                        down_since: None,
                    },
                );
            }
        }
    }

    /// Every half `interval`: the requests to send (every other call), and
    /// peers that went down. A request counts as unanswered half an
    /// interval after it was sent (answers take well under that), so a
    /// dead peer is down 25 to 35 ms after it died at the defaults.
    pub fn on_tick(&mut self, now: Instant, now_us: u64) -> (Vec<(SocketAddr, Vec<u8>)>, Vec<Change>) {
        self.answered.clear();
        let multiplier = u64::from(self.cfg.multiplier);
        let grace = self.cfg.interval / 2;
        let send = self.next_send.is_none_or(|t| now >= t);
        if send {
            self.next_send = Some(now + self.cfg.interval * 3 / 4);
        }
        let mut sends = Vec::with_capacity(if send { self.peers.len() } else { 0 });
        let mut changes = Vec::new();
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for c in names {
            let nonce = self.next_nonce();
            let me = self.me.clone();
            let Some(p) = self.peers.get_mut(&c) else { continue };
            if let Some((number, at)) = p.answered
                && p.down_since.is_none()
            {
                // Requests after the newest answered one, but the newest if
                // it is still within its grace.
                let after = p.sent.saturating_sub(number + 1);
                let fresh = p.last_sent.is_some_and(|s| now.saturating_duration_since(s) < grace);
                if after.saturating_sub(u64::from(fresh && after > 0)) >= multiplier {
                    p.down_since = Some(now);
                    changes.push(Change { chassis: c.clone(), down: true, silent: now.saturating_duration_since(at) });
                }
            }
            if !send {
                continue;
            }
            if p.outstanding.len() == OUTSTANDING {
                p.outstanding.pop_front();
            }
            p.outstanding.push_back((p.sent, nonce));
            p.sent += 1;
            p.last_sent = Some(now);
            sends.push((p.addr, Echo { reply: false, nonce, sent_us: now_us, chassis: me }.encode()));
        }
        (sends, changes)
    }

    /// A datagram from `from`: the answer to send (a request), or the peer
    /// that came up (a valid reply). Anything else is ignored.
    pub fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) -> (Option<Vec<u8>>, Option<Change>) {
        let Some(e) = Echo::decode(data) else { return (None, None) };
        if !e.reply {
            if self.answered.len() >= MAX_REQUESTERS && !self.answered.contains_key(&from.ip()) {
                return (None, None);
            }
            let n = self.answered.entry(from.ip()).or_default();
            *n += 1;
            if *n > ANSWERS_PER_INTERVAL {
                return (None, None);
            }
            let reply = Echo { reply: true, nonce: e.nonce, sent_us: e.sent_us, chassis: self.me.clone() };
            return (Some(reply.encode()), None);
        }
        let Some(p) = self.peers.get_mut(&e.chassis) else { return (None, None) };
        let Some(&(number, _)) = p.outstanding.iter().find(|(_, n)| *n == e.nonce).filter(|_| from == p.addr) else {
            return (None, None);
        };
        p.outstanding.retain(|(_, n)| *n != e.nonce);
        if p.answered.is_none_or(|(newest, _)| number > newest) {
            p.answered = Some((number, now));
        }
        let came_up = p.down_since.take().map(|since| Change {
            chassis: e.chassis.clone(),
            down: false,
            silent: now.saturating_duration_since(since),
        });
        (None, came_up)
    }

    /// Whether `chassis` is watched and down.
    pub fn is_down(&self, chassis: &str) -> bool {
        self.peers.get(chassis).is_some_and(|p| p.down_since.is_some())
    }

    /// The peers watched.
    pub fn watched(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }
}

/// The provisional-owner notices ([`crate::provisional`]) that share the
/// echo's socket: those received go to `inbound` (unchecked), those in
/// `outbound` are sent.
#[derive(Debug)]
pub struct Notices {
    pub inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    pub outbound: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

/// Runs the echo on `underlay:port` until `wanted` closes: answers every
/// peer's requests, watches the peers `wanted` names, and sends each change
/// to `changes`; carries the `notices` too.
pub async fn run(
    cfg: PeerConfig,
    me: String,
    underlay: IpAddr,
    mut wanted: watch::Receiver<BTreeMap<String, IpAddr>>,
    changes: mpsc::UnboundedSender<Change>,
    notices: Notices,
) -> std::io::Result<()> {
    let Notices { inbound, mut outbound } = notices;
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(underlay, cfg.port)).await?;
    let seed = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one((std::process::id(), Instant::now()))
    };
    let mut w = PeerWatch::new(cfg, &me, seed);
    w.set_peers(&wanted.borrow_and_update());
    let mut tick = tokio::time::interval(cfg.interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; crate::provisional::MAX_LEN + 1];
    loop {
        tokio::select! {
            r = wanted.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                w.set_peers(&wanted.borrow_and_update());
            }
            _ = tick.tick() => {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                let (sends, downs) = w.on_tick(Instant::now(), now_us);
                for (to, b) in sends {
                    // A send that fails (no route while the underlay is down)
                    // is a lost request: silence is what counts.
                    let _ = sock.try_send_to(&b, to);
                }
                for c in downs {
                    if changes.send(c).is_err() {
                        return Ok(());
                    }
                }
            }
            Some((to, b)) = outbound.recv() => {
                let _ = sock.try_send_to(&b, to);
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let datagram = buf.get(..n).unwrap_or_default();
                if datagram.starts_with(crate::provisional::MAGIC) {
                    // Checked by the driver; dropped when it is behind.
                    let _ = inbound.try_send((from, datagram.to_vec()));
                    continue;
                }
                let (answer, up) = w.on_datagram(from, buf.get(..n).unwrap_or_default(), Instant::now());
                if let Some(a) = answer {
                    let _ = sock.try_send_to(&a, from);
                }
                if let Some(c) = up
                    && changes.send(c).is_err()
                {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `a` watches `b`; `b` answers. Returns both.
    fn pair() -> (PeerWatch, PeerWatch) {
        let mut a = PeerWatch::new(PeerConfig::default(), "hv1", 1);
        let b = PeerWatch::new(PeerConfig::default(), "hv2", 2);
        a.set_peers(&BTreeMap::from([("hv2".to_string(), ip("10.0.0.2")), ("hv1".to_string(), ip("10.0.0.1"))]));
        (a, b)
    }

    fn from(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), DEFAULT_PORT)
    }

    /// One interval (two ticks): `a` sends, `b` answers when `answer`, `a`
    /// takes the reply; half an interval later `a` only checks.
    fn round(a: &mut PeerWatch, b: &mut PeerWatch, t: Instant, answer: bool) -> Vec<Change> {
        let (sends, mut changes) = a.on_tick(t, 0);
        assert_eq!(sends.len(), 1, "only hv2 is watched, never itself");
        // b's tick too (its answers are counted per tick).
        let _ = b.on_tick(t, 0);
        if answer {
            let (reply, _) = b.on_datagram(from("10.0.0.1"), &sends[0].1, t);
            let (none, up) = a.on_datagram(from("10.0.0.2"), &reply.unwrap(), t + MS);
            assert!(none.is_none());
            changes.extend(up);
        }
        let (none, later) = a.on_tick(t + 5 * MS, 0);
        assert!(none.is_empty(), "one request per interval");
        changes.extend(later);
        changes
    }

    #[test]
    fn down_after_the_multiplier_of_silent_intervals_and_up_at_the_next_answer() {
        let (mut a, mut b) = pair();
        let t0 = Instant::now();
        // Unknown until it answered: silence from the start is not down.
        for i in 0..10 {
            assert!(round(&mut a, &mut b, t0 + 10 * MS * i, false).is_empty());
        }
        assert!(!a.is_down("hv2"));
        let t1 = t0 + 100 * MS;
        assert!(round(&mut a, &mut b, t1, true).is_empty());
        // The requests of +10, +20, +30 go unanswered: down at +35, half
        // an interval after the third, not before.
        assert!(round(&mut a, &mut b, t1 + 10 * MS, false).is_empty());
        assert!(round(&mut a, &mut b, t1 + 20 * MS, false).is_empty(), "two unanswered requests are not three");
        let down = round(&mut a, &mut b, t1 + 30 * MS, false);
        assert_eq!(down.len(), 1);
        assert!(down[0].down && down[0].chassis == "hv2" && down[0].silent == 34 * MS, "{down:?}");
        assert!(a.is_down("hv2"));
        assert!(round(&mut a, &mut b, t1 + 40 * MS, false).is_empty(), "said once");
        assert!(round(&mut a, &mut b, t1 + 50 * MS, false).is_empty());
        let up = round(&mut a, &mut b, t1 + 60 * MS, true);
        assert!(up.len() == 1 && !up[0].down && up[0].silent == 26 * MS, "{up:?}");
        assert!(!a.is_down("hv2"));
        // A flap that swallows two requests goes unseen, however the ticks fall.
        let t2 = t1 + 100 * MS;
        for i in 0..20 {
            let answer = !(5..7).contains(&i) && !(12..14).contains(&i);
            assert!(round(&mut a, &mut b, t2 + 10 * MS * i, answer).is_empty(), "round {i}");
        }
    }

    #[test]
    fn only_the_right_answers_count() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let (sends, _) = a.on_tick(t, 7);
        let (reply, _) = b.on_datagram(from("10.0.0.1"), &sends[0].1, t);
        let reply = reply.unwrap();
        let e = Echo::decode(&reply).unwrap();
        assert!(e.reply && e.chassis == "hv2" && e.sent_us == 7);
        // From another address, naming another chassis, an unknown nonce,
        // a request instead of a reply, garbage: nothing.
        let other = |f: &dyn Fn(&mut Echo)| {
            let mut e = e.clone();
            f(&mut e);
            e.encode()
        };
        for (src, data) in [
            (from("10.0.0.9"), reply.clone()),
            (SocketAddr::new(ip("10.0.0.2"), 9), reply.clone()),
            (from("10.0.0.2"), other(&|e| e.chassis = "hv3".into())),
            (from("10.0.0.2"), other(&|e| e.nonce ^= 1)),
            (from("10.0.0.2"), reply[..reply.len() - 1].to_vec()),
            (from("10.0.0.2"), b"VCPL".to_vec()),
        ] {
            assert_eq!(a.on_datagram(src, &data, t), (None, None));
        }
        // Never answered yet, so silence is still not down.
        for i in 1..10 {
            let _ = a.on_tick(t + 10 * MS * i, 0);
        }
        assert!(!a.is_down("hv2"));
        // The real answer counts once; the same again is ignored.
        let _ = a.on_datagram(from("10.0.0.2"), &reply, t);
        assert_eq!(a.on_datagram(from("10.0.0.2"), &reply, t).1, None);
    }

    #[test]
    fn requests_are_answered_within_a_bound_per_requester() {
        let mut b = PeerWatch::new(PeerConfig::default(), "hv2", 2);
        let req = Echo { reply: false, nonce: 1, sent_us: 0, chassis: "hv1".into() }.encode();
        let answered = (0..100).filter(|_| b.on_datagram(from("10.0.0.1"), &req, Instant::now()).0.is_some()).count();
        assert_eq!(answered, ANSWERS_PER_INTERVAL as usize);
        assert!(b.on_datagram(from("10.0.0.3"), &req, Instant::now()).0.is_some(), "another requester");
        let _ = b.on_tick(Instant::now(), 0);
        assert!(b.on_datagram(from("10.0.0.1"), &req, Instant::now()).0.is_some(), "the next interval");
    }

    #[test]
    fn a_peer_no_longer_wanted_or_moved_starts_over() {
        let (mut a, mut b) = pair();
        let t = Instant::now();
        let _ = round(&mut a, &mut b, t, true);
        for i in 1..=3 {
            let _ = round(&mut a, &mut b, t + 10 * MS * i, false);
        }
        assert!(a.is_down("hv2"));
        a.set_peers(&BTreeMap::from([("hv2".to_string(), ip("10.0.0.22"))]));
        assert!(!a.is_down("hv2"), "a new address: unknown again");
        a.set_peers(&BTreeMap::new());
        assert_eq!(a.watched().count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics_and_round_trips(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
                                                 nonce: u64, sent_us: u64, reply: bool, name in "[a-z0-9.-]{1,63}") {
            let _ = Echo::decode(&data);
            let e = Echo { reply, nonce, sent_us, chassis: name };
            proptest::prop_assert_eq!(Echo::decode(&e.encode()), Some(e));
        }
    }
}

//! Chassis liveness from heartbeats.
//!
//! Each agent sends a small UDP datagram every 50 ms to the controller's UDP
//! port (the same number as its HTTP port). A chassis not heard for the
//! timeout (150 ms: three heartbeats) is declared dead: its record gets
//! `liveness.alive = false` through the normal guarded write, so every agent
//! sharing a VPC with it learns it from its watch stream within milliseconds.
//! The first heartbeat afterwards declares it alive again.
//!
//! Why UDP every 50 ms rather than store leases: a lease needs a keep-alive
//! round trip through the store and expires in whole seconds; the platform
//! assistance this feeds is only worth having well below VRRP's own
//! Master_Down_Interval (0.36 s at `advert_int 0.1`). A heartbeat costs one
//! 20-byte datagram; 1000 chassis make 20 000 small datagrams a second.
//!
//! A controller decides only for the chassis it hears from in its lifetime:
//! a chassis that was alive before a restart and is never heard again stays
//! "alive" (no false deaths when several controllers share a store and each
//! agent talks to one of them). Declaring a chassis dead is a hint, not a
//! verdict: agents only act on it once the VRRP adverts of a master on that
//! chassis have stopped as well (see the agent's `assist` module), so an
//! agent that merely restarts never causes a takeover.
//!
//! Under a flood of junk on the heartbeat port the decisions must stay
//! right: a live chassis may never be declared dead because its heartbeats
//! were lost among junk. So, with [`LivenessConfig::socket_filter`], the
//! kernel drops every datagram without the heartbeat's magic before it is
//! queued ([`HEARTBEAT_FILTER`]); the socket is read by a thread of its own
//! in batches (`recvmmsg`, 256 datagrams a call) from a large receive queue;
//! the work per datagram is a few comparisons (no allocation, no lock, no
//! log line; counters are added up per batch); a chassis' heartbeats are
//! taken at most once per [`LivenessConfig::min_gap`]; silences are judged
//! only once the queue has been read to its end ([`Backlog`]); and, with
//! [`SourcePolicy::Underlay`], only heartbeats from the chassis' registered
//! underlay address count. What the kernel drops (refused by the filter, or
//! the queue full) is counted in `vipcast_controller_heartbeat_socket_drops_total`.
//! [`LivenessConfig::hardened`] is what `vipcast controller` runs with.
//!
//! The decisions are [`classify`]'s (what a datagram is) and [`Tracker`]'s
//! (who was heard when): no socket, no clock (the time of each call is an
//! argument), so they are tested in virtual time. [`run`] is their driver:
//! it reads the socket and the clock, and writes the transitions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use vipcast_model::command;
use vipcast_model::{Command, State};

use crate::metrics::HeartbeatLabels;
use crate::{Controller, now_ms};

pub use vipcast_api::heartbeat::{HeartbeatError, MAGIC, VERSION, decode_heartbeat, encode_heartbeat};

/// Which heartbeats count for a chassis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePolicy {
    /// Only those sent from the chassis record's `underlay_ip` (compared
    /// canonically: `::ffff:10.0.0.1` is `10.0.0.1`); others are counted
    /// `wrong_source` and ignored. What `vipcast controller` runs with.
    Underlay,
    /// From any address: for agents that reach the controller from another
    /// address than their underlay one (through NAT, a management network,
    /// or loopback in tests).
    #[default]
    Any,
}

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// Silence after which a chassis is declared dead.
    pub timeout: Duration,
    /// How often silences are checked.
    pub check_every: Duration,
    /// Which source addresses count (default [`SourcePolicy::Any`]).
    pub source: SourcePolicy,
    /// A chassis' heartbeat closer than this to the last one taken is
    /// counted `too_soon` and goes no further (agents send one every 50 ms;
    /// losing one this close to another loses nothing). Default 5 ms.
    pub min_gap: Duration,
    /// The socket's receive buffer (`SO_RCVBUFFORCE` when allowed, else
    /// `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`), bytes.
    /// Default 16 MiB.
    pub recv_buffer: usize,
    /// Attach [`HEARTBEAT_FILTER`]: datagrams that are not heartbeats are
    /// dropped by the kernel (counted in the socket's drops, not as
    /// `malformed`). Default off.
    pub socket_filter: bool,
    /// The heartbeat secret: only heartbeats signed with the chassis' key
    /// derived from it, with a sequence never taken before, count (see
    /// [`crate::heartbeat_auth`]; others are counted `unsigned`, `bad_tag`,
    /// `replayed`). Default none: every well-formed heartbeat counts.
    pub secret: Option<[u8; vipcast_tls::heartbeat::LEN]>,
}

impl LivenessConfig {
    /// Heartbeats from the underlay address only, junk dropped in the
    /// kernel: what `vipcast controller` runs with.
    pub fn hardened() -> LivenessConfig {
        LivenessConfig { source: SourcePolicy::Underlay, socket_filter: true, ..Default::default() }
    }
}

/// A classic BPF socket filter passing only datagrams that can be
/// heartbeats: at least 14 bytes of payload, starting with [`MAGIC`]. On a
/// UDP socket the program sees the UDP header first (8 bytes).
///
/// ```text
///  0  ld  len                 ; UDP header + payload
///  1  jge #22        -> 2 else 5
///  2  ld  [8]                 ; the payload's first 4 bytes
///  3  jeq #"VCHB"    -> 4 else 5
///  4  ret #0xffffffff         ; accept
///  5  ret #0                  ; drop
/// ```
pub const HEARTBEAT_FILTER: [vipcast_sys::BpfInsn; 6] = {
    use vipcast_sys::BpfInsn as I;
    [
        I { code: 0x80, jt: 0, jf: 0, k: 0 },
        I { code: 0x35, jt: 0, jf: 3, k: 22 },
        I { code: 0x20, jt: 0, jf: 0, k: 8 },
        I { code: 0x15, jt: 0, jf: 1, k: u32::from_be_bytes(*MAGIC) },
        I { code: 0x06, jt: 0, jf: 0, k: u32::MAX },
        I { code: 0x06, jt: 0, jf: 0, k: 0 },
    ]
};

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            timeout: Duration::from_millis(150),
            check_every: Duration::from_millis(5),
            source: SourcePolicy::Any,
            min_gap: Duration::from_millis(5),
            recv_buffer: 16 * 1024 * 1024,
            socket_filter: false,
            secret: None,
        }
    }
}

/// What a datagram on the heartbeat port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Not a heartbeat.
    Malformed,
    /// A heartbeat naming no registered chassis.
    UnknownChassis,
    /// A heartbeat of a registered chassis, from another address than its
    /// underlay one (under [`SourcePolicy::Underlay`]).
    WrongSource,
    /// A heartbeat to take: from `chassis`, which the state records alive or not.
    Heartbeat { chassis: &'a str, recorded_alive: bool },
}

/// What `datagram`, received from `from`, is to the liveness of the
/// chassis in `state`.
pub fn classify<'a>(datagram: &'a [u8], from: Option<IpAddr>, state: &State, policy: SourcePolicy) -> Datagram<'a> {
    let Ok(vipcast_api::heartbeat::Heartbeat { chassis: name, .. }) = vipcast_api::heartbeat::parse(datagram) else {
        return Datagram::Malformed;
    };
    let Some(ch) = state.chassis.get(name) else { return Datagram::UnknownChassis };
    if policy == SourcePolicy::Underlay && from.map(|a| a.to_canonical()) != Some(ch.underlay_ip.to_canonical()) {
        return Datagram::WrongSource;
    }
    Datagram::Heartbeat { chassis: name, recorded_alive: ch.liveness.is_some_and(|l| l.alive) }
}

/// A change of a chassis' liveness to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub chassis: String,
    pub alive: bool,
    /// When its last heartbeat before this decision arrived (ms since the
    /// Unix epoch, the controller's clock).
    pub last_heard_ms: u64,
    /// How long it had been silent (zero for a chassis coming back).
    pub silent: Duration,
}

impl Transition {
    /// The command recording it.
    pub fn command(&self) -> Command {
        Command::SetLiveness { chassis: self.chassis.clone(), alive: self.alive, last_heard_ms: self.last_heard_ms }
    }
}

/// Who was heard when: the liveness decisions, with no I/O and no clock.
///
/// Call [`Tracker::heard`] for each heartbeat of a registered chassis and
/// [`Tracker::due`] every so often, both with the time of the call; write
/// the transitions they return. The recorded liveness can change under the
/// tracker (another controller, a failed write), so `heard` is told what the
/// state says, and a death from `due` is written only if the state still
/// records the chassis alive when it is written.
#[derive(Debug)]
pub struct Tracker {
    timeout: Duration,
    min_gap: Duration,
    /// Chassis -> its last heartbeat (monotonic, and ms on the wall clock).
    heard: HashMap<String, (Instant, u64)>,
}

/// What [`Tracker::offer`] made of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Heard {
    /// Taken, with the transition to write if there is one.
    Taken(Option<Transition>),
    /// Within the minimum gap of the last one taken: nothing to learn.
    TooSoon,
}

impl Tracker {
    /// A tracker declaring chassis dead after `timeout` of silence.
    pub fn new(timeout: Duration) -> Tracker {
        Tracker { timeout, min_gap: Duration::ZERO, heard: HashMap::new() }
    }

    /// With [`Tracker::offer`] taking at most one heartbeat per chassis per `gap`.
    pub fn with_min_gap(mut self, gap: Duration) -> Tracker {
        self.min_gap = gap;
        self
    }

    /// A heartbeat from `chassis` at `now`, taken as by [`Tracker::heard`]
    /// unless the last one taken is less than the minimum gap old.
    pub fn offer(&mut self, chassis: &str, recorded_alive: bool, now: Instant, now_ms: u64) -> Heard {
        match self.heard.get(chassis) {
            Some((t, _)) if now.saturating_duration_since(*t) < self.min_gap => Heard::TooSoon,
            _ => Heard::Taken(self.heard(chassis, recorded_alive, now, now_ms)),
        }
    }

    /// A heartbeat from `chassis` at `now` (`now_ms` on the wall clock),
    /// which the state records as `recorded_alive` or not: declares it
    /// alive unless the state already says so, with the previous heartbeat
    /// as the last one heard (this one, if it is the first since it was
    /// last declared silent).
    pub fn heard(&mut self, chassis: &str, recorded_alive: bool, now: Instant, now_ms: u64) -> Option<Transition> {
        let prev = match self.heard.get_mut(chassis) {
            Some(last) => Some(std::mem::replace(last, (now, now_ms))),
            None => self.heard.insert(chassis.to_string(), (now, now_ms)),
        };
        (!recorded_alive).then(|| Transition {
            chassis: chassis.to_string(),
            alive: true,
            last_heard_ms: prev.map_or(now_ms, |p| p.1),
            silent: Duration::ZERO,
        })
    }

    /// The chassis silent for longer than the timeout at `now`, as deaths,
    /// forgotten here (their next heartbeat counts as a first one). The
    /// caller writes each one the state still records alive.
    pub fn due(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        self.heard.retain(|name, (t, ms)| {
            let silent = now.saturating_duration_since(*t);
            if silent <= self.timeout {
                return true;
            }
            out.push(Transition { chassis: name.clone(), alive: false, last_heard_ms: *ms, silent });
            false
        });
        out
    }
}

/// Whether the socket's queue has been read to the end: silences are
/// judged only then, since a heartbeat may still be waiting in the queue —
/// unless it has been behind for longer than the timeout, when deaths are
/// decided all the same (later by that much at most).
#[derive(Debug, Default, Clone, Copy)]
pub struct Backlog {
    behind_since: Option<Instant>,
}

impl Backlog {
    /// A read at `now`: `full` if it took as many datagrams as it could
    /// (more may be queued).
    pub fn received(&mut self, full: bool, now: Instant) {
        match (full, self.behind_since) {
            (false, _) => self.behind_since = None,
            (true, None) => self.behind_since = Some(now),
            (true, Some(_)) => {}
        }
    }

    /// Whether silences may be judged at `now`.
    pub fn may_judge(&self, now: Instant, timeout: Duration) -> bool {
        self.behind_since.is_none_or(|t| now.saturating_duration_since(t) > timeout)
    }
}

/// Receives heartbeats on `sock` and keeps chassis liveness, until the
/// socket fails.
///
/// ```text
///  thread "vipcast-heartbeats":
///   recvmmsg(256) ──► classify ──► Tracker::offer ──► alive to write? ─┐
///   every check_every ──────────► Tracker::due ───► recorded alive? ──┴─► pending (latest per chassis)
///  this task: pending ──────────────────────────────────────────────────► Controller::write
/// ```
/// The receiving thread never waits for the store: a write in progress
/// cannot make it fall behind. It stops when this future is dropped.
pub async fn run(c: Arc<Controller>, sock: UdpSocket, cfg: LivenessConfig) -> std::io::Error {
    let sock = match sock.into_std() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let set_up = sock.set_nonblocking(false).and_then(|()| vipcast_sys::udp::set_recv_timeout(&sock, cfg.check_every));
    if let Err(e) = set_up {
        return e;
    }
    if cfg.socket_filter
        && let Err(e) = vipcast_sys::attach_filter(&sock, &HEARTBEAT_FILTER)
    {
        return e;
    }
    if vipcast_sys::udp::set_recv_buffer(&sock, cfg.recv_buffer, true).is_err()
        && let Err(e) = vipcast_sys::udp::set_recv_buffer(&sock, cfg.recv_buffer, false)
    {
        tracing::warn!(error = %e, "heartbeat socket: setting the receive buffer");
    }
    let shared = Arc::new(Shared::default());
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let (c2, s2) = (c.clone(), shared.clone());
    let spawned = std::thread::Builder::new().name("vipcast-heartbeats".into()).spawn(move || {
        let e = receive(&c2, &sock, cfg, &s2);
        let _ = done_tx.send(e);
        s2.wake.notify_one();
    });
    if let Err(e) = spawned {
        return e;
    }
    let _stop = StopOnDrop(shared.clone());
    loop {
        tokio::select! {
            () = shared.wake.notified() => write_pending(&c, &shared).await,
            r = &mut done => {
                write_pending(&c, &shared).await;
                return r.unwrap_or_else(|_| std::io::Error::other("the heartbeat thread panicked"));
            }
        }
    }
}

/// What the receiving thread hands to the writing task.
#[derive(Debug, Default)]
struct Shared {
    /// Transitions to write, the latest per chassis.
    pending: Mutex<HashMap<String, Transition>>,
    wake: Notify,
    stop: AtomicBool,
}

impl Shared {
    fn push(&self, t: Transition) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(t.chassis.clone(), t);
        self.wake.notify_one();
    }
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Chassis whose liveness one transaction writes at most (etcd takes 128
/// operations in a transaction by default).
const LIVENESS_BATCH: usize = 100;

/// Writes the pending transitions the state does not already record, up to
/// [`LIVENESS_BATCH`] chassis a transaction: a region coming up (10,000
/// chassis heard for the first time) or a rack going dark is a few writes,
/// not one per chassis.
async fn write_pending(c: &Controller, shared: &Shared) {
    let batch = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let state = c.cache.current().state.clone();
    let todo: Vec<Transition> = batch
        .into_values()
        .filter(|t| {
            let recorded = state.chassis.get(&t.chassis).map(|ch| ch.liveness.is_some_and(|l| l.alive));
            recorded.is_some_and(|alive| alive != t.alive)
        })
        .collect();
    for chunk in todo.chunks(LIVENESS_BATCH) {
        set(c, chunk).await;
    }
}

/// The heartbeat counters, taken from the registry once.
struct Counters {
    ok: Counter,
    malformed: Counter,
    unknown: Counter,
    wrong_source: Counter,
    too_soon: Counter,
    unsigned: Counter,
    bad_tag: Counter,
    replayed: Counter,
    stale: Counter,
}

impl Counters {
    fn new(c: &Controller) -> Counters {
        let get = |result| c.metrics.heartbeats.get_or_create(&HeartbeatLabels { result }).clone();
        Counters {
            ok: get("ok"),
            malformed: get("malformed"),
            unknown: get("unknown_chassis"),
            wrong_source: get("wrong_source"),
            too_soon: get("too_soon"),
            unsigned: get("unsigned"),
            bad_tag: get("bad_tag"),
            replayed: get("replayed"),
            stale: get("stale"),
        }
    }
}

/// The receiving loop (on its own thread): until the socket fails or the
/// driver is dropped.
fn receive(c: &Controller, sock: &std::net::UdpSocket, cfg: LivenessConfig, shared: &Shared) -> std::io::Error {
    let mut tracker = Tracker::new(cfg.timeout).with_min_gap(cfg.min_gap);
    let mut auth = crate::heartbeat_auth::HeartbeatAuth::new(cfg.secret);
    // A heartbeat is at most 14 + 63 bytes (names are at most 63 long),
    // 32 more when signed: a longer datagram is not one.
    let mut batch = vipcast_sys::udp::RecvBatch::new(256, 128);
    let counters = Counters::new(c);
    let mut drops = vipcast_sys::udp::socket_drops(sock).unwrap_or(0);
    let mut next_check = Instant::now() + cfg.check_every;
    let mut backlog = Backlog::default();
    while !shared.stop.load(Ordering::Relaxed) {
        match batch.recv(sock) {
            Ok(n) => {
                backlog.received(n == batch.slots(), Instant::now());
                let snap = c.cache.current();
                let (now, wall) = (Instant::now(), now_ms());
                let mut counts = [0u64; 9];
                for d in (0..n).filter_map(|i| batch.get(i)) {
                    let kind = if d.truncated {
                        Datagram::Malformed
                    } else {
                        classify(d.data, d.from.map(|a| a.ip()), &snap.state, cfg.source)
                    };
                    let slot = match kind {
                        Datagram::Malformed => 1,
                        Datagram::UnknownChassis => 2,
                        Datagram::WrongSource => 3,
                        Datagram::Heartbeat { chassis, recorded_alive } => {
                            let verdict = match vipcast_api::heartbeat::parse(d.data) {
                                Ok(beat) => auth.check(&beat, wall.saturating_mul(1000)),
                                Err(_) => Err(crate::heartbeat_auth::Refused::Unsigned),
                            };
                            match verdict {
                                Err(crate::heartbeat_auth::Refused::Unsigned) => 5,
                                Err(crate::heartbeat_auth::Refused::BadTag) => 6,
                                Err(crate::heartbeat_auth::Refused::Replayed) => 7,
                                Err(crate::heartbeat_auth::Refused::Stale) => 8,
                                Ok(()) => match tracker.offer(chassis, recorded_alive, now, wall) {
                                    Heard::TooSoon => 4,
                                    Heard::Taken(t) => {
                                        t.into_iter().for_each(|t| shared.push(t));
                                        0
                                    }
                                },
                            }
                        }
                    };
                    counts[slot] += 1;
                }
                let all = [
                    &counters.ok,
                    &counters.malformed,
                    &counters.unknown,
                    &counters.wrong_source,
                    &counters.too_soon,
                    &counters.unsigned,
                    &counters.bad_tag,
                    &counters.replayed,
                    &counters.stale,
                ];
                for (counter, n) in all.into_iter().zip(counts) {
                    if n > 0 {
                        counter.inc_by(n);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                backlog.received(false, Instant::now());
            }
            Err(e) => return e,
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + cfg.check_every;
            if let Ok(d) = vipcast_sys::udp::socket_drops(sock) {
                c.metrics.heartbeat_drops.inc_by(u64::from(d.wrapping_sub(drops)));
                drops = d;
            }
            if backlog.may_judge(now, cfg.timeout) {
                let snap = c.cache.current();
                for t in tracker.due(now) {
                    if snap.state.chassis.get(&t.chassis).is_some_and(|ch| ch.liveness.is_some_and(|l| l.alive)) {
                        let silent_ms = t.silent.as_millis() as u64;
                        tracing::warn!(chassis = t.chassis, silent_ms, "no heartbeat: chassis declared dead");
                        shared.push(t);
                    }
                }
            }
        }
    }
    std::io::Error::other("stopped")
}

/// Writes chassis' liveness in one transaction (nothing for those whose
/// record already says so), decided now.
async fn set(c: &Controller, ts: &[Transition]) {
    let since_ms = now_ms();
    let started = Instant::now();
    let commands: Vec<Command> = ts.iter().map(Transition::command).collect();
    let r = c
        .write_with(|s| {
            let mut puts = Vec::new();
            for command in &commands {
                puts.extend(command::apply(s, command, since_ms)?.puts);
            }
            let outcome = if puts.is_empty() { command::Outcome::Unchanged } else { command::Outcome::Updated };
            Ok(command::Applied { puts, deletes: Vec::new(), outcome })
        })
        .await;
    match r {
        Ok(written) => {
            let revision = written.revision;
            let write_ms = started.elapsed().as_secs_f64() * 1000.0;
            for t in ts {
                let result = if t.alive { "alive" } else { "dead" };
                c.metrics.liveness_changes.get_or_create(&crate::metrics::HeartbeatLabels { result }).inc();
                tracing::info!(
                    chassis = t.chassis.as_str(),
                    alive = t.alive,
                    revision,
                    write_ms,
                    "chassis liveness written"
                );
            }
        }
        Err(e) => tracing::warn!(chassis = ts.len(), error = ?e, "writing chassis liveness"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(150);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sorted(mut v: Vec<Transition>) -> Vec<Transition> {
        v.sort_by(|a, b| a.chassis.cmp(&b.chassis));
        v
    }

    #[test]
    fn a_chassis_not_recorded_alive_is_declared_alive_by_its_heartbeat() {
        let t0 = Instant::now();
        let mut t = Tracker::new(TIMEOUT);
        // First heartbeat ever: alive, last heard now.
        let first = t.heard("hv1", false, t0, 1_000).unwrap();
        assert_eq!(
            first,
            Transition { chassis: "hv1".into(), alive: true, last_heard_ms: 1_000, silent: Duration::ZERO }
        );
        assert_eq!(first.command(), Command::SetLiveness { chassis: "hv1".into(), alive: true, last_heard_ms: 1_000 });
        // Recorded alive: nothing to write.
        assert_eq!(t.heard("hv1", true, t0 + ms(50), 1_050), None);
        // Still not recorded alive (the write failed, or another controller
        // recorded it dead): declared again, with the previous heartbeat.
        let again = t.heard("hv1", false, t0 + ms(100), 1_100).unwrap();
        assert_eq!((again.alive, again.last_heard_ms), (true, 1_050));
    }

    #[test]
    fn silence_past_the_timeout_is_a_death_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(TIMEOUT);
        assert!(t.heard("hv1", false, t0, 1_000).is_some());
        assert!(t.heard("hv2", false, t0, 1_000).is_some());
        assert_eq!(t.heard("hv1", true, t0 + ms(50), 1_050), None);
        // hv2 silent since t0, hv1 since t0 + 50: exactly the timeout is not yet silence.
        assert_eq!(t.due(t0 + ms(100)), vec![]);
        assert_eq!(t.due(t0 + ms(150)), vec![]);
        let dead = t.due(t0 + ms(151));
        assert_eq!(
            dead,
            vec![Transition { chassis: "hv2".into(), alive: false, last_heard_ms: 1_000, silent: ms(151) }]
        );
        assert_eq!(
            dead[0].command(),
            Command::SetLiveness { chassis: "hv2".into(), alive: false, last_heard_ms: 1_000 }
        );
        // Declared once: forgotten until heard again.
        assert_eq!(t.due(t0 + ms(190)), vec![]);
        let dead = t.due(t0 + ms(201));
        assert_eq!(
            sorted(dead).iter().map(|d| (d.chassis.as_str(), d.last_heard_ms)).collect::<Vec<_>>(),
            [("hv1", 1_050)]
        );
        assert_eq!(t.due(t0 + ms(10_000)), vec![]);
    }

    #[test]
    fn a_chassis_coming_back_after_silence_counts_from_its_new_heartbeat() {
        let t0 = Instant::now();
        let mut t = Tracker::new(TIMEOUT);
        assert!(t.heard("hv1", false, t0, 1_000).is_some());
        assert_eq!(t.due(t0 + ms(400)).len(), 1);
        // Recorded dead now; its next heartbeat brings it back, last heard
        // = that heartbeat (the one before the silence was forgotten).
        let back = t.heard("hv1", false, t0 + ms(500), 1_500).unwrap();
        assert_eq!((back.alive, back.last_heard_ms), (true, 1_500));
        // Heartbeats every 50 ms keep it alive, whatever the time.
        for i in 1..100 {
            let now = t0 + ms(500 + 50 * i);
            assert_eq!(t.heard("hv1", true, now, 1_500 + 50 * i), None);
            assert_eq!(t.due(now + ms(149)), vec![]);
        }
    }

    #[test]
    fn many_chassis_go_silent_together() {
        let t0 = Instant::now();
        let mut t = Tracker::new(TIMEOUT);
        for i in 0..10 {
            let _ = t.heard(&format!("hv{i}"), true, t0 + ms(i), 1_000 + i);
        }
        // Only those heard more than 150 ms before.
        let dead = sorted(t.due(t0 + ms(155)));
        let names: Vec<&str> = dead.iter().map(|d| d.chassis.as_str()).collect();
        assert_eq!(names, ["hv0", "hv1", "hv2", "hv3", "hv4"]);
        assert!(dead.iter().all(|d| !d.alive && d.silent > TIMEOUT));
        assert_eq!(t.due(t0 + ms(1_000)).len(), 5);
    }

    fn state_with(name: &str, underlay: &str, alive: Option<bool>) -> State {
        let mut st = State::default();
        st.put(vipcast_model::Object::Chassis(vipcast_model::Chassis {
            name: name.into(),
            underlay_ip: underlay.parse().unwrap(),
            role: Default::default(),
            dataplane: Default::default(),
            liveness: alive.map(|alive| vipcast_model::Liveness { alive, since_ms: 1, last_heard_ms: 1 }),
        }));
        st
    }

    #[test]
    fn only_heartbeats_of_registered_chassis_from_their_underlay_address_count() {
        let st = state_with("hv1", "10.0.0.1", Some(true));
        let hb = encode_heartbeat("hv1", 7);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let take = Datagram::Heartbeat { chassis: "hv1", recorded_alive: true };
        assert_eq!(classify(&hb, ip("10.0.0.1"), &st, SourcePolicy::Underlay), take);
        // Compared canonically: the IPv4-mapped form is the same address.
        assert_eq!(classify(&hb, ip("::ffff:10.0.0.1"), &st, SourcePolicy::Underlay), take);
        assert_eq!(classify(&hb, ip("10.0.0.2"), &st, SourcePolicy::Underlay), Datagram::WrongSource);
        assert_eq!(classify(&hb, None, &st, SourcePolicy::Underlay), Datagram::WrongSource);
        assert_eq!(classify(&hb, ip("10.0.0.2"), &st, SourcePolicy::Any), take);
        assert_eq!(classify(b"junk", ip("10.0.0.1"), &st, SourcePolicy::Underlay), Datagram::Malformed);
        assert_eq!(classify(&[0; 20], ip("10.0.0.1"), &st, SourcePolicy::Any), Datagram::Malformed);
        let other = encode_heartbeat("hv9", 1);
        assert_eq!(classify(&other, ip("10.0.0.1"), &st, SourcePolicy::Underlay), Datagram::UnknownChassis);
        // An IPv6 underlay, and a chassis not yet heard (no liveness).
        let st = state_with("gw1", "fd00::9", None);
        assert_eq!(
            classify(&encode_heartbeat("gw1", 1), ip("fd00::9"), &st, SourcePolicy::Underlay),
            Datagram::Heartbeat { chassis: "gw1", recorded_alive: false }
        );
    }

    #[test]
    fn a_chassis_heartbeats_are_taken_at_most_once_per_gap() {
        let t0 = Instant::now();
        let mut t = Tracker::new(TIMEOUT).with_min_gap(ms(5));
        assert!(matches!(t.offer("hv1", false, t0, 1_000), Heard::Taken(Some(_))));
        // A burst from the same chassis (replayed, or a flood with its
        // name): one taken per gap, whatever the state says.
        for i in 0..100 {
            assert_eq!(t.offer("hv1", i % 2 == 0, t0 + Duration::from_micros(40 * i), 1_000), Heard::TooSoon);
        }
        assert_eq!(t.offer("hv1", true, t0 + ms(5), 1_005), Heard::Taken(None));
        // Other chassis have their own gap.
        assert!(matches!(t.offer("hv2", false, t0 + ms(5), 1_005), Heard::Taken(Some(_))));
        // What was too soon never delays a death nor hastens one: hv1 was
        // last taken at 5 ms, and is due 150 ms after that.
        assert_eq!(t.due(t0 + ms(155)), vec![]);
        let dead = sorted(t.due(t0 + ms(156)));
        assert_eq!(dead.iter().map(|d| d.chassis.as_str()).collect::<Vec<_>>(), ["hv1", "hv2"]);
    }

    #[test]
    fn a_flood_between_two_heartbeats_declares_no_one_dead() {
        // Virtual time: a heartbeat every 50 ms from hv1, and between them
        // a million junk datagrams (classified, never offered) — the
        // tracker only ever sees hv1's, and due() never finds it silent.
        let t0 = Instant::now();
        let st = state_with("hv1", "10.0.0.1", Some(true));
        let mut t = Tracker::new(TIMEOUT).with_min_gap(ms(5));
        let hb = encode_heartbeat("hv1", 1);
        let junk = encode_heartbeat("hv1", 2);
        let mut offered = 0;
        for step in 0..1_000_000u64 {
            let now = t0 + Duration::from_micros(step);
            let (data, from) = if step % 50_000 == 0 { (&hb[..], "10.0.0.1") } else { (&junk[..], "10.9.9.9") };
            if let Datagram::Heartbeat { chassis, recorded_alive } =
                classify(data, from.parse().ok(), &st, SourcePolicy::Underlay)
            {
                offered += 1;
                assert_eq!(t.offer(chassis, recorded_alive, now, 0), Heard::Taken(None));
            }
            if step % 5_000 == 0 {
                assert_eq!(t.due(now), vec![], "at {step} us");
            }
        }
        assert_eq!(offered, 20);
    }

    #[test]
    fn silences_are_judged_once_the_queue_is_read_or_after_a_timeout_behind() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        assert!(b.may_judge(t0, TIMEOUT));
        b.received(true, t0);
        b.received(true, t0 + ms(100));
        assert!(!b.may_judge(t0 + ms(150), TIMEOUT), "a heartbeat may be queued behind the junk");
        assert!(b.may_judge(t0 + ms(151), TIMEOUT), "behind for longer than the timeout: judge anyway");
        b.received(false, t0 + ms(160));
        assert!(b.may_judge(t0 + ms(160), TIMEOUT));
        b.received(true, t0 + ms(170));
        assert!(!b.may_judge(t0 + ms(200), TIMEOUT), "behind again counts from 170");
    }
}

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
//! The decisions are [`Tracker`]'s: no socket, no clock (the time of each
//! call is an argument), so they are tested in virtual time. [`run`] is its
//! driver: it reads the socket and the clock, and writes the transitions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use vipcast_model::Command;
use vipcast_model::command;

use crate::{Controller, now_ms};

pub use vipcast_api::heartbeat::{HeartbeatError, MAGIC, VERSION, decode_heartbeat, encode_heartbeat};

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// Silence after which a chassis is declared dead.
    pub timeout: Duration,
    /// How often silences are checked.
    pub check_every: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig { timeout: Duration::from_millis(150), check_every: Duration::from_millis(5) }
    }
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
    /// Chassis -> its last heartbeat (monotonic, and ms on the wall clock).
    heard: HashMap<String, (Instant, u64)>,
}

impl Tracker {
    /// A tracker declaring chassis dead after `timeout` of silence.
    pub fn new(timeout: Duration) -> Tracker {
        Tracker { timeout, heard: HashMap::new() }
    }

    /// A heartbeat from `chassis` at `now` (`now_ms` on the wall clock),
    /// which the state records as `recorded_alive` or not: declares it
    /// alive unless the state already says so, with the previous heartbeat
    /// as the last one heard (this one, if it is the first since it was
    /// last declared silent).
    pub fn heard(&mut self, chassis: &str, recorded_alive: bool, now: Instant, now_ms: u64) -> Option<Transition> {
        let prev = self.heard.insert(chassis.to_string(), (now, now_ms));
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

/// Receives heartbeats on `sock` and keeps chassis liveness, until the
/// socket fails.
///
/// ```text
///  heartbeat ──decode──► registered? ──► Tracker::heard ──► alive to write?  ─┐
///  every check_every ──────────────────► Tracker::due ───► recorded alive?  ─┴─► Controller::write
/// ```
pub async fn run(c: Arc<Controller>, sock: UdpSocket, cfg: LivenessConfig) -> std::io::Error {
    let mut tracker = Tracker::new(cfg.timeout);
    let mut tick = tokio::time::interval(cfg.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let Some(datagram) = buf.get(..n) else { continue };
                let name = match decode_heartbeat(datagram) {
                    Ok((name, _)) => name.to_string(),
                    Err(e) => {
                        c.metrics.heartbeats.get_or_create(&crate::metrics::HeartbeatLabels { result: "malformed" }).inc();
                        tracing::debug!(%from, error = %e, "dropped a datagram on the heartbeat port");
                        continue;
                    }
                };
                let alive = match c.cache.current().state.chassis.get(&name) {
                    Some(ch) => ch.liveness.is_some_and(|l| l.alive),
                    None => {
                        c.metrics.heartbeats.get_or_create(&crate::metrics::HeartbeatLabels { result: "unknown_chassis" }).inc();
                        continue;
                    }
                };
                c.metrics.heartbeats.get_or_create(&crate::metrics::HeartbeatLabels { result: "ok" }).inc();
                if let Some(t) = tracker.heard(&name, alive, Instant::now(), now_ms()) {
                    set(&c, &t).await;
                }
            }
            _ = tick.tick() => {
                for t in tracker.due(Instant::now()) {
                    let alive = c.cache.current().state.chassis.get(&t.chassis).is_some_and(|ch| ch.liveness.is_some_and(|l| l.alive));
                    if alive {
                        tracing::warn!(chassis = t.chassis, silent_ms = t.silent.as_millis() as u64, "no heartbeat: chassis declared dead");
                        set(&c, &t).await;
                    }
                }
            }
        }
    }
}

/// Writes a chassis' liveness (nothing if it already says so), decided now.
async fn set(c: &Controller, t: &Transition) {
    let (name, alive) = (t.chassis.as_str(), t.alive);
    let since_ms = now_ms();
    let started = Instant::now();
    let command = t.command();
    let r = c.write_with(|s| command::apply(s, &command, since_ms)).await;
    match r {
        Ok(written) => {
            let revision = written.revision;
            c.metrics
                .liveness_changes
                .get_or_create(&crate::metrics::HeartbeatLabels { result: if alive { "alive" } else { "dead" } })
                .inc();
            let write_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(chassis = name, alive, revision, write_ms, "chassis liveness written");
        }
        Err(e) => tracing::warn!(chassis = name, alive, error = ?e, "writing chassis liveness"),
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
}

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

/// Receives heartbeats on `sock` and keeps chassis liveness, until the
/// socket fails.
pub async fn run(c: Arc<Controller>, sock: UdpSocket, cfg: LivenessConfig) -> std::io::Error {
    let mut heard: HashMap<String, (Instant, u64)> = HashMap::new();
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
                let at = now_ms();
                let prev = heard.insert(name.clone(), (Instant::now(), at));
                if !alive {
                    let last = prev.map(|p| p.1).unwrap_or(at);
                    set(&c, &name, true, last).await;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let silent: Vec<(String, Instant, u64)> = heard
                    .iter()
                    .filter(|(_, (t, _))| now.saturating_duration_since(*t) > cfg.timeout)
                    .map(|(n, (t, ms))| (n.clone(), *t, *ms))
                    .collect();
                for (name, t, last_ms) in silent {
                    heard.remove(&name);
                    let alive = c.cache.current().state.chassis.get(&name).is_some_and(|ch| ch.liveness.is_some_and(|l| l.alive));
                    if alive {
                        tracing::warn!(chassis = name, silent_ms = now.saturating_duration_since(t).as_millis() as u64, "no heartbeat: chassis declared dead");
                        set(&c, &name, false, last_ms).await;
                    }
                }
            }
        }
    }
}

/// Writes a chassis' liveness (nothing if it already says so).
async fn set(c: &Controller, name: &str, alive: bool, last_heard_ms: u64) {
    let since_ms = now_ms();
    let started = Instant::now();
    let command = Command::SetLiveness { chassis: name.to_string(), alive, last_heard_ms };
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

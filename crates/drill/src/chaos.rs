//! The chaos drill: failovers over and over for a while, with the control
//! plane killed (`SIGKILL`) and restarted under them at random — the
//! controller, the agents of chassis that host no member of the VIP, the
//! replicators — and after every failover the invariants checked:
//!
//! * exactly one member holds the VIP (its address configured);
//! * every chassis of the VPC forwards the VIP to the controller's owner,
//!   and every replicator copies the VNI to the right chassis
//!   (`GET /v1/vips/{name}/check`, given [`CONVERGE`] to get there: a killed
//!   agent must be back and have caught up);
//! * the history has no gap and no duplicate generation, and its last
//!   generation is the owner's.
//!
//! Each failover is a `link-down` run of [`Session::run`] (out to the backup
//! and back to the preferred master once the link is up); its outage is
//! measured from the probes as in any drill.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::analysis::percentile;
use crate::fault::{self, Fault};
use crate::rng::Rng;
use crate::session::{Options, Session};
use crate::target::{Overlay, Target};
use crate::{Error, Result};

/// How long the data plane may take to agree with the record after a
/// failover (a killed agent is restarted within 2.5 s and reads its view).
pub const CONVERGE: Duration = Duration::from_secs(15);

/// Time between two kills, and how long a killed process stays down (ms).
const BETWEEN_KILLS: (u64, u64) = (500, 3000);
const DOWN_FOR: (u64, u64) = (200, 2500);

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct ChaosOptions {
    pub duration: Duration,
    /// Seed of the random choices (what to kill, when, for how long).
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub lab: String,
    pub vip: String,
    pub seed: u64,
    pub seconds: f64,
    pub failovers: usize,
    pub outage_p50_ms: Option<f64>,
    pub outage_p95_ms: Option<f64>,
    pub outage_max_ms: Option<f64>,
    pub outages_ms: Vec<f64>,
    /// Processes killed, by role (`controller`, `agent`, `replicator`).
    pub killed: BTreeMap<String, u32>,
    /// Invariant checks done (one per failover).
    pub checks: usize,
    /// Every invariant found broken, with the run.
    pub violations: Vec<String>,
}

impl ChaosReport {
    /// For people.
    pub fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
        let killed: Vec<String> = self.killed.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let mut s = format!(
            "chaos on {} ({} s, seed {}): {} failovers, outage p50 {} p95 {} max {}; killed: {}; {} checks, {} \
             violations",
            self.vip,
            self.seconds.round(),
            self.seed,
            self.failovers,
            ms(self.outage_p50_ms),
            ms(self.outage_p95_ms),
            ms(self.outage_max_ms),
            if killed.is_empty() { "nothing".into() } else { killed.join(", ") },
            self.checks,
            self.violations.len()
        );
        for v in &self.violations {
            s.push_str(&format!("\n  VIOLATION {v}"));
        }
        s
    }
}

/// The killer thread: stops (and restarts what it has down) on drop.
struct Killer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    killed: Arc<Mutex<BTreeMap<String, u32>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Killer {
    fn start(ov: Overlay, spare: Vec<String>, seed: u64) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(Mutex::new(BTreeMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, k, e) = (stop.clone(), killed.clone(), errors.clone());
        let handle = std::thread::spawn(move || kill_loop(&ov, &spare, Rng(seed), &s, &k, &e));
        Killer { stop, handle: Some(handle), killed, errors }
    }

    /// Stops it; what it killed, and what went wrong restarting.
    fn finish(mut self) -> (BTreeMap<String, u32>, Vec<String>) {
        self.join();
        let k = self.killed.lock().map(|k| k.clone()).unwrap_or_default();
        let e = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (k, e)
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.join();
    }
}

/// Sleeps `d` unless `stop` is set meanwhile; whether it slept it all.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
    true
}

fn kill_loop(
    ov: &Overlay,
    spare: &[String],
    mut rng: Rng,
    stop: &AtomicBool,
    killed: &Mutex<BTreeMap<String, u32>>,
    errors: &Mutex<Vec<String>>,
) {
    let root = vipcast_lab::state::Root(ov.root.clone());
    while nap(rng.ms(BETWEEN_KILLS), stop) {
        let Ok(Some(state)) = root.read(&ov.lab) else { continue };
        let candidates: Vec<_> = state
            .processes
            .into_iter()
            .filter(|p| match p.role.as_str() {
                "controller" | "replicator" => true,
                "agent" => spare.contains(&p.node),
                _ => false,
            })
            .filter(|p| p.is_running())
            .collect();
        let Some(victim) = candidates.get(rng.next_u64() as usize % candidates.len().max(1)) else { continue };
        let who = if victim.role == "agent" { format!("agent {}", victim.node) } else { victim.role.clone() };
        if let Err(e) = fault::kill(victim) {
            if let Ok(mut v) = errors.lock() {
                v.push(format!("killing {who}: {e}"));
            }
            continue;
        }
        if let Ok(mut k) = killed.lock() {
            *k.entry(victim.role.clone()).or_default() += 1;
        }
        // Down for a while, but always started again, stop or not.
        nap(rng.ms(DOWN_FOR), stop);
        let ready = (victim.role == "controller").then(|| (format!("{}/healthz", ov.controller_url), ov.tls.clone()));
        if let Err(e) = fault::restart(victim, ov, ready)
            && let Ok(mut v) = errors.lock()
        {
            v.push(format!("restarting {who}: {e}"));
        }
    }
}

/// `GET` from the controller, parsed.
fn get(ov: &Overlay, path: &str) -> std::result::Result<serde_json::Value, String> {
    let body = vipcast_lab::state::http_get(&format!("{}{path}", ov.controller_url), ov.tls.as_ref(), CONVERGE)?;
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// Whether the generations of `history` (oldest first) follow each other
/// with no gap and no repeat, ending at `owner`'s; what is wrong if not.
pub fn history_problem(generations: &[u64], owner: Option<u64>) -> Option<String> {
    if let Some(w) = generations.windows(2).find(|w| w.get(1) != w.first().map(|g| g + 1).as_ref()) {
        return Some(format!("history generations {w:?} do not follow each other"));
    }
    match (generations.last(), owner) {
        (Some(last), Some(o)) if *last != o => Some(format!("history ends at generation {last}, the owner is at {o}")),
        _ => None,
    }
}

/// Checks the invariants once the run has settled; what is broken.
fn invariants(session: &Session<'_>, target: &Target, ov: &Overlay) -> Vec<String> {
    let mut broken = Vec::new();
    let holders = session.holders();
    if holders.len() != 1 {
        broken.push(format!("{} members hold the VIP: {holders:?}", holders.len()));
    }
    let vip = &target.vip_name;
    // The data plane everywhere, given time to converge (a killed agent
    // back, a restarted controller answering).
    let start = Instant::now();
    loop {
        let last = match get(ov, &format!("/v1/vips/{vip}/check")) {
            Ok(c) if c["consistent"] == true => break,
            Ok(c) => {
                let bad: Vec<String> = c["chassis"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(c["replicators"].as_array().into_iter().flatten())
                    .filter(|x| x["verdict"] != "agrees")
                    .map(|x| {
                        format!(
                            "{} {}: {}",
                            x["chassis"].as_str().or(x["replicator"].as_str()).unwrap_or("?"),
                            x["verdict"].as_str().unwrap_or("?"),
                            x["detail"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                bad.join("; ")
            }
            Err(e) => format!("no check: {e}"),
        };
        if start.elapsed() > CONVERGE {
            broken.push(format!("data plane not consistent after {} s: {last}", CONVERGE.as_secs()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The controller may be down just now: asked again until it answers.
    let again = |path: String| {
        let start = Instant::now();
        loop {
            match get(ov, &path) {
                Err(_) if start.elapsed() < CONVERGE => std::thread::sleep(Duration::from_millis(200)),
                r => return r,
            }
        }
    };
    match (again(format!("/v1/vips/{vip}/history")), again(format!("/v1/vips/{vip}"))) {
        (Ok(h), Ok(v)) => {
            let gens: Vec<u64> = h.as_array().into_iter().flatten().filter_map(|e| e["generation"].as_u64()).collect();
            broken.extend(history_problem(&gens, v["owner"]["generation"].as_u64()));
        }
        (Err(e), _) | (_, Err(e)) => broken.push(format!("history not readable: {e}")),
    }
    broken
}

/// Runs the chaos drill on `target` (a VIP of a lab).
pub fn chaos(target: &Target, opts: &Options<'_>, c: &ChaosOptions) -> Result<ChaosReport> {
    let ov =
        target.overlay.clone().ok_or_else(|| Error::Refused("--chaos needs a VIP of a lab (an overlay)".into()))?;
    let members: Vec<String> = target.members.iter().filter_map(|m| m.chassis.clone()).collect();
    let spare: Vec<String> =
        ov.agent_logs.iter().map(|(chassis, _)| chassis.clone()).filter(|ch| !members.contains(ch)).collect();
    (opts.progress)(&format!(
        "chaos on {} for {} s (seed {}): link-down failovers back to back; killing at random the controller, the \
         replicators and the agents of {} (chassis without a member)",
        target.vip_name,
        c.duration.as_secs(),
        c.seed,
        if spare.is_empty() { "no chassis".into() } else { spare.join(", ") }
    ));
    let mut session = Session::start(target, opts)?;
    let killer = Killer::start(ov.clone(), spare, c.seed);
    let start = Instant::now();
    let (mut outages, mut violations, mut checks) = (Vec::new(), Vec::new(), 0);
    let mut run = 0;
    while start.elapsed() < c.duration {
        run += 1;
        let r = match session.run(Fault::LinkDown, run) {
            Ok(r) => r,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                violations.push(format!("run {run}: {e}"));
                break;
            }
        };
        outages.push(r.outage_ms);
        if r.timed_out || r.new_master.is_none() {
            violations.push(format!("run {run}: the VIP did not move to another member (timed out)"));
        }
        checks += 1;
        let broken = invariants(&session, target, &ov);
        (opts.progress)(&format!(
            "chaos run {run} at {:.0} s: outage {:.0} ms, {} -> {}; {}",
            start.elapsed().as_secs_f64(),
            r.outage_ms,
            r.old_master,
            r.new_master.as_deref().unwrap_or("nobody"),
            if broken.is_empty() { "invariants hold".to_string() } else { broken.join("; ") }
        ));
        violations.extend(broken.into_iter().map(|b| format!("run {run}: {b}")));
    }
    let (killed, errors) = killer.finish();
    violations.extend(errors);
    Ok(ChaosReport {
        lab: ov.lab.clone(),
        vip: target.vip_name.clone(),
        seed: c.seed,
        seconds: start.elapsed().as_secs_f64(),
        failovers: outages.len(),
        outage_p50_ms: percentile(&outages, 50.0),
        outage_p95_ms: percentile(&outages, 95.0),
        outage_max_ms: outages.iter().copied().reduce(f64::max),
        outages_ms: outages,
        killed,
        checks,
        violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_must_follow_on_and_end_at_the_owner() {
        assert_eq!(history_problem(&[3, 4, 5], Some(5)), None);
        assert_eq!(history_problem(&[], None), None);
        assert!(history_problem(&[3, 5], Some(5)).unwrap().contains("[3, 5]"), "a gap");
        assert!(history_problem(&[3, 4, 4], Some(4)).is_some(), "a repeat");
        assert!(history_problem(&[3, 4], Some(6)).unwrap().contains("owner is at 6"));
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let x: Vec<Duration> = (0..5).map(|_| a.ms(DOWN_FOR)).collect();
        assert_eq!(x, (0..5).map(|_| b.ms(DOWN_FOR)).collect::<Vec<_>>());
        assert!(x.iter().all(|d| (200..2500).contains(&(d.as_millis() as u64))));
    }
}

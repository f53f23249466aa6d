//! Running a drill against one [`Target`]: responders on every member, one
//! prober in the client for the whole session, then per run:
//!
//! ```text
//!  settle: the preferred master holds the VIP (its address; for an overlay,
//!          also the controller's owner) and answered every probe for 300 ms
//!    │
//!  inject the fault ─► wait until another member answers every probe for
//!    │                 200 ms (or the time limit) ─► the run ends
//!    │
//!  read the stages (agent logs, VIP history) and analyse the probes
//!    │
//!  undo the fault ─► settle again (keepalived preempts back)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vipcast_lab::Child;
use vipcast_lab::state::{http_get, log_tail};

use crate::analysis::{self, PRE_FAULT, Window};
use crate::fault::{self, Fault};
use crate::probe::now_us;
use crate::record::{ProbeLog, Tail};
use crate::report::{RunReport, StageTimes, Timeline, VariantReport};
use crate::stages::{self, HistoryEntry};
use crate::target::{Member, Target};
use crate::{Error, Result};

/// How a drill runs.
pub struct Options<'a> {
    /// The vipcast binary (its hidden `probe`, `probe-responder` and
    /// `announce` subcommands run in the lab's namespaces).
    pub exe: PathBuf,
    /// Runs per variant.
    pub runs: usize,
    /// UDP port of the responders.
    pub port: u16,
    /// Time between probes.
    pub interval: Duration,
    /// One line per step, for people.
    pub progress: &'a dyn Fn(&str),
    /// Set (e.g. by Ctrl-C) to stop: the fault in effect is undone and
    /// everything started is stopped.
    pub cancel: Option<&'a AtomicBool>,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("exe", &self.exe).field("runs", &self.runs).field("port", &self.port).finish()
    }
}

/// How long the prober must have been answered without a loss to be steady.
const STEADY: Duration = Duration::from_millis(300);
/// After the fault: how long the new master must answer every probe for the
/// run to end.
const NEW_STEADY: Duration = Duration::from_millis(200);
/// Replies still in flight are not judged.
const GRACE: Duration = Duration::from_millis(30);
/// After a run ends: time for the components' logs to be written.
const SETTLE_LOGS: Duration = Duration::from_millis(200);
/// How long the preferred master may take to hold the VIP again.
const RESTORE_LIMIT: Duration = Duration::from_secs(30);
/// If the VIP is on the preferred master but the controller still names
/// another owner this long, the drill re-announces the VIP from the master.
const NUDGE_AFTER: Duration = Duration::from_millis(1500);
/// A fault that does not move the VIP is watched this long.
const NO_MOVE_WINDOW: Duration = Duration::from_secs(2);

/// How long a restarted controller is given to take the claim of the
/// failover made without it.
const CONTROLLER_VERDICT: Duration = Duration::from_secs(10);

/// A running session: responders and a prober in the target's namespaces.
pub struct Session<'a> {
    target: Target,
    opts: &'a Options<'a>,
    // Processes stop on drop (before the directory goes).
    prober: Child,
    responders: Vec<Child>,
    probe_file: PathBuf,
    tail: Tail,
    log: ProbeLog,
    dir: tempfile::TempDir,
    /// Draws the phase of each fault in the VRRP advert interval.
    phase: crate::rng::Rng,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("variant", &self.target.variant).field("dir", &self.dir.path()).finish()
    }
}

/// `ip netns exec NS EXE ARGS...` in its own process group (a Ctrl-C is the
/// drill's to handle), output to `log`.
fn spawn_in(ns: &str, exe: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(exe).args(args).process_group(0);
    Ok(Child::spawn(&mut cmd, log)?)
}

impl<'a> Session<'a> {
    /// Starts a responder on every member and the prober in the client,
    /// then waits until the preferred master answers steadily.
    pub fn start(target: &Target, opts: &'a Options<'a>) -> Result<Session<'a>> {
        let dir = tempfile::Builder::new()
            .prefix("vipcast-drill-")
            .tempdir()
            .map_err(|e| Error::Failed(format!("temporary directory: {e}")))?;
        let port = opts.port.to_string();
        let listen = match target.vip_ip {
            IpAddr::V4(_) => format!("0.0.0.0:{port}"),
            IpAddr::V6(_) => format!("[::]:{port}"),
        };
        let mut responders = Vec::new();
        for m in &target.members {
            let log = dir.path().join(format!("responder-{}.log", m.name));
            responders.push(spawn_in(
                &m.ns,
                &opts.exe,
                &["probe-responder", "--listen", &listen, "--name", &m.name],
                &log,
            )?);
        }
        // Resolve the members' addresses from the client once, so that the
        // first reply of a new master does not wait for ARP.
        for m in &target.members {
            let _ = vipcast_lab::run(Command::new("ip").args([
                "netns",
                "exec",
                &target.client.ns,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                &m.ip.to_string(),
            ]));
        }
        let probe_file = dir.path().join("probes");
        let vip = SocketAddr::new(target.vip_ip, opts.port).to_string();
        let interval = opts.interval.as_micros().to_string();
        let prober = spawn_in(
            &target.client.ns,
            &opts.exe,
            &["probe", "--target", &vip, "--interval-us", &interval],
            &probe_file,
        )?;
        (opts.progress)(&format!(
            "{}: prober in {} ({}) sends a UDP request to {vip} every {} µs; responders on {}",
            target.variant,
            target.client.name,
            target.client.ns,
            interval,
            target.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        let tail = Tail::new(probe_file.clone());
        let mut s = Session {
            target: target.clone(),
            opts,
            prober,
            responders,
            probe_file,
            tail,
            log: ProbeLog::default(),
            dir,
            phase: crate::rng::Rng::from_clock(),
        };
        let master = s.master()?;
        s.settle(&master)?;
        Ok(s)
    }

    fn master(&self) -> Result<Member> {
        self.target.master().cloned().ok_or_else(|| Error::Failed("the VIP has no members".into()))
    }

    fn say(&self, line: &str) {
        (self.opts.progress)(&format!("{}: {line}", self.target.variant));
    }

    /// Reads new probe lines; fails on cancel or if a helper died.
    fn pump(&mut self) -> Result<()> {
        if self.opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        self.tail.poll(&mut self.log).map_err(|e| Error::Failed(format!("reading the prober's output: {e}")))?;
        if !self.prober.is_running() {
            return Err(Error::Failed(format!(
                "the prober exited: {}\n{}",
                self.prober.description(),
                log_tail(&self.probe_file, 5)
            )));
        }
        Ok(())
    }

    fn min_count(&self, d: Duration) -> usize {
        // Half the probes a window should hold: a loaded machine may slow
        // the prober down, which is not an outage.
        (d.as_micros() / self.opts.interval.as_micros().max(1) / 2) as usize
    }

    fn steady(&self, d: Duration, by: Option<&str>) -> bool {
        self.log.steady(now_us(), d.as_micros() as u64, GRACE.as_micros() as u64, self.min_count(d), by)
    }

    /// The members that have the VIP configured.
    pub(crate) fn holders(&self) -> Vec<String> {
        self.target
            .members
            .iter()
            .filter(|m| crate::lab::has_address(&m.ns, &m.dev, self.target.vip_ip))
            .map(|m| m.name.clone())
            .collect()
    }

    /// The controller's owner of the VIP: (port, generation).
    fn owner(&self) -> Option<(String, u64)> {
        let ov = self.target.overlay.as_ref()?;
        let url = format!("{}/v1/vips/{}", ov.controller_url, self.target.vip_name);
        let v: serde_json::Value =
            serde_json::from_str(&http_get(&url, ov.tls.as_ref(), Duration::from_secs(2)).ok()?).ok()?;
        Some((v["owner"]["port"].as_str()?.to_string(), v["owner"]["generation"].as_u64()?))
    }

    fn history(&self) -> Vec<HistoryEntry> {
        let Some(ov) = &self.target.overlay else { return Vec::new() };
        let url = format!("{}/v1/vips/{}/history", ov.controller_url, self.target.vip_name);
        http_get(&url, ov.tls.as_ref(), Duration::from_secs(2))
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    /// Sends a gratuitous ARP / unsolicited NA for the VIP from `m`.
    fn announce(&self, m: &Member) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &m.ns]).arg(&self.opts.exe).args([
            "announce",
            "--dev",
            &m.dev,
            "--ip",
            &self.target.vip_ip.to_string(),
        ]);
        vipcast_lab::run(&mut cmd).map(|_| ()).map_err(Error::from)
    }

    /// Waits until `master` holds the VIP alone, the controller (overlay)
    /// names it the owner, and it answered every probe for [`STEADY`].
    /// Returns how many times the VIP had to be re-announced.
    fn settle(&mut self, master: &Member) -> Result<u32> {
        let start = Instant::now();
        let mut nudges = 0;
        let mut last_check = Instant::now() - Duration::from_secs(1);
        let mut holds_since: Option<Instant> = None;
        let mut last_nudge = Instant::now();
        let mut control_ok = false;
        loop {
            self.pump()?;
            if last_check.elapsed() >= Duration::from_millis(100) {
                last_check = Instant::now();
                let holds = self.holders() == [master.name.clone()];
                holds_since = match (holds, holds_since) {
                    (true, None) => Some(Instant::now()),
                    (true, s) => s,
                    (false, _) => None,
                };
                let owner = self.owner();
                control_ok =
                    holds && (self.target.overlay.is_none() || owner.as_ref().is_some_and(|o| o.0 == master.name));
                // The VIP is back on the master but the control plane has
                // not followed (its GARPs went unheard): announce it again.
                if holds
                    && !control_ok
                    && holds_since.is_some_and(|t| t.elapsed() >= NUDGE_AFTER)
                    && last_nudge.elapsed() >= NUDGE_AFTER
                {
                    self.say(&format!(
                        "{} holds the VIP but the controller still names {}: re-announcing it from {}",
                        master.name,
                        owner.map(|o| o.0).unwrap_or_else(|| "nobody".into()),
                        master.name
                    ));
                    self.announce(master)?;
                    nudges += 1;
                    last_nudge = Instant::now();
                }
            }
            if control_ok && self.steady(STEADY, Some(&master.name)) {
                return Ok(nudges);
            }
            if start.elapsed() > RESTORE_LIMIT {
                return Err(Error::Failed(format!(
                    "{}: {} did not hold the VIP and answer steadily within {} s (VIP on: {:?}; controller owner: \
                     {:?}; probes in {})",
                    self.target.variant,
                    master.name,
                    RESTORE_LIMIT.as_secs(),
                    self.holders(),
                    self.owner(),
                    self.probe_file.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The time limit of a failover: generous against VRRP's own timers.
    fn limit(&self) -> Duration {
        Duration::from_secs_f64((3.0 + 10.0 * self.target.advert_int).max(5.0))
    }

    /// One run of `fault`: inject, measure, undo, settle.
    pub fn run(&mut self, fault: Fault, index: usize) -> Result<RunReport> {
        let master = self.master()?;
        let gen_before = self.owner().map(|o| o.1).unwrap_or(0);
        let others: Vec<String> =
            self.target.members.iter().filter(|m| m.name != master.name).map(|m| m.name.clone()).collect();
        // At a random point of the master's advert interval: a fault does not
        // care when the last advert went out, and how long a dead chassis
        // goes unnoticed depends on it.
        let phase = self.phase.below(Duration::from_secs_f64(self.target.advert_int.clamp(0.0, 1.0)));
        let until = Instant::now() + phase;
        while Instant::now() < until {
            self.pump()?;
            std::thread::sleep(Duration::from_millis(2).min(until.saturating_duration_since(Instant::now())));
        }
        let mut injected = fault::inject(fault, &self.target, &master)?;
        let fault_us = injected.at_us;
        let (what, took_us) = (injected.what.clone(), injected.took_us);
        let limit = self.limit();
        let start = Instant::now();
        let mut timed_out = false;
        loop {
            self.pump()?;
            let done = if fault.moves_vip() {
                others.iter().any(|o| self.steady(NEW_STEADY, Some(o)))
            } else {
                start.elapsed() >= NO_MOVE_WINDOW && self.steady(NEW_STEADY, None)
            };
            if done {
                break;
            }
            if start.elapsed() > limit {
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let end_us = now_us();
        std::thread::sleep(SETTLE_LOGS);
        self.pump()?;
        let window = Window { fault_us, end_us };
        let o = analysis::analyse(&self.log, window, &master.name);
        let rel = |t: Option<u64>| t.map(|t| (t as f64 - fault_us as f64) / 1000.0);
        let mut stages = StageTimes {
            last_old_reply_ms: rel(o.last_old_us),
            first_new_reply_ms: rel(o.first_new_us),
            ..StageTimes::default()
        };
        let mut report_control = None;
        // With the controller stopped, its verdict comes once it is back:
        // start it, and wait for the owner the agents claim again.
        let mut control_end_us = end_us + SETTLE_LOGS.as_micros() as u64;
        if injected.restore_control_plane()? {
            let back = Instant::now();
            while back.elapsed() < CONTROLLER_VERDICT && self.owner().is_none_or(|o| o.0 == master.name) {
                std::thread::sleep(Duration::from_millis(20));
            }
            control_end_us = now_us();
        }
        if let Some(ov) = &self.target.overlay {
            let mut events = Vec::new();
            for (chassis, path) in &ov.agent_logs {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                events.extend(
                    stages::parse_agent_log(chassis, &text).into_iter().filter(|e| e.at_us + PRE_FAULT >= fault_us),
                );
            }
            let history = self.history();
            let c = stages::control_stages(
                &events,
                ov.agent_logs.len(),
                &history,
                &stages::RunContext {
                    vip: &self.target.vip_name,
                    old_port: &master.name,
                    gen_before,
                    fault_us,
                    end_us: control_end_us,
                },
            );
            stages.garp_sniffed_ms = rel(c.garp_sniffed_us);
            stages.claim_observed_ms = rel(c.claim_observed_us);
            stages.claim_accepted_ms = rel(c.claim_accepted_us);
            stages.last_agent_ms = rel(c.last_reprogrammed_us);
            stages.assisted_ms = rel(c.assisted_us);
            report_control = Some(c);
        }
        let timeline = self.timeline(window, &master.name);
        // Undo the fault and wait for the preferred master.
        let restore_start = Instant::now();
        injected.restore()?;
        let nudges = self.settle(&master)?;
        let restore_ms = restore_start.elapsed().as_secs_f64() * 1000.0;
        let r = RunReport {
            run: index,
            fault_at_us: fault_us,
            injected: what,
            inject_ms: took_us as f64 / 1000.0,
            old_master: master.name.clone(),
            new_master: o.new_master.clone(),
            outage_ms: o.outage_us as f64 / 1000.0,
            gap_from: o.before.clone(),
            gap_to: o.after.clone(),
            sent: o.sent,
            lost: o.lost,
            max_send_gap_ms: o.max_send_gap_us as f64 / 1000.0,
            timed_out,
            assisted: report_control.as_ref().is_some_and(|c| c.assisted_us.is_some()),
            loss_spans: timeline.loss_spans(),
            stages,
            generation: report_control.as_ref().and_then(|c| c.generation),
            agents_reprogrammed: report_control.as_ref().map(|c| format!("{}/{}", c.agents_reprogrammed, c.agents)),
            last_agent: report_control.as_ref().and_then(|c| c.last_reprogrammed_by.clone()),
            extra_owner_changes: report_control.as_ref().map(|c| c.extra_changes).unwrap_or(0),
            restore_ms,
            restore_nudges: nudges,
            timeline,
        };
        Ok(r)
    }

    fn timeline(&self, w: Window, old_master: &str) -> Timeline {
        let probes = self
            .log
            .sent_between(w.start_us(), w.end_us)
            .iter()
            .map(|p| {
                let off = p.sent_us as i64 - w.fault_us as i64;
                (off, p.reply.filter(|(at, _)| *at <= w.end_us).map(|(_, r)| r))
            })
            .collect();
        Timeline {
            probes,
            responders: self.log.responders().to_vec(),
            old_master: old_master.to_string(),
            end_us: w.end_us as i64 - w.fault_us as i64,
            interval_us: self.opts.interval.as_micros() as i64,
        }
    }

    /// Runs `fault` `runs` times.
    pub fn runs(&mut self, fault: Fault, from: &str) -> Result<VariantReport> {
        let mut runs = Vec::new();
        for i in 0..self.opts.runs {
            let r = self.run(fault, i + 1)?;
            self.say(&format!(
                "{fault} run {}/{}: outage {:.0} ms ({} lost), {} -> {}{}{}{}",
                i + 1,
                self.opts.runs,
                r.outage_ms,
                r.lost,
                r.old_master,
                r.new_master.clone().unwrap_or_else(|| if fault.moves_vip() {
                    "nobody".into()
                } else {
                    "(the VIP stayed)".into()
                }),
                if r.timed_out { " TIMED OUT" } else { "" },
                r.stages.assisted_ms.map(|a| format!("; assisted +{a:.0}")).unwrap_or_default(),
                r.stages
                    .garp_sniffed_ms
                    .map(|g| format!(
                        "; GARP sniffed +{g:.0}, claim accepted {}, last agent {}",
                        r.stages.claim_accepted_ms.map(|v| format!("+{v:.0}")).unwrap_or("-".into()),
                        r.stages.last_agent_ms.map(|v| format!("+{v:.0}")).unwrap_or("-".into())
                    ))
                    .unwrap_or_default()
            ));
            runs.push(r);
        }
        Ok(VariantReport::new(&self.target.variant, fault, from, runs))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.prober.terminate(Duration::from_millis(200));
        for r in &mut self.responders {
            r.terminate(Duration::from_millis(200));
        }
    }
}

//! Drills on a workload (`vipcast drill --workload mariadb`): a client that
//! writes through the VIP, a fault on whichever member is master, and
//! exact-set checks of what was acknowledged against what the database kept.
//!
//! ```text
//!  client VM: workload-client ──INSERT──► VIP:3306 ──► master (semi-sync)
//!     │ one line per operation: ack | refused | doubt
//!     v
//!  per run:  healthy pair? (master writable, semi-sync ON, peer caught up)
//!            ─► acknowledged writes flowing, Rpl_semi_sync_master_no_tx
//!               unchanged ─► fault on the master ─► the peer is writable
//!               and acknowledges ─► outage = the gap in acknowledgements
//!            ─► undo ─► every in-flight operation settled ─► stored ids
//!               (new master) vs the log: acknowledged ∖ stored = ∅, no
//!               phantoms ─► the old master rejoins (MASTER_GTID_WAIT)
//!               and holds the same rows
//! ```
//! The pair is never failed back: each run starts from the member that is
//! master after the previous one (the pair runs with `nopreempt`).

pub mod client;
pub mod demo;
pub mod ops;
pub mod pay_drill;
pub mod payment;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::Child;

use crate::fault::{self, Fault};
use crate::probe::now_us;
use crate::record::Tail;
use crate::session::Options;
use crate::target::{Member, Target, Workload};
use crate::{Error, Result};
use ops::{OpLog, Verdict};

/// Concurrent client connections.
pub const WORKERS: u32 = 4;

/// The client's connect timeout (a SYN to a MAC the VIP left is lost
/// silently; the kernel retries only after 1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// How long an operation may wait for its answer before it is in doubt.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// Acknowledged operations needed before the fault and after the failover.
const ENOUGH: usize = 50;

/// The outage is the longest gap between acknowledgements from this long
/// before the fault until the failover has settled.
const PRE_FAULT_US: u64 = 500_000;

/// How long the pair may take to be healthy, and a failover to complete.
const LIMIT: Duration = Duration::from_secs(30);

/// One run on one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadRun {
    pub variant: String,
    pub fault: Fault,
    pub from: String,
    pub to: Option<String>,
    /// Longest time without an acknowledged operation around the fault.
    pub outage_ms: Option<f64>,
    /// From the fault: the new master's keepalived became MASTER, and its
    /// database was promoted (writable), from its `dbctl.log`.
    pub vrrp_master_ms: Option<f64>,
    pub writable_ms: Option<f64>,
    pub acked_before: usize,
    pub acked_after: usize,
    /// Preconditions at the fault: semi-sync ON, no commit without an ACK.
    pub preconditions: Vec<String>,
    pub verdict: Verdict,
    /// Acknowledged and lost (exact count).
    pub lost: usize,
    /// Problems after the run (divergence, a member that did not rejoin).
    pub problems: Vec<String>,
}

impl WorkloadRun {
    /// Whether the run proves what it should: preconditions held, nothing
    /// lost or invented, the VIP moved, the pair whole again.
    pub fn passed(&self) -> bool {
        self.preconditions.is_empty() && self.verdict.clean() && self.to.is_some() && self.problems.is_empty()
    }
}

/// What the drill deliberately breaks (the negative control).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsafe {
    /// Before the fault: semi-sync timeout 500 ms on the master and the
    /// standby's IO thread stopped, so the master falls back to
    /// asynchronous replication and acknowledges writes the standby never
    /// gets. The checker must report them lost.
    pub async_fallback: bool,
}

/// `mariadb -e SQL` as root on a member's socket; the output's rows.
pub fn sql(ns: &str, dir: &Path, query: &str) -> Result<String> {
    let cnf = format!("--defaults-file={}", dir.join("my.cnf").display());
    vipcast_lab::run(Command::new("timeout").args([
        "10",
        "ip",
        "netns",
        "exec",
        ns,
        "mariadb",
        &cnf,
        "--connect-timeout=2",
        "-N",
        "-B",
        "-e",
        query,
    ]))
    .map_err(Error::from)
}

fn status(ns: &str, dir: &Path, name: &str) -> Result<String> {
    let out = sql(ns, dir, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))?;
    Ok(out.split('\t').nth(1).unwrap_or_default().trim().to_string())
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default().trim().to_string()
}

fn writable(ns: &str, dir: &Path) -> bool {
    sql(ns, dir, "SELECT @@global.read_only").is_ok_and(|o| o.trim() == "0")
}

/// The stored ids at or above `base`.
fn stored(ns: &str, dir: &Path, base: u64) -> Result<BTreeSet<u64>> {
    let out = sql(ns, dir, &format!("SELECT id FROM vipcast.ops WHERE id >= {base}"))?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// From a `dbctl.log`: ms from `at_us` to the first `-> MASTER` line and to
/// the first `promoted` line after it.
pub fn stages(log: &str, at_us: u64) -> (Option<f64>, Option<f64>) {
    let at_ms = at_us / 1000;
    let after = |needle: &str| {
        log.lines()
            .filter_map(|l| {
                let ms: u64 = l.split_whitespace().next()?.parse().ok()?;
                (ms >= at_ms && l.contains(needle)).then(|| (ms - at_ms) as f64)
            })
            .next()
    };
    (after("-> MASTER"), after("promoted after"))
}

/// A client run in the target's client VM for a whole session (a hidden
/// `vipcast` subcommand), its lines followed into `log`.
pub(crate) struct Follower<'a, L> {
    opts: &'a Options<'a>,
    _client: Child,
    tail: Tail,
    pub(crate) log: L,
    _dir: tempfile::TempDir,
}

impl<'a, L: crate::record::ApplyLine + Default> Follower<'a, L> {
    /// Starts `vipcast <args>` in `target`'s client VM.
    pub(crate) fn start(
        target: &Target,
        opts: &'a Options<'a>,
        args: &[std::ffi::OsString],
    ) -> Result<Follower<'a, L>> {
        let dir = tempfile::Builder::new()
            .prefix("vipcast-workload-")
            .tempdir()
            .map_err(|e| Error::Failed(format!("temporary directory: {e}")))?;
        let out = dir.path().join("client");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &target.client.ns]).arg(&opts.exe).args(args).process_group(0);
        let client = Child::spawn(&mut cmd, &out)?;
        Ok(Follower { opts, _client: client, tail: Tail::new(out), log: L::default(), _dir: dir })
    }

    /// Sleeps `d` (Ctrl-C ends it with [`Error::Cancelled`]), then reads
    /// what the client wrote meanwhile.
    pub(crate) fn sleep(&mut self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.cancelled()?;
            std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
        }
        self.tail.poll(&mut self.log).map_err(|e| Error::Failed(format!("reading the client's log: {e}")))?;
        Ok(())
    }

    /// One line of progress.
    pub(crate) fn say(&self, line: &str) {
        (self.opts.progress)(line);
    }

    pub(crate) fn cancelled(&self) -> Result<()> {
        if self.opts.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

/// A workload session on one target: the client runs for all its runs.
struct Session<'a> {
    target: &'a Target,
    workload: &'a Workload,
    opts: &'a Options<'a>,
    c: Follower<'a, OpLog>,
    /// Operations finished before this were judged by an earlier run.
    judged_until: u64,
}

impl<'a> Session<'a> {
    fn start(target: &'a Target, opts: &'a Options<'a>) -> Result<Session<'a>> {
        let workload = target
            .workload
            .as_ref()
            .ok_or_else(|| Error::Refused(format!("VIP {} has no workload (`[[vip]] workload`)", target.vip_name)))?;
        let first = workload.dirs.first().ok_or_else(|| Error::Failed("no workload directory".into()))?;
        let args = [
            "workload-client".into(),
            "--addr".into(),
            std::net::SocketAddr::new(target.vip_ip, 3306).to_string().into(),
            "--credentials".into(),
            first.join("db.env").into_os_string(),
            "--workers".into(),
            WORKERS.to_string().into(),
        ];
        let c = Follower::start(target, opts, &args)?;
        (opts.progress)(&format!(
            "{}: workload client in {} writing through {}:3306 ({WORKERS} connections)",
            target.variant, target.client.name, target.vip_ip
        ));
        Ok(Session { target, workload, opts, c, judged_until: 0 })
    }

    fn sleep(&mut self, d: Duration) -> Result<()> {
        self.c.sleep(d)
    }

    /// The members with their directories.
    fn pairs(&self) -> Vec<(&'a Member, &'a PathBuf)> {
        self.target.members.iter().zip(&self.workload.dirs).collect()
    }

    /// Waits until one member is a writable master in lossless mode (role 1,
    /// semi-sync ON), the other a caught-up replica, and acknowledgements
    /// flow; returns (master, its peer).
    fn healthy(&mut self) -> Result<(usize, usize)> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            self.sleep(Duration::from_millis(100))?;
            let pairs = self.pairs();
            let masters: Vec<usize> = (0..pairs.len()).filter(|&i| writable(&pairs[i].0.ns, pairs[i].1)).collect();
            let why = match masters.as_slice() {
                [m] => {
                    let p = 1 - m;
                    let (mm, md) = pairs[*m];
                    let (_, pd) = pairs[p];
                    let now = now_us();
                    if file(md, "role") != "1" {
                        format!("{} is not yet lossless (role {})", mm.name, file(md, "role"))
                    } else if status(&mm.ns, md, "Rpl_semi_sync_master_status")? != "ON" {
                        format!("semi-sync is not ON on {}", mm.name)
                    } else if file(pd, "rejoining") == "1" || file(pd, "health") != "0" {
                        format!("{} has not caught up", pairs[p].0.name)
                    } else if self.c.log.acked_between(now.saturating_sub(1_000_000), now) < ENOUGH {
                        "too few acknowledged writes in the last second".into()
                    } else {
                        return Ok((*m, p));
                    }
                }
                [] => "no member is writable".into(),
                _ => "both members are writable".into(),
            };
            if why != last {
                (self.opts.progress)(&format!("{}: waiting: {why}", self.target.variant));
                last = why.clone();
            }
            if start.elapsed() > LIMIT {
                return Err(Error::Failed(format!(
                    "{}: the pair is not healthy after {LIMIT:?}: {why}",
                    self.target.variant
                )));
            }
        }
    }

    fn run(&mut self, fault: Fault, unsafe_: Unsafe, phase: Duration) -> Result<WorkloadRun> {
        let (m, p) = self.healthy()?;
        let pairs = self.pairs();
        let (master, mdir) = pairs[m];
        let (peer, pdir) = pairs[p];
        let no_tx = status(&master.ns, mdir, "Rpl_semi_sync_master_no_tx")?;
        if unsafe_.async_fallback {
            sql(&master.ns, mdir, "SET GLOBAL rpl_semi_sync_master_timeout=500")?;
            sql(&peer.ns, pdir, "STOP SLAVE IO_THREAD")?;
            (self.opts.progress)("unsafe: semi-sync timeout 500 ms on the master, the standby's IO thread stopped");
        }
        let window_start = now_us();
        self.sleep(Duration::from_secs(1) + phase)?;
        let mut preconditions = Vec::new();
        if status(&master.ns, mdir, "Rpl_semi_sync_master_status")? != "ON" {
            preconditions.push(format!("semi-sync was OFF on {} at the fault", master.name));
        }
        let no_tx_now = status(&master.ns, mdir, "Rpl_semi_sync_master_no_tx")?;
        if no_tx_now != no_tx {
            preconditions.push(format!(
                "{} committed without an ACK before the fault (Rpl_semi_sync_master_no_tx {no_tx} -> {no_tx_now})",
                master.name
            ));
        }
        let injected = fault::inject(fault, self.target, master)?;
        let at = injected.at_us;
        (self.opts.progress)(&format!("{}: {} on {}: {}", self.target.variant, fault, master.name, injected.what));
        let acked_before = self.c.log.acked_between(window_start, at);
        // The failover: the peer writable, then acknowledgements flowing
        // again (counted from when it was seen writable: acknowledgements
        // right after the fault may still be the old master's).
        let start = Instant::now();
        let mut to: Option<(String, u64)> = None;
        let mut settled_us = now_us();
        while start.elapsed() < LIMIT {
            self.sleep(Duration::from_millis(50))?;
            if to.is_none() && writable(&peer.ns, pdir) {
                to = Some((peer.name.clone(), now_us()));
            }
            settled_us = now_us();
            if let Some((_, since)) = &to
                && self.c.log.acked_between(*since, u64::MAX) >= ENOUGH
            {
                break;
            }
        }
        let to = to.map(|(name, _)| name);
        let mut problems = Vec::new();
        if to.is_none() {
            problems.push(format!("{} did not become writable within {LIMIT:?}", peer.name));
        }
        injected.restore()?;
        // Every operation in flight at the failover has a fate by now.
        self.sleep(IO_TIMEOUT + Duration::from_millis(500))?;
        let base = self.c.log.base.unwrap_or(0);
        let snapshot_us = now_us();
        let kept = stored(&peer.ns, pdir, base)?;
        // Operations in flight at the snapshot settle; then every stored id
        // must be in the log (no phantoms).
        self.sleep(IO_TIMEOUT + Duration::from_millis(500))?;
        let (verdict, lost) = ops::verify(&self.c.log, &kept, self.judged_until, snapshot_us);
        self.judged_until = snapshot_us;
        let outage_ms = self.c.log.longest_gap(at.saturating_sub(PRE_FAULT_US), settled_us).map(|g| g as f64 / 1000.0);
        let acked_after = self.c.log.acked_between(at, u64::MAX);
        // The old master rejoins as a replica and holds the same rows.
        if unsafe_.async_fallback {
            // The old master acknowledged writes its peer never got: it
            // cannot rejoin (GTID strict mode refuses it), by design.
            problems.push("negative control: the pair diverged by design; rejoin not checked".into());
        } else if to.is_some()
            && let Err(e) = self.rejoined(master, mdir, peer, pdir, base)
        {
            problems.push(e.to_string());
        }
        let (vrrp_master_ms, writable_ms) =
            stages(&std::fs::read_to_string(pdir.join("dbctl.log")).unwrap_or_default(), at);
        Ok(WorkloadRun {
            variant: self.target.variant.clone(),
            fault,
            from: master.name.clone(),
            to,
            outage_ms,
            vrrp_master_ms,
            writable_ms,
            acked_before,
            acked_after,
            preconditions,
            verdict,
            lost,
            problems,
        })
    }

    /// Waits until the old master is a caught-up replica of the new one
    /// (MASTER_GTID_WAIT on the new master's binlog position) and both hold
    /// the same ids.
    fn rejoined(&mut self, old: &Member, odir: &Path, new: &Member, ndir: &Path, base: u64) -> Result<()> {
        let start = Instant::now();
        loop {
            if file(odir, "rejoining") == "0" && file(odir, "role") == "0" && !writable(&old.ns, odir) {
                break;
            }
            if start.elapsed() > LIMIT {
                return Err(Error::Failed(format!(
                    "{} did not rejoin as a replica within {LIMIT:?} (see {})",
                    old.name,
                    odir.join("dbctl.log").display()
                )));
            }
            self.sleep(Duration::from_millis(100))?;
        }
        let pos = sql(&new.ns, ndir, "SELECT @@global.gtid_binlog_pos")?.trim().to_string();
        let waited = sql(&old.ns, odir, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
        if waited.trim() != "0" {
            return Err(Error::Failed(format!("{} did not reach {pos} within 30 s", old.name)));
        }
        // The replica first: what it holds then, the master held before.
        let b = stored(&old.ns, odir, base)?;
        let a = stored(&new.ns, ndir, base)?;
        let only_old = b.iter().filter(|id| !a.contains(id)).count();
        if only_old > 0 {
            return Err(Error::Failed(format!(
                "{} holds {only_old} row(s) {} does not: the pair diverged",
                old.name, new.name
            )));
        }
        Ok(())
    }
}

/// Runs `runs` failovers of `fault` on `target`.
pub fn runs(
    target: &Target,
    fault: Fault,
    runs: usize,
    unsafe_: Unsafe,
    opts: &Options<'_>,
) -> Result<Vec<WorkloadRun>> {
    fault::check(fault, target)?;
    if !fault.moves_vip() {
        return Err(Error::Refused(format!("{fault} does not move the VIP: nothing for the workload to survive")));
    }
    let mut s = Session::start(target, opts)?;
    let mut rng = crate::rng::Rng::from_clock();
    let interval = Duration::from_secs_f64(target.advert_int);
    let mut out = Vec::new();
    for i in 0..runs {
        s.c.cancelled()?;
        let r = s.run(fault, unsafe_, rng.below(interval))?;
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or("-".into());
        (opts.progress)(&format!(
            "{} run {}/{runs}: {} -> {}: VRRP master +{}, writable +{}, outage {}, acknowledged {}+{}, lost {}, in doubt {} ({} stored){}",
            r.variant,
            i + 1,
            r.from,
            r.to.as_deref().unwrap_or("nobody"),
            ms(r.vrrp_master_ms),
            ms(r.writable_ms),
            ms(r.outage_ms),
            r.acked_before,
            r.acked_after,
            r.lost,
            r.verdict.in_doubt,
            r.verdict.in_doubt_stored,
            if r.passed() { String::new() } else { format!("; FAILED: {:?} {:?}", r.preconditions, r.problems) }
        ));
        out.push(r);
    }
    Ok(out)
}

/// Outage and fates of one variant's runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadSummary {
    pub variant: String,
    pub runs: usize,
    pub outage_p50_ms: Option<f64>,
    pub outage_p95_ms: Option<f64>,
    pub outage_max_ms: Option<f64>,
    /// Medians: the new master's keepalived MASTER, its database writable.
    pub vrrp_master_p50_ms: Option<f64>,
    pub writable_p50_ms: Option<f64>,
    pub acked: usize,
    pub lost: usize,
    pub in_doubt: usize,
    pub in_doubt_stored: usize,
    pub passed: usize,
}

impl WorkloadSummary {
    fn of(variant: &str, runs: &[&WorkloadRun]) -> WorkloadSummary {
        let outages: Vec<f64> = runs.iter().filter_map(|r| r.outage_ms).collect();
        WorkloadSummary {
            variant: variant.to_string(),
            runs: runs.len(),
            outage_p50_ms: crate::analysis::percentile(&outages, 50.0),
            outage_p95_ms: crate::analysis::percentile(&outages, 95.0),
            outage_max_ms: outages.iter().copied().fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x)))),
            vrrp_master_p50_ms: crate::analysis::percentile(
                &runs.iter().filter_map(|r| r.vrrp_master_ms).collect::<Vec<_>>(),
                50.0,
            ),
            writable_p50_ms: crate::analysis::percentile(
                &runs.iter().filter_map(|r| r.writable_ms).collect::<Vec<_>>(),
                50.0,
            ),
            acked: runs.iter().map(|r| r.verdict.acked).sum(),
            lost: runs.iter().map(|r| r.lost).sum(),
            in_doubt: runs.iter().map(|r| r.verdict.in_doubt).sum(),
            in_doubt_stored: runs.iter().map(|r| r.verdict.in_doubt_stored).sum(),
            passed: runs.iter().filter(|r| r.passed()).count(),
        }
    }
}

/// A workload drill: runs on the overlay (per assist setting), then on
/// the baseline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadReport {
    pub workload: String,
    pub vip: String,
    pub fault: Fault,
    pub unsafe_async_fallback: bool,
    pub summaries: Vec<WorkloadSummary>,
    pub runs: Vec<WorkloadRun>,
}

impl WorkloadReport {
    /// Whether every run passed.
    pub fn passed(&self) -> bool {
        self.runs.iter().all(WorkloadRun::passed)
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "workload",
            "fault",
            "variant",
            "runs",
            "outage p50",
            "p95",
            "max",
            "acked",
            "lost",
            "in doubt (stored)",
            "passed",
        ]);
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or("-".into());
        for s in &self.summaries {
            t.add_row([
                self.workload.clone(),
                self.fault.to_string(),
                s.variant.clone(),
                s.runs.to_string(),
                ms(s.outage_p50_ms),
                ms(s.outage_p95_ms),
                ms(s.outage_max_ms),
                s.acked.to_string(),
                s.lost.to_string(),
                format!("{} ({})", s.in_doubt, s.in_doubt_stored),
                format!("{}/{}", s.passed, s.runs),
            ]);
        }
        format!("{t}\n")
    }
}

/// Drills `fault` on a workload VIP: the overlay (once per assist setting
/// when `variants.assist` says so), then the native-L2 baseline with the
/// same pair, in the same run.
pub fn drill(
    overlay: &Target,
    fault: Fault,
    variants: crate::Variants,
    unsafe_: Unsafe,
    opts: &Options<'_>,
) -> Result<WorkloadReport> {
    fault::check(fault, overlay)?;
    let mut all = crate::drill::per_assist(overlay, variants.assist, |t| runs(t, fault, opts.runs, unsafe_, opts))?;
    if variants.baseline {
        let baseline = crate::baseline::Baseline::build(overlay, opts.progress)?;
        all.extend(runs(baseline.target(), fault, opts.runs, unsafe_, opts)?);
    }
    let mut variants_seen: Vec<String> = Vec::new();
    for r in &all {
        if !variants_seen.contains(&r.variant) {
            variants_seen.push(r.variant.clone());
        }
    }
    let summaries = variants_seen
        .iter()
        .map(|v| WorkloadSummary::of(v, &all.iter().filter(|r| &r.variant == v).collect::<Vec<_>>()))
        .collect();
    Ok(WorkloadReport {
        workload: "mariadb".into(),
        vip: overlay.vip_name.clone(),
        fault,
        unsafe_async_fallback: unsafe_.async_fallback,
        summaries,
        runs: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_from_a_dbctl_log() {
        let log = "1000 dbctl[1]: keepalived: INIT -> BACKUP\n\
                   1000 dbctl[1]: keepalived: BACKUP -> MASTER\n\
                   5065 dbctl[2]: keepalived: BACKUP -> MASTER\n\
                   5130 dbctl[2]: promoted after applying 0-1-9; semi-sync disarmed until the peer rejoins\n\
                   junk\n";
        assert_eq!(stages(log, 5_000_000), (Some(65.0), Some(130.0)));
        assert_eq!(stages(log, 6_000_000), (None, None));
    }
}

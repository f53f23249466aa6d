//! Drills on the payment service (`vipcast drill --workload http`): the
//! payment client pays through the service's VIP for the whole session;
//! per run a fault on the service's master (its preferred member: the web
//! tier is stateless and keepalived preempts back), the outage in paid
//! answers, then the payments stored (read on the database's writable
//! member) judged against every answer the client got.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::payment::{self, PayLog, PayVerdict};
use super::sql;
use crate::fault::{self, Fault};
use crate::probe::now_us;
use crate::session::Options;
use crate::target::{Target, Workload};
use crate::{Error, Result};

/// Paid answers needed before the fault and after the failover.
const ENOUGH: usize = 30;

/// How long the service may take to be healthy, and a failover to settle.
const LIMIT: Duration = Duration::from_secs(30);

/// One run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayRun {
    pub variant: String,
    pub fault: Fault,
    pub from: String,
    /// Longest time without a paid answer around the fault.
    pub outage_ms: Option<f64>,
    pub paid_before: usize,
    pub paid_after: usize,
    /// 5xx answers once the failover had settled: must be 0.
    pub server_errors_after: usize,
    pub verdict: PayVerdict,
    pub problems: Vec<String>,
}

impl PayRun {
    pub fn passed(&self) -> bool {
        self.verdict.clean() && self.problems.is_empty() && self.server_errors_after == 0
    }
}

struct Session<'a> {
    target: &'a Target,
    workload: &'a Workload,
    c: super::Follower<'a, PayLog>,
    judged_until: u64,
}

impl<'a> Session<'a> {
    fn start(target: &'a Target, opts: &'a Options<'a>) -> Result<Session<'a>> {
        let workload = target
            .workload
            .as_ref()
            .filter(|w| w.kind == "http")
            .ok_or_else(|| Error::Refused(format!("VIP {} is not a payment service", target.vip_name)))?;
        if workload.db.is_empty() {
            return Err(Error::Failed("the payment service's database pair was not found".into()));
        }
        let args = [
            "payment-client".into(),
            "--addr".into(),
            std::net::SocketAddr::new(target.vip_ip, 80).to_string().into(),
            "--workers".into(),
            super::WORKERS.to_string().into(),
        ];
        let c = super::Follower::start(target, opts, &args)?;
        (opts.progress)(&format!(
            "{}: payment client in {} paying through {}:80 ({} connections)",
            target.variant,
            target.client.name,
            target.vip_ip,
            super::WORKERS
        ));
        Ok(Session { target, workload, c, judged_until: 0 })
    }

    fn sleep(&mut self, d: Duration) -> Result<()> {
        self.c.sleep(d)
    }

    /// Paid answers flowing: at least [`ENOUGH`] in the last second.
    fn healthy(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            self.sleep(Duration::from_millis(100))?;
            let now = now_us();
            if self.c.log.paid_between(now.saturating_sub(1_000_000), now) >= ENOUGH {
                return Ok(());
            }
            if start.elapsed() > LIMIT {
                return Err(Error::Failed(format!(
                    "{}: fewer than {ENOUGH} payments a second after {LIMIT:?}",
                    self.target.variant
                )));
            }
        }
    }

    /// The payments stored at or above the client's first key, read on the
    /// database's writable member.
    fn stored(&self, base: u64) -> Result<BTreeMap<u64, u64>> {
        let writable = self
            .workload
            .db
            .iter()
            .find(|(ns, dir)| sql(ns, dir, "SELECT @@global.read_only").is_ok_and(|o| o.trim() == "0"))
            .ok_or_else(|| Error::Failed("no member of the database pair is writable".into()))?;
        let out = sql(
            &writable.0,
            &writable.1,
            &format!(
                "SELECT idem_key, id FROM vipcast.payments WHERE idem_key >= '{}' AND LENGTH(idem_key) = {}",
                payment::key(base),
                payment::key(base).len()
            ),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, id) = l.split_once('\t')?;
                Some((k.trim().strip_prefix('k')?.parse().ok()?, id.trim().parse().ok()?))
            })
            .collect())
    }

    fn run(&mut self, fault: Fault, phase: Duration) -> Result<PayRun> {
        self.healthy()?;
        let master = self.target.master().ok_or_else(|| Error::Failed("no members".into()))?;
        let window_start = now_us();
        self.sleep(Duration::from_secs(1) + phase)?;
        let injected = fault::inject(fault, self.target, master)?;
        let at = injected.at_us;
        self.c.say(&format!("{}: {} on {}: {}", self.target.variant, fault, master.name, injected.what));
        let paid_before = self.c.log.paid_between(window_start, at);
        // Settled: half a second past the fault, and paying steadily again.
        let start = Instant::now();
        let mut problems = Vec::new();
        let settled_us = loop {
            self.sleep(Duration::from_millis(50))?;
            let now = now_us();
            if now > at + 500_000 && self.c.log.paid_between(now.saturating_sub(300_000), now) >= ENOUGH / 3 {
                break now;
            }
            if start.elapsed() > LIMIT {
                problems.push(format!("payments did not resume within {LIMIT:?}"));
                break now;
            }
        };
        let outage_ms = self.c.log.longest_gap(at.saturating_sub(500_000), settled_us).map(|g| g as f64 / 1000.0);
        let paid_after = self.c.log.paid_between(at, u64::MAX);
        self.sleep(Duration::from_millis(500))?;
        let server_errors_after = self.c.log.server_errors(settled_us, now_us());
        injected.restore()?;
        // Back on the preferred member (keepalived preempts), then judged.
        self.healthy()?;
        let base = self.c.log.base.unwrap_or(0);
        let snapshot_us = now_us();
        let stored = self.stored(base)?;
        // Attempts in flight at the snapshot finish (the client's timeout).
        self.sleep(payment::IO_TIMEOUT + Duration::from_millis(500))?;
        let verdict = payment::verify(&self.c.log, &stored, self.judged_until, snapshot_us);
        self.judged_until = snapshot_us;
        Ok(PayRun {
            variant: self.target.variant.clone(),
            fault,
            from: master.name.clone(),
            outage_ms,
            paid_before,
            paid_after,
            server_errors_after,
            verdict,
            problems,
        })
    }
}

/// Runs `runs` failovers of `fault` on the payment service `target`.
pub fn runs(target: &Target, fault: Fault, runs: usize, opts: &Options<'_>) -> Result<Vec<PayRun>> {
    fault::check(fault, target)?;
    let mut s = Session::start(target, opts)?;
    let mut rng = crate::rng::Rng::from_clock();
    let interval = Duration::from_secs_f64(target.advert_int);
    let mut out = Vec::new();
    for i in 0..runs {
        let r = s.run(fault, rng.below(interval))?;
        (opts.progress)(&format!(
            "{} run {}/{runs}: {}: outage {}, paid {}+{}, lost {}, in doubt {} (paid after all {}), 5xx after {}{}",
            r.variant,
            i + 1,
            r.from,
            r.outage_ms.map(|o| format!("{o:.0} ms")).unwrap_or("-".into()),
            r.paid_before,
            r.paid_after,
            r.verdict.lost.len(),
            r.verdict.in_doubt,
            r.verdict.paid_after_doubt,
            r.server_errors_after,
            if r.passed() { String::new() } else { format!("; FAILED: {:?} {:?}", r.verdict, r.problems) }
        ));
        out.push(r);
    }
    Ok(out)
}

/// A payment drill: runs per overlay variant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayReport {
    pub vip: String,
    pub fault: Fault,
    pub runs: Vec<PayRun>,
}

impl PayReport {
    pub fn passed(&self) -> bool {
        self.runs.iter().all(PayRun::passed)
    }

    /// One row per variant: outage percentiles, payments, losses.
    pub fn table(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(HEADER);
        for row in self.rows() {
            t.add_row(row);
        }
        format!("{t}\n")
    }

    /// The same as a markdown table.
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
        for row in self.rows() {
            s.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        s
    }

    fn rows(&self) -> Vec<[String; 12]> {
        let mut out = Vec::new();
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or("-".into());
        let mut variants: Vec<&str> = Vec::new();
        for r in &self.runs {
            if !variants.contains(&r.variant.as_str()) {
                variants.push(&r.variant);
            }
        }
        for v in variants {
            let runs: Vec<&PayRun> = self.runs.iter().filter(|r| r.variant == v).collect();
            let outages: Vec<f64> = runs.iter().filter_map(|r| r.outage_ms).collect();
            let max = outages.iter().copied().fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
            out.push([
                "http".to_string(),
                self.fault.to_string(),
                v.to_string(),
                runs.len().to_string(),
                ms(crate::analysis::percentile(&outages, 50.0)),
                ms(crate::analysis::percentile(&outages, 95.0)),
                ms(max),
                runs.iter().map(|r| r.verdict.paid).sum::<usize>().to_string(),
                runs.iter().map(|r| r.verdict.lost.len()).sum::<usize>().to_string(),
                format!(
                    "{} ({})",
                    runs.iter().map(|r| r.verdict.in_doubt).sum::<usize>(),
                    runs.iter().map(|r| r.verdict.paid_after_doubt).sum::<usize>()
                ),
                runs.iter().map(|r| r.server_errors_after).sum::<usize>().to_string(),
                format!("{}/{}", runs.iter().filter(|r| r.passed()).count(), runs.len()),
            ]);
        }
        out
    }
}

const HEADER: [&str; 12] = [
    "workload",
    "fault",
    "variant",
    "runs",
    "outage p50",
    "p95",
    "max",
    "paid",
    "lost",
    "in doubt (paid on retry)",
    "5xx after",
    "passed",
];

/// Drills `fault` on a payment service (per assist setting when
/// `assist` says so). The web tier has no native-L2 baseline here: it
/// writes through the lab's database VIP.
pub fn drill(overlay: &Target, fault: Fault, assist: Option<crate::Assist>, opts: &Options<'_>) -> Result<PayReport> {
    let all = crate::drill::per_assist(overlay, assist, |t| runs(t, fault, opts.runs, opts))?;
    Ok(PayReport { vip: overlay.vip_name.clone(), fault, runs: all })
}

//! What a drill reports: per run, per variant (overlay, baseline, …), per
//! drill; summaries (nearest-rank percentiles), the table and markdown.
//! All times in the reports are milliseconds; stage times are relative to
//! the fault (negative: before it).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::analysis::percentile;
use crate::fault::Fault;

/// When each stage of one failover happened, ms after the fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// The old master's last reply to a probe.
    pub last_old_reply_ms: Option<f64>,
    /// The master's chassis sent its priority-0 advert (assisted handover).
    pub assisted_ms: Option<f64>,
    /// The new master's first GARP, sniffed by its chassis' agent (log).
    pub garp_sniffed_ms: Option<f64>,
    /// The claim's `observed_at` (ms resolution) and `accepted_at` (history).
    pub claim_observed_ms: Option<f64>,
    pub claim_accepted_ms: Option<f64>,
    /// The last agent that re-programmed the new owner within the run (log).
    pub last_agent_ms: Option<f64>,
    /// The first probe answered by the new master.
    pub first_new_reply_ms: Option<f64>,
}

impl StageTimes {
    /// The per-stage medians of `runs`.
    pub fn medians<'a>(runs: impl Iterator<Item = &'a StageTimes> + Clone) -> StageTimes {
        let med = |f: fn(&StageTimes) -> Option<f64>| {
            let v: Vec<f64> = runs.clone().filter_map(f).collect();
            percentile(&v, 50.0)
        };
        StageTimes {
            last_old_reply_ms: med(|s| s.last_old_reply_ms),
            assisted_ms: med(|s| s.assisted_ms),
            garp_sniffed_ms: med(|s| s.garp_sniffed_ms),
            claim_observed_ms: med(|s| s.claim_observed_ms),
            claim_accepted_ms: med(|s| s.claim_accepted_ms),
            last_agent_ms: med(|s| s.last_agent_ms),
            first_new_reply_ms: med(|s| s.first_new_reply_ms),
        }
    }
}

/// The probes of one run, for the SVG timeline.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Each probe sent in the run's window: (sent, µs after the fault; who
    /// answered within the run, an index into `responders`).
    pub probes: Vec<(i64, Option<u16>)>,
    pub responders: Vec<String>,
    pub old_master: String,
    /// The end of the run, µs after the fault.
    pub end_us: i64,
    pub interval_us: i64,
}

/// One run: one fault injected and undone.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: usize,
    /// µs since the Unix epoch.
    pub fault_at_us: u64,
    pub injected: String,
    /// How long the injecting command took.
    pub inject_ms: f64,
    pub old_master: String,
    pub new_master: Option<String>,
    /// The longest interval without a reply (see [`crate::analysis`]).
    pub outage_ms: f64,
    /// Who answered just before and just after it.
    pub gap_from: Option<String>,
    pub gap_to: Option<String>,
    pub sent: u64,
    pub lost: u64,
    /// The prober's longest pause between sends in the window.
    pub max_send_gap_ms: f64,
    /// No new master answered steadily within the run's time limit.
    pub timed_out: bool,
    /// The master's chassis sent the priority-0 advert on its behalf
    /// (platform-assisted handover; overlay only).
    pub assisted: bool,
    /// Runs of consecutive unanswered probes, by send time: [from, to) ms
    /// after the fault. One span is a clean failover; more mean losses
    /// besides the outage.
    pub loss_spans: Vec<[f64; 2]>,
    pub stages: StageTimes,
    /// The VIP's owner generation the controller gave the new master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Agents that re-programmed that generation within the run / agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents_reprogrammed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_agent: Option<String>,
    /// Ownership changes besides the failover's during the run (flapping).
    pub extra_owner_changes: usize,
    /// From undoing the fault until the preferred master held the VIP and
    /// answered steadily again.
    pub restore_ms: f64,
    /// Gratuitous ARPs the drill sent from the restored master because the
    /// control plane had not followed it (see the README).
    pub restore_nudges: u32,
    #[serde(skip)]
    pub timeline: Timeline,
}

impl Timeline {
    /// Runs of consecutive unanswered probes: [from, to) ms after the fault.
    pub fn loss_spans(&self) -> Vec<[f64; 2]> {
        let mut spans: Vec<[f64; 2]> = Vec::new();
        let mut open: Option<(i64, i64)> = None;
        for &(off, r) in &self.probes {
            match (r, open) {
                (None, None) => open = Some((off, off + self.interval_us)),
                (None, Some((a, _))) => open = Some((a, off + self.interval_us)),
                (Some(_), Some((a, b))) => {
                    spans.push([a as f64 / 1000.0, b as f64 / 1000.0]);
                    open = None;
                }
                (Some(_), None) => {}
            }
        }
        if let Some((a, b)) = open {
            spans.push([a as f64 / 1000.0, b as f64 / 1000.0]);
        }
        spans
    }
}

/// Percentiles of a variant's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub lost_p50: Option<f64>,
    pub timed_out: usize,
    /// Runs with an assisted handover.
    pub assisted: usize,
    /// Per-stage medians.
    pub stages_p50: StageTimes,
}

impl Summary {
    pub fn of(runs: &[RunReport]) -> Summary {
        let outages: Vec<f64> = runs.iter().map(|r| r.outage_ms).collect();
        let lost: Vec<f64> = runs.iter().map(|r| r.lost as f64).collect();
        Summary {
            runs: runs.len(),
            p50_ms: percentile(&outages, 50.0),
            p95_ms: percentile(&outages, 95.0),
            max_ms: percentile(&outages, 100.0),
            min_ms: percentile(&outages, 0.0),
            lost_p50: percentile(&lost, 50.0),
            timed_out: runs.iter().filter(|r| r.timed_out).count(),
            assisted: runs.iter().filter(|r| r.assisted).count(),
            stages_p50: StageTimes::medians(runs.iter().map(|r| &r.stages)),
        }
    }
}

/// The runs of one variant: `overlay` (the VPC's assisted handover off),
/// `overlay+assist` (on), `baseline` (native L2).
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub fault: Fault,
    /// The node the prober ran in.
    pub from: String,
    pub runs: Vec<RunReport>,
    pub summary: Summary,
    /// This variant's p50 and p95 over the drill's baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_p95: Option<f64>,
}

impl VariantReport {
    /// The runs of a variant, summarised.
    pub fn new(variant: &str, fault: Fault, from: &str, runs: Vec<RunReport>) -> VariantReport {
        VariantReport {
            variant: variant.to_string(),
            fault,
            from: from.to_string(),
            summary: Summary::of(&runs),
            runs,
            ratio_p50: None,
            ratio_p95: None,
        }
    }
}

impl VariantReport {
    /// The run whose outage is the median (for the timeline).
    pub fn median_run(&self) -> Option<&RunReport> {
        let mut v: Vec<&RunReport> = self.runs.iter().collect();
        v.sort_by(|a, b| a.outage_ms.total_cmp(&b.outage_ms));
        v.get(v.len().saturating_sub(1) / 2).copied()
    }
}

/// One drill: a fault, N runs per variant.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub lab: String,
    pub vip: String,
    pub vip_ip: String,
    pub fault: Fault,
    pub from: String,
    /// keepalived's advert_int (s).
    pub advert_int: f64,
    pub probe_interval_ms: f64,
    pub variants: Vec<VariantReport>,
    /// The first overlay variant's p50 / baseline p50 (and p95), when both
    /// ran; each variant has its own too.
    pub ratio_p50: Option<f64>,
    pub ratio_p95: Option<f64>,
    pub notes: Vec<String>,
}

impl DrillReport {
    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&VariantReport> {
        self.variants.iter().find(|v| v.variant == name)
    }

    /// Fills in the ratios of every variant over the `baseline` one.
    pub fn compute_ratios(&mut self) {
        let Some(b) = self.variant("baseline").map(|b| b.summary.clone()) else { return };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        for v in self.variants.iter_mut().filter(|v| v.variant != "baseline") {
            v.ratio_p50 = ratio(v.summary.p50_ms, b.p50_ms);
            v.ratio_p95 = ratio(v.summary.p95_ms, b.p95_ms);
        }
        if let Some(first) = self.variants.iter().find(|v| v.variant != "baseline") {
            self.ratio_p50 = first.ratio_p50;
            self.ratio_p95 = first.ratio_p95;
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn stage(v: Option<f64>) -> String {
    v.map(|v| format!("{v:+.0}")).unwrap_or_else(|| "-".into())
}

/// The column headers of [`rows`].
pub const HEADER: [&str; 12] = [
    "fault",
    "from",
    "variant",
    "runs",
    "outage p50",
    "p95",
    "max",
    "lost p50",
    "GARP sniffed",
    "claim accepted",
    "last agent",
    "new master answers",
];

/// One row per variant of each drill (times in ms; stages after the fault);
/// a variant shared by several drills (the demo's baseline) appears once.
pub fn rows(drills: &[&DrillReport]) -> Vec<[String; 12]> {
    let mut out = Vec::new();
    let mut seen: Vec<(Fault, &str, &str, Option<u64>)> = Vec::new();
    for d in drills {
        for v in &d.variants {
            let key = (d.fault, v.variant.as_str(), v.from.as_str(), v.runs.first().map(|r| r.fault_at_us));
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let s = &v.summary;
            let mut runs = s.runs.to_string();
            if s.assisted > 0 {
                runs.push_str(&format!(" ({} assisted)", s.assisted));
            }
            if s.timed_out > 0 {
                runs.push_str(&format!(" ({} timed out)", s.timed_out));
            }
            out.push([
                d.fault.to_string(),
                v.from.clone(),
                v.variant.clone(),
                runs,
                ms(s.p50_ms),
                ms(s.p95_ms),
                ms(s.max_ms),
                ms(s.lost_p50),
                stage(s.stages_p50.garp_sniffed_ms),
                stage(s.stages_p50.claim_accepted_ms),
                stage(s.stages_p50.last_agent_ms),
                stage(s.stages_p50.first_new_reply_ms),
            ]);
        }
    }
    out
}

/// Ratio lines: `link-down from client: overlay / baseline outage p50 1.03, p95 1.05`.
pub fn ratio_lines(drills: &[&DrillReport]) -> Vec<String> {
    let mut out = Vec::new();
    for d in drills {
        for v in d.variants.iter().filter(|v| v.variant != "baseline") {
            let Some(p50) = v.ratio_p50 else { continue };
            out.push(format!(
                "{} from {}: {} / baseline outage p50 {p50:.2}, p95 {}",
                d.fault,
                v.from,
                v.variant,
                v.ratio_p95.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into())
            ));
        }
    }
    out
}

/// The table of `drills`, for a terminal.
pub fn table(drills: &[&DrillReport]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(HEADER);
    for r in rows(drills) {
        t.add_row(r);
    }
    let mut s = t.to_string();
    s.push('\n');
    s.push_str(UNITS);
    s.push('\n');
    for l in ratio_lines(drills) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// What the numbers of the table are.
pub const UNITS: &str = "Outages and stage times in ms; stages are medians, after the fault (claim accepted: 1 ms \
                         resolution).";

/// The same table in GitHub markdown.
pub fn markdown_table(drills: &[&DrillReport]) -> String {
    let mut s = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
    for r in rows(drills) {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s.push('\n');
    s.push_str(UNITS);
    s.push('\n');
    let ratios = ratio_lines(drills);
    if !ratios.is_empty() {
        s.push('\n');
        for l in ratios {
            s.push_str(&format!("- {l}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outage: f64, sniffed: f64) -> RunReport {
        RunReport {
            run: 0,
            fault_at_us: 0,
            injected: String::new(),
            inject_ms: 1.0,
            old_master: "pay1".into(),
            new_master: Some("pay2".into()),
            outage_ms: outage,
            gap_from: None,
            gap_to: None,
            sent: 1000,
            lost: outage as u64,
            max_send_gap_ms: 1.0,
            timed_out: false,
            assisted: false,
            loss_spans: vec![],
            stages: StageTimes { garp_sniffed_ms: Some(sniffed), ..StageTimes::default() },
            generation: None,
            agents_reprogrammed: None,
            last_agent: None,
            extra_owner_changes: 0,
            restore_ms: 0.0,
            restore_nudges: 0,
            timeline: Timeline::default(),
        }
    }

    #[test]
    fn loss_spans_merge_consecutive_lost_probes() {
        let probes = [(-2, Some(0)), (-1, Some(0)), (0, None), (1, None), (2, Some(1)), (3, None), (4, Some(1))];
        let tl = Timeline {
            probes: probes.iter().map(|&(ms, r)| (ms * 1000, r)).collect(),
            interval_us: 1000,
            ..Timeline::default()
        };
        assert_eq!(tl.loss_spans(), [[0.0, 2.0], [3.0, 4.0]]);
        let open = Timeline { probes: vec![(0, Some(0)), (1000, None)], interval_us: 1000, ..Timeline::default() };
        assert_eq!(open.loss_spans(), [[1.0, 2.0]]);
    }

    #[test]
    fn summary_and_ratio() {
        let overlay = vec![run(340.0, 330.0), run(350.0, 335.0), run(400.0, 390.0)];
        let baseline = vec![run(330.0, f64::NAN), run(335.0, f64::NAN)];
        let v = |name: &str, runs: Vec<RunReport>| VariantReport::new(name, Fault::LinkDown, "client", runs);
        let mut d = DrillReport {
            lab: "l".into(),
            vip: "v".into(),
            vip_ip: "192.0.2.1".into(),
            fault: Fault::LinkDown,
            from: "client".into(),
            advert_int: 0.1,
            probe_interval_ms: 1.0,
            variants: vec![v("overlay", overlay), v("baseline", baseline)],
            ratio_p50: None,
            ratio_p95: None,
            notes: vec![],
        };
        d.compute_ratios();
        let o = &d.variants[0].summary;
        assert_eq!((o.p50_ms, o.p95_ms, o.max_ms), (Some(350.0), Some(400.0), Some(400.0)));
        assert_eq!(o.stages_p50.garp_sniffed_ms, Some(335.0));
        assert_eq!(d.variants[1].summary.stages_p50.garp_sniffed_ms, None);
        assert!((d.ratio_p50.unwrap() - 350.0 / 330.0).abs() < 1e-9);
        assert_eq!(d.variants[0].median_run().unwrap().outage_ms, 350.0);
        let t = table(&[&d]);
        assert!(t.contains("overlay / baseline outage p50 1.06"), "{t}");
        assert!(t.contains("stage times in ms"), "{t}");
        let md = markdown_table(&[&d]);
        assert!(
            md.lines().nth(2).unwrap().starts_with("| link-down | client | overlay | 3 | 350 | 400 | 400 |"),
            "{md}"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["fault"], "link-down");
        assert_eq!(json["variants"][0]["summary"]["p50_ms"], 350.0);
    }
}

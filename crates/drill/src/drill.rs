//! One drill: a fault, N runs on the overlay, then N runs on the native-L2
//! baseline built for the purpose, and the comparison.
//!
//! The variants are a list so that more can be compared in the same drill
//! (e.g. the overlay with platform-assisted handover, issue 8: add a
//! variant whose target differs, and it gets its own rows and ratio).

use crate::baseline::Baseline;
use crate::fault::{self, Fault};
use crate::report::DrillReport;
use crate::session::{Options, Session};
use crate::target::{Overlay, Target};
use crate::{Error, Result};

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variants {
    /// Also run the native-L2 baseline (one bridge, same VMs and VRRP).
    pub baseline: bool,
    /// Platform-assisted handover for the overlay runs: `None` as the VPC
    /// is set, else each setting in turn (the VPC is switched through the
    /// API and set back afterwards).
    pub assist: Option<Assist>,
}

impl Default for Variants {
    fn default() -> Variants {
        Variants { baseline: true, assist: None }
    }
}

/// `--assist`: which overlay variants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assist {
    On,
    Off,
    /// Off, then on: both in the same drill.
    Both,
}

impl std::str::FromStr for Assist {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Assist, String> {
        match s {
            "on" => Ok(Assist::On),
            "off" => Ok(Assist::Off),
            "both" => Ok(Assist::Both),
            other => Err(format!("assist {other:?} must be on, off or both")),
        }
    }
}

impl Assist {
    fn settings(self) -> &'static [bool] {
        match self {
            Assist::On => &[true],
            Assist::Off => &[false],
            Assist::Both => &[false, true],
        }
    }
}

/// Sets a VPC's assisted handover through the controller; its agents follow
/// within their watch latency (milliseconds), given a moment here.
fn set_assist(ov: &Overlay, on: bool) -> Result<()> {
    let (url, vpc) = (&ov.controller_url, &ov.vpc);
    let body = serde_json::json!({ "assist": on });
    let timeout = std::time::Duration::from_secs(5);
    vipcast_lab::state::http_patch_json(&format!("{url}/v1/vpcs/{vpc}"), ov.tls.as_ref(), &body, timeout)
        .map_err(|e| Error::Failed(format!("PATCH /v1/vpcs/{vpc}: {e}")))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(())
}

/// The runs `f` makes on `overlay`: once per assisted-handover setting of
/// `assist` (the VPC switched through the API, each target named
/// `overlay` or `overlay+assist`, the setting put back afterwards), or
/// once as the VPC is set.
pub(crate) fn per_assist<T>(
    overlay: &Target,
    assist: Option<Assist>,
    mut f: impl FnMut(&Target) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let (Some(assist), Some(ov)) = (assist, &overlay.overlay) else {
        return f(overlay);
    };
    let _restore = RestoreAssist { ov, was: overlay.variant.ends_with("+assist") };
    let mut all = Vec::new();
    for &on in assist.settings() {
        set_assist(ov, on)?;
        let t = Target { variant: if on { "overlay+assist" } else { "overlay" }.into(), ..overlay.clone() };
        all.extend(f(&t)?);
    }
    Ok(all)
}

/// Sets a VPC's assisted handover back on drop.
struct RestoreAssist<'a> {
    ov: &'a Overlay,
    was: bool,
}

impl Drop for RestoreAssist<'_> {
    fn drop(&mut self) {
        if let Err(e) = set_assist(self.ov, self.was) {
            eprintln!("could not set assist back to {} on VPC {}: {e}", self.was, self.ov.vpc);
        }
    }
}

/// Drills `fault` on `overlay` (a VIP of a lab), then on its baseline.
pub fn drill(overlay: &Target, fault: Fault, variants: Variants, opts: &Options<'_>) -> Result<DrillReport> {
    fault::check(fault, overlay)?;
    if let Some(assist) = variants.assist {
        return drill_assist(overlay, fault, variants, assist, opts);
    }
    (opts.progress)(&format!(
        "drill {fault} on VIP {} ({}): {} runs from {}; preferred master {}, advert_int {} s",
        overlay.vip_name,
        overlay.vip_ip,
        opts.runs,
        overlay.client.name,
        overlay.master().map(|m| m.name.as_str()).unwrap_or("?"),
        overlay.advert_int
    ));
    let baseline =
        if variants.baseline && fault.has_baseline() { Some(Baseline::build(overlay, opts.progress)?) } else { None };
    let mut reports = drills(overlay, &[fault], baseline.as_ref().map(Baseline::target), opts)?;
    let mut report = reports.pop().ok_or_else(|| Error::Failed("no report".into()))?;
    if variants.baseline && !fault.has_baseline() {
        report.notes.push(format!("{fault} has no native-L2 equivalent: no baseline"));
    }
    Ok(report)
}

/// [`drill`] with the overlay runs repeated for each assist setting.
fn drill_assist(
    overlay: &Target,
    fault: Fault,
    variants: Variants,
    assist: Assist,
    opts: &Options<'_>,
) -> Result<DrillReport> {
    let ov = overlay.overlay.as_ref().ok_or_else(|| Error::Failed("--assist needs an overlay VIP".into()))?;
    let was = overlay.variant.ends_with("+assist");
    let _restore = RestoreAssist { ov, was };
    let baseline =
        if variants.baseline && fault.has_baseline() { Some(Baseline::build(overlay, opts.progress)?) } else { None };
    let settings = assist.settings();
    let mut report: Option<DrillReport> = None;
    for (i, &on) in settings.iter().enumerate() {
        set_assist(ov, on)?;
        (opts.progress)(&format!("VPC {}: assisted handover {}", ov.vpc, if on { "on" } else { "off" }));
        let target = Target { variant: if on { "overlay+assist" } else { "overlay" }.into(), ..overlay.clone() };
        let last = i + 1 == settings.len();
        let base = if last { baseline.as_ref().map(Baseline::target) } else { None };
        let mut r = drills(&target, &[fault], base, opts)?.pop().ok_or_else(|| Error::Failed("no report".into()))?;
        report = Some(match report.take() {
            None => r,
            Some(mut acc) => {
                acc.variants.append(&mut r.variants);
                acc
            }
        });
    }
    let mut report = report.ok_or_else(|| Error::Failed("no report".into()))?;
    report.compute_ratios();
    report.notes.clear();
    add_notes(&mut report);
    if variants.baseline && !fault.has_baseline() {
        report.notes.push(format!("{fault} has no native-L2 equivalent: no baseline"));
    }
    Ok(report)
}

/// Notes on what a reader of the numbers should know, each naming its
/// variant and prober (`overlay from client: …`).
pub fn add_notes(report: &mut DrillReport) {
    for v in &report.variants {
        let who = format!("{} from {}", v.variant, v.from);
        let nudges: u32 = v.runs.iter().map(|r| r.restore_nudges).sum();
        if nudges > 0 {
            report.notes.push(format!(
                "{who}: after undoing the fault the controller did not follow the restored master within 1.5 s in {} \
                 of {} runs; the drill re-announced the VIP from it (a restore-time issue, not part of the outage)",
                v.runs.iter().filter(|r| r.restore_nudges > 0).count(),
                v.runs.len()
            ));
        }
        let flaps: usize = v.runs.iter().map(|r| r.extra_owner_changes).sum();
        if flaps > 0 {
            report.notes.push(format!("{who}: {flaps} extra ownership change(s) during runs (flapping)"));
        }
        let scattered =
            v.runs.iter().filter(|r| r.loss_spans.iter().filter(|s| s[1] - s[0] >= 2.0).count() > 1).count();
        if scattered > 0 {
            report.notes.push(format!(
                "{who}: in {scattered} of {} run(s) probes were also lost outside the outage (several loss spans of 2 \
                 ms or more: `loss_spans` in --json)",
                v.runs.len()
            ));
        }
        let starved = v.runs.iter().filter(|r| r.max_send_gap_ms > 20.0).count();
        if starved > 0 {
            report.notes.push(format!(
                "{who}: in {starved} run(s) the prober paused over 20 ms between sends (a loaded machine): those \
                 outages are known only to that resolution"
            ));
        }
    }
}

/// Runs several faults on one session per target and returns one report
/// per fault (used by the demo: one prober and one baseline for all faults).
pub fn drills(
    overlay: &Target,
    faults: &[Fault],
    baseline: Option<&Target>,
    opts: &Options<'_>,
) -> Result<Vec<DrillReport>> {
    let mut reports: Vec<DrillReport> = Vec::new();
    {
        let mut s = Session::start(overlay, opts)?;
        for &fault in faults {
            fault::check(fault, overlay)?;
            let v = s.runs(fault, &overlay.client.name)?;
            reports.push(DrillReport {
                lab: overlay.overlay.as_ref().map(|o| o.lab.clone()).unwrap_or_default(),
                vip: overlay.vip_name.clone(),
                vip_ip: overlay.vip_ip.to_string(),
                fault,
                from: overlay.client.name.clone(),
                advert_int: overlay.advert_int,
                probe_interval_ms: opts.interval.as_secs_f64() * 1000.0,
                variants: vec![v],
                ratio_p50: None,
                ratio_p95: None,
                notes: Vec::new(),
            });
        }
    }
    if let Some(b) = baseline {
        let mut s = Session::start(b, opts)?;
        for r in reports.iter_mut().filter(|r| r.fault.has_baseline()) {
            r.variants.push(s.runs(r.fault, &b.client.name)?);
        }
    }
    for r in &mut reports {
        r.compute_ratios();
        add_notes(r);
    }
    Ok(reports)
}

//! `vipcast demo`: the README's first command. Builds a default lab, runs
//! the drills that matter, compares them with the native-L2 baseline, prints
//! the table, writes the SVG timeline (and optionally JSON and a markdown
//! section for `docs/BENCHMARKS.md`), and tears everything down.
//!
//! ```text
//!            net: controller, underlay bridge 10.255.0.0/24
//!     ┌───────────┬───────────┬───────────┬───────────┐
//!    hv1         hv2         hv3         gw1 ── inet1 (external client)
//!    pay1        pay2        client
//!    └── VIP 192.168.10.100: keepalived, advert_int 0.1, pay1 preferred
//! ```
//! With a replicator in this `vipcast` (and a lab that starts it) the VPC
//! uses two replicators; otherwise head-end replication, and the demo says
//! so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;
use vipcast_lab::config::LabConfig;
use vipcast_lab::state::Root;
use vipcast_lab::topology::UpOptions;

use crate::baseline::Baseline;
use crate::fault::Fault;
use crate::report::{self, DrillReport};
use crate::session::Options;
use crate::svg;
use crate::{Error, Result};

/// What the demo does besides printing.
pub struct DemoOptions<'a> {
    pub exe: PathBuf,
    /// Runs per fault and variant.
    pub runs: usize,
    /// The SVG timeline.
    pub svg: PathBuf,
    /// Also write the whole report as JSON here.
    pub json: Option<PathBuf>,
    /// Also write the results section of a benchmarks page here.
    pub markdown: Option<PathBuf>,
    /// The control plane over mutual TLS (the lab's default); `false`:
    /// plain HTTP, to compare.
    pub tls: bool,
    pub progress: &'a dyn Fn(&str),
    pub cancel: Option<&'a AtomicBool>,
}

impl std::fmt::Debug for DemoOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoOptions").field("runs", &self.runs).field("svg", &self.svg).finish()
    }
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: String,
    pub kernel: String,
    pub keepalived: String,
    pub load_before: String,
    pub load_after: String,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
}

/// Everything the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// `head-end replication` or `replicators`.
    pub bum: String,
    /// Whether the control plane spoke mutual TLS.
    pub tls: bool,
    pub runs: usize,
    pub machine: Machine,
    pub drills: Vec<DrillReport>,
    /// The payment case: link-down of the service's master, assisted.
    pub payments: Option<crate::workload::pay_drill::PayReport>,
    pub elapsed_s: f64,
}

/// The demo's lab file: `bum` is `headend` or `replicator`; the control
/// plane over mutual TLS unless `tls` is false. Two VPCs with the same
/// shape: `plain` (assisted handover off: VRRP's own timers) and `prod`
/// (assisted handover on, the default).
pub fn lab_file(name: &str, bum: &str, tls: bool) -> String {
    let replicators =
        if bum == "replicator" { "[[replicator]]\nname = \"rep1\"\n[[replicator]]\nname = \"rep2\"\n" } else { "" };
    let mut s = format!(
        "name = \"{name}\"\n[controller]\ntls = {tls}\n[[chassis]]\nname = \"hv1\"\n[[chassis]]\nname = \"hv2\"\n[[chassis]]\nname = \"hv3\"\n\
         [[chassis]]\nname = \"gw1\"\nrole = \"gateway\"\n{replicators}[[external]]\nname = \"inet1\"\ngateway = \"gw1\"\n"
    );
    for (vpc, vni, assist, net, vms, vip) in [
        ("plain", 200, false, "192.168.20", ["db1", "db2", "dbclient"], "db-vip"),
        ("prod", 100, true, "192.168.10", ["pay1", "pay2", "client"], "pay-vip"),
    ] {
        s.push_str(&format!(
            "[[vpc]]\nname = \"{vpc}\"\nvni = {vni}\nbum = \"{bum}\"\narp_suppression = true\nassist = {assist}\n\
             [[subnet]]\nvpc = \"{vpc}\"\nname = \"web\"\ncidr = \"{net}.0/24\"\ngateway = \"{net}.1\"\n"
        ));
        // prod is dual stack: fd00:10::/64 beside its IPv4 subnet.
        let dual = vpc == "prod";
        if dual {
            s.push_str(&format!(
                "[[subnet]]\nvpc = \"{vpc}\"\nname = \"web6\"\ncidr = \"fd00:10::/64\"\ngateway = \"fd00:10::1\"\n"
            ));
        }
        for (k, (vm, hv)) in vms.iter().zip(["hv1", "hv2", "hv3"]).enumerate() {
            let host = [11, 12, 50][k];
            s.push_str(&format!(
                "[[vm]]\nname = \"{vm}\"\nchassis = \"{hv}\"\nvpc = \"{vpc}\"\nsubnet = \"web\"\nip = \"{net}.{host}\"\n"
            ));
            if dual {
                s.push_str(&format!("ip6 = \"fd00:10::{host}\"\nsubnet6 = \"web6\"\n"));
            }
        }
        s.push_str(&format!(
            "[[vip]]\nname = \"{vip}\"\nvpc = \"{vpc}\"\nsubnet = \"web\"\nip = \"{net}.100\"\nmembers = [\"{}\", \"{}\"]\n\
             vrrp = \"keepalived\"\nadvert_int = 0.1\n",
            vms[0], vms[1]
        ));
        if dual {
            s.push_str(&format!(
                "[[vip]]\nname = \"{vip}6\"\nvpc = \"{vpc}\"\nsubnet = \"web6\"\nip = \"fd00:10::100\"\n\
                 members = [\"{}\", \"{}\"]\nvrrp = \"keepalived\"\nadvert_int = 0.1\n",
                vms[0], vms[1]
            ));
        }
    }
    s
}

/// A lab that is up; `lab down` on drop.
pub(crate) struct LabUp<'a> {
    root: &'a Root,
    name: String,
    progress: &'a dyn Fn(&str),
}

impl Drop for LabUp<'_> {
    fn drop(&mut self) {
        (self.progress)(&format!("tearing down lab {}", self.name));
        let _ = vipcast_lab::teardown::down(self.root, &self.name, &|_| {});
    }
}

fn up<'a>(root: &'a Root, name: &str, bum: &str, opts: &DemoOptions<'a>) -> Result<LabUp<'a>> {
    up_file(root, name, &lab_file(name, bum, opts.tls), opts)
}

/// Builds the lab `text` describes (named `name`), torn down on drop.
pub(crate) fn up_file<'a>(root: &'a Root, name: &str, text: &str, opts: &DemoOptions<'a>) -> Result<LabUp<'a>> {
    let cfg = LabConfig::parse(text).map_err(vipcast_lab::Error::from)?;
    let quiet = |_: &str| {};
    let up_opts = UpOptions { root, exe: &opts.exe, file: None, progress: &quiet, cancel: opts.cancel };
    let guard = LabUp { root, name: name.to_string(), progress: opts.progress };
    vipcast_lab::topology::up(&cfg, up_opts)?;
    Ok(guard)
}

/// Whether this `vipcast` has a `replicator` subcommand.
fn has_replicator(exe: &Path) -> bool {
    Command::new(exe).args(["help", "replicator"]).output().is_ok_and(|o| o.status.success())
}

/// Runs the demo.
pub fn demo(opts: &DemoOptions<'_>) -> Result<DemoReport> {
    let started = Instant::now();
    let say = opts.progress;
    let root = Root::default();
    let mut machine = machine();
    let name = format!("demo{}", vipcast_lab::unique_id());
    say(&format!(
        "vipcast demo: a lab {name} of three hypervisors and a gateway in network namespaces. VPC plain (assisted \
         handover off): VMs db1 (hv1) and db2 (hv2) share VIP 192.168.20.100, keepalived advert_int 0.1 s, db1 \
         preferred, probed 1000 times a second by dbclient (hv3). VPC prod (assisted handover on): the same with pay1, \
         pay2, client and VIP 192.168.10.100, also probed from an external client (inet1, behind gw1); prod is dual \
         stack, with VIP fd00:10::100 on pay1 and pay2 too (VRRPv3 over IPv6)"
    ));
    let mut bum = "head-end replication";
    let mut lab = None;
    if has_replicator(&opts.exe) {
        say("building the lab with two replicators (rep1, rep2) carrying broadcast and multicast");
        let l = up(&root, &name, "replicator", opts)?;
        let state = root.read(&name)?.ok_or_else(|| vipcast_lab::state::not_up(&name))?;
        if state.processes.iter().any(|p| p.role == "replicator" && p.is_running()) {
            bum = "replicators";
            lab = Some(l);
        } else {
            say("this `vipcast lab` does not start replicators yet: rebuilding with head-end replication (each \
                 hypervisor copies broadcasts and VRRP multicast to the others)");
            drop(l);
        }
    } else {
        say("vipcast has no replicator yet: the VPCs use head-end replication (each hypervisor copies broadcasts and \
             VRRP multicast to the others)");
    }
    let lab = match lab {
        Some(l) => l,
        None => up(&root, &name, "headend", opts)?,
    };
    say(&format!(
        "lab {name} is up ({:.1} s): controller, 4 agents, keepalived in db1, db2, pay1, pay2; the control plane \
         over {}",
        started.elapsed().as_secs_f64(),
        control_plane(opts.tls)
    ));
    let session_opts = Options {
        exe: opts.exe.clone(),
        runs: opts.runs,
        port: 7999,
        interval: std::time::Duration::from_millis(1),
        progress: opts.progress,
        cancel: opts.cancel,
    };
    let plain = crate::lab::resolve(&root, &name, "db-vip", Some("dbclient"))?;
    let prod = crate::lab::resolve(&root, &name, "pay-vip", Some("client"))?;
    let prod_outside = crate::lab::resolve(&root, &name, "pay-vip", Some("inet1"))?;
    say("building the baseline: db1, db2 and a client on one plain Linux bridge, the same keepalived configuration");
    let baseline = Baseline::build(&plain, opts.progress)?;
    let mut faults = vec![Fault::LinkDown, Fault::VmFreeze, Fault::ChassisDown];
    if bum == "replicators" {
        faults.push(Fault::ReplicatorDown);
    }
    say(&format!(
        "drills on VPC plain from dbclient: {} ({} runs each), then the same on the baseline",
        faults.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", "),
        opts.runs
    ));
    let mut drills = crate::drills(&plain, &faults, Some(baseline.target()), &session_opts)?;
    drop(baseline);
    say("drills link-down, chassis-down and controller-down on VPC prod (assisted handover) from the client VM, then \
         link-down from inet1 through the gateway; a frozen VM gets no assistance, so that one is not repeated there");
    for (target, inside) in [(&prod, true), (&prod_outside, false)] {
        let faults: &[Fault] =
            if inside { &[Fault::LinkDown, Fault::ChassisDown, Fault::ControllerDown] } else { &[Fault::LinkDown] };
        for mut d in crate::drills(target, faults, None, &session_opts)? {
            let Some(same) = drills.iter_mut().find(|x| x.fault == d.fault) else {
                // A fault only an overlay has (controller-down): against the
                // baseline's link-down, the same fault to a plain bridge.
                let link = drills.iter().position(|x| x.fault == Fault::LinkDown);
                if let Some(b) = link.and_then(|i| drills.get(i)).and_then(|x| x.variant("baseline")).cloned() {
                    d.variants.push(b);
                }
                d.compute_ratios();
                d.notes.clear();
                crate::drill::add_notes(&mut d);
                drills.insert(link.map_or(drills.len(), |i| i + 1), d);
                continue;
            };
            if inside {
                // Next to the unassisted overlay, same baseline.
                same.variants.splice(1..1, d.variants.drain(..));
                same.compute_ratios();
                same.notes.clear();
                crate::drill::add_notes(same);
            } else {
                if let Some(b) = same.variant("baseline").cloned() {
                    d.variants.push(b);
                }
                d.compute_ratios();
                drills.insert(1, d);
                break;
            }
        }
    }
    say("IPv6: link-down on VPC prod's IPv6 VIP (assisted) from the client VM, against the same VMs' IPv6 VIP on a \
         plain bridge");
    let prod6 = crate::lab::resolve(&root, &name, "pay-vip6", Some("client"))?;
    let baseline6 = Baseline::build(&prod6, opts.progress)?;
    for mut d in crate::drills(&prod6, &[Fault::LinkDown], Some(baseline6.target()), &session_opts)? {
        let from = d.from.clone();
        for v in &mut d.variants {
            v.from = v.from.replacen(&from, &format!("{from} (IPv6)"), 1);
        }
        d.notes.clear();
        crate::drill::add_notes(&mut d);
        let after = drills.iter().rposition(|x| x.fault == Fault::LinkDown).map_or(drills.len(), |i| i + 1);
        drills.insert(after, d);
    }
    drop(baseline6);
    drop(lab);
    say("the payment case: a payment service (nginx in front of vipcast's payment backend on pay1 and pay2) writing \
         every payment through the VIP of a semi-synchronous MariaDB pair; the client pays through the service's VIP, \
         retrying each key until paid; link-down of the service's master, assisted; every paid key checked in the \
         database");
    let pay_name = format!("py{}", vipcast_lab::unique_id());
    let pay_lab = up_file(&root, &pay_name, &crate::workload::demo::pay_lab_file(&pay_name), opts)?;
    let pay = crate::lab::resolve(&root, &pay_name, "pay-vip", Some("client"))?;
    let payments = crate::workload::pay_drill::drill(&pay, Fault::LinkDown, None, &session_opts)?;
    drop(pay_lab);
    machine.load_after = loadavg();
    let report = DemoReport {
        bum: bum.to_string(),
        tls: opts.tls,
        runs: opts.runs,
        machine,
        drills,
        payments: Some(payments),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    write_outputs(&report, opts)?;
    Ok(report)
}

fn write_outputs(report: &DemoReport, opts: &DemoOptions<'_>) -> Result<()> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(d) = report.drills.first() {
        write(&opts.svg, &timeline_svg(d))?;
    }
    if let Some(p) = &opts.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| Error::Failed(e.to_string()))?;
        write(p, &(text + "\n"))?;
    }
    if let Some(p) = &opts.markdown {
        let old = std::fs::read_to_string(p).unwrap_or_default();
        write(p, &splice_markdown(&old, &markdown(report)))?;
    }
    Ok(())
}

/// The SVG of a drill: each variant's median run, one lane each.
pub fn timeline_svg(d: &DrillReport) -> String {
    let lanes: Vec<(String, &crate::report::RunReport)> = d
        .variants
        .iter()
        .filter_map(|v| v.median_run().map(|r| (format!("{} from {}", v.variant, v.from), r)))
        .collect();
    let svg_lanes: Vec<svg::Lane<'_>> = lanes
        .iter()
        .map(|(label, r)| svg::Lane { label, timeline: &r.timeline, stages: &r.stages, outage_ms: r.outage_ms })
        .collect();
    svg::timeline(
        &format!(
            "{} of the VRRP master: probes to the VIP every {} ms, the median run of each variant",
            d.fault, d.probe_interval_ms
        ),
        &svg_lanes,
    )
}

/// How the control plane spoke, for reports.
pub fn control_plane(tls: bool) -> &'static str {
    if tls { "mutual TLS" } else { "plain HTTP" }
}

/// Where the generated part of a benchmarks page starts and ends.
pub const BEGIN: &str = "<!-- BEGIN vipcast demo: generated by `vipcast demo --markdown`, do not edit -->";
pub const END: &str = "<!-- END vipcast demo -->";

/// `old` with the text between [`BEGIN`] and [`END`] replaced by `section`
/// (appended, with the markers, if they are not there).
pub fn splice_markdown(old: &str, section: &str) -> String {
    splice_between(old, BEGIN, END, section)
}

/// `old` with the text between markers `begin` and `end` replaced by
/// `section` (the block appended when the markers are missing).
pub fn splice_between(old: &str, begin: &str, end: &str, section: &str) -> String {
    let block = format!("{begin}\n{section}{end}\n");
    match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if b > a => {
            let after = old.get(b + end.len()..).unwrap_or_default().trim_start_matches('\n');
            format!("{}{block}{after}", old.get(..a).unwrap_or_default())
        }
        _ if old.trim().is_empty() => format!("# vipcast benchmarks\n\n{block}"),
        _ => format!("{}\n\n{block}", old.trim_end()),
    }
}

/// The results section: machine, table, ratios, notes.
pub fn markdown(r: &DemoReport) -> String {
    let m = &r.machine;
    let mut s = format!(
        "Measured {} UTC with `vipcast demo` ({} runs per row, {}, control plane over {}; took {:.0} s).\n\n\
         | machine | |\n|---|---|\n| CPU | {} ({} CPUs) |\n| kernel | {} |\n| keepalived | {} |\n\
         | load average (1, 5, 15 min) before / after | {} / {} |\n\n",
        m.date,
        r.runs,
        r.bum,
        control_plane(r.tls),
        r.elapsed_s,
        m.cpu,
        m.cpus,
        m.kernel,
        m.keepalived,
        m.load_before,
        m.load_after
    );
    let drills: Vec<&DrillReport> = r.drills.iter().collect();
    s.push_str(&report::markdown_table(&drills));
    if let Some(p) = &r.payments {
        s.push_str(
            "\nThe payment case (`labs/pay.toml`: nginx and vipcast's payment backend writing through a \
                    semi-synchronous MariaDB pair's VIP; outage: the longest time without a paid answer; lost: paid \
                    keys missing from the database or stored with another id):\n\n",
        );
        s.push_str(&p.markdown());
    }
    let notes: Vec<String> =
        r.drills.iter().flat_map(|d| d.notes.iter().map(move |n| format!("{}, {n}", d.fault))).collect();
    if !notes.is_empty() {
        s.push_str("\nNotes:\n");
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push('\n');
    s
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Facts about this machine.
pub fn machine() -> Machine {
    let lscpu =
        Command::new("lscpu").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let field = |k: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim_start_matches(':').trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    Machine {
        cpu: field("Model name"),
        cpus: field("CPU(s)"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
        keepalived: first_line(Command::new("keepalived").arg("--version")),
        load_before: loadavg(),
        load_after: String::new(),
        date: utc_now(),
    }
}

/// The current time, UTC, `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_lab_files_are_valid() {
        for (bum, tls) in [("headend", true), ("replicator", true), ("headend", false)] {
            let cfg = LabConfig::parse(&lab_file("demo123456", bum, tls)).unwrap();
            assert_eq!(cfg.chassis.len(), 4);
            assert_eq!(cfg.replicator.len(), if bum == "replicator" { 2 } else { 0 });
            assert_eq!(cfg.vm.len(), 6);
            assert_eq!(
                cfg.vpc.iter().map(|v| (v.name.as_str(), v.assist)).collect::<Vec<_>>(),
                [("plain", false), ("prod", true)]
            );
            assert!(cfg.vip.iter().all(|v| v.advert_int == 0.1));
            let v6 = cfg.vip.iter().find(|v| v.name == "pay-vip6").unwrap();
            assert_eq!(v6.ip.to_string(), "fd00:10::100");
            assert_eq!(cfg.controller.tls, tls);
        }
    }

    #[test]
    fn markdown_sections_are_spliced_between_markers() {
        let page = format!("# B\n\nmethod\n\n{BEGIN}\nold table\n{END}\n\nmore prose\n");
        let new = splice_markdown(&page, "new table\n");
        assert_eq!(new, format!("# B\n\nmethod\n\n{BEGIN}\nnew table\n{END}\nmore prose\n"));
        assert_eq!(splice_markdown(&new, "new table\n"), new, "idempotent");
        assert!(splice_markdown("", "t\n").starts_with("# vipcast benchmarks\n\n<!-- BEGIN"));
        assert!(splice_markdown("# X\n", "t\n").starts_with("# X\n\n<!-- BEGIN"));
    }

    #[test]
    fn utc_dates() {
        let d = utc_now();
        assert_eq!(d.len(), 16);
        assert!(d.starts_with("20"));
    }
}

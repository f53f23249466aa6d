//! `vipcast bench vrrp`: CPU and memory of `vipcast vrrpd` and of keepalived
//! running the same N instances, in the same run, both masters.
//!
//! ```text
//!  netns vbv-<id>-v: vipcast vrrpd            netns vbv-<id>-k: keepalived
//!   vbv<id>v0..3 ──veth──► netns vbv-<id>-s    vbv<id>k0..3 ──veth──► netns vbv-<id>-s
//!   (4 interfaces, up to 255 VRIDs each; the peer ends are up, nothing runs there,
//!    so every instance becomes master and advertises every advert_int)
//! ```
//!
//! Both daemons get the same generated keepalived.conf (modulo interface
//! names): VRRPv3, priority 150, one VIP per instance, `vrrp_garp_master_delay
//! 0`. Once every VIP is configured on both sides (and two settling
//! seconds), the window starts: CPU is utime + stime from `/proc/<pid>/stat`
//! of the daemon and all its descendants (keepalived's VRRP child), RSS
//! (VmRSS) and PSS (shared pages divided among their users: keepalived's
//! two processes share most of theirs) are summed the same way at the end
//! of the window, and packets/s is the interfaces' transmitted packets over
//! the window.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vipcast_lab::{Child, Netns, Veth, unique_id};

/// `vipcast bench vrrp` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// VRRP instances in each daemon (spread over the interfaces, at most 255 per interface).
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Advertisement interval, seconds (VRRPv3: 0.01..=40.95).
    #[arg(long, default_value_t = 0.1)]
    pub advert_int: f64,
    /// Interfaces per daemon.
    #[arg(long, default_value_t = 4)]
    pub interfaces: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub window: f64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One daemon's numbers over the window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// CPU seconds (user + system) over the window.
    pub cpu_s: f64,
    /// CPU as a percentage of one core.
    pub cpu_percent: f64,
    /// Resident memory at the end of the window, KiB (VmRSS summed over
    /// the processes: pages shared between keepalived's two processes, or
    /// with other programs, count in full for each).
    pub rss_kib: u64,
    /// Proportional set size, KiB (`Pss` of /proc/<pid>/smaps_rollup
    /// summed: shared pages divided among their users).
    pub pss_kib: u64,
    /// Packets sent per second (adverts; nothing else once settled).
    pub tx_per_s: f64,
    /// Processes counted (the daemon and its descendants).
    pub processes: usize,
}

/// The result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub instances: usize,
    pub advert_int: f64,
    pub window_s: f64,
    pub vrrpd: Usage,
    pub keepalived: Usage,
    /// vrrpd / keepalived.
    pub cpu_ratio: f64,
    pub rss_ratio: f64,
    pub pss_ratio: f64,
}

/// The generated configuration: `n` instances over `ifs` (interface names).
pub fn config(n: usize, advert_int: f64, ifs: &[String]) -> String {
    let mut s = String::from(
        "global_defs {\n    router_id bench\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 1\n}\n",
    );
    for i in 0..n {
        let (k, vrid) = (i % ifs.len(), i / ifs.len() + 1);
        let dev = &ifs[k];
        s.push_str(&format!(
            "vrrp_instance VI_{i} {{\n    state BACKUP\n    interface {dev}\n    virtual_router_id {vrid}\n    \
             priority 150\n    advert_int {advert_int}\n    virtual_ipaddress {{\n        10.{}.{}.{}/16 dev {dev}\n    }}\n}}\n",
            100 + k,
            1 + vrid / 250,
            vrid % 250 + 1
        ));
    }
    s
}

/// One side: a namespace with the daemon's interfaces.
struct Side {
    ns: Netns,
    ifs: Vec<String>,
    _veths: Vec<Veth>,
}

fn side(tag: char, id: &str, n_if: usize, sink: &Netns) -> anyhow::Result<Side> {
    let ns = Netns::new(format!("vbv-{id}-{tag}"))?;
    let mut ifs = Vec::new();
    let mut veths = Vec::new();
    for k in 0..n_if {
        let (a, b) = (format!("vbv{id}{tag}{k}"), format!("vbv{id}{tag}p{k}"));
        veths.push(Veth::new(&a, Some(&ns), &b, Some(sink))?);
        ns.ip(&["addr", "add", &format!("10.{}.0.1/16", 100 + k), "dev", &a])?;
        ifs.push(a);
    }
    Ok(Side { ns, ifs, _veths: veths })
}

/// Every descendant of `pid`, and `pid`.
fn tree(pid: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(pp) = stat(p).map(|s| s.0) {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// (ppid, utime + stime in clock ticks) of `pid`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// A `Key:   N kB` line of a /proc file, in KiB.
fn proc_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| stat(*p).map(|s| s.1)).sum()
}

/// Packets transmitted by `ifs` in `ns`.
fn tx_packets(ns: &Netns, ifs: &[String]) -> u64 {
    ifs.iter()
        .filter_map(|i| ns.run("cat", &[&format!("/sys/class/net/{i}/statistics/tx_packets")]).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .sum()
}

/// How many of `n` VIPs `ns` holds.
fn vips_up(ns: &Netns) -> usize {
    ns.ip(&["-4", "-o", "addr", "show"])
        .map(|o| o.lines().filter(|l| l.contains(" 10.1") && l.contains("/16 ") && !l.contains(".0.1/16")).count())
        .unwrap_or(0)
}

/// Runs the benchmark; `exe` is the vipcast binary.
pub fn run(a: Args, exe: &Path) -> anyhow::Result<Report> {
    if a.interfaces == 0 || a.instances == 0 || a.instances > 255 * a.interfaces {
        bail!(
            "need 1..={} instances for {} interfaces (VRIDs are 1..=255 per interface)",
            255 * a.interfaces,
            a.interfaces
        );
    }
    let dir = tempfile::tempdir()?;
    let id = unique_id();
    let sink = Netns::new(format!("vbv-{id}-s"))?;
    let v = side('v', &id, a.interfaces, &sink)?;
    let k = side('k', &id, a.interfaces, &sink)?;
    let vconf = dir.path().join("vrrpd.conf");
    let kconf = dir.path().join("keepalived.conf");
    std::fs::write(&vconf, config(a.instances, a.advert_int, &v.ifs))?;
    std::fs::write(&kconf, config(a.instances, a.advert_int, &k.ifs))?;

    eprintln!(
        "bench: {} instances, advert_int {} s, {} interfaces per daemon",
        a.instances, a.advert_int, a.interfaces
    );
    let mut vcmd = v.ns.command(&exe.to_string_lossy());
    vcmd.args(["vrrpd", "-f"])
        .arg(&vconf)
        .arg("--status")
        .arg(dir.path().join("status.json"))
        .env("VIPCAST_LOG", "warn");
    let mut vrrpd = Child::spawn(&mut vcmd, &dir.path().join("vrrpd.log"))?;
    let mut kcmd = k.ns.command("keepalived");
    kcmd.args(["-n", "-l", "-G", "-P", "-f"]).arg(&kconf);
    for (flag, what) in [("-p", "main"), ("-r", "vrrp"), ("-c", "check"), ("-b", "bfd")] {
        kcmd.arg(flag).arg(dir.path().join(format!("keepalived-{what}.pid")));
    }
    let mut keepalived = Child::spawn(&mut kcmd, &dir.path().join("keepalived.log"))?;

    let t = Instant::now();
    loop {
        let (nv, nk) = (vips_up(&v.ns), vips_up(&k.ns));
        if nv == a.instances && nk == a.instances {
            break;
        }
        if !vrrpd.is_running() || !keepalived.is_running() {
            bail!("a daemon exited; logs in {}", dir.keep().display());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "not every instance became master within 60 s (vrrpd {nv}, keepalived {nk}); logs kept in {}",
                dir.keep().display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("bench: every instance is master on both sides after {:.1} s; settling 2 s", t.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));

    let (vp, kp) = (tree(vrrpd.id()), tree(keepalived.id()));
    let window = Duration::from_secs_f64(a.window);
    eprintln!("bench: measuring {:.1} s", window.as_secs_f64());
    let (cv0, ck0) = (cpu_ticks(&vp), cpu_ticks(&kp));
    let (tv0, tk0) = (tx_packets(&v.ns, &v.ifs), tx_packets(&k.ns, &k.ifs));
    let start = Instant::now();
    std::thread::sleep(window);
    let (cv1, ck1) = (cpu_ticks(&vp), cpu_ticks(&kp));
    let (tv1, tk1) = (tx_packets(&v.ns, &v.ifs), tx_packets(&k.ns, &k.ifs));
    let secs = start.elapsed().as_secs_f64();
    let usage = |c0: u64, c1: u64, t0: u64, t1: u64, pids: &[u32]| {
        let cpu_s = c1.saturating_sub(c0) as f64 / USER_HZ;
        Usage {
            cpu_s,
            cpu_percent: 100.0 * cpu_s / secs,
            rss_kib: pids.iter().map(|p| proc_kib(&format!("/proc/{p}/status"), "VmRSS:")).sum(),
            pss_kib: pids.iter().map(|p| proc_kib(&format!("/proc/{p}/smaps_rollup"), "Pss:")).sum(),
            tx_per_s: t1.saturating_sub(t0) as f64 / secs,
            processes: pids.len(),
        }
    };
    let vu = usage(cv0, cv1, tv0, tv1, &vp);
    let ku = usage(ck0, ck1, tk0, tk1, &kp);
    vrrpd.terminate(Duration::from_secs(10));
    keepalived.terminate(Duration::from_secs(10));
    let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    Ok(Report {
        instances: a.instances,
        advert_int: a.advert_int,
        window_s: secs,
        vrrpd: vu,
        keepalived: ku,
        cpu_ratio: ratio(vu.cpu_s, ku.cpu_s),
        rss_ratio: ratio(vu.rss_kib as f64, ku.rss_kib as f64),
        pss_ratio: ratio(vu.pss_kib as f64, ku.pss_kib as f64),
    })
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["daemon", "processes", "CPU s", "CPU % of a core", "RSS MiB", "PSS MiB", "packets/s"]);
    for (name, u) in [("vipcast vrrpd", r.vrrpd), ("keepalived", r.keepalived)] {
        t.add_row([
            name.to_string(),
            u.processes.to_string(),
            format!("{:.2}", u.cpu_s),
            format!("{:.1}", u.cpu_percent),
            format!("{:.1}", u.rss_kib as f64 / 1024.0),
            format!("{:.1}", u.pss_kib as f64 / 1024.0),
            format!("{:.0}", u.tx_per_s),
        ]);
    }
    format!(
        "{} instances, advert_int {} s, window {:.1} s\n{t}\nvrrpd / keepalived: CPU {:.2}, RSS {:.2}, PSS {:.2}\n",
        r.instances, r.advert_int, r.window_s, r.cpu_ratio, r.rss_ratio, r.pss_ratio
    )
}

/// `vipcast bench vrrp`.
pub fn main(a: Args) -> anyhow::Result<()> {
    let json = a.json;
    let exe = std::env::current_exe().context("finding the vipcast binary")?;
    let r = run(a, &exe)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", table(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_parses_with_distinct_vrids_per_interface() {
        let ifs: Vec<String> = (0..4).map(|i| format!("e{i}")).collect();
        let (c, w) = crate::conf::parse(&config(1000, 0.1, &ifs), "bench").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.instances.len(), 1000);
        assert!(c.instances.iter().all(|i| i.advert_interval_cs == 10 && i.vrid >= 1));
        let vips: std::collections::BTreeSet<_> = c.instances.iter().map(|i| i.vips[0].net.addr()).collect();
        assert_eq!(vips.len(), 1000);
    }
}

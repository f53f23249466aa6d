//! `vipcast bench`: benchmarks that run the real components.
//!
//! `control-plane`: a region (thousands of chassis in VPCs of 5 to 500)
//! on real controller processes, every chassis a watch subscriber with a
//! connection of its own, plus replicators: VIP move latency to the last
//! subscriber that must hold it, cold-start snapshots, resync after a
//! controller is killed, the controllers' memory and CPU. See
//! [`control_plane`] for the phases and [`region`] for the region's shape.
//!
//! ```text
//!  bench ──claims──► controller(s) ──txn──► store (redb file | etcd)
//!    ▲                   │
//!    └── N + R NDJSON watch streams (one per chassis / replicator) ◄──┘
//! ```
//!
//! `reconcile`: the agent's kernel data plane on one chassis, in a network
//! namespace of its own (as root): V VPCs, P local VM ports (veth pairs,
//! the VM ends in a second namespace), and per VPC R remote ports on C
//! remote chassis (head-end BUM to each) and I VIPs. After programming, it
//! times `Reconciler::reconcile` of the unchanged plan (reading the kernel)
//! and of plans that each move one VIP between two remote ports (what every
//! other chassis of the VPC does on a failover): reading the kernel, and as
//! the agent does it, a delta from the plan last programmed. Nothing leaves
//! the namespaces: the remote chassis are addresses only.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

mod control_plane;
mod region;

#[derive(Debug, Args)]
pub struct Bench {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// A region on real controllers: move latency to the last subscriber of the VPC, snapshots, resync after kill -9, memory and CPU.
    ControlPlane(ControlPlane),
    /// Replicator packets/s per core vs a plain sendmmsg sender, and latency at half load.
    Replicate(vipcast_replicator::bench::Args),
    /// CPU and memory of `vipcast vrrpd` and keepalived running the same VRRP instances.
    Vrrp(vipcast_vrrpd::bench::Args),
    /// Kernel data plane: reconcile time of an unchanged plan and of a one-VIP move (as root).
    Reconcile(Reconcile),
}

#[derive(Debug, Args)]
struct Reconcile {
    /// VPCs on the chassis.
    #[arg(long, default_value_t = 50)]
    vpcs: usize,
    /// Local VM ports, spread evenly over the VPCs.
    #[arg(long, default_value_t = 500)]
    ports: usize,
    /// Remote ports per VPC (an FDB and a neighbour entry each).
    #[arg(long, default_value_t = 40)]
    remote_ports: usize,
    /// Remote chassis per VPC (an all-zeros FDB entry each: head-end BUM).
    #[arg(long, default_value_t = 20)]
    chassis: usize,
    /// VIPs per VPC; every fifth is owned by a local port (no neighbour entry).
    #[arg(long, default_value_t = 10)]
    vips: usize,
    /// Reconciles to time, of each kind.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    File,
    Etcd,
}

#[derive(Debug, Args)]
pub struct ControlPlane {
    /// Chassis, each a watch subscriber with a connection of its own.
    #[arg(long, default_value_t = 1000)]
    chassis: usize,
    /// VPCs (default: one per 5 chassis, so each chassis takes part in 2-10
    /// of them); 1 puts every chassis in one VPC (a full mesh).
    #[arg(long)]
    vpcs: Option<usize>,
    /// VIPs, each on two ports of a VPC (default: two per VPC).
    #[arg(long)]
    vips: Option<usize>,
    /// VIP moves to measure, one at a time, spread over the VIPs.
    #[arg(long, default_value_t = 1000)]
    moves: usize,
    /// Store backend; etcd is started by the benchmark on loopback.
    #[arg(long, value_enum, default_value_t = StoreKind::File)]
    store: StoreKind,
    /// Controllers sharing the store (etcd only); subscriber i starts on
    /// controller i mod C and moves to the next when its stream fails.
    #[arg(long, default_value_t = 1)]
    controllers: usize,
    /// Plain HTTP, mutual TLS, or both one after the other (with their ratio).
    #[arg(long, value_enum, default_value_t = TlsMode::Off)]
    tls: TlsMode,
    /// Seed of the region plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of heartbeats from every chassis at the agents' interval
    /// (50 ms: 20 per chassis per second), signed, to the first controller,
    /// after the moves: the controller's CPU for them (against as long a
    /// quiet window), what it made of them, and moves timed meanwhile. 0: none.
    #[arg(long, default_value_t = 0)]
    heartbeats: u64,
    /// The `vipcast` binary to run the controllers with (default: this
    /// one), to compare another build against the same region.
    #[arg(long)]
    controller_exe: Option<std::path::PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TlsMode {
    Off,
    On,
    Both,
}

pub async fn run(b: Bench) -> anyhow::Result<()> {
    match b.what {
        What::ControlPlane(c) => control_plane(c).await,
        What::Replicate(r) => vipcast_replicator::bench::run(r).await,
        What::Vrrp(v) => tokio::task::spawn_blocking(move || vipcast_vrrpd::bench::main(v)).await?,
        What::Reconcile(r) => tokio::task::spawn_blocking(move || reconcile::run(r)).await?,
    }
}

async fn control_plane(c: ControlPlane) -> anyhow::Result<()> {
    let modes: &[bool] = match c.tls {
        TlsMode::Off => &[false],
        TlsMode::On => &[true],
        TlsMode::Both => &[false, true],
    };
    let mut runs = Vec::new();
    for &tls in modes {
        let r = control_plane::run(&c, tls).await?;
        if !c.json {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "control-plane ({} store, {} controller(s), {}): {} chassis, {} VPCs (largest {}), {} ports, {} VIPs, {} moves\n  \
                 claim -> last subscriber of the VPC: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({:.0} subscribers, {:.0} bytes per move)\n  \
                 snapshot_all {:.2} s (controllers up {:.2} s)  restart_resync {:.2} s (restarted controller up {:.2} s)\n  \
                 controller RSS {:.0} MiB (peak {:.0})  CPU s: snapshots {:.1}, moves {:.1}",
                r["store"].as_str().unwrap_or("?"),
                r["controllers"],
                r["transport"].as_str().unwrap_or("?"),
                r["chassis"],
                r["vpcs"],
                r["largest_vpc"],
                r["ports"],
                r["vips"],
                r["moves"],
                f("p50_ms"),
                f("p99_ms"),
                f("max_ms"),
                f("subscribers_per_move"),
                f("bytes_per_move"),
                f("snapshot_all_s"),
                f("controller_up_s"),
                f("restart_resync_s"),
                f("restart_up_s"),
                f("rss_mib"),
                f("peak_rss_mib"),
                r["cpu_s"]["snapshot_all"].as_f64().unwrap_or(f64::NAN),
                r["cpu_s"]["moves"].as_f64().unwrap_or(f64::NAN),
            );
            let t = &r["replicator_table"];
            if t.is_object() {
                println!(
                    "  replicator table ({} VNIs, {} members), per change: update p50 {} us  p99 {} us, rebuild p50 {} us (x{})",
                    t["vnis"],
                    t["members"],
                    t["update_p50_us"],
                    t["update_p99_us"],
                    t["rebuild_p50_us"],
                    t["update_over_rebuild_p50"]
                );
            }
        }
        runs.push(r);
    }
    let ratio = |key: &str| match runs.as_slice() {
        [plain, tls] => Some(tls[key].as_f64()? / plain[key].as_f64()?),
        _ => None,
    };
    let (p50, p99) = (ratio("p50_ms"), ratio("p99_ms"));
    if c.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"runs": runs, "tls_over_plain": {"p50": p50, "p99": p99}}))?
        );
    } else if let (Some(p50), Some(p99)) = (p50, p99) {
        println!("  mutual TLS / plain: p50 x{p50:.2}  p99 x{p99:.2}");
    }
    Ok(())
}

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Value) -> anyhow::Result<Value> {
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let resp = http.request(m, url).json(&body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {url}: {status}: {v}");
    }
    Ok(v)
}

async fn wait_up(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the controller did not come up at {base}")
}

mod reconcile {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use hdrhistogram::Histogram;
    use serde_json::{Value, json};
    use vipcast_agent::kernel::{Kernel, Reconciler};
    use vipcast_agent::plan::{Fdb, Plan, VpcPlan};
    use vipcast_lab::{Netns, unique_id};
    use vipcast_packet::MacAddr;

    use super::Reconcile;

    const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 11);

    fn mac(kind: u8, vpc: usize, n: usize) -> MacAddr {
        MacAddr([0x02, kind, (vpc >> 8) as u8, vpc as u8, (n >> 8) as u8, n as u8])
    }

    fn v4(a: u8, b: u8, n: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, (n >> 8) as u8, n as u8))
    }

    /// Port names of VPC `vpc`: `v<vpc>p<j>`.
    fn local_ports(r: &Reconcile, vpc: usize) -> Vec<String> {
        let (each, extra) = (r.ports / r.vpcs, r.ports % r.vpcs);
        (0..each + usize::from(vpc < extra)).map(|j| format!("v{vpc}p{j}")).collect()
    }

    /// The plan, with VIP 1 of the middle VPC owned by remote port `owner`.
    fn plan(r: &Reconcile, owner: usize) -> Plan {
        let mut vpcs = BTreeMap::new();
        for i in 0..r.vpcs {
            let vni = 1000 + i as u32;
            let chassis = |n: usize| v4(10, 255, 256 + n % r.chassis);
            let mut fdb: BTreeSet<Fdb> =
                (0..r.chassis).map(|c| Fdb { mac: MacAddr::ZERO, dst: chassis(c), port: None }).collect();
            let mut neigh = BTreeMap::new();
            for p in 0..r.remote_ports {
                fdb.insert(Fdb { mac: mac(0x20, i, p), dst: chassis(p), port: None });
                neigh.insert(v4(192, 168, 256 + p), mac(0x20, i, p));
            }
            for k in 0..r.vips {
                // Owned by a local port: no entry on the device (the plan leaves those out).
                if k % 5 == 0 {
                    continue;
                }
                let o = if i == r.vpcs / 2 && k == 1 { owner } else { k % r.remote_ports.max(1) };
                neigh.insert(v4(192, 168, 512 + k), mac(0x20, i, o));
            }
            vpcs.insert(
                vni,
                VpcPlan {
                    physical: Default::default(),
                    name: format!("vpc{i}"),
                    vni,
                    proxy: true,
                    ports: local_ports(r, i).into_iter().collect(),
                    fdb,
                    neigh,
                    bridge_addrs: BTreeSet::new(),
                    bridge_neigh: BTreeMap::new(),
                    bridge_mac: None,
                },
            );
        }
        Plan { local_ip: Some(IpAddr::V4(LOCAL_IP)), vpcs, forwarding: false, unrouted: vec![], unsupported: vec![] }
    }

    fn batch(ns: &Netns, lines: &[String]) -> anyhow::Result<()> {
        let f = tempfile::NamedTempFile::new()?;
        std::fs::write(f.path(), lines.join("\n") + "\n")?;
        let path = f.path().to_string_lossy().into_owned();
        ns.ip(&["-batch", &path])?;
        Ok(())
    }

    fn count_lines(s: &str) -> usize {
        s.lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// A point in time: the wall clock, and this thread's CPU time (the
    /// netlink connections run on this thread, and the kernel dumps and
    /// changes its tables inside this thread's system calls).
    struct Clock {
        wall: Instant,
        cpu: Duration,
    }

    fn now() -> Clock {
        Clock { wall: Instant::now(), cpu: vipcast_sys::thread_cpu_time().unwrap_or_default() }
    }

    /// Wall-clock and CPU times of a timed section, in microseconds.
    struct Samples {
        wall: Histogram<u64>,
        cpu: Histogram<u64>,
    }

    impl Samples {
        fn new() -> anyhow::Result<Samples> {
            let h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
            Ok(Samples { wall: h()?, cpu: h()? })
        }

        fn record(&mut self, from: &Clock, to: &Clock) -> anyhow::Result<()> {
            let us = |d: Duration| d.as_micros().max(1) as u64;
            self.wall.record(us(to.wall - from.wall))?;
            self.cpu.record(us(to.cpu.saturating_sub(from.cpu)))?;
            Ok(())
        }

        /// Quantiles in milliseconds.
        fn summary(&self) -> Value {
            let ms = |us: u64| us as f64 / 1000.0;
            json!({
                "p50_ms": ms(self.wall.value_at_quantile(0.5)),
                "p99_ms": ms(self.wall.value_at_quantile(0.99)),
                "max_ms": ms(self.wall.max()),
                "cpu_p50_ms": ms(self.cpu.value_at_quantile(0.5)),
                "cpu_p99_ms": ms(self.cpu.value_at_quantile(0.99)),
                "runs": self.wall.len(),
            })
        }
    }

    pub fn run(r: Reconcile) -> anyhow::Result<()> {
        if r.vpcs == 0 || r.vpcs > 9000 || r.runs == 0 || r.chassis == 0 || r.remote_ports < 4 || r.vips < 2 {
            bail!("need --vpcs 1..=9000, --runs >= 1, --chassis >= 1, --remote-ports >= 4 and --vips >= 2");
        }
        let id = unique_id();
        let ns = Netns::new(format!("vcb-{id}")).context("creating the chassis namespace (as root)")?;
        let vm = Netns::new(format!("vcb-{id}-vm"))?;
        eprintln!(
            "bench: namespace {}: {} VPCs, {} local ports, {} remote ports on {} chassis and {} VIPs per VPC",
            ns.name(),
            r.vpcs,
            r.ports,
            r.remote_ports,
            r.chassis,
            r.vips
        );
        // Quiet namespaces: no IPv6 router solicitations or DAD flooding
        // the bridges while timing.
        for n in [&ns, &vm] {
            n.run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        // The underlay, and the VM ports: the VM ends in `vm`, the chassis
        // ends marked by their alias.
        let mut vm_lines = vec![format!("link add ul1 type veth peer name ul0 netns {}", ns.name())];
        let mut ns_lines =
            vec!["link set ul0 up".to_string(), format!("addr add {LOCAL_IP}/16 dev ul0"), "link set lo up".into()];
        let mut n = 0;
        for i in 0..r.vpcs {
            for port in local_ports(&r, i) {
                vm_lines.push(format!("link add e{n} type veth peer name t{n} netns {}", ns.name()));
                vm_lines.push(format!("link set e{n} up"));
                ns_lines.push(format!("link set t{n} alias vipcast-port:{port}"));
                n += 1;
            }
        }
        vm_lines.push("link set ul1 up".into());
        batch(&vm, &vm_lines)?;
        batch(&ns, &ns_lines)?;

        let plans = [plan(&r, 2), plan(&r, 3)];
        let runs = r.runs;
        let name = ns.name().to_string();
        let timed = std::thread::spawn(move || -> anyhow::Result<Value> {
            vipcast_sys::enter_netns(&name)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(measure(&plans, runs))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))??;

        let links = count_lines(&ns.ip(&["-o", "link", "show"])?);
        let fdb = count_lines(&ns.run("bridge", &["fdb", "show"])?);
        let own_fdb =
            ns.run("bridge", &["fdb", "show"])?.lines().filter(|l| l.contains(" self ") && l.contains(" dst ")).count();
        let neigh = count_lines(&ns.ip(&["neigh", "show", "nud", "permanent"])?);
        let mut result = json!({
            "vpcs": r.vpcs,
            "local_ports": r.ports,
            "remote_ports_per_vpc": r.remote_ports,
            "remote_chassis_per_vpc": r.chassis,
            "vips_per_vpc": r.vips,
            "kernel": {"links": links, "fdb_entries": fdb, "vxlan_fdb_entries": own_fdb, "permanent_neighbours": neigh},
        });
        if let (Value::Object(m), Value::Object(t)) = (&mut result, timed) {
            m.extend(t);
        }
        if r.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            print_table(&result);
        }
        drop(vm);
        drop(ns);
        Ok(())
    }

    fn print_table(v: &Value) {
        let k = &v["kernel"];
        println!(
            "reconcile: {} VPCs, {} local ports, {} remote ports / {} chassis / {} VIPs per VPC\n  kernel holds {} links, {} FDB entries ({} on the VXLAN devices), {} permanent neighbours\n  first programming: {} ms ({} changes)",
            v["vpcs"],
            v["local_ports"],
            v["remote_ports_per_vpc"],
            v["remote_chassis_per_vpc"],
            v["vips_per_vpc"],
            k["links"],
            k["fdb_entries"],
            k["vxlan_fdb_entries"],
            k["permanent_neighbours"],
            v["initial_ms"],
            v["initial_changes"],
        );
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
        t.set_header(["reconcile", "p50 ms", "p99 ms", "max ms", "CPU p50 ms", "CPU p99 ms", "runs"]);
        let mut row = |name: &str, s: &Value| {
            t.add_row([
                name.to_string(),
                s["p50_ms"].to_string(),
                s["p99_ms"].to_string(),
                s["max_ms"].to_string(),
                s["cpu_p50_ms"].to_string(),
                s["cpu_p99_ms"].to_string(),
                s["runs"].to_string(),
            ]);
        };
        row("unchanged plan, read", &v["unchanged"]);
        row("one VIP moved, read", &v["vip_move"]);
        row("one VIP moved, delta (the agent)", &v["vip_move_delta"]);
        for (key, name) in [("move_observe", "  observe"), ("move_diff", "  diff"), ("move_apply", "  apply")] {
            if v["phases"][key].is_object() {
                row(name, &v["phases"][key]);
            }
        }
        println!("{t}");
        println!("delta / read (p50): x{}", v["delta_vs_read_p50"]);
    }

    async fn measure(plans: &[Plan; 2], runs: usize) -> anyhow::Result<Value> {
        let k = Kernel::open()?;
        let mut r = Reconciler::new(k.clone());
        let t = Instant::now();
        let first = r.reconcile(plans[0].clone(), true).await?;
        let initial = t.elapsed();
        let again = r.reconcile(plans[0].clone(), true).await?;
        if again.changes.total() != 0 {
            bail!("a second reconcile of the same plan changed {again:?}");
        }
        // Warm up, then the kinds interleaved so that all see the same machine.
        for _ in 0..5 {
            r.reconcile(plans[0].clone(), true).await?;
        }
        let (mut same, mut moved, mut delta) = (Samples::new()?, Samples::new()?, Samples::new()?);
        let mut at = 0;
        for _ in 0..runs {
            let plan = plans[at].clone();
            let t = now();
            let out = r.reconcile(plan, true).await?;
            same.record(&t, &now())?;
            if out.changes.total() != 0 {
                bail!("an unchanged plan changed {out:?}");
            }
            // The move, as a full reconcile (reading the kernel) and as the
            // agent makes it (a delta from the plan it last programmed).
            for (read, samples) in [(true, &mut moved), (false, &mut delta)] {
                at = 1 - at;
                let plan = plans[at].clone();
                let t = now();
                let out = r.reconcile(plan, read).await?;
                samples.record(&t, &now())?;
                if (out.changes.neigh, out.changes.total(), out.read) != (1, 1, read) {
                    bail!("a VIP move (read: {read}) changed {out:?}, not one neighbour entry");
                }
            }
        }
        // What the deltas wrote is what a full reconcile expects.
        let check = r.reconcile(plans[at].clone(), true).await?;
        if check.drift.total() != 0 {
            bail!("after the deltas, a full reconcile found drift: {check:?}");
        }
        let phases = phases(&k, plans, &mut at, runs).await?;
        let ratio = |a: &Samples, b: &Samples| {
            a.wall.value_at_quantile(0.5) as f64 / b.wall.value_at_quantile(0.5).max(1) as f64
        };
        Ok(json!({
            "initial_ms": (initial.as_secs_f64() * 1e6).round() / 1e3,
            "initial_changes": first.changes.total(),
            "unchanged": same.summary(),
            "vip_move": moved.summary(),
            "vip_move_delta": delta.summary(),
            "delta_vs_read_p50": (ratio(&delta, &moved) * 1000.0).round() / 1000.0,
            "phases": phases,
        }))
    }

    /// Where a reconcile's time goes: reading the kernel, the diff, and
    /// applying (for a VIP move: the kernel work of the move itself).
    async fn phases(k: &Kernel, plans: &[Plan; 2], at: &mut usize, runs: usize) -> anyhow::Result<Value> {
        use vipcast_agent::kernel::diff;
        let (mut observe, mut diffs, mut apply) = (Samples::new()?, Samples::new()?, Samples::new()?);
        for _ in 0..runs {
            *at = 1 - *at;
            let plan = &plans[*at];
            let t0 = now();
            let obs = k.observe(plan).await?;
            let t1 = now();
            let ops = diff(plan, &obs);
            let t2 = now();
            let ch = k.apply(&obs, &ops).await?;
            let t3 = now();
            if ch.total() != 1 {
                bail!("a VIP move changed {ch:?}");
            }
            observe.record(&t0, &t1)?;
            diffs.record(&t1, &t2)?;
            apply.record(&t2, &t3)?;
        }
        Ok(json!({
            "move_observe": observe.summary(),
            "move_diff": diffs.summary(),
            "move_apply": apply.summary(),
        }))
    }
}

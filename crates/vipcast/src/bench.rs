//! `vipcast bench`: benchmarks that run the real components.
//!
//! `control-plane`: a real controller process (`vipcast controller`) on
//! loopback with N chassis in one VPC, each with one port and one watch
//! subscriber, and V VIPs on pairs of ports. Each move is a claim for a VIP by
//! its other member; the latency of a move is from the claim being sent to the
//! last of the N subscribers holding the new owner (so it includes the claim's
//! HTTP round trip and the store's commit). Moves run one at a time.
//! `--tls both` (the default) runs it twice in one process, plain HTTP and
//! mutual TLS, each against a controller of its own: with TLS every chassis
//! has its own agent certificate (its watch stream and its claims go over
//! its own connections, kept alive as the agent keeps them), registration
//! is done as an admin.
//!
//! ```text
//!  bench ──claims──► controller ──txn──► store (redb file | etcd)
//!    ▲                   │
//!    └── N NDJSON watch streams (one per chassis) ◄──┘
//! ```
//!
//! `reconcile`: the agent's kernel data plane on one chassis, in a network
//! namespace of its own (as root): V VPCs, P local VM ports (veth pairs,
//! the VM ends in a second namespace), and per VPC R remote ports on C
//! remote chassis (head-end BUM to each) and I VIPs. After programming, it
//! times `Kernel::reconcile` of the unchanged plan and of plans that each
//! move one VIP between two remote ports (what every other chassis of the
//! VPC does on a failover). Nothing leaves the namespaces: the remote
//! chassis are addresses only.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Notify;
use vipcast_controller::Message;
use vipcast_model::Object;

#[derive(Debug, Args)]
pub struct Bench {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// VIP move latency from claim to the last watch subscriber, and controller memory.
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
enum StoreKind {
    File,
    Etcd,
}

#[derive(Debug, Args)]
struct ControlPlane {
    /// Chassis, each with a port and a watch subscriber.
    #[arg(long, default_value_t = 1000)]
    chassis: usize,
    /// VIPs, each on two ports.
    #[arg(long, default_value_t = 100)]
    vips: usize,
    /// VIP moves to measure.
    #[arg(long, default_value_t = 1000)]
    moves: usize,
    /// Store backend; etcd is started by the benchmark on loopback.
    #[arg(long, value_enum, default_value_t = StoreKind::File)]
    store: StoreKind,
    /// Plain HTTP, mutual TLS, or both one after the other (with their ratio).
    #[arg(long, value_enum, default_value_t = TlsMode::Both)]
    tls: TlsMode,
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

/// Which (vip, generation) each subscriber has seen, and who waits for it.
#[derive(Default)]
struct Seen {
    /// vip -> generation -> subscribers holding it
    counts: Mutex<HashMap<String, HashMap<u64, usize>>>,
    notify: Notify,
}

async fn control_plane(c: ControlPlane) -> anyhow::Result<()> {
    if c.chassis < 2 || c.vips == 0 || c.vips * 2 > c.chassis {
        bail!("need at least 2 chassis and 2 chassis per VIP (--chassis >= 2 x --vips)");
    }
    let modes: &[bool] = match c.tls {
        TlsMode::Off => &[false],
        TlsMode::On => &[true],
        TlsMode::Both => &[false, true],
    };
    let mut runs = Vec::new();
    for &tls in modes {
        let r = control_plane_once(&c, tls).await?;
        if !c.json {
            println!(
                "control-plane ({} store, {}): {} subscribers, {} VIPs, {} moves\n  claim -> last subscriber: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n  controller RSS: {}",
                r["store"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                c.chassis,
                c.vips,
                c.moves,
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                r["max_ms"].as_f64().unwrap_or(f64::NAN),
                r["controller_rss_mib"].as_f64().map_or("unknown".into(), |m| format!("{m:.1} MiB")),
            );
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

/// One benchmark run against a controller of its own; `tls`: mutual TLS.
async fn control_plane_once(c: &ControlPlane, tls: bool) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let etcd = match c.store {
        StoreKind::Etcd => Some(vipcast_store::testing::Etcd::try_start().map_err(anyhow::Error::msg)?),
        StoreKind::File => None,
    };
    let store_arg = match &etcd {
        Some(e) => format!(
            "etcd://{}",
            e.endpoints().iter().map(|u| u.trim_start_matches("http://")).collect::<Vec<_>>().join(",")
        ),
        None => format!("file:{}", dir.path().join("store").display()),
    };
    let pki = dir.path().join("pki");
    let mut args: Vec<String> =
        ["controller", "--listen", &format!("127.0.0.1:{port}"), "--store", &store_arg].map(String::from).into();
    if tls {
        eprintln!("bench: issuing {} agent certificates", c.chassis);
        let d = vipcast_tls::pki::init(&pki)?;
        let issue = |role, name: &str, sans: &[&str]| {
            let sans = sans.iter().map(|s| s.to_string()).collect();
            let req = vipcast_tls::pki::Request { role, name: name.to_string(), sans, days: 1 };
            vipcast_tls::pki::issue(&pki, &req)
        };
        issue(vipcast_api::PeerRole::Controller, "controller", &["127.0.0.1"])?;
        issue(vipcast_api::PeerRole::Admin, "bench", &[])?;
        for i in 0..c.chassis {
            issue(vipcast_api::PeerRole::Agent, &format!("hv{i}"), &[])?;
        }
        for (flag, path) in [
            ("--tls-cert", d.cert("controller")),
            ("--tls-key", d.key("controller")),
            ("--client-ca", d.ca_cert()),
            ("--heartbeat-secret", d.secret()),
        ] {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
    }
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{port}");
    // The client of identity `name` (plain HTTP: one like any other).
    let client = |name: &str| -> anyhow::Result<reqwest::Client> {
        let d = vipcast_tls::pki::Dir(pki.clone());
        let files = tls.then(|| vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: d.cert(name), key: d.key(name) });
        Ok(vipcast_client::ControllerClient::with_tls(&base, files.as_ref())?.http().clone())
    };
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(&args).env("VIPCAST_LOG", "warn");
    let controller = vipcast_lab::Child::spawn(&mut cmd, &dir.path().join("controller.log"))?;
    let http = client("bench")?;
    wait_up(&http, &base).await?;

    eprintln!("bench: registering {} chassis, {} ports, {} VIPs ({:?} store)", c.chassis, c.chassis, c.vips, c.store);
    let t = Instant::now();
    call(&http, "POST", &format!("{base}/v1/vpcs"), json!({"name": "bench", "vni": 4242, "bum": "headend"})).await?;
    call(&http, "POST", &format!("{base}/v1/subnets"), json!({"vpc": "bench", "name": "net", "cidr": "10.64.0.0/16"}))
        .await?;
    let mac = |i: usize| format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    for i in 0..c.chassis {
        let ip = format!("172.16.{}.{}", i / 250, i % 250 + 1);
        call(&http, "PUT", &format!("{base}/v1/chassis/hv{i}"), json!({"underlay_ip": ip})).await?;
        let port_ip = format!("10.64.{}.{}", i / 250, i % 250 + 1);
        call(
            &http,
            "POST",
            &format!("{base}/v1/ports"),
            json!({"name": format!("p{i}"), "vpc": "bench", "subnet": "net", "chassis": format!("hv{i}"), "mac": mac(i), "ip": port_ip}),
        )
        .await?;
    }
    for v in 0..c.vips {
        let ip = format!("10.64.255.{}", v % 250 + 1);
        let ip = if v < 250 { ip } else { format!("10.64.254.{}", v % 250 + 1) };
        call(
            &http,
            "POST",
            &format!("{base}/v1/vips"),
            json!({"name": format!("vip{v}"), "vpc": "bench", "subnet": "net", "ip": ip, "members": [format!("p{}", 2 * v), format!("p{}", 2 * v + 1)]}),
        )
        .await?;
    }
    eprintln!("bench: registered in {:.1} s; opening {} watch streams", t.elapsed().as_secs_f64(), c.chassis);

    // Each chassis: its own client, its watch stream, and (for VIP
    // members) a claim connection opened before the moves, as an agent's is.
    let seen = Arc::new(Seen::default());
    let mut subs = Vec::new();
    let mut clients = Vec::with_capacity(c.chassis);
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..c.chassis {
        let http = client(&format!("hv{i}"))?;
        let url = format!("{base}/v1/watch/chassis/hv{i}");
        let (seen, ready, h) = (seen.clone(), ready.clone(), http.clone());
        subs.push(tokio::spawn(async move { subscribe(h, url, seen, ready).await }));
        if i < 2 * c.vips {
            http.get(format!("{base}/healthz")).send().await?.error_for_status()?;
        }
        clients.push(http);
    }
    // Every subscriber holding its snapshot; one whose stream failed is
    // said, not waited for.
    let t_open = Instant::now();
    match tokio::time::timeout(Duration::from_secs(120), ready.acquire_many(c.chassis as u32)).await {
        Ok(permits) => drop(permits),
        Err(_) => {
            let failed: Vec<String> = futures::future::join_all(
                subs.iter_mut().filter(|s| s.is_finished()).take(3).map(|s| async { format!("{:?}", s.await) }),
            )
            .await;
            bail!(
                "only {} of {} watch streams delivered their snapshot within 120 s; failures: {}",
                ready.available_permits(),
                c.chassis,
                failed.join("; ")
            );
        }
    }
    eprintln!("bench: {} watch streams hold their snapshot after {:.1} s", c.chassis, t_open.elapsed().as_secs_f64());

    eprintln!("bench: {} moves ({})", c.moves, if tls { "mutual TLS" } else { "plain HTTP" });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut generation = vec![0u64; c.vips];
    for m in 0..c.moves {
        let v = m % c.vips;
        let member = 2 * v + (generation[v] as usize % 2);
        let name = format!("vip{v}");
        let t0 = Instant::now();
        let r = call(
            &clients[member],
            "POST",
            &format!("{base}/v1/vips/{name}/claims"),
            json!({"mac": mac(member), "chassis": format!("hv{member}"), "source": "agent", "observed_at": vipcast_api::now_ms()}),
        )
        .await?;
        if r["result"] == "damped" {
            bail!("move {m}: {name} is on hold (flap damping: 30 moves in 10 s); spread the moves over more --vips");
        }
        let g = r["owner"]["generation"].as_u64().context("claim answer without generation")?;
        generation[v] = g;
        // Wait until every subscriber holds generation g of this VIP.
        loop {
            let notified = seen.notify.notified();
            let have =
                seen.counts.lock().map(|c| c.get(&name).and_then(|x| x.get(&g)).copied().unwrap_or(0)).unwrap_or(0);
            if have >= c.chassis {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(10), notified).await.is_err() {
                bail!("move {m}: only {have} of {} subscribers got {name} generation {g} within 10 s", c.chassis);
            }
        }
        hist.record(t0.elapsed().as_micros().max(1) as u64)?;
    }
    let rss_kib = rss_kib(controller.id());
    for s in subs {
        s.abort();
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let result = json!({
        "store": format!("{:?}", c.store).to_lowercase(),
        "transport": if tls { "mutual TLS" } else { "plain HTTP" },
        "subscribers": c.chassis,
        "vips": c.vips,
        "moves": c.moves,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": hist.max() as f64 / 1000.0,
        "controller_rss_mib": rss_kib.map(|k| k as f64 / 1024.0),
    });
    drop(controller);
    drop(etcd);
    Ok(result)
}

async fn subscribe(
    http: reqwest::Client,
    url: String,
    seen: Arc<Seen>,
    ready: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    // A stream that cannot open (a handshake refused under load) is tried
    // again, a few times, before the benchmark gives up on it.
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        match http.get(&url).send().await.and_then(|r| r.error_for_status()) {
            Ok(r) => break r,
            Err(e) if attempt >= 5 => return Err(anyhow::anyhow!("{url}: {e} (after {attempt} attempts)")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
        }
    };
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut first = true;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let msg: Message = serde_json::from_slice(&line)?;
            let objects = match msg {
                Message::Snapshot { objects, .. } => objects,
                Message::Delta { upserts, .. } => upserts,
                Message::Ping { .. } => Vec::new(),
            };
            let mut got = false;
            if let Ok(mut counts) = seen.counts.lock() {
                for o in objects {
                    if let Object::Vip(v) = o
                        && let Some(owner) = &v.owner
                    {
                        *counts.entry(v.spec.name.clone()).or_default().entry(owner.generation).or_default() += 1;
                        got = true;
                    }
                }
            }
            if got {
                seen.notify.notify_waiters();
            }
            if first {
                first = false;
                ready.add_permits(1);
            }
        }
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

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

mod reconcile {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use hdrhistogram::Histogram;
    use serde_json::{Value, json};
    use vipcast_agent::kernel::Kernel;
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
        row("unchanged plan", &v["unchanged"]);
        row("one VIP moved", &v["vip_move"]);
        for (key, name) in [("move_observe", "  observe"), ("move_diff", "  diff"), ("move_apply", "  apply")] {
            if v["phases"][key].is_object() {
                row(name, &v["phases"][key]);
            }
        }
        println!("{t}");
    }

    async fn measure(plans: &[Plan; 2], runs: usize) -> anyhow::Result<Value> {
        let k = Kernel::open()?;
        let t = Instant::now();
        let first = k.reconcile(&plans[0]).await?;
        let initial = t.elapsed();
        let again = k.reconcile(&plans[0]).await?;
        if again.total() != 0 {
            bail!("a second reconcile of the same plan changed {again:?}");
        }
        // Warm up, then the two kinds interleaved so that both see the same machine.
        for _ in 0..5 {
            k.reconcile(&plans[0]).await?;
        }
        let (mut same, mut moved) = (Samples::new()?, Samples::new()?);
        let mut at = 0;
        for _ in 0..runs {
            let t = now();
            let ch = k.reconcile(&plans[at]).await?;
            same.record(&t, &now())?;
            if ch.total() != 0 {
                bail!("an unchanged plan changed {ch:?}");
            }
            at = 1 - at;
            let t = now();
            let ch = k.reconcile(&plans[at]).await?;
            moved.record(&t, &now())?;
            if (ch.neigh, ch.total()) != (1, 1) {
                bail!("a VIP move changed {ch:?}, not one neighbour entry");
            }
        }
        let phases = phases(&k, plans, &mut at, runs).await?;
        Ok(json!({
            "initial_ms": (initial.as_secs_f64() * 1e6).round() / 1e3,
            "initial_changes": first.total(),
            "unchanged": same.summary(),
            "vip_move": moved.summary(),
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

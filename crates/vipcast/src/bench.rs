//! `vipcast bench`: benchmarks that run the real components.
//!
//! `control-plane`: a real controller process (`vipcast controller`) on
//! loopback with N chassis in one VPC, each with one port and one watch
//! subscriber, and V VIPs on pairs of ports. Each move is a claim for a VIP by
//! its other member; the latency of a move is from the claim being sent to the
//! last of the N subscribers holding the new owner (so it includes the claim's
//! HTTP round trip and the store's commit). Moves run one at a time.
//!
//! ```text
//!  bench ──claims──► controller ──txn──► store (redb file | etcd)
//!    ▲                   │
//!    └── N NDJSON watch streams (one per chassis) ◄──┘
//! ```

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
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(b: Bench) -> anyhow::Result<()> {
    match b.what {
        What::ControlPlane(c) => control_plane(c).await,
        What::Replicate(r) => vipcast_replicator::bench::run(r).await,
        What::Vrrp(v) => tokio::task::spawn_blocking(move || vipcast_vrrpd::bench::main(v)).await?,
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
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["controller", "--listen", &format!("127.0.0.1:{port}"), "--store", &store_arg])
        .env("VIPCAST_LOG", "warn");
    let controller = vipcast_lab::Child::spawn(&mut cmd, &dir.path().join("controller.log"))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
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

    let seen = Arc::new(Seen::default());
    let mut subs = Vec::new();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..c.chassis {
        let url = format!("{base}/v1/watch/chassis/hv{i}");
        let (seen, ready, http) = (seen.clone(), ready.clone(), http.clone());
        subs.push(tokio::spawn(async move { subscribe(http, url, seen, ready).await }));
    }
    let all_ready = ready.acquire_many(c.chassis as u32).await;
    drop(all_ready);

    eprintln!("bench: {} moves", c.moves);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut generation = vec![0u64; c.vips];
    for m in 0..c.moves {
        let v = m % c.vips;
        let member = 2 * v + (generation[v] as usize % 2);
        let name = format!("vip{v}");
        let t0 = Instant::now();
        let r = call(
            &http,
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
        "subscribers": c.chassis,
        "vips": c.vips,
        "moves": c.moves,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": hist.max() as f64 / 1000.0,
        "controller_rss_mib": rss_kib.map(|k| k as f64 / 1024.0),
    });
    if c.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "control-plane ({} store): {} subscribers, {} VIPs, {} moves\n  claim -> last subscriber: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n  controller RSS: {}",
            result["store"].as_str().unwrap_or("?"),
            c.chassis,
            c.vips,
            c.moves,
            ms(0.5),
            ms(0.99),
            hist.max() as f64 / 1000.0,
            rss_kib.map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
    drop(controller);
    drop(etcd);
    Ok(())
}

async fn subscribe(
    http: reqwest::Client,
    url: String,
    seen: Arc<Seen>,
    ready: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let resp = http.get(&url).send().await?;
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

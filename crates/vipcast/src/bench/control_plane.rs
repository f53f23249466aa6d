//! `vipcast bench control-plane`: a region on real controller processes.
//!
//! ```text
//!  region plan ──validated commands──► store (redb file | etcd), written directly
//!       │
//!  controller(s) ◄── cold start ── N chassis streams + R replicator streams
//!       ▲                          (one HTTP connection each, reconnect with
//!       └── claims (one at a time)  ?from=REV after 100 ms doubling to 2 s,
//!                                   as an agent's follower does)
//! ```
//! Phases, each timed with the controllers' CPU seconds and RSS:
//! 1. **snapshot_all**: from spawning the controller(s) on the seeded store
//!    until every subscriber holds its first message (its snapshot);
//! 2. **moves**: a claim for a VIP by its other member, then the wait
//!    until every subscriber that must hold the move (the chassis of the
//!    VIP's VPC and the replicators) does: claim sent → last of them;
//!    bytes every subscriber received per move;
//! 3. **restart_resync**: SIGKILL to a controller, and (one controller) a
//!    new one started on the same store; until every subscriber it served
//!    has a message on a new connection (with several controllers they move
//!    to another).
//!
//! The store is seeded by applying the region's commands to a state in
//! this process (the validation every API write goes through) and writing
//! the objects in transactions of 100, before any controller starts:
//! registering 70,000 objects one request at a time measures nothing this
//! benchmark is about.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use vipcast_packet::MacAddr;
use vipcast_store::{Op, Store};

use super::region::Region;
use super::{ControlPlane, StoreKind};

/// What the subscribers saw, shared with the benchmark.
struct Seen {
    /// vip -> generation -> subscribers holding it
    counts: Mutex<HashMap<String, HashMap<u64, usize>>>,
    notify: Notify,
    /// One permit per connection's first message.
    firsts: Semaphore,
    connects: AtomicU64,
    bytes: AtomicU64,
    stop: AtomicBool,
    /// Streams holding a connection to each controller now.
    on: Vec<AtomicU64>,
    /// Why streams failed: message -> count (said when a phase times out).
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Seen {
    fn new(controllers: usize) -> Seen {
        Seen {
            on: (0..controllers).map(|_| AtomicU64::new(0)).collect(),
            counts: Mutex::default(),
            notify: Notify::new(),
            firsts: Semaphore::new(0),
            connects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            errors: Mutex::default(),
        }
    }
}

/// The part of a watch line the benchmark reads.
#[derive(Deserialize)]
struct Line {
    revision: i64,
    #[serde(default)]
    upserts: Vec<Light>,
}

#[derive(Deserialize)]
struct Light {
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: Option<LightOwner>,
}

#[derive(Deserialize)]
struct LightOwner {
    generation: u64,
}

/// A controller process and how to start it again.
struct Ctl {
    exe: std::path::PathBuf,
    child: Option<vipcast_lab::Child>,
    args: Vec<String>,
    log: std::path::PathBuf,
    base: String,
}

impl Ctl {
    fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Process::new(&self.exe);
        cmd.args(&self.args).env("VIPCAST_LOG", "warn");
        self.child = Some(vipcast_lab::Child::spawn(&mut cmd, &self.log)?);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// CPU seconds (user + system) of process `pid`.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (CPU seconds, RSS MiB, peak RSS MiB) summed over the controllers running.
fn usage(ctls: &[Ctl]) -> (f64, f64, f64) {
    let mut out = (0.0, 0.0, 0.0);
    for pid in ctls.iter().filter_map(Ctl::pid) {
        out.0 += cpu_s(pid).unwrap_or(0.0);
        out.1 += status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        out.2 += status_kib(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    }
    out
}

/// Writes the region to the store; returns the objects written and the state.
async fn seed(store: &dyn Store, region: &Region) -> anyhow::Result<(usize, vipcast_model::State)> {
    let mut state = vipcast_model::State::default();
    let mut ops = Vec::new();
    let now = vipcast_api::now_ms();
    for cmd in region.commands() {
        let applied = vipcast_model::command::apply(&state, &cmd, now)
            .map_err(|e| anyhow::anyhow!("the region plan is refused by validation: {cmd:?}: {e}"))?;
        for o in applied.puts {
            ops.push(Op::Put { key: o.key().store_key(), value: o.to_value(), lease: 0 });
            state.put(o);
        }
    }
    let n = ops.len();
    let mut it = ops.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<Op> = it.by_ref().take(100).collect();
        let r = store.txn(vec![], batch).await?;
        if !r.succeeded {
            bail!("seeding the store: a transaction failed");
        }
    }
    Ok((n, state))
}

/// The replicators' member table at region scale, in this process: the
/// time to bring it up to date after one change, incrementally
/// (`Table::update`: only the VPCs the change touched) and by rebuilding it
/// from the whole state, alternating a VIP changing owner and a port of a
/// replicator-mode VPC coming (and going) on a chassis outside it.
fn replicator_table(state: &vipcast_model::State, region: &Region, samples: usize) -> anyhow::Result<Value> {
    use vipcast_model::{Object, ObjectKey, Owner};
    use vipcast_replicator::engine::{Config, Table};
    let h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut update, mut rebuild) = (h()?, h()?);
    let mut old = state.clone();
    let mut table = Table::new(Config::default(), Instant::now()).rebuild_from_state(&old, 1);
    let vnis = table.slots().len();
    let members: usize = table.slots().iter().map(|s| s.members().len()).sum();
    let replicated: Vec<usize> = (0..region.vpcs.len()).filter(|v| v % 4 == 3).collect();
    if replicated.is_empty() || region.vips.is_empty() {
        return Ok(json!(null));
    }
    for i in 0..samples.max(2) {
        let mut new = old.clone();
        if i % 2 == 0 {
            let name = Region::vip_name(i / 2 % region.vips.len());
            let mut vip = new.vips.get(&name).cloned().ok_or_else(|| anyhow::anyhow!("no VIP {name}"))?;
            let generation = vip.owner.as_ref().map_or(1, |o| o.generation + 1);
            vip.owner =
                Some(Owner { port: "bench".into(), mac: MacAddr::ZERO, chassis: "bench".into(), generation, since: 0 });
            new.put(Object::Vip(vip));
        } else {
            let v = replicated[i / 2 % replicated.len()];
            let name = format!("bench-extra-{v}");
            if new.ports.contains_key(&name) {
                let _ = new.delete(&ObjectKey::Port(name));
            } else {
                let outside = (0..region.chassis).find(|n| !region.vpcs[v].contains(n)).unwrap_or(0);
                new.put(Object::Port(vipcast_model::Port::vm(
                    name,
                    Region::vpc_name(v),
                    "net",
                    Region::chassis_name(outside),
                    MacAddr([2, 0xee, 0, 0, (v >> 8) as u8, v as u8]),
                    IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 254, 254)),
                )));
            }
        }
        let t = Instant::now();
        let updated = table.update(&old, &new, i as i64 + 2);
        update.record((t.elapsed().as_nanos() / 1000).max(1) as u64)?;
        let t = Instant::now();
        let rebuilt = table.rebuild_from_state(&new, i as i64 + 2);
        rebuild.record((t.elapsed().as_nanos() / 1000).max(1) as u64)?;
        let now = updated.unwrap_or(table);
        if !now.same_as(&rebuilt) {
            bail!("the updated replicator table differs from the rebuilt one after change {i}");
        }
        (table, old) = (now, new);
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    Ok(json!({
        "vnis": vnis,
        "members": members,
        "changes": update.len(),
        "update_p50_us": us(&update, 0.5),
        "update_p99_us": us(&update, 0.99),
        "rebuild_p50_us": us(&rebuild, 0.5),
        "rebuild_p99_us": us(&rebuild, 0.99),
        "update_over_rebuild_p50": (us(&update, 0.5) as f64 / us(&rebuild, 0.5).max(1) as f64 * 1000.0).round() / 1000.0,
    }))
}

/// One run; `tls`: every chassis and replicator with a certificate of its own.
pub async fn run(c: &ControlPlane, tls: bool) -> anyhow::Result<Value> {
    let _ = vipcast_sys::raise_nofile_limit();
    let vpcs = c.vpcs.unwrap_or((c.chassis / 5).max(1));
    let vips = c.vips.unwrap_or(2 * vpcs);
    let region = Region::plan(c.chassis, vpcs, vips, 4, c.seed).map_err(anyhow::Error::msg)?;
    if c.controllers > 1 && c.store != StoreKind::Etcd {
        bail!("--controllers {} needs --store etcd (a store file has one owner)", c.controllers);
    }
    let dir = tempfile::tempdir()?;
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

    eprintln!(
        "bench: seeding {} chassis, {} VPCs, {} ports, {} VIPs ({:?} store)",
        region.chassis,
        region.vpcs.len(),
        region.ports(),
        region.vips.len(),
        c.store
    );
    let t = Instant::now();
    let seeded = {
        let spec: crate::controller::StoreSpec = store_arg.parse().map_err(anyhow::Error::msg)?;
        let store = crate::controller::open_store(&spec, false, None).await?;
        seed(store.as_ref(), &region).await?.1
    };
    let seed_s = t.elapsed().as_secs_f64();
    let replicator_table = replicator_table(&seeded, &region, c.moves.min(400))?;

    // Certificates: one per chassis and replicator, an admin for the claims.
    // The heartbeat secret in any case: heartbeats are signed.
    let pki = dir.path().join("pki");
    let mut tls_args = Vec::new();
    let hb_secret = vipcast_tls::pki::init(&pki)?.secret();
    tls_args.extend(["--heartbeat-secret".to_string(), hb_secret.display().to_string()]);
    tls_args.extend(["--heartbeat-source".to_string(), "any".to_string()]);
    if tls {
        eprintln!("bench: issuing {} certificates", region.chassis + region.replicators + 2);
        let d = vipcast_tls::pki::Dir(pki.clone());
        let issue = |role, name: &str, sans: &[&str]| {
            let sans = sans.iter().map(|s| s.to_string()).collect();
            vipcast_tls::pki::issue(&pki, &vipcast_tls::pki::Request { role, name: name.to_string(), sans, days: 1 })
        };
        issue(vipcast_api::PeerRole::Controller, "controller", &["127.0.0.1"])?;
        issue(vipcast_api::PeerRole::Admin, "bench", &[])?;
        for n in 0..region.chassis {
            issue(vipcast_api::PeerRole::Agent, &Region::chassis_name(n), &[])?;
        }
        for r in 0..region.replicators {
            issue(vipcast_api::PeerRole::Replicator, &Region::replicator_name(r), &[])?;
        }
        for (flag, path) in
            [("--tls-cert", d.cert("controller")), ("--tls-key", d.key("controller")), ("--client-ca", d.ca_cert())]
        {
            tls_args.extend([flag.to_string(), path.display().to_string()]);
        }
    }
    let scheme = if tls { "https" } else { "http" };
    // Plain HTTP: one client (its pool opens a connection per stream); TLS:
    // one per identity, each presenting its own certificate.
    let shared = vipcast_client::ControllerClient::with_tls("http://127.0.0.1:1", None)?.http().clone();
    let client = |name: &str| -> anyhow::Result<reqwest::Client> {
        if !tls {
            return Ok(shared.clone());
        }
        let d = vipcast_tls::pki::Dir(pki.clone());
        let files = tls.then(|| vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: d.cert(name), key: d.key(name) });
        Ok(vipcast_client::ControllerClient::with_tls(&format!("{scheme}://127.0.0.1:1"), files.as_ref())?
            .http()
            .clone())
    };

    let mut ctls = Vec::new();
    for i in 0..c.controllers.max(1) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut args: Vec<String> =
            ["controller", "--listen", &format!("127.0.0.1:{port}"), "--store", &store_arg].map(String::from).into();
        args.extend(tls_args.iter().cloned());
        ctls.push(Ctl {
            exe: match &c.controller_exe {
                Some(p) => p.clone(),
                None => std::env::current_exe()?,
            },
            child: None,
            args,
            log: dir.path().join(format!("controller{i}.log")),
            base: format!("{scheme}://127.0.0.1:{port}"),
        });
    }
    let urls: Arc<Vec<String>> = Arc::new(ctls.iter().map(|c| c.base.clone()).collect());

    // Phase 1: cold controllers, every subscriber connecting at once.
    let seen = Arc::new(Seen::new(ctls.len()));
    let t_cold = Instant::now();
    for ctl in &mut ctls {
        ctl.start()?;
    }
    let admin = client("bench")?;
    for ctl in &ctls {
        super::wait_up(&admin, &ctl.base).await?;
    }
    let load_s = t_cold.elapsed().as_secs_f64();
    let subscribers = region.chassis + region.replicators;
    eprintln!("bench: controllers up after {load_s:.2} s; opening {subscribers} watch streams");
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (name, path) = if i < region.chassis {
            let n = Region::chassis_name(i);
            (n.clone(), format!("/v1/watch/chassis/{n}"))
        } else {
            let n = Region::replicator_name(i - region.chassis);
            (n.clone(), format!("/v1/watch/replicators/{n}"))
        };
        let http = client(&name)?;
        tasks.push(tokio::spawn(follow(http, urls.clone(), path, i, seen.clone())));
    }
    wait_firsts(&seen, subscribers, "snapshot").await?;
    let snapshot_all_s = t_cold.elapsed().as_secs_f64();
    let after_snapshots = usage(&ctls);
    eprintln!("bench: {subscribers} streams hold their snapshot {snapshot_all_s:.2} s after the cold start");

    // Phase 2: moves, one at a time, through the first controller.
    let participants: Vec<usize> = region.vpcs.iter().map(Vec::len).collect();
    let first = region.first_ports();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (bytes0, connects0) = (seen.bytes.load(Ordering::Relaxed), seen.connects.load(Ordering::Relaxed));
    let mut must_hold = 0usize;
    eprintln!("bench: {} moves", c.moves);
    let mut mover = Mover {
        region: &region,
        first: &first,
        generation: vec![0; region.vips.len()],
        admin: &admin,
        base: &urls[0],
        seen: &seen,
        next: 0,
    };
    for _ in 0..c.moves {
        let (took, need) = mover.step().await?;
        must_hold += need;
        hist.record(took.as_micros().max(1) as u64)?;
    }
    let moves_bytes = seen.bytes.load(Ordering::Relaxed) - bytes0;
    let reconnects_during_moves = seen.connects.load(Ordering::Relaxed) - connects0;
    let after_moves = usage(&ctls);

    let heartbeats = if c.heartbeats > 0 {
        let port: u16 = urls[0].rsplit(':').next().and_then(|p| p.parse().ok()).context("controller port")?;
        let secret = vipcast_tls::heartbeat::read_secret(&hb_secret)?;
        Some(heartbeat_phase(c.heartbeats, region.chassis, port, secret, &ctls[0], &mut mover).await?)
    } else {
        None
    };

    // Phase 3: kill -9 the first controller; start it again (one controller)
    // or let its subscribers move to another.
    // The streams on the first controller now (subscriber i starts on
    // controller i mod C, and moves on after a failure).
    let served = seen.on[0].load(Ordering::Relaxed) as usize;
    eprintln!("bench: kill -9 the controller at {} ({served} streams)", ctls[0].base);
    let t_kill = Instant::now();
    drop(ctls[0].child.take());
    let mut restart_up_s = None;
    if ctls.len() == 1 {
        ctls[0].start()?;
        super::wait_up(&admin, &ctls[0].base).await?;
        restart_up_s = Some(t_kill.elapsed().as_secs_f64());
    }
    wait_firsts(&seen, served, "resume").await?;
    let restart_resync_s = t_kill.elapsed().as_secs_f64();
    let after_restart = usage(&ctls);
    seen.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let moves = c.moves.max(1) as f64;
    let result = json!({
        "store": format!("{:?}", c.store).to_lowercase(),
        "controllers": ctls.len(),
        "transport": if tls { "mutual TLS" } else { "plain HTTP" },
        "controller_exe": c.controller_exe.as_ref().map(|p| p.display().to_string()),
        "chassis": region.chassis,
        "vpcs": region.vpcs.len(),
        "ports": region.ports(),
        "vips": region.vips.len(),
        "replicators": region.replicators,
        "subscribers": subscribers,
        "largest_vpc": participants.iter().max(),
        "moves": c.moves,
        "seed_s": seed_s,
        "controller_up_s": load_s,
        "snapshot_all_s": snapshot_all_s,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": hist.max() as f64 / 1000.0,
        "subscribers_per_move": must_hold as f64 / moves,
        "bytes_per_move": moves_bytes as f64 / moves,
        "reconnects_during_moves": reconnects_during_moves,
        "heartbeats": heartbeats,
        "replicator_table": replicator_table,
        "restart_resync_s": restart_resync_s,
        "restart_up_s": restart_up_s,
        "rss_mib": after_moves.1,
        "peak_rss_mib": after_restart.2.max(after_moves.2),
        "cpu_s": {
            "snapshot_all": after_snapshots.0,
            "moves": after_moves.0 - after_snapshots.0,
            "restart": after_restart.0,
        },
    });
    drop(ctls);
    drop(etcd);
    Ok(result)
}

/// Moves VIPs one at a time: each VIP in turn to its other member.
struct Mover<'a> {
    region: &'a Region,
    first: &'a [usize],
    generation: Vec<u64>,
    admin: &'a reqwest::Client,
    base: &'a str,
    seen: &'a Seen,
    next: usize,
}

impl Mover<'_> {
    /// One move: claim sent → every subscriber that must hold it does; the
    /// time and how many subscribers that was.
    async fn step(&mut self) -> anyhow::Result<(Duration, usize)> {
        let m = self.next;
        self.next += 1;
        let region = self.region;
        let k = m % region.vips.len();
        let (v, a, b) = region.vips[k];
        let j = if self.generation[k].is_multiple_of(2) { a } else { b };
        let (_, mac) = Region::port(self.first, v, j);
        let name = Region::vip_name(k);
        let need = region.vpcs[v].len() + region.replicators;
        let t0 = Instant::now();
        let r = super::call(
            self.admin,
            "POST",
            &format!("{}/v1/vips/{name}/claims", self.base),
            json!({"mac": mac.to_string(), "chassis": Region::chassis_name(region.vpcs[v][j]), "source": "agent",
                   "observed_at": vipcast_api::now_ms()}),
        )
        .await?;
        if r["result"] == "damped" {
            bail!("move {m}: {name} is on hold (flap damping: 30 moves in 10 s); use more --vips");
        }
        let g = r["owner"]["generation"].as_u64().context("claim answer without generation")?;
        self.generation[k] = g;
        loop {
            let notified = self.seen.notify.notified();
            let have = self
                .seen
                .counts
                .lock()
                .map(|c| c.get(&name).and_then(|x| x.get(&g)).copied().unwrap_or(0))
                .unwrap_or(0);
            if have >= need {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(10), notified).await.is_err() {
                bail!("move {m}: only {have} of {need} subscribers got {name} generation {g} within 10 s");
            }
        }
        Ok((t0.elapsed(), need))
    }
}

/// Every chassis heartbeating (signed, every 50 ms) to the controller at
/// `port` for `secs` seconds from a thread of its own (sendmmsg): the
/// controller's CPU meanwhile against a quiet window as long, its counters,
/// and moves timed meanwhile.
async fn heartbeat_phase(
    secs: u64,
    chassis: usize,
    port: u16,
    secret: [u8; 32],
    ctl: &Ctl,
    mover: &mut Mover<'_>,
) -> anyhow::Result<Value> {
    let pid = ctl.pid().context("the controller runs")?;
    let window = Duration::from_secs(secs);
    // Quiet: nothing but the watch streams' pings.
    let cpu0 = cpu_s(pid).unwrap_or(0.0);
    tokio::time::sleep(window).await;
    let quiet = cpu_s(pid).unwrap_or(0.0) - cpu0;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        vipcast_sys::udp::set_send_buffer(&sock, 4 << 20, true).ok();
        let to: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let keys: Vec<(String, [u8; 32])> = (0..chassis)
            .map(|n| {
                let name = Region::chassis_name(n);
                let key = vipcast_tls::heartbeat::chassis_key(&secret, &name);
                (name, key)
            })
            .collect();
        let mut batch = vipcast_sys::udp::SendBatch::new(chassis, chassis);
        let mut seq = 0u64;
        let tick = Duration::from_millis(50);
        let mut next = Instant::now();
        while !stop2.load(Ordering::Relaxed) {
            seq = (seq + 1).max(vipcast_api::now_ms() * 1000);
            let frames: Vec<Vec<u8>> = keys
                .iter()
                .map(|(name, key)| {
                    vipcast_api::heartbeat::encode_signed(name, seq, |m| vipcast_tls::heartbeat::sign(key, m))
                })
                .collect();
            batch.clear();
            for i in 0..frames.len() {
                batch.push(to, 0, &[i as u32]);
            }
            let mut at = 0;
            while at < batch.len() {
                match batch.send(&sock, frames.as_slice(), at) {
                    Ok(n) => at += n,
                    // A full socket buffer: that datagram is lost, as on a network.
                    Err(_) => at += 1,
                }
            }
            sent2.fetch_add(frames.len() as u64, Ordering::Relaxed);
            next += tick;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            } else {
                next = Instant::now();
            }
        }
        Ok(())
    });
    // Every chassis recorded alive first (one store write each), then the
    // steady state is measured.
    let alive_s = {
        let t = Instant::now();
        loop {
            let m = metrics(mover.admin, mover.base).await;
            if series(&m, r#"vipcast_controller_chassis_liveness_changes_total{result="alive"}"#) >= chassis as u64 {
                break t.elapsed().as_secs_f64();
            }
            if t.elapsed() > Duration::from_secs(120) {
                stop.store(true, Ordering::Relaxed);
                bail!("not every chassis was recorded alive within 120 s of heartbeats");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let m0 = metrics(mover.admin, mover.base).await;
    let (cpu1, sent1, t1) = (cpu_s(pid).unwrap_or(0.0), sent.load(Ordering::Relaxed), Instant::now());
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while t1.elapsed() < window {
        let (took, _) = mover.step().await?;
        hist.record(took.as_micros().max(1) as u64)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t1.elapsed().as_secs_f64();
    let busy = cpu_s(pid).unwrap_or(0.0) - cpu1;
    let datagrams = sent.load(Ordering::Relaxed) - sent1;
    let m1 = metrics(mover.admin, mover.base).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let delta = |name: &str| series(&m1, name).saturating_sub(series(&m0, name));
    let by = |result: &str| delta(&format!("vipcast_controller_chassis_heartbeats_total{{result=\"{result}\"}}"));
    Ok(json!({
        "chassis": chassis,
        "interval_ms": 50,
        "sent_per_s": datagrams as f64 / elapsed,
        "all_alive_after_s": alive_s,
        "controller_cores": busy / elapsed,
        "controller_cores_quiet": quiet / window.as_secs_f64(),
        "ok": by("ok"),
        "too_soon": by("too_soon"),
        "refused": by("unsigned") + by("bad_tag") + by("replayed") + by("stale"),
        "socket_drops": delta("vipcast_controller_heartbeat_socket_drops_total"),
        "liveness_changes": delta(r#"vipcast_controller_chassis_liveness_changes_total{result="alive"}"#)
            + delta(r#"vipcast_controller_chassis_liveness_changes_total{result="dead"}"#),
        "moves": hist.len(),
        "move_p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "move_p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
    }))
}

async fn metrics(http: &reqwest::Client, base: &str) -> String {
    match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn series(metrics: &str, name_and_labels: &str) -> u64 {
    let prefix = format!("{name_and_labels} ");
    metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

async fn wait_firsts(seen: &Seen, n: usize, what: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(300), seen.firsts.acquire_many(n as u32)).await {
        Ok(Ok(p)) => {
            p.forget();
            Ok(())
        }
        _ => {
            let errors = seen.errors.lock().map(|e| format!("{e:?}")).unwrap_or_default();
            bail!(
                "only {} of {n} watch streams had their {what} within 300 s; stream failures: {errors}",
                seen.firsts.available_permits()
            )
        }
    }
}

/// One subscriber: its stream, reconnecting with the last revision it holds
/// (100 ms doubling to 2 s, back to 100 ms after a stream that delivered),
/// moving to the next controller after a failure.
async fn follow(http: reqwest::Client, urls: Arc<Vec<String>>, path: String, index: usize, seen: Arc<Seen>) {
    let mut from: Option<i64> = None;
    let mut delay = Duration::from_millis(100);
    let mut k = index;
    while !seen.stop.load(Ordering::Relaxed) {
        let mut url = format!("{}{path}", urls[k % urls.len()]);
        if let Some(r) = from {
            url.push_str(&format!("?from={r}"));
        }
        match stream(&http, &url, &seen, &mut from, k % urls.len()).await {
            Ok(true) => delay = Duration::from_millis(100),
            Ok(false) => {}
            Err(e) => {
                // The cause, without the URL (one entry per kind, not per stream).
                let mut why = format!("{e:#}");
                if let Some(at) = why.find("): ") {
                    why = why.split_off(at + 3);
                }
                why.truncate(160);
                if let Ok(mut errors) = seen.errors.lock() {
                    *errors.entry(why).or_default() += 1;
                }
            }
        }
        k += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The revision a snapshot or ping line is at, read without parsing it whole.
fn revision_of(line: &[u8]) -> Option<i64> {
    let key = b"\"revision\":";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = line[at..].iter().copied().take_while(|b| b.is_ascii_digit() || *b == b'-').collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// One connection; whether it delivered a message.
async fn stream(
    http: &reqwest::Client,
    url: &str,
    seen: &Seen,
    from: &mut Option<i64>,
    controller: usize,
) -> anyhow::Result<bool> {
    let resp = http.get(url).send().await?.error_for_status()?;
    // Counted on this controller while the connection lasts.
    struct On<'a>(&'a AtomicU64, bool);
    impl Drop for On<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    let mut on = On(&seen.on[controller], false);
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut any = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        seen.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let mut scan = buf.len();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(i) = buf[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + i;
            let line = &buf[start..end];
            if line.starts_with(b"{\"type\":\"delta\"") {
                let l: Line = serde_json::from_slice(line)?;
                *from = Some(l.revision);
                let mut got = false;
                if let Ok(mut counts) = seen.counts.lock() {
                    for o in l.upserts {
                        if let (true, Some(owner)) = (o.kind == "vip", o.owner) {
                            *counts.entry(o.name).or_default().entry(owner.generation).or_default() += 1;
                            got = true;
                        }
                    }
                }
                if got {
                    seen.notify.notify_waiters();
                }
            } else if let Some(r) = revision_of(&line[..line.len().min(64)]) {
                *from = Some(r);
            }
            if !any {
                any = true;
                on.0.fetch_add(1, Ordering::Relaxed);
                on.1 = true;
                seen.connects.fetch_add(1, Ordering::Relaxed);
                seen.firsts.add_permits(1);
            }
            start = end + 1;
            scan = start;
        }
        buf.drain(..start);
    }
    Ok(any)
}

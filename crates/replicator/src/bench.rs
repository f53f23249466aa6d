//! `vipcast bench replicate`: the real replicator against loopback sinks, and
//! in the same run the raw limit of the machine.
//!
//! ```text
//!  generator 127.78.0.1 ──bursts of VXLAN frames (sendmmsg)──► replicator 127.79.0.1 (the real Dataplane,
//!                                                                workers on SO_REUSEPORT sockets)
//!                                                                  │ a copy per member but the sender
//!                                                                  v
//!                                          F sinks 127.77.x.y:P (never read during a run)
//!  plain sender ──sendmmsg, one datagram per sink per frame──► the same F sinks
//! ```
//! For each fan-out F:
//! 1. **replicator**: the generator sends bursts as fast as it can for
//!    `seconds`; what the sinks got (datagrams queued, drained afterwards,
//!    plus the kernel's per-socket drop counter, `SO_MEMINFO`) is divided
//!    by the CPU time of the worker threads (`CLOCK_THREAD_CPUTIME_ID`,
//!    which includes the loopback delivery the kernel does on their behalf);
//! 2. **plain sendmmsg**: one thread pushes the same number of datagrams of
//!    the same size (or what it manages in 2 x `seconds`), 1024 per call, one
//!    datagram per sink per frame; counted and divided the same way;
//! 3. **plain GSO x32** (reference): the same with 32 datagrams per sink in
//!    one UDP GSO send;
//! 4. **latency** at half the throughput run 1 reached (per wall-clock
//!    second, so on a shared machine it is what the workers could really
//!    get), frames stamped with their send time, read by the sink of the
//!    last copy (the last destination of every batch): p50 / p99 of
//!    generator -> last copy, with frames sent in bursts of `--burst`, and
//!    evenly spaced (what falls due while the generator sleeps leaves in one
//!    `sendmmsg`); and p99 of the evenly spaced stream sent straight to that
//!    sink. A burst's last copies leave once all its copies have: about
//!    burst x F / (datagrams per second); a lone frame's F copies cannot
//!    be batched and cost F datagram sends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use vipcast_model::view::VniEntry;
use vipcast_sys::udp::{self, RecvBatch, SendBatch};

use crate::dataplane::{Dataplane, IoConfig, bind_sockets};
use crate::engine::{Config, Table};

/// Flags of `vipcast bench replicate`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// Fan-outs to measure: copies made of each frame.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    fanout: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// UDP payload bytes of each datagram (VXLAN header + inner frame).
    #[arg(long, default_value_t = 110)]
    size: usize,
    /// Frames the generator sends back to back.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Replicator worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Use UDP GSO in the replicator.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// One fan-out's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub fanout: usize,
    /// Datagrams the sinks got from the replicator, per CPU-second of its workers.
    pub replicator_pps_per_core: f64,
    pub replicator_datagrams: u64,
    pub replicator_cpu_s: f64,
    /// The same per wall-clock second.
    pub replicator_pps_wall: f64,
    /// Average datagrams per sendmmsg message (GSO train length).
    pub replicator_train: f64,
    pub plain_pps_per_core: f64,
    pub plain_datagrams: u64,
    pub plain_cpu_s: f64,
    pub plain_gso_pps_per_core: f64,
    /// replicator / plain.
    pub ratio: f64,
    /// Input frames per second in the latency run (half of run 1's, wall clock).
    pub half_load_fps: f64,
    /// Generator -> last copy, frames sent in bursts of `--burst`.
    pub bursts_p50_us: f64,
    pub bursts_p99_us: f64,
    /// Generator -> last copy, frames evenly spaced.
    pub even_p50_us: f64,
    pub even_p99_us: f64,
    /// Generator -> sink without the replicator, evenly spaced.
    pub direct_p99_us: f64,
    /// Time to emit one frame's copies at the measured rate per core.
    pub copies_floor_us: f64,
}

const VNI: u32 = 1;
const GEN_IP: Ipv4Addr = Ipv4Addr::new(127, 78, 0, 1);
const REP_IP: Ipv4Addr = Ipv4Addr::new(127, 79, 0, 1);

fn sink_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(a: Args) -> anyhow::Result<()> {
    let a2 = a.clone();
    let rows = tokio::task::spawn_blocking(move || measure_all(&a2)).await??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.set_header([
        "fan-out",
        "replicator Mpps/core",
        "plain sendmmsg Mpps/core",
        "ratio",
        "plain GSO x32 Mpps/core",
        "replicator Mpps (wall)",
        "frames / message",
        "half load: in bursts p50 / p99",
        "evenly p50 / p99",
        "direct p99",
        "F copies at full rate",
    ]);
    for r in &rows {
        t.add_row([
            r.fanout.to_string(),
            format!("{:.3}", r.replicator_pps_per_core / 1e6),
            format!("{:.3}", r.plain_pps_per_core / 1e6),
            format!("{:.2}x", r.ratio),
            format!("{:.3}", r.plain_gso_pps_per_core / 1e6),
            format!("{:.3}", r.replicator_pps_wall / 1e6),
            format!("{:.1}", r.replicator_train),
            format!("{:.0} / {:.0} µs", r.bursts_p50_us, r.bursts_p99_us),
            format!("{:.0} / {:.0} µs", r.even_p50_us, r.even_p99_us),
            format!("{:.0} µs", r.direct_p99_us),
            format!("{:.0} µs", r.copies_floor_us),
        ]);
    }
    println!(
        "vipcast bench replicate: {} B datagrams, bursts of {}, {} worker(s), GSO {}, {} s per run",
        a.size,
        a.burst,
        a.workers,
        if a.gso { "on" } else { "off" },
        a.seconds
    );
    println!("{t}");
    println!(
        "Mpps/core: datagrams the sinks got (queued + kernel drops at the sink sockets) per CPU-second of the \
         sending threads. Latency: generator -> last copy, at half of the replicator's wall-clock throughput, \
         frames in bursts or evenly spaced; direct: the same stream straight to the sink."
    );
    Ok(())
}

fn measure_all(a: &Args) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(
        (22..=9000).contains(&a.size),
        "--size must be 22..=9000 (VXLAN header + Ethernet header at least)"
    );
    anyhow::ensure!(a.seconds > 0.0, "--seconds must be positive");
    let mut rows = Vec::new();
    for &f in &a.fanout {
        anyhow::ensure!((1..=60_000).contains(&f), "fan-out {f} out of range 1..=60000");
        eprintln!("fan-out {f}: replicator, plain sender, latency...");
        rows.push(measure(a, f)?);
    }
    Ok(rows)
}

/// The sinks of one fan-out, all on the same port.
struct Sinks {
    socks: Vec<UdpSocket>,
    port: u16,
    drops: Vec<u32>,
}

impl Sinks {
    fn bind(n: usize) -> anyhow::Result<Sinks> {
        'attempt: for _ in 0..20 {
            let first = udp::bind(SocketAddr::new(IpAddr::V4(sink_ip(0)), 0), false)?;
            let port = first.local_addr()?.port();
            let mut socks = vec![first];
            for i in 1..n {
                match udp::bind(SocketAddr::new(IpAddr::V4(sink_ip(i)), port), false) {
                    Ok(s) => socks.push(s),
                    Err(_) => continue 'attempt,
                }
            }
            for s in &socks {
                s.set_nonblocking(true)?;
            }
            let drops = socks.iter().map(|s| udp::socket_drops(s).unwrap_or(0)).collect();
            return Ok(Sinks { socks, port, drops });
        }
        anyhow::bail!("could not bind {n} sinks on one port")
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.socks.len()).map(|i| SocketAddr::new(IpAddr::V4(sink_ip(i)), self.port)).collect()
    }

    /// Datagrams received since the last call: what is queued (drained now)
    /// plus what the kernel dropped at the sockets.
    fn collect(&mut self, rb: &mut RecvBatch) -> u64 {
        let mut total = 0u64;
        for (s, d0) in self.socks.iter().zip(self.drops.iter_mut()) {
            while let Ok(n) = rb.try_recv(s) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let d = udp::socket_drops(s).unwrap_or(*d0);
            total += u64::from(d.wrapping_sub(*d0));
            *d0 = d;
        }
        total
    }
}

/// A frame of `size` bytes: VXLAN header, broadcast Ethernet header, then
/// sequence number and send time (ns since `origin`) at offset 22.
fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size];
    f[0] = 0x08;
    f[4..7].copy_from_slice(&VNI.to_be_bytes()[1..]);
    f[8..14].copy_from_slice(&[0xff; 6]);
    f[14..20].copy_from_slice(&[2, 0, 0, 0xbe, 0xec, 1]);
    f[20..22].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

fn stamp(f: &mut [u8], seq: u64, origin: Instant) {
    let ns = origin.elapsed().as_nanos() as u64;
    if let Some(b) = f.get_mut(22..30) {
        b.copy_from_slice(&seq.to_be_bytes());
    }
    if let Some(b) = f.get_mut(30..38) {
        b.copy_from_slice(&ns.to_be_bytes());
    }
}

fn sent_at(f: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(f.get(30..38)?.try_into().ok()?))
}

fn table(sinks: &[SocketAddr], port: u16) -> Table {
    let mut members: Vec<IpAddr> = sinks.iter().map(|a| a.ip()).collect();
    members.push(IpAddr::V4(GEN_IP));
    let mut view = std::collections::BTreeMap::new();
    view.insert(VNI, VniEntry { vpc: "bench".into(), encap: vipcast_model::Encap::Vxlan, members, vips: vec![] });
    // Storm control on but out of reach, so its cost is in the measurement.
    let cfg = Config { dst_port: port, storm_pps: 1_000_000_000, storm_burst: 1_000_000, ipv6_sockets: false };
    Table::new(cfg, Instant::now()).rebuild(&view, [IpAddr::V4(GEN_IP)], 1)
}

fn start_replicator(a: &Args, sinks: &Sinks) -> anyhow::Result<(Dataplane, SocketAddr)> {
    let socks = bind_sockets(SocketAddr::new(IpAddr::V4(REP_IP), 0), a.workers.max(1))?;
    let addr = socks[0].local_addr()?;
    let io = IoConfig { gso: a.gso, ..IoConfig::default() };
    Ok((Dataplane::start(socks, table(&sinks.addrs(), sinks.port), io, None)?, addr))
}

/// How the generator spaces frames.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Bursts of `burst` back to back, as fast as it can.
    FlatOut,
    /// `fps` frames per second in bursts of `burst`.
    Bursts(f64),
    /// `fps` frames per second, evenly: what falls due while the thread
    /// sleeps leaves in one `sendmmsg` (at most `burst`).
    Even(f64),
}

/// Sends frames to `to` until `stop`, each stamped with its send time.
/// Returns frames sent.
fn generate(to: SocketAddr, size: usize, burst: usize, pace: Pace, stop: &AtomicBool, origin: Instant) -> u64 {
    let Ok(sock) = udp::bind(SocketAddr::new(IpAddr::V4(GEN_IP), 0), false) else { return 0 };
    let _ = udp::set_send_buffer(&sock, 4 << 20, true);
    let burst = burst.max(1);
    let mut frames: Vec<Vec<u8>> = (0..burst).map(|_| frame(size)).collect();
    let mut out = SendBatch::new(burst, burst);
    let mut seq = 0u64;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = |seq: u64, fps: f64| started + Duration::from_secs_f64(seq as f64 / fps);
        let sleep_until = |t: Instant| {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        };
        let n = match pace {
            Pace::FlatOut => burst,
            Pace::Bursts(fps) => {
                sleep_until(due(seq, fps));
                burst
            }
            Pace::Even(fps) => {
                sleep_until(due(seq, fps));
                let now = Instant::now();
                (1..burst).take_while(|k| due(seq + *k as u64, fps) <= now).count() + 1
            }
        };
        out.clear();
        for (i, f) in frames.iter_mut().take(n).enumerate() {
            stamp(f, seq, origin);
            seq += 1;
            out.push(to, 0, &[i as u32]);
        }
        let mut i = 0;
        while i < out.len() {
            match out.send(&sock, frames.as_slice(), i) {
                Ok(n) => i += n.max(1),
                Err(_) => i += 1,
            }
        }
    }
    seq
}

/// A plain sender: `total` datagrams, one per sink per frame (or, with
/// `gso`, trains of `gso` per sink), for at most `limit`. Returns its CPU time.
fn plain(sinks: &[SocketAddr], size: usize, total: u64, gso: usize, limit: Duration) -> anyhow::Result<Duration> {
    let sock = udp::bind(SocketAddr::new(IpAddr::V4(GEN_IP), 0), false)?;
    let _ = udp::set_send_buffer(&sock, 4 << 20, true);
    let frames = [frame(size)];
    let gso = if gso > 1 && udp::gso_supported(&sock) { gso } else { 1 };
    let zeros = vec![0u32; gso];
    let mut out = SendBatch::new(1024, 1024 * gso);
    let cpu0 = vipcast_sys::thread_cpu_time()?;
    let deadline = Instant::now() + limit;
    let mut sent = 0u64;
    let mut next = 0usize;
    while sent < total && Instant::now() < deadline {
        out.clear();
        while out.has_room(gso) && sent < total {
            let dest = sinks[next % sinks.len()];
            next += 1;
            out.push(dest, if gso > 1 { size as u16 } else { 0 }, &zeros);
            sent += gso as u64;
        }
        let mut i = 0;
        while i < out.len() {
            match out.send(&sock, frames.as_slice(), i) {
                Ok(n) => i += n.max(1),
                Err(_) => i += 1,
            }
        }
    }
    Ok(vipcast_sys::thread_cpu_time()?.saturating_sub(cpu0))
}

/// Reads `sock` until `stop`, recording generator -> here latencies (µs).
fn latency_sink(sock: &UdpSocket, stop: &AtomicBool, origin: Instant) -> Histogram<u64> {
    let mut h = new_histogram();
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut rb = RecvBatch::new(256, 2048);
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = rb.recv(sock) else { continue };
        let now = origin.elapsed().as_nanos() as u64;
        for i in 0..n {
            if let Some(t) = rb.get(i).and_then(|d| sent_at(d.data)) {
                let _ = h.record((now.saturating_sub(t) / 1000).max(1));
            }
        }
    }
    h
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("1 µs .. 60 s with 3 significant figures is valid")
}

/// A paced run of `seconds` at `fps` to `to`, with the last sink recording latency.
fn paced_latency(a: &Args, to: SocketAddr, last: &UdpSocket, pace: Pace) -> Histogram<u64> {
    let origin = Instant::now();
    let stop_gen = AtomicBool::new(false);
    let stop_sink = AtomicBool::new(false);
    let seconds = a.seconds.clamp(0.5, 3.0);
    std::thread::scope(|s| {
        let sink = s.spawn(|| latency_sink(last, &stop_sink, origin));
        let gen_ = s.spawn(|| generate(to, a.size, a.burst, pace, &stop_gen, origin));
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop_gen.store(true, Ordering::Relaxed);
        let _ = gen_.join();
        std::thread::sleep(Duration::from_millis(100));
        stop_sink.store(true, Ordering::Relaxed);
        sink.join().unwrap_or_else(|_| new_histogram())
    })
}

fn measure(a: &Args, fanout: usize) -> anyhow::Result<Row> {
    let mut sinks = Sinks::bind(fanout).context("binding sinks")?;
    let mut rb = RecvBatch::new(1024, 2048);
    let run = Duration::from_secs_f64(a.seconds);

    // 1. The replicator at full load.
    let (dp, rep) = start_replicator(a, &sinks)?;
    sinks.collect(&mut rb);
    let stop = AtomicBool::new(false);
    let origin = Instant::now();
    let started = Instant::now();
    std::thread::scope(|s| {
        let g = s.spawn(|| generate(rep, a.size, a.burst, Pace::FlatOut, &stop, origin));
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        let _ = g.join();
    });
    std::thread::sleep(Duration::from_millis(100));
    let totals = dp.totals();
    let reports = dp.stop();
    let wall = started.elapsed().as_secs_f64();
    let rep_cpu: Duration = reports.iter().map(|r| r.cpu).sum();
    let rep_got = sinks.collect(&mut rb);
    let rep_pps = rep_got as f64 / rep_cpu.as_secs_f64().max(1e-9);

    // 2. Plain sendmmsg, the same number of datagrams.
    let addrs = sinks.addrs();
    let plain_cpu = plain(&addrs, a.size, rep_got.max(1), 1, run * 2)?;
    let plain_got = sinks.collect(&mut rb);
    let plain_pps = plain_got as f64 / plain_cpu.as_secs_f64().max(1e-9);
    // 3. Plain with GSO trains of 32.
    let gso_cpu = plain(&addrs, a.size, rep_got.max(1), 32, run * 2)?;
    let gso_got = sinks.collect(&mut rb);
    let gso_pps = gso_got as f64 / gso_cpu.as_secs_f64().max(1e-9);

    // 4. Latency at half the throughput measured in run 1 (wall clock: on a
    // shared machine the workers do not get a whole core each).
    let fps = (rep_got as f64 / wall / fanout as f64 / 2.0).max(100.0);
    let (dp, rep) = start_replicator(a, &sinks)?;
    let last = sinks.socks.last().context("no sinks")?;
    let bursts = paced_latency(a, rep, last, Pace::Bursts(fps));
    let even = paced_latency(a, rep, last, Pace::Even(fps));
    dp.stop();
    let direct = paced_latency(a, addrs[addrs.len() - 1], last, Pace::Even(fps));
    sinks.collect(&mut rb);
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    Ok(Row {
        fanout,
        replicator_pps_per_core: rep_pps,
        replicator_datagrams: rep_got,
        replicator_cpu_s: rep_cpu.as_secs_f64(),
        replicator_pps_wall: rep_got as f64 / wall,
        replicator_train: totals.tx_datagrams as f64 / totals.tx_messages.max(1) as f64,
        plain_pps_per_core: plain_pps,
        plain_datagrams: plain_got,
        plain_cpu_s: plain_cpu.as_secs_f64(),
        plain_gso_pps_per_core: gso_pps,
        ratio: rep_pps / plain_pps.max(1e-9),
        half_load_fps: fps,
        bursts_p50_us: p(&bursts, 0.5),
        bursts_p99_us: p(&bursts, 0.99),
        even_p50_us: p(&even, 0.5),
        even_p99_us: p(&even, 0.99),
        direct_p99_us: p(&direct, 0.99),
        copies_floor_us: fanout as f64 / rep_pps.max(1.0) * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn args(argv: &[&str]) -> Args {
        let cmd = Args::augment_args(clap::Command::new("replicate"));
        Args::from_arg_matches(&cmd.get_matches_from(argv)).unwrap()
    }

    #[test]
    fn defaults_are_the_issues() {
        let a = args(&["replicate"]);
        assert_eq!((a.fanout.as_slice(), a.seconds, a.size), (&[16, 64, 256][..], 5.0, 110));
    }

    /// A short run end to end: every phase delivers, the replicator batches.
    #[test]
    fn a_short_run_measures_every_phase() {
        let rows = measure_all(&args(&["replicate", "--fanout", "4", "--seconds", "0.2"])).unwrap();
        let r = &rows[0];
        assert_eq!(r.fanout, 4);
        assert!(r.replicator_datagrams > 0 && r.plain_datagrams > 0, "{r:?}");
        assert!(r.replicator_pps_per_core > 0.0 && r.plain_pps_per_core > 0.0 && r.plain_gso_pps_per_core > 0.0);
        assert!(r.replicator_train >= 1.0);
        assert!(r.bursts_p50_us > 0.0 && r.even_p50_us > 0.0 && r.direct_p99_us > 0.0, "{r:?}");
        assert!(measure_all(&args(&["replicate", "--size", "10"])).is_err());
    }
}

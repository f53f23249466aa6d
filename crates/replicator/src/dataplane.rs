//! The data path: N worker threads, each on its own `SO_REUSEPORT` socket.
//!
//! ```text
//!   kernel (SO_REUSEPORT: a flow -> one socket)
//!      │ recvmmsg (MSG_WAITFORONE: what is queued, up to `batch`)
//!      v
//!   Table::handle per datagram ──► Sniffed ──try_send──► sniff task (tokio)
//!      │ Replicate{slot, skip} / Echo / Drop(reason)
//!      v
//!   group by VNI, then per destination: the frames of the batch not sent by
//!   it, in arrival order, cut into GSO trains of same-size frames (the last
//!   may be shorter; at most 64 frames / 65,000 bytes)
//!      │ sendmmsg: one message per (destination, train), iovecs pointing
//!      v            into the receive buffers — no copy, no allocation
//!   kernel
//! ```
//! The table is swapped under the workers: each checks a generation counter
//! after every `recvmmsg` returns (not before it blocks) and takes the new
//! `Arc<Table>` when it moved. Counters are
//! added up per batch and published with relaxed atomics.
//!
//! If the kernel refuses a GSO train (a device without checksum offload
//! answers `EIO`), the worker sends that train's frames one by one and stops
//! using GSO.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vipcast_sys::udp::{self, GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RecvBatch, SendBatch};

use crate::engine::{Action, Config, DropReason, Table};

/// How the workers do I/O.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Datagrams taken per `recvmmsg`. Default 64.
    pub batch: usize,
    /// Largest datagram accepted, bytes; longer ones are dropped as
    /// malformed. Default 9216 (a jumbo underlay).
    pub max_datagram: usize,
    /// Batch a burst's frames per destination with UDP GSO when the kernel
    /// supports it. Default true.
    pub gso: bool,
    /// Socket receive and send buffers, bytes (forced past the sysctl limits
    /// when running with CAP_NET_ADMIN). Default 4 MiB.
    pub socket_buffer: usize,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig { batch: 64, max_datagram: 9216, gso: true, socket_buffer: 4 << 20 }
    }
}

/// One worker's counters (published once per batch).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    pub rx_datagrams: AtomicU64,
    pub rx_batches: AtomicU64,
    /// Datagrams handed to the kernel (a GSO train counts its frames).
    pub tx_datagrams: AtomicU64,
    /// Messages of `sendmmsg` (one per datagram or GSO train).
    pub tx_messages: AtomicU64,
    pub tx_syscalls: AtomicU64,
    /// Datagrams the kernel refused to send.
    pub tx_errors: AtomicU64,
    /// Probes echoed.
    pub echoes: AtomicU64,
    /// Sniffed announcements dropped because the sniff queue was full.
    pub sniff_overflow: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// A sum of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub rx_datagrams: u64,
    pub rx_batches: u64,
    pub tx_datagrams: u64,
    pub tx_messages: u64,
    pub tx_syscalls: u64,
    pub tx_errors: u64,
    pub echoes: u64,
    pub sniff_overflow: u64,
    pub drops: [u64; DropReason::ALL.len()],
    /// Datagrams the kernel dropped at the workers' sockets (receive queue full).
    pub socket_drops: u64,
}

/// What a worker reports when it stops.
#[derive(Debug, Clone, Copy)]
pub struct WorkerReport {
    /// CPU time the worker thread used.
    pub cpu: Duration,
}

struct Shared {
    table: Mutex<Arc<Table>>,
    generation: AtomicU64,
    stop: AtomicBool,
}

/// The running workers.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<SharedDebug>,
    stats: Vec<Arc<WorkerStats>>,
    sockets: Vec<UdpSocket>,
    workers: Mutex<Vec<JoinHandle<WorkerReport>>>,
}

/// `Shared` with a `Debug` that does not print the table.
struct SharedDebug(Shared);

impl std::fmt::Debug for SharedDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("generation", &self.0.generation.load(Ordering::Relaxed)).finish()
    }
}

/// Binds `n` `SO_REUSEPORT` sockets on `addr` for the workers.
pub fn bind_sockets(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let first = udp::bind(addr, true)?;
    let addr = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n.max(1) {
        out.push(udp::bind(addr, true)?);
    }
    Ok(out)
}

impl Dataplane {
    /// Starts a worker thread per socket, replicating with `table` until
    /// [`set_table`](Self::set_table) gives a newer one. Sniffed
    /// announcements go to `sniff` (dropped and counted when it is full).
    pub fn start(
        sockets: Vec<UdpSocket>,
        table: Table,
        io: IoConfig,
        sniff: Option<tokio::sync::mpsc::Sender<crate::sniff::SniffEvent>>,
    ) -> io::Result<Dataplane> {
        let shared = Arc::new(SharedDebug(Shared {
            table: Mutex::new(Arc::new(table)),
            generation: AtomicU64::new(1),
            stop: AtomicBool::new(false),
        }));
        let mut stats = Vec::new();
        let mut workers = Vec::new();
        let mut kept = Vec::new();
        for (i, sock) in sockets.into_iter().enumerate() {
            let force = udp::set_recv_buffer(&sock, io.socket_buffer, true).is_ok();
            if !force {
                let _ = udp::set_recv_buffer(&sock, io.socket_buffer, false);
            }
            if udp::set_send_buffer(&sock, io.socket_buffer, true).is_err() {
                let _ = udp::set_send_buffer(&sock, io.socket_buffer, false);
            }
            udp::set_recv_timeout(&sock, Duration::from_millis(100))?;
            let s = Arc::new(WorkerStats::default());
            stats.push(s.clone());
            kept.push(sock.try_clone()?);
            let (shared, io, sniff) = (shared.clone(), io.clone(), sniff.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("replicator-{i}"))
                    .spawn(move || Worker::new(sock, &io, s, sniff).run(&shared.0))?,
            );
        }
        Ok(Dataplane { shared, stats, sockets: kept, workers: Mutex::new(workers) })
    }

    /// Installs a new table; workers take it at their next batch.
    pub fn set_table(&self, table: Table) {
        let mut t = self.shared.0.table.lock().unwrap_or_else(|p| p.into_inner());
        *t = Arc::new(table);
        self.shared.0.generation.fetch_add(1, Ordering::Release);
    }

    /// The table in use.
    pub fn table(&self) -> Arc<Table> {
        self.shared.0.table.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every worker thread is still running.
    pub fn healthy(&self) -> bool {
        let w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        !w.is_empty() && w.iter().all(|w| !w.is_finished())
    }

    /// How many workers were started and not stopped.
    pub fn workers(&self) -> usize {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The workers' counters added up, with the kernel's drops at their sockets.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for s in &self.stats {
            t.rx_datagrams += get(&s.rx_datagrams);
            t.rx_batches += get(&s.rx_batches);
            t.tx_datagrams += get(&s.tx_datagrams);
            t.tx_messages += get(&s.tx_messages);
            t.tx_syscalls += get(&s.tx_syscalls);
            t.tx_errors += get(&s.tx_errors);
            t.echoes += get(&s.echoes);
            t.sniff_overflow += get(&s.sniff_overflow);
            for (d, a) in t.drops.iter_mut().zip(&s.drops) {
                *d += get(a);
            }
        }
        t.socket_drops = self.sockets.iter().filter_map(|s| udp::socket_drops(s).ok()).map(u64::from).sum();
        t
    }

    /// Stops the workers (within their 100 ms receive timeout) and returns their reports.
    pub fn stop(&self) -> Vec<WorkerReport> {
        self.shared.0.stop.store(true, Ordering::Relaxed);
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    }
}

/// A frame of the current batch that is to be replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// VNI slot in the table.
    pub slot: u32,
    /// The member that sent it (gets no copy).
    pub skip: u32,
    /// Index in the receive batch.
    pub frame: u32,
    /// Length, bytes.
    pub len: u32,
}

/// Cuts what member `m` gets of `items` (frames of one VNI, in arrival
/// order) into messages: `emit(gso_size, frames)` per message, `gso_size` 0
/// for a single datagram. With `gso`, a train holds consecutive frames of one
/// size, possibly ended by one shorter frame, at most [`GSO_MAX_SEGMENTS`]
/// frames and [`GSO_MAX_BYTES`] bytes; without, every frame is a message.
pub fn plan_trains(items: &[Item], m: u32, gso: bool, mut emit: impl FnMut(u16, &[u32])) {
    let mut run = [0u32; GSO_MAX_SEGMENTS];
    let (mut k, mut seg, mut bytes, mut closed) = (0usize, 0u32, 0usize, false);
    let size = |k: usize, seg: u32| if k > 1 { u16::try_from(seg).unwrap_or(0) } else { 0 };
    for it in items.iter().filter(|it| it.skip != m) {
        let fits = gso && !closed && it.len <= seg && k < GSO_MAX_SEGMENTS && bytes + it.len as usize <= GSO_MAX_BYTES;
        if k > 0 && !fits {
            emit(size(k, seg), &run[..k]);
            k = 0;
        }
        if k == 0 {
            seg = it.len;
            bytes = 0;
            closed = false;
        }
        // A shorter frame can only end a train.
        closed |= it.len < seg;
        run[k] = it.frame;
        k += 1;
        bytes += it.len as usize;
    }
    if k > 0 {
        emit(size(k, seg), &run[..k]);
    }
}

/// Counters of one batch, published at its end.
#[derive(Default)]
struct Local {
    rx: u64,
    tx: u64,
    messages: u64,
    syscalls: u64,
    errors: u64,
    echoes: u64,
    sniff_overflow: u64,
    drops: [u64; DropReason::ALL.len()],
}

struct Worker {
    sock: UdpSocket,
    stats: Arc<WorkerStats>,
    sniff: Option<tokio::sync::mpsc::Sender<crate::sniff::SniffEvent>>,
    rx: RecvBatch,
    tx: SendBatch,
    items: Vec<Item>,
    gso: bool,
    local: Local,
}

impl Worker {
    fn new(
        sock: UdpSocket,
        io: &IoConfig,
        stats: Arc<WorkerStats>,
        sniff: Option<tokio::sync::mpsc::Sender<crate::sniff::SniffEvent>>,
    ) -> Worker {
        let gso = io.gso && udp::gso_supported(&sock);
        let batch = io.batch.clamp(1, 1024);
        Worker {
            rx: RecvBatch::new(batch, io.max_datagram.max(64)),
            tx: SendBatch::new(1024, 8192),
            items: Vec::with_capacity(batch),
            sock,
            stats,
            sniff,
            gso,
            local: Local::default(),
        }
    }

    fn run(mut self, shared: &Shared) -> WorkerReport {
        let cpu0 = vipcast_sys::thread_cpu_time().unwrap_or_default();
        let mut generation = 0;
        let mut table = Arc::new(Table::new(Config::default(), Instant::now()));
        while !shared.stop.load(Ordering::Relaxed) {
            match self.rx.recv(&self.sock) {
                Ok(_) => {
                    // The table as of now, not as of when the call blocked.
                    let g = shared.generation.load(Ordering::Acquire);
                    if g != generation {
                        table = shared.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        generation = g;
                    }
                    self.batch(&table);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recvmmsg");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        WorkerReport { cpu: vipcast_sys::thread_cpu_time().unwrap_or_default().saturating_sub(cpu0) }
    }

    /// Handles what the last `recvmmsg` took.
    fn batch(&mut self, table: &Table) {
        let now = Instant::now();
        self.items.clear();
        let n = self.rx.len();
        self.local.rx += n as u64;
        for i in 0..n {
            let Some(d) = self.rx.get(i) else { continue };
            let Some(from) = d.from.filter(|_| !d.truncated) else {
                self.local.drops[DropReason::Malformed.index()] += 1;
                continue;
            };
            let decision = table.handle(now, from, d.data);
            if let (Some(s), Some(tx)) = (decision.sniffed, &self.sniff)
                && tx.try_send(crate::sniff::SniffEvent::Announcement(s)).is_err()
            {
                self.local.sniff_overflow += 1;
            }
            if let (Action::Replicate { slot, .. }, Some(tx)) = (decision.action, &self.sniff)
                && let Some(v) = table
                    .slots()
                    .get(slot)
                    .and_then(|s| crate::sniff::vrrp_of(s.vni, from.ip(), d.data.get(8..).unwrap_or_default()))
                && tx.try_send(crate::sniff::SniffEvent::Vrrp(v)).is_err()
            {
                self.local.sniff_overflow += 1;
            }
            match decision.action {
                Action::Replicate { slot, skip } => self.items.push(Item {
                    slot: slot as u32,
                    skip: skip as u32,
                    frame: i as u32,
                    len: d.data.len() as u32,
                }),
                Action::Echo => {
                    self.local.echoes += 1;
                    self.queue(from, 0, &[i as u32]);
                }
                Action::Drop(r) => {
                    if let Some(c) = self.local.drops.get_mut(r.index()) {
                        *c += 1;
                    }
                }
            }
        }
        // Frames of one VNI together, in arrival order.
        self.items.sort_unstable_by_key(|it| (it.slot, it.frame));
        let mut start = 0;
        while start < self.items.len() {
            let slot = self.items[start].slot;
            let end = start + self.items[start..].iter().take_while(|it| it.slot == slot).count();
            for (m, &dest) in table.destinations(slot as usize).iter().enumerate() {
                self.trains(start..end, m as u32, dest);
            }
            start = end;
        }
        self.flush();
        self.publish();
    }

    /// Queues the frames of `range` that member `m` did not send, to `dest`.
    fn trains(&mut self, range: std::ops::Range<usize>, m: u32, dest: SocketAddr) {
        let gso = self.gso;
        let items = std::mem::take(&mut self.items);
        plan_trains(items.get(range).unwrap_or_default(), m, gso, |size, frames| self.queue(dest, size, frames));
        self.items = items;
    }

    fn queue(&mut self, dest: SocketAddr, gso: u16, frames: &[u32]) {
        if !self.tx.push(dest, gso, frames) {
            self.flush();
            let _ = self.tx.push(dest, gso, frames);
        }
        self.local.tx += frames.len() as u64;
    }

    /// Sends everything queued.
    fn flush(&mut self) {
        let mut i = 0;
        while i < self.tx.len() {
            self.local.syscalls += 1;
            match self.tx.send(&self.sock, &self.rx, i) {
                Ok(n) => {
                    self.local.messages += n as u64;
                    i += n.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.refused(i, &e);
                    i += 1;
                }
            }
        }
        self.tx.clear();
    }

    /// Message `i` was refused with `e`: a GSO train is sent frame by frame
    /// (and GSO is turned off); anything else is counted.
    fn refused(&mut self, i: usize, e: &io::Error) {
        let Some((to, gso, frames)) = self.tx.message(i) else { return };
        if gso == 0 {
            self.local.errors += frames.len() as u64;
            self.local.tx = self.local.tx.saturating_sub(frames.len() as u64);
            return;
        }
        if self.gso {
            tracing::warn!(error = %e, "UDP GSO send refused; sending datagram by datagram from now on");
            self.gso = false;
        }
        for &f in frames {
            let data = vipcast_sys::udp::Frames::frame(&self.rx, f);
            self.local.messages += 1;
            self.local.syscalls += 1;
            if self.sock.send_to(data, to).is_err() {
                self.local.errors += 1;
                self.local.tx = self.local.tx.saturating_sub(1);
            }
        }
    }

    fn publish(&mut self) {
        let l = std::mem::take(&mut self.local);
        let s = &self.stats;
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&s.rx_batches, 1);
        add(&s.rx_datagrams, l.rx);
        add(&s.tx_datagrams, l.tx);
        add(&s.tx_messages, l.messages);
        add(&s.tx_syscalls, l.syscalls);
        add(&s.tx_errors, l.errors);
        add(&s.echoes, l.echoes);
        add(&s.sniff_overflow, l.sniff_overflow);
        for (a, v) in s.drops.iter().zip(l.drops) {
            add(a, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{bcast, frame};
    use crate::engine::{Config, PROBE_VNI};
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use vipcast_model::view::VniEntry;

    proptest::proptest! {
        #[test]
        fn trains_carry_each_members_frames_in_order(
            items in proptest::collection::vec((0u32..3, proptest::sample::select(vec![40u32, 100, 110, 1400])), 0..300),
            m in 0u32..3,
            gso in proptest::bool::ANY,
        ) {
            let items: Vec<Item> =
                items.iter().enumerate().map(|(i, &(skip, len))| Item { slot: 0, skip, frame: i as u32, len }).collect();
            let mut got = Vec::new();
            plan_trains(&items, m, gso, |size, frames| {
                let lens: Vec<u32> = frames.iter().map(|&f| items[f as usize].len).collect();
                if size == 0 {
                    assert_eq!(frames.len(), 1);
                } else {
                    assert!(gso && frames.len() >= 2 && frames.len() <= GSO_MAX_SEGMENTS);
                    let (last, rest) = lens.split_last().unwrap();
                    assert!(rest.iter().all(|&l| l == u32::from(size)) && *last <= u32::from(size), "{size} {lens:?}");
                    assert!(lens.iter().sum::<u32>() as usize <= GSO_MAX_BYTES);
                }
                got.extend_from_slice(frames);
            });
            let want: Vec<u32> = items.iter().filter(|it| it.skip != m).map(|it| it.frame).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    /// Loopback: members 127.0.0.1 (the sender) and two sinks on 127.0.0.2/3.
    #[test]
    fn replicates_over_loopback_in_gso_trains_and_echoes_probes() {
        let sink_a = udp::bind("127.0.0.2:0".parse().unwrap(), false).unwrap();
        let port = sink_a.local_addr().unwrap().port();
        let sink_b = udp::bind(SocketAddr::new("127.0.0.3".parse().unwrap(), port), false).unwrap();
        for s in [&sink_a, &sink_b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let sender = udp::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        sender.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut view = BTreeMap::new();
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        view.insert(
            5,
            VniEntry {
                vpc: "p".into(),
                encap: vipcast_model::Encap::Vxlan,
                members: ips(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
                vips: vec![],
            },
        );
        let cfg = Config { dst_port: port, storm_pps: 0, ..Config::default() };
        let table = Table::new(cfg, Instant::now()).rebuild(&view, ips(&["127.0.0.1"]), 1);
        // One socket: the burst is queued before the worker starts, so its
        // first recvmmsg takes all of it.
        let socks = bind_sockets("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let rep = socks[0].local_addr().unwrap();

        // A burst of 20 frames (the last shorter), then a probe.
        let mut sent = Vec::new();
        for i in 0..20u8 {
            let mut f = frame(5, &bcast());
            f.push(i);
            if i == 19 {
                f.truncate(40);
            }
            sender.send_to(&f, rep).unwrap();
            sent.push(f);
        }
        let gso = udp::gso_supported(&socks[0]);
        let dp = Dataplane::start(socks, table, IoConfig::default(), None).unwrap();
        for sink in [&sink_a, &sink_b] {
            let mut buf = [0u8; 2048];
            for want in &sent {
                let (n, from) = sink.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], want.as_slice());
                assert_eq!(from, rep);
            }
        }
        let probe = frame(PROBE_VNI, b"are you there");
        sender.send_to(&probe, rep).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = sender.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (probe.as_slice(), rep));
        // Not a member, unknown VNI: dropped.
        let stranger = udp::bind("127.0.0.9:0".parse().unwrap(), false).unwrap();
        stranger.send_to(&frame(5, &bcast()), rep).unwrap();
        sender.send_to(&frame(6, &bcast()), rep).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while dp.totals().rx_datagrams < 23 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = dp.totals();
        assert_eq!(t.rx_datagrams, 23);
        assert_eq!(t.tx_datagrams, 41);
        // With GSO the burst is one train per sink (+ the echo).
        assert_eq!(t.tx_messages, if gso { 3 } else { 41 });
        assert_eq!(t.echoes, 1);
        assert_eq!(t.drops[DropReason::UnregisteredSource.index()], 1);
        assert_eq!(t.drops[DropReason::UnknownVni.index()], 1);
        assert!(dp.healthy());
        let reports = dp.stop();
        assert_eq!(reports.len(), 1);
    }
}

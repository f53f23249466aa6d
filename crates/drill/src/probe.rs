//! The prober and the responder (blocking std sockets; each runs as a
//! hidden `vipcast` subcommand inside a lab namespace via `ip netns exec`).
//!
//! ```text
//!  prober (client VM)                          responder (every VIP member)
//!  sender thread ──request every 1 ms──► VIP:port ──► reply + its name
//!      │ "S seq sent_us"                                   │
//!      v                                                   v
//!   writer thread ◄── "R seq sent_us recv_us name" ◄── receiver thread
//!      │ (one line per event, flushed whenever idle)
//!      v
//!   stdout / a file, tailed by the drill ([`crate::record::Tail`])
//! ```
//! The prober's socket is unconnected: a reply may come from any address
//! (the responder answers from its own address, not the VIP); the payload
//! says which request it answers and who sent it. Times are wall-clock
//! microseconds since the Unix epoch, the clock the agents' logs and the
//! controller's history use.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::wire::{self, Reply, Request};

/// Microseconds since the Unix epoch (wall clock).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Answers every probe request on `listen` with the request and `name`,
/// until the process ends.
pub fn respond(listen: SocketAddr, name: &str) -> io::Result<()> {
    let sock = UdpSocket::bind(listen)?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(reply) = buf.get(..n).and_then(|b| wire::answer(b, name)) {
            // A reply that cannot be sent is a lost probe, which is what
            // the prober measures.
            let _ = sock.send_to(&reply, from);
        }
    }
}

/// What the prober does.
#[derive(Debug, Clone)]
pub struct ProberConfig {
    /// The VIP and the responders' port.
    pub target: SocketAddr,
    /// Time between requests (default 1 ms).
    pub interval: Duration,
    /// Stop after this many requests (`None`: until killed).
    pub count: Option<u64>,
}

/// Sends requests every `interval` and writes one line per request sent and
/// per reply received to `out` (see the module doc). Returns after `count`
/// requests and a last 200 ms for their replies, or never.
pub fn probe(cfg: &ProberConfig, out: impl Write + Send + 'static) -> io::Result<()> {
    let bind: SocketAddr = if cfg.target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
    let sock = UdpSocket::bind(bind)?;
    let rx_sock = sock.try_clone()?;
    rx_sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let (lines, lines_rx) = mpsc::channel::<String>();
    let writer = std::thread::spawn(move || write_lines(lines_rx, out));
    let rx_lines = lines.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let rx_stop = stop.clone();
    let receiver = std::thread::spawn(move || receive(&rx_sock, &rx_lines, &rx_stop));
    let mut next = Instant::now();
    let mut seq = 0u64;
    while cfg.count.is_none_or(|c| seq < c) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let sent_us = now_us();
        let bytes = Request { seq, sent_us }.emit();
        let line = match sock.send_to(&bytes, cfg.target) {
            Ok(_) => format!("S {seq} {sent_us}"),
            Err(e) => format!("E {seq} {sent_us} {}", e.kind()),
        };
        if lines.send(line).is_err() {
            break;
        }
        seq += 1;
        next += cfg.interval;
        // Never burst to catch up after a stall: the stall is visible as a
        // gap in the send times, and a burst would hide it.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    drop(lines);
    writer.join().map_err(|_| io::Error::other("writer thread panicked"))?
}

fn receive(sock: &UdpSocket, lines: &mpsc::Sender<String>, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Unconnected UDP: ICMP errors are not reported here; anything
            // else ends the receiver.
            Err(_) => return,
        };
        let recv_us = now_us();
        let Some(reply) = buf.get(..n).and_then(Reply::parse) else { continue };
        // Names become one whitespace-free token.
        let name: String =
            reply.responder.chars().map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c }).collect();
        let line = format!("R {} {} {recv_us} {name}", reply.request.seq, reply.request.sent_us);
        if lines.send(line).is_err() {
            return;
        }
    }
}

/// Writes lines as they come, flushing whenever no more are waiting (the
/// drill reads the file while the prober runs).
fn write_lines(rx: mpsc::Receiver<String>, out: impl Write) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        writeln!(out, "{first}")?;
        while let Ok(line) = rx.try_recv() {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn prober_and_responder_on_loopback() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        std::thread::spawn(move || respond(addr, "r1 x"));
        std::thread::sleep(Duration::from_millis(50));
        let out = Shared::default();
        let cfg = ProberConfig { target: addr, interval: Duration::from_millis(1), count: Some(50) };
        probe(&cfg, out.clone()).unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut log = crate::record::ProbeLog::default();
        for line in text.lines() {
            log.apply_line(line);
        }
        assert_eq!(log.probes().len(), 50);
        let answered = log.probes().iter().filter(|p| p.reply.is_some()).count();
        assert_eq!(answered, 50, "{text}");
        assert_eq!(log.responders(), ["r1_x"]);
    }
}

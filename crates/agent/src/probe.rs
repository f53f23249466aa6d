//! Replicator health, seen from this chassis: a probe every 100 ms to each
//! replicator, and a replicator counts as healthy while a reply came back
//! within the last [`HEALTHY_FOR`]. A probe is a VXLAN datagram with the I
//! flag and VNI 0 (never a VPC's VNI) carrying a sequence number; the
//! replicator echoes it to its source unchanged.
//!
//! With 50 ms probes and a 150 ms window, a dead replicator is noticed
//! within 0.2 s and its VNIs re-homed by the next reconcile — inside VRRP's
//! Master_Down_Interval at 0.1 s adverts (0.36 s), so a replicator's death
//! does not make backups elect themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Interval between probes to each replicator.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A replicator is healthy while its last reply is younger than this.
pub const HEALTHY_FOR: Duration = Duration::from_millis(150);

/// The prober: targets in, health out.
#[derive(Debug, Clone)]
pub struct Prober {
    targets: Arc<Mutex<HashMap<String, SocketAddr>>>,
    last_reply: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    /// Bumped whenever a replicator's health flips.
    pub changed: watch::Receiver<u64>,
}

impl Prober {
    /// Starts probing from an ephemeral UDP port on `local`.
    pub async fn start(local: std::net::IpAddr) -> std::io::Result<Prober> {
        let sock = Arc::new(UdpSocket::bind(SocketAddr::new(local, 0)).await?);
        let targets: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let last_reply: Arc<Mutex<HashMap<SocketAddr, Instant>>> = Arc::default();
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(send_loop(sock.clone(), targets.clone(), last_reply.clone(), tx));
        tokio::spawn(recv_loop(sock, last_reply.clone()));
        Ok(Prober { targets, last_reply, changed: rx })
    }

    /// Sets the replicators to probe.
    pub fn set_targets(&self, t: impl IntoIterator<Item = (String, SocketAddr)>) {
        if let Ok(mut g) = self.targets.lock() {
            *g = t.into_iter().collect();
        }
    }

    /// Whether replicator `name` answered recently.
    pub fn healthy(&self, name: &str) -> bool {
        let addr = self.targets.lock().ok().and_then(|t| t.get(name).copied());
        let Some(addr) = addr else { return false };
        self.last_reply.lock().ok().and_then(|l| l.get(&addr).copied()).is_some_and(|t| t.elapsed() < HEALTHY_FOR)
    }
}

fn probe(seq: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 0x08; // I flag; VNI 0
    p[8..].copy_from_slice(&seq.to_be_bytes());
    p
}

async fn send_loop(
    sock: Arc<UdpSocket>,
    targets: Arc<Mutex<HashMap<String, SocketAddr>>>,
    last: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    changed: watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    let mut seq = 0u64;
    let mut health: HashMap<SocketAddr, bool> = HashMap::new();
    loop {
        tick.tick().await;
        seq += 1;
        let now_targets: Vec<SocketAddr> = targets.lock().map(|t| t.values().copied().collect()).unwrap_or_default();
        for t in &now_targets {
            let _ = sock.send_to(&probe(seq), t).await;
        }
        // Report flips of health.
        let mut flipped = false;
        if let Ok(l) = last.lock() {
            for t in &now_targets {
                let up = l.get(t).is_some_and(|at| at.elapsed() < HEALTHY_FOR);
                if health.insert(*t, up) != Some(up) {
                    tracing::info!(replicator = %t, healthy = up, "replicator health");
                    flipped = true;
                }
            }
        }
        if flipped {
            changed.send_modify(|n| *n += 1);
        }
    }
}

async fn recv_loop(sock: Arc<UdpSocket>, last: Arc<Mutex<HashMap<SocketAddr, Instant>>>) {
    let mut buf = [0u8; 64];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        if n == 16
            && buf[0] & 0x08 != 0
            && buf[4..7] == [0, 0, 0]
            && let Ok(mut l) = last.lock()
        {
            l.insert(from, Instant::now());
        }
    }
}

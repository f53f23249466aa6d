//! GRE VPCs: the same replication for GRE packets (key = VNI) from Open
//! vSwitch chassis, on a raw IP-protocol-47 socket bound to the
//! replicator's IPv4 address. One thread; GRE VPCs' broadcast is light
//! (ARP, ND, VRRP), and the engine's storm control applies as for VXLAN.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vipcast_sys::raw::{IPPROTO_GRE, RawIpv4Socket, ipv4_payload};

use crate::dataplane::Dataplane;
use crate::engine::{Action, DropReason};

/// Counters of the GRE path.
#[derive(Debug, Default)]
pub struct GreStats {
    pub rx_packets: AtomicU64,
    pub tx_copies: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// The running GRE thread; stopped on drop.
#[derive(Debug)]
pub struct GreWorker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub stats: Arc<GreStats>,
}

impl Drop for GreWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts replicating GRE packets sent to `local`, with the tables the
/// UDP workers use.
pub fn start(
    local: Ipv4Addr,
    dataplane: Arc<Dataplane>,
    sniff: Option<tokio::sync::mpsc::Sender<crate::sniff::SniffEvent>>,
) -> std::io::Result<GreWorker> {
    let sock = RawIpv4Socket::bind(IPPROTO_GRE, local)?;
    sock.set_recv_timeout(Duration::from_millis(100))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(GreStats::default());
    let (s, st) = (stop.clone(), stats.clone());
    let handle = std::thread::Builder::new()
        .name("replicator-gre".into())
        .spawn(move || run(&sock, &dataplane, sniff, &s, &st))?;
    Ok(GreWorker { stop, handle: Some(handle), stats })
}

fn run(
    sock: &RawIpv4Socket,
    dataplane: &Dataplane,
    sniff: Option<tokio::sync::mpsc::Sender<crate::sniff::SniffEvent>>,
    stop: &AtomicBool,
    stats: &GreStats,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "GRE socket failed; GRE VPCs are no longer replicated");
                return;
            }
        };
        let Some(packet) = buf.get(..n).and_then(ipv4_payload) else { continue };
        stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        let table = dataplane.table();
        let d = table.handle_gre(Instant::now(), IpAddr::V4(from), packet);
        if let (Some(s), Some(tx)) = (d.sniffed, &sniff) {
            let _ = tx.try_send(crate::sniff::SniffEvent::Announcement(s));
        }
        if let (Action::Replicate { slot, .. }, Some(tx)) = (d.action, &sniff)
            && let Some(v) = table.slots().get(slot).and_then(|s| {
                let inner = vipcast_packet::gre::GrePacket::new_checked(packet).ok()?;
                crate::sniff::vrrp_of(s.vni, IpAddr::V4(from), packet.get(inner.header_len()..)?)
            })
        {
            let _ = tx.try_send(crate::sniff::SniffEvent::Vrrp(v));
        }
        match d.action {
            Action::Replicate { slot, skip } => {
                for (i, dest) in table.destinations(slot).iter().enumerate() {
                    let ip = match dest.ip() {
                        IpAddr::V4(v4) => v4,
                        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                            Some(v4) => v4,
                            None => continue,
                        },
                    };
                    if i == skip {
                        continue;
                    }
                    match sock.send_to(packet, ip) {
                        Ok(_) => {
                            stats.tx_copies.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(%ip, error = %e, "sending a GRE copy"),
                    }
                }
            }
            Action::Drop(r) => {
                if let Some(c) = stats.drops.get(r.index()) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            Action::Echo => {}
        }
    }
}

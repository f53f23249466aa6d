//! The agent's raw sockets on each local VM port: sniffing what the VM sends
//! (gratuitous ARP, unsolicited NA) and sending re-announcements into it.
//!
//! One `ETH_P_ALL` socket per port (a bridge port's frames never reach
//! protocol-bound sockets), filtered in the kernel by
//! [`vipcast_sys::SNIFF_FILTER`]: only ARP, neighbour advertisements and
//! VRRP the port *receives* from its VM are queued, plus the VRRP adverts
//! the bridge delivers to the VM (a remote master's, followed for
//! chassis-down assistance) — never other forwarded frames, nor our own
//! re-announcements.

use std::io;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vipcast_packet::announce::{self, Announcement};
use vipcast_packet::vrrp::{self, ChecksumPolicy, VrrpRepr};
use vipcast_sys::{Direction, ETH_P_ALL, PacketSocket, SNIFF_FILTER};

/// What a VM sent that the agent cares about.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A gratuitous ARP / unsolicited NA.
    Announcement(Announcement),
    /// A VRRP advertisement, as sent (Ethernet source, IP source and
    /// destination, the advert).
    Advert { eth_src: vipcast_packet::MacAddr, src: std::net::IpAddr, dst: std::net::IpAddr, advert: VrrpRepr },
    /// A VRRP advertisement delivered *to* the VM (from a master elsewhere).
    Delivered {
        eth_src: vipcast_packet::MacAddr,
        eth_dst: vipcast_packet::MacAddr,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        advert: VrrpRepr,
    },
}

/// A frame seen on a port.
#[derive(Debug, Clone)]
pub struct Seen {
    pub port: String,
    pub frame: Frame,
    /// Milliseconds since the Unix epoch when it was read.
    pub at_ms: u64,
}

/// The sockets of one port and the tasks reading them.
#[derive(Debug)]
pub struct PortIo {
    pub ifindex: u32,
    sock: Arc<AsyncFd<PacketSocket>>,
    reader: JoinHandle<()>,
}

impl Drop for PortIo {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl PortIo {
    /// Opens the sockets of `port` (interface `ifindex`) and starts reading.
    pub fn open(port: &str, ifindex: u32, out: mpsc::Sender<Seen>) -> io::Result<PortIo> {
        let raw = PacketSocket::bind(ifindex, ETH_P_ALL)?;
        raw.attach_filter(&SNIFF_FILTER)?;
        let sock = Arc::new(raw.into_async()?);
        let reader = tokio::spawn(read_loop(port.to_string(), sock.clone(), out));
        Ok(PortIo { ifindex, sock, reader })
    }

    /// Sends a frame into the port (towards its VM).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.sock.get_ref().send(frame).map(|_| ())
    }
}

async fn read_loop(port: String, sock: Arc<AsyncFd<PacketSocket>>, out: mpsc::Sender<Seen>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(port, error = %e, "port socket failed");
                return;
            }
        };
        loop {
            match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
                Ok(Ok((n, dir))) => {
                    let Some(frame) = buf.get(..n) else { continue };
                    // Malformed frames from a VM are dropped here.
                    let parsed = if dir == Direction::Outgoing {
                        vrrp::parse_frame(frame, ChecksumPolicy::AllowLegacyUnicast).ok().map(|(eth, ip, advert)| {
                            Frame::Delivered {
                                eth_src: eth.src,
                                eth_dst: eth.dst,
                                src: ip.src(),
                                dst: ip.dst(),
                                advert,
                            }
                        })
                    } else {
                        match announce::classify(frame) {
                            Ok(Some(a)) => Some(Frame::Announcement(a)),
                            _ => vrrp::parse_frame(frame, ChecksumPolicy::AllowLegacyUnicast).ok().map(
                                |(eth, ip, advert)| Frame::Advert {
                                    eth_src: eth.src,
                                    src: ip.src(),
                                    dst: ip.dst(),
                                    advert,
                                },
                            ),
                        }
                    };
                    if let Some(frame) = parsed {
                        let seen = Seen { port: port.clone(), frame, at_ms: vipcast_api::now_ms() };
                        if out.send(seen).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(port, error = %e, "reading port socket");
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

//! VRRP sockets of one interface (IPv4).
//!
//! * receive: a raw IP socket of protocol 112 bound to the interface, member
//!   of 224.0.0.18 on it; IPv4 raw sockets deliver the IP header, so
//!   [`vrrp::parse_ip`] checks TTL 255, version, type and checksum (with the
//!   real destination for the VRRPv3 pseudo-header);
//! * send: an `IPPROTO_RAW` socket (header included, receives nothing) bound
//!   to the interface, multicast loop off: we write the IP header ourselves,
//!   so the source is the instance's primary address (or `unicast_src_ip`)
//!   and the TTL 255, DSCP CS6 as keepalived sends them;
//! * announcements: an `AF_PACKET` socket ([`vipcast_sys::PacketSocket`])
//!   for gratuitous ARPs, bound to protocol 0 so it receives nothing.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use vipcast_packet::arp::{ArpOp, ArpRepr};
use vipcast_packet::ip::IpRepr;
use vipcast_packet::vrrp::{self, ChecksumPolicy, VrrpRepr};
use vipcast_packet::{MacAddr, build};
use vipcast_sys::PacketSocket;

/// IPPROTO_RAW: a send-only raw socket that implies IP_HDRINCL.
const IPPROTO_RAW: i32 = 255;

/// A received, checked advertisement.
#[derive(Debug, Clone)]
pub struct Received {
    pub ifindex: u32,
    pub src: IpAddr,
    pub repr: VrrpRepr,
}

/// The sockets of one interface.
#[derive(Debug)]
pub struct IfSockets {
    pub ifindex: u32,
    send: Socket,
    /// Scratch buffer for building packets.
    buf: Vec<u8>,
}

impl IfSockets {
    /// Opens the send socket of interface `name` (index `ifindex`).
    pub fn open(name: &str, ifindex: u32) -> io::Result<IfSockets> {
        let send = Socket::new(Domain::IPV4, Type::RAW.cloexec(), Some(Protocol::from(IPPROTO_RAW)))?;
        send.bind_device(Some(name.as_bytes()))?;
        send.set_multicast_loop_v4(false)?;
        send.set_nonblocking(true)?;
        send.set_send_buffer_size(1 << 20)?;
        Ok(IfSockets { ifindex, send, buf: Vec::with_capacity(256) })
    }

    /// Sends `repr` from `src` to `dst`, TTL 255.
    pub fn send_advert(&mut self, repr: &VrrpRepr, src: IpAddr, dst: IpAddr) -> io::Result<()> {
        let (IpAddr::V4(_), IpAddr::V4(d)) = (src, dst) else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "IPv6 adverts are not supported yet"));
        };
        self.buf.clear();
        let mut body = Vec::with_capacity(repr.buffer_len());
        repr.emit(&mut body, src, dst).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut ip = IpRepr::new(src, dst, vrrp::PROTOCOL, vrrp::TTL, body.len())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if let IpRepr::V4(v4) = &mut ip {
            v4.dscp = 0x30; // CS6, network control
        }
        ip.emit(&mut self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.buf.extend_from_slice(&body);
        let to = SockAddr::from(SocketAddrV4::new(d, 0));
        self.send.send_to(&self.buf, &to).map(|_| ())
    }
}

/// Sends `repeat` gratuitous ARP requests for each of `ips` from `mac`,
/// back to back, byte for byte as keepalived sends them: broadcast, sender
/// IP = target IP = the address, sender MAC = the interface's, target MAC
/// ff:ff:ff:ff:ff:ff.
pub fn announce(sock: &PacketSocket, mac: MacAddr, ips: &[IpAddr], repeat: u32) -> io::Result<()> {
    for _ in 0..repeat {
        for ip in ips {
            if let IpAddr::V4(a) = ip {
                let arp = ArpRepr {
                    op: ArpOp::Request,
                    sender_mac: mac,
                    sender_ip: *a,
                    target_mac: MacAddr::BROADCAST,
                    target_ip: *a,
                };
                let frame = build::arp_frame(MacAddr::BROADCAST, mac, None, &arp)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                sock.send(&frame)?;
            }
        }
    }
    Ok(())
}

/// Opens the receive socket of interface `name` and spawns a task that
/// forwards every valid advert to `tx`; invalid ones are counted in the
/// returned counter and logged at debug level.
pub fn spawn_receiver(
    name: &str,
    ifindex: u32,
    tx: mpsc::UnboundedSender<Received>,
) -> io::Result<(tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    let sock = Socket::new(Domain::IPV4, Type::RAW.cloexec(), Some(Protocol::from(i32::from(vrrp::PROTOCOL))))?;
    sock.bind_device(Some(name.as_bytes()))?;
    sock.join_multicast_v4_n(&vrrp::IPV4_GROUP, &InterfaceIndexOrAddress::Index(ifindex))?;
    sock.set_recv_buffer_size(4 << 20)?;
    sock.set_nonblocking(true)?;
    // `AsyncFd::new` is deprecated because a `T` that does not own its
    // descriptor could close it while registered; a `Socket` owns its
    // descriptor and the `AsyncFd` owns the `Socket`, so it is closed only
    // after deregistration, on drop.
    #[allow(deprecated)]
    let fd = AsyncFd::new(sock)?;
    let invalid = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = invalid.clone();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok(mut guard) = fd.readable().await else { return };
            loop {
                match (&mut guard.get_inner()).read(&mut buf) {
                    Ok(n) => match vrrp::parse_ip(buf.get(..n).unwrap_or_default(), ChecksumPolicy::Strict) {
                        Ok((ip, repr)) => {
                            if tx.send(Received { ifindex, src: ip.src(), repr }).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(interface = %name, "discarded a packet: {e}");
                        }
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(interface = %name, "receive error: {e}");
                        guard.clear_ready();
                        break;
                    }
                }
            }
        }
    });
    Ok((task, invalid))
}

//! VRRP sockets of one interface, IPv4 and IPv6.
//!
//! * IPv4 receive: a raw socket of protocol 112 bound to the interface,
//!   member of 224.0.0.18 on it; IPv4 raw sockets deliver the IP header, so
//!   [`vrrp::parse_ip`] checks TTL 255, version, type and checksum (with the
//!   real destination for the VRRPv3 pseudo-header);
//! * IPv4 send: an `IPPROTO_RAW` socket (header included, receives nothing)
//!   bound to the interface, multicast loop off: we write the IP header, so
//!   the source is the instance's primary address (or `unicast_src_ip`), TTL
//!   255 and DSCP CS6, as keepalived sends them;
//! * IPv6 receive: a raw socket of protocol 112 bound to the interface,
//!   member of ff02::12 on it; IPv6 raw sockets give the payload only, so the
//!   destination (for the pseudo-header) and the hop limit come as
//!   ancillary data ([`vipcast_sys::recv_ipv6`]): hop limit 255 is checked
//!   (on multicast adverts: see [`check_v6`]), then [`VrrpRepr::parse`]
//!   with the real source and destination;
//! * IPv6 send: a raw socket of protocol 112 that drops whatever it would
//!   receive (a BPF filter returning 0), hop limits 255, multicast loop off;
//!   the source address goes in an `IPV6_PKTINFO` control message;
//! * announcements: an `AF_PACKET` socket ([`vipcast_sys::PacketSocket`])
//!   for gratuitous ARPs and unsolicited neighbour advertisements, bound to
//!   protocol 0 so it receives nothing.

use std::io::{self, IoSlice, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use socket2::{Domain, InterfaceIndexOrAddress, MsgHdr, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use vipcast_packet::arp::{ArpOp, ArpRepr};
use vipcast_packet::ip::IpRepr;
use vipcast_packet::vrrp::{self, ChecksumPolicy, Family, VrrpPacket, VrrpRepr};
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

/// The send sockets of one interface.
#[derive(Debug)]
pub struct IfSockets {
    pub ifindex: u32,
    send: Socket,
    /// `None` where IPv6 is unavailable.
    send6: Option<Socket>,
    /// Scratch buffer for building packets.
    buf: Vec<u8>,
}

impl IfSockets {
    /// Opens the send sockets of interface `name` (index `ifindex`).
    pub fn open(name: &str, ifindex: u32) -> io::Result<IfSockets> {
        let send = Socket::new(Domain::IPV4, Type::RAW.cloexec(), Some(Protocol::from(IPPROTO_RAW)))?;
        send.bind_device(Some(name.as_bytes()))?;
        send.set_multicast_loop_v4(false)?;
        send.set_nonblocking(true)?;
        send.set_send_buffer_size(1 << 20)?;
        let send6 = match open_send6(name, ifindex) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(interface = name, "no IPv6 send socket: {e}");
                None
            }
        };
        Ok(IfSockets { ifindex, send, send6, buf: Vec::with_capacity(256) })
    }

    /// Sends `repr` from `src` to `dst`, TTL / hop limit 255.
    pub fn send_advert(&mut self, repr: &VrrpRepr, src: IpAddr, dst: IpAddr) -> io::Result<()> {
        let invalid = |e: vipcast_packet::Error| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(d)) => {
                self.buf.clear();
                let mut ip = IpRepr::new(src, dst, vrrp::PROTOCOL, vrrp::TTL, repr.buffer_len()).map_err(invalid)?;
                if let IpRepr::V4(v4) = &mut ip {
                    v4.dscp = 0x30; // CS6, network control
                }
                ip.emit(&mut self.buf).map_err(invalid)?;
                repr.emit(&mut self.buf, src, dst).map_err(invalid)?;
                let to = SockAddr::from(SocketAddrV4::new(d, 0));
                self.send.send_to(&self.buf, &to).map(|_| ())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let Some(sock) = &self.send6 else {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, "no IPv6 socket on this interface"));
                };
                self.buf.clear();
                repr.emit(&mut self.buf, src, dst).map_err(invalid)?;
                let scope = if d.is_multicast() || d.is_unicast_link_local() { self.ifindex } else { 0 };
                let to = SockAddr::from(SocketAddrV6::new(d, 0, 0, scope));
                let control = pktinfo(s, self.ifindex);
                let bufs = [IoSlice::new(&self.buf)];
                let msg = MsgHdr::new().with_addr(&to).with_buffers(&bufs).with_control(&control);
                sock.sendmsg(&msg, 0).map(|_| ())
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "source and destination families differ")),
        }
    }
}

fn open_send6(name: &str, ifindex: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW.cloexec(), Some(Protocol::from(i32::from(vrrp::PROTOCOL))))?;
    // A send-only socket: drop everything it would receive.
    s.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])?;
    s.bind_device(Some(name.as_bytes()))?;
    s.set_multicast_hops_v6(u32::from(vrrp::TTL))?;
    s.set_unicast_hops_v6(u32::from(vrrp::TTL))?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_nonblocking(true)?;
    s.set_send_buffer_size(1 << 20)?;
    Ok(s)
}

/// An `IPV6_PKTINFO` control message (`cmsghdr` + `in6_pktinfo`) choosing
/// the source address and interface of a datagram.
fn pktinfo(src: Ipv6Addr, ifindex: u32) -> Vec<u8> {
    const WORD: usize = std::mem::size_of::<usize>();
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let data = 20; // struct in6_pktinfo { struct in6_addr; unsigned int ifindex; }
    let mut b = Vec::with_capacity(hdr + 24);
    b.extend_from_slice(&(hdr + data).to_ne_bytes());
    b.extend_from_slice(&libc::IPPROTO_IPV6.to_ne_bytes());
    b.extend_from_slice(&libc::IPV6_PKTINFO.to_ne_bytes());
    b.resize(hdr, 0);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.resize((hdr + data).div_ceil(WORD) * WORD, 0);
    b
}

/// Sends `repeat` announcements for each of `ips` from `mac`, back to back:
/// for IPv4 gratuitous ARP requests byte for byte as keepalived sends them
/// (broadcast, sender IP = target IP = the address, sender MAC = the
/// interface's, target MAC ff:ff:ff:ff:ff:ff); for IPv6 unsolicited
/// neighbour advertisements from `src6` (override set, to ff02::1).
pub fn announce(
    sock: &PacketSocket,
    mac: MacAddr,
    ips: &[IpAddr],
    repeat: u32,
    src6: Option<Ipv6Addr>,
) -> io::Result<()> {
    let invalid = |e: vipcast_packet::Error| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    for _ in 0..repeat {
        for ip in ips {
            let frame = match ip {
                IpAddr::V4(a) => {
                    let arp = ArpRepr {
                        op: ArpOp::Request,
                        sender_mac: mac,
                        sender_ip: *a,
                        target_mac: MacAddr::BROADCAST,
                        target_ip: *a,
                    };
                    build::arp_frame(MacAddr::BROADCAST, mac, None, &arp).map_err(invalid)?
                }
                IpAddr::V6(a) => {
                    let Some(src) = src6 else { continue };
                    build::unsolicited_na(mac, *a, src, true).map_err(invalid)?
                }
            };
            sock.send(&frame)?;
        }
    }
    Ok(())
}

/// Opens the IPv4 receive socket of interface `name` and spawns a task that
/// forwards every valid advert to `tx`; invalid ones are counted in the
/// returned counter and logged at debug level.
pub fn spawn_receiver(
    name: &str,
    ifindex: u32,
    tx: mpsc::UnboundedSender<Received>,
    invalid: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> io::Result<tokio::task::JoinHandle<()>> {
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
    let counter = invalid;
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
    Ok(task)
}

/// Opens the IPv6 receive socket of interface `name` and spawns a task that
/// forwards every valid advert to `tx` (hop limit 255, checksum over the
/// real source and destination); invalid ones are counted.
pub fn spawn_receiver_v6(
    name: &str,
    ifindex: u32,
    tx: mpsc::UnboundedSender<Received>,
    invalid: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let sock = Socket::new(Domain::IPV6, Type::RAW.cloexec(), Some(Protocol::from(i32::from(vrrp::PROTOCOL))))?;
    sock.bind_device(Some(name.as_bytes()))?;
    sock.join_multicast_v6(&vrrp::IPV6_GROUP, ifindex)?;
    vipcast_sys::set_ipv6_recv_info(sock.as_fd())?;
    sock.set_recv_buffer_size(4 << 20)?;
    sock.set_nonblocking(true)?;
    // See `spawn_receiver`.
    #[allow(deprecated)]
    let fd = AsyncFd::new(sock)?;
    let name = name.to_string();
    Ok(tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok(mut guard) = fd.readable().await else { return };
            loop {
                match vipcast_sys::recv_ipv6(guard.get_inner().as_fd(), &mut buf) {
                    Ok(info) => match check_v6(&info, buf.get(..info.len).unwrap_or_default()) {
                        Ok(repr) => {
                            if tx.send(Received { ifindex, src: IpAddr::V6(info.src), repr }).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            invalid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(interface = %name, "discarded a packet from {}: {e}", info.src);
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
    }))
}

/// RFC 5798 §7.1 for IPv6: hop limit 255, then the message with its checksum
/// over the pseudo-header. The hop limit is checked on multicast adverts
/// only: keepalived (2.2.7) sends its IPv6 *unicast* adverts with the
/// default hop limit 64, and checks the hop limit of unicast adverts itself
/// only when a peer's `min_ttl` / `max_ttl` is configured; so we accept
/// them too (the engine still checks version, VRID, interval and addresses).
fn check_v6(info: &vipcast_sys::Ipv6Info, payload: &[u8]) -> Result<VrrpRepr, String> {
    let dst = info.dst.ok_or("no destination (IPV6_PKTINFO)")?;
    if dst.is_multicast() && info.hop_limit != Some(vrrp::TTL) {
        return Err(format!("hop limit {:?}", info.hop_limit));
    }
    let p = VrrpPacket::new_checked(payload, Family::V6).map_err(|e| e.to_string())?;
    VrrpRepr::parse(&p, IpAddr::V6(info.src), IpAddr::V6(dst), ChecksumPolicy::Strict).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pktinfo_layout() {
        let b = pktinfo("fe80::1".parse().unwrap(), 7);
        assert_eq!(b.len(), 40);
        assert_eq!(usize::from_ne_bytes(b[..8].try_into().unwrap()), 36);
        assert_eq!(&b[16..32], &"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(u32::from_ne_bytes(b[32..36].try_into().unwrap()), 7);
    }
}

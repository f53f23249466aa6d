//! Raw IPv4 sockets for one IP protocol (GRE, 47): the kernel hands over
//! every packet of that protocol addressed to the host, IPv4 header
//! included, and builds the IPv4 header of what is sent.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;

/// A raw IPv4 socket of one protocol.
#[derive(Debug)]
pub struct RawIpv4Socket {
    fd: OwnedFd,
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

impl RawIpv4Socket {
    /// Opens a socket receiving and sending IP protocol `protocol`, bound to
    /// `local` (packets to other addresses of the host are not received).
    pub fn bind(protocol: u8, local: Ipv4Addr) -> io::Result<RawIpv4Socket> {
        // SAFETY: plain syscall with integer arguments.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sa = sockaddr_in(local);
        // SAFETY: `sa` is a live sockaddr_in and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawIpv4Socket { fd })
    }

    /// Blocking receives give up after `t` (`SO_RCVTIMEO`), so a loop can
    /// look at its stop flag.
    pub fn set_recv_timeout(&self, t: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(t.subsec_micros() as i32),
        };
        // SAFETY: `tv` is a live timeval and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Receives one packet (IPv4 header first); returns its length and
    /// source.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr)> {
        let mut sa = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `buf` and `sa` are live and their sizes are passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_in).cast::<libc::sockaddr>(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
    }

    /// Sends `payload` (what follows the IPv4 header) to `dst`.
    pub fn send_to(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        let sa = sockaddr_in(dst);
        // SAFETY: `payload` and `sa` are live and their sizes are passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

/// The payload of an IPv4 packet as a raw socket returns it (after the
/// header, whose length is in its first byte), or `None` if truncated.
pub fn ipv4_payload(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if ihl < 20 || packet.first()? >> 4 != 4 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    packet.get(ihl..total.min(packet.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_over_loopback() {
        let rx = RawIpv4Socket::bind(IPPROTO_GRE, Ipv4Addr::LOCALHOST).unwrap();
        rx.set_recv_timeout(Duration::from_secs(2)).unwrap();
        let tx = RawIpv4Socket::bind(IPPROTO_GRE, Ipv4Addr::LOCALHOST).unwrap();
        let gre = [0x20, 0x00, 0x65, 0x58, 0, 0, 1, 44, 0xff, 0xff];
        tx.send_to(&gre, Ipv4Addr::LOCALHOST).unwrap();
        let mut buf = [0u8; 2048];
        // Both sockets see it; the receiver's copy carries the IPv4 header.
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(from, Ipv4Addr::LOCALHOST);
        assert_eq!(ipv4_payload(&buf[..n]), Some(&gre[..]));
        assert_eq!(ipv4_payload(&[0x45, 0, 0]), None);
        assert_eq!(ipv4_payload(&[0x60; 40]), None);
    }
}

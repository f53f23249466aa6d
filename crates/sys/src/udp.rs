//! Batched UDP I/O: `recvmmsg(2)` into a fixed set of buffers, `sendmmsg(2)`
//! of datagrams or UDP GSO trains (`UDP_SEGMENT`) gathered from them, and the
//! socket options a replicator and its benchmark need.
//!
//! Nothing here allocates after construction: a [`RecvBatch`] owns its
//! buffers and headers, a [`SendBatch`] owns its message table and refers to
//! the frames it sends by index into any [`Frames`] (a [`RecvBatch`], or a
//! slice of buffers), so the pointers handed to the kernel are built at the
//! moment of the call from live borrows.
//!
//! Socket addresses are encoded and decoded byte by byte (the kernel's
//! `sockaddr_in` / `sockaddr_in6` layouts), without unsafe casts.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size, as a socket option or
/// a per-message control message of level `SOL_UDP`.
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`, 64
/// before Linux 6.9, 128 since).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes of one GSO send (a UDP datagram's length field, less headers).
pub const GSO_MAX_BYTES: usize = 65_000;
/// Most messages passed to one `sendmmsg` / `recvmmsg` (`UIO_MAXIOV`).
const MMSG_MAX: usize = 1024;
/// Size of `sockaddr_in6`, the larger of the two address layouts.
const ADDR_LEN: usize = 28;

/// A socket address in the kernel's byte layout (`sockaddr_in` or `sockaddr_in6`).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RawAddr([u8; ADDR_LEN]);

impl RawAddr {
    const ZERO: RawAddr = RawAddr([0; ADDR_LEN]);

    /// Encodes `addr`; returns it and the length to pass to the kernel.
    fn encode(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
        let mut b = [0u8; ADDR_LEN];
        match addr {
            SocketAddr::V4(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.ip().octets());
                (RawAddr(b), 16)
            }
            SocketAddr::V6(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                (RawAddr(b), ADDR_LEN as libc::socklen_t)
            }
        }
    }

    /// Decodes an address the kernel wrote (`len` bytes of it).
    fn decode(&self, len: libc::socklen_t) -> Option<SocketAddr> {
        let b = &self.0;
        let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
        let port = u16::from_be_bytes([b[2], b[3]]);
        match family {
            libc::AF_INET if len >= 16 => {
                Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(b[4], b[5], b[6], b[7]), port)))
            }
            libc::AF_INET6 if len as usize >= ADDR_LEN => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[8..24]);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    u32::from_ne_bytes([b[24], b[25], b[26], b[27]]),
                )))
            }
            _ => None,
        }
    }
}

/// A `UDP_SEGMENT` control message: `cmsghdr` then the `u16` segment size,
/// padded to `CMSG_SPACE(2)`.
#[derive(Clone, Copy)]
#[repr(C)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

impl GsoCmsg {
    fn new(size: u16) -> GsoCmsg {
        // SAFETY: zeroed cmsghdr is a valid value of a plain C struct.
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // CMSG_LEN(sizeof(u16)): the header (already aligned) plus the data.
        hdr.cmsg_len = (std::mem::size_of::<libc::cmsghdr>() + 2) as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = UDP_SEGMENT;
        GsoCmsg { hdr, size, _pad: [0; 6] }
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: zeroed mmsghdr (null pointers, zero lengths) is a valid value of a plain C struct.
    unsafe { std::mem::zeroed() }
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

fn setsockopt_int(fd: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 { last_error() } else { Ok(()) }
}

/// A UDP socket bound to `addr`, blocking, close-on-exec; with `reuseport`
/// several sockets may bind the same address and the kernel spreads
/// incoming flows over them (`SO_REUSEPORT`, by a hash of the 4-tuple).
pub fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall with integer arguments.
    let raw = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP) };
    if raw < 0 {
        return last_error();
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if reuseport {
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (sa, len) = RawAddr::encode(addr);
    // SAFETY: `sa` is a live address buffer of at least `len` bytes.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const RawAddr).cast::<libc::sockaddr>(), len) };
    if rc < 0 {
        return last_error();
    }
    Ok(UdpSocket::from(fd))
}

/// Sets `SO_RCVBUF` (or, with `force` and `CAP_NET_ADMIN`, `SO_RCVBUFFORCE`,
/// which ignores `net.core.rmem_max`) to `bytes`.
pub fn set_recv_buffer(sock: &impl AsFd, bytes: usize, force: bool) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(sock, libc::SOL_SOCKET, if force { libc::SO_RCVBUFFORCE } else { libc::SO_RCVBUF }, v)
}

/// Sets `SO_SNDBUF` (or `SO_SNDBUFFORCE` with `force`) to `bytes`.
pub fn set_send_buffer(sock: &impl AsFd, bytes: usize, force: bool) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(sock, libc::SOL_SOCKET, if force { libc::SO_SNDBUFFORCE } else { libc::SO_SNDBUF }, v)
}

/// Whether the kernel supports UDP GSO on this socket (`UDP_SEGMENT`, Linux 4.18+).
pub fn gso_supported(sock: &impl AsFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and `len` holds the size of `v`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Datagrams the kernel dropped at this socket (receive queue full, memory
/// pressure, bad checksum): `SK_MEMINFO_DROPS` of `SO_MEMINFO`. The counter
/// is 32 bits and wraps.
pub fn socket_drops(sock: &impl AsFd) -> io::Result<u32> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are live and `len` holds the size of `info`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return last_error();
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

/// Frames a [`SendBatch`] refers to by index.
pub trait Frames {
    /// Frame `index`; an index out of range is an empty frame.
    fn frame(&self, index: u32) -> &[u8];
}

impl<T: AsRef<[u8]>> Frames for [T] {
    fn frame(&self, index: u32) -> &[u8] {
        self.get(index as usize).map(AsRef::as_ref).unwrap_or_default()
    }
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes (cut at the slot size when `truncated`).
    pub data: &'a [u8],
    /// Where it came from (`None` if the kernel gave no address we know).
    pub from: Option<SocketAddr>,
    /// It was longer than the slot (`MSG_TRUNC`).
    pub truncated: bool,
}

/// Buffers and headers for `recvmmsg`: `slots` datagrams of up to `slot_len`
/// bytes per call.
pub struct RecvBatch {
    slot_len: usize,
    buf: Vec<u8>,
    addrs: Vec<RawAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("slots", &self.hdrs.len()).field("slot_len", &self.slot_len).finish()
    }
}

impl RecvBatch {
    /// Room for `slots` (1..=1024) datagrams of `slot_len` bytes each.
    pub fn new(slots: usize, slot_len: usize) -> RecvBatch {
        let slots = slots.clamp(1, MMSG_MAX);
        RecvBatch {
            slot_len,
            buf: vec![0; slots * slot_len],
            addrs: vec![RawAddr::ZERO; slots],
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; slots],
            hdrs: (0..slots).map(|_| zeroed_mmsghdr()).collect(),
            n: 0,
        }
    }

    /// How many datagrams one call can take.
    pub fn slots(&self) -> usize {
        self.hdrs.len()
    }

    /// Blocks until a datagram arrives (or the socket's receive timeout
    /// expires: `WouldBlock`), then takes every datagram already queued, up
    /// to [`slots`](Self::slots) (`MSG_WAITFORONE`). Returns how many.
    pub fn recv(&mut self, sock: &impl AsFd) -> io::Result<usize> {
        self.recv_flags(sock, libc::MSG_WAITFORONE)
    }

    /// Takes what is queued without blocking; `WouldBlock` if nothing is.
    pub fn try_recv(&mut self, sock: &impl AsFd) -> io::Result<usize> {
        self.recv_flags(sock, libc::MSG_DONTWAIT)
    }

    fn recv_flags(&mut self, sock: &impl AsFd, flags: libc::c_int) -> io::Result<usize> {
        self.n = 0;
        let base = self.buf.as_mut_ptr();
        for (i, ((iov, hdr), addr)) in
            self.iovs.iter_mut().zip(self.hdrs.iter_mut()).zip(self.addrs.iter_mut()).enumerate()
        {
            // In bounds: slot i spans [i * slot_len, (i + 1) * slot_len) of `buf`.
            iov.iov_base = base.wrapping_add(i * self.slot_len).cast();
            iov.iov_len = self.slot_len;
            hdr.msg_hdr.msg_name = (addr as *mut RawAddr).cast();
            hdr.msg_hdr.msg_namelen = ADDR_LEN as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: every header points at an iovec of `slot_len` bytes inside
        // `buf` and at an address buffer of ADDR_LEN bytes, all owned by
        // `self` and alive for the call; `hdrs.len()` headers are passed.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_fd().as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return last_error();
        }
        self.n = n as usize;
        Ok(self.n)
    }

    /// Datagrams taken by the last call.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the last call took none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Datagram `i` of the last call.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.n {
            return None;
        }
        let hdr = self.hdrs.get(i)?;
        let len = (hdr.msg_len as usize).min(self.slot_len);
        let data = self.buf.get(i * self.slot_len..i * self.slot_len + len)?;
        let from = self.addrs.get(i)?.decode(hdr.msg_hdr.msg_namelen);
        Some(Datagram { data, from, truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 })
    }
}

impl Frames for RecvBatch {
    fn frame(&self, index: u32) -> &[u8] {
        self.get(index as usize).map(|d| d.data).unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
struct Msg {
    addr: RawAddr,
    addr_len: libc::socklen_t,
    segs: (u32, u32),
    gso: u16,
}

/// A table of datagrams to send with `sendmmsg`: each message goes to one
/// address and is either one frame, or (with a GSO segment size) a train of
/// frames the kernel splits into one datagram per frame — all of the segment
/// size but the last, which may be shorter.
pub struct SendBatch {
    msgs: Vec<Msg>,
    segs: Vec<u32>,
    max_msgs: usize,
    max_segs: usize,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<GsoCmsg>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("messages", &self.msgs.len()).field("segments", &self.segs.len()).finish()
    }
}

impl SendBatch {
    /// Room for `max_msgs` messages holding `max_segs` frames in all.
    pub fn new(max_msgs: usize, max_segs: usize) -> SendBatch {
        let max_msgs = max_msgs.max(1);
        let max_segs = max_segs.max(1);
        let per_call = max_msgs.min(MMSG_MAX);
        SendBatch {
            msgs: Vec::with_capacity(max_msgs),
            segs: Vec::with_capacity(max_segs),
            max_msgs,
            max_segs,
            iovs: Vec::with_capacity(max_segs),
            hdrs: (0..per_call).map(|_| zeroed_mmsghdr()).collect(),
            cmsgs: vec![GsoCmsg::new(0); per_call],
        }
    }

    /// Queued messages.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Forgets every queued message.
    pub fn clear(&mut self) {
        self.msgs.clear();
        self.segs.clear();
    }

    /// Whether a message of `segs` frames fits.
    pub fn has_room(&self, segs: usize) -> bool {
        self.msgs.len() < self.max_msgs && self.segs.len() + segs <= self.max_segs
    }

    /// Queues frames `frames` (indexes into the [`Frames`] given to
    /// [`send`](Self::send)) to `to`: one datagram, or with `gso_size > 0` a
    /// GSO train cut every `gso_size` bytes. Returns false, queuing nothing,
    /// when there is no room or `frames` is empty.
    pub fn push(&mut self, to: SocketAddr, gso_size: u16, frames: &[u32]) -> bool {
        if frames.is_empty() || !self.has_room(frames.len()) {
            return false;
        }
        let (addr, addr_len) = RawAddr::encode(to);
        let start = self.segs.len() as u32;
        self.segs.extend_from_slice(frames);
        self.msgs.push(Msg { addr, addr_len, segs: (start, self.segs.len() as u32), gso: gso_size });
        true
    }

    /// Message `i`: its destination, GSO segment size (0: none) and frames.
    pub fn message(&self, i: usize) -> Option<(SocketAddr, u16, &[u32])> {
        let m = self.msgs.get(i)?;
        let to = m.addr.decode(m.addr_len)?;
        Some((to, m.gso, self.segs.get(m.segs.0 as usize..m.segs.1 as usize)?))
    }

    /// One `sendmmsg` of the messages from `start` on (at most 1024). Returns
    /// how many the kernel took (at least one); an error is message
    /// `start`'s own, which was not sent.
    pub fn send(&mut self, sock: &impl AsFd, frames: &(impl Frames + ?Sized), start: usize) -> io::Result<usize> {
        let msgs = self.msgs.get(start..).unwrap_or_default();
        let count = msgs.len().min(self.hdrs.len());
        if count == 0 {
            return Ok(0);
        }
        // Gather the frames of these messages: iovecs over the caller's buffers.
        self.iovs.clear();
        for m in &msgs[..count] {
            for &slot in self.segs.get(m.segs.0 as usize..m.segs.1 as usize).unwrap_or_default() {
                let f = frames.frame(slot);
                self.iovs.push(libc::iovec { iov_base: f.as_ptr().cast_mut().cast(), iov_len: f.len() });
            }
        }
        let mut iov_at = 0usize;
        for (i, m) in msgs[..count].iter().enumerate() {
            let nseg = (m.segs.1 - m.segs.0) as usize;
            let hdr = &mut self.hdrs[i];
            let cmsg = &mut self.cmsgs[i];
            hdr.msg_hdr.msg_name = (&m.addr as *const RawAddr).cast_mut().cast();
            hdr.msg_hdr.msg_namelen = m.addr_len;
            hdr.msg_hdr.msg_iov = self.iovs.as_mut_ptr().wrapping_add(iov_at);
            hdr.msg_hdr.msg_iovlen = nseg;
            if m.gso > 0 {
                cmsg.size = m.gso;
                hdr.msg_hdr.msg_control = (cmsg as *mut GsoCmsg).cast();
                hdr.msg_hdr.msg_controllen = std::mem::size_of::<GsoCmsg>();
            } else {
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
            }
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
            iov_at += nseg;
        }
        // SAFETY: the first `count` headers point at addresses in `self.msgs`,
        // at `nseg` iovecs of `self.iovs` each (which point into the frames
        // borrowed from `frames`) and at control messages in `self.cmsgs`; all
        // are alive and unmoved for the duration of the call.
        let n = unsafe { libc::sendmmsg(sock.as_fd().as_raw_fd(), self.hdrs.as_mut_ptr(), count as libc::c_uint, 0) };
        if n < 0 {
            return last_error();
        }
        Ok(n as usize)
    }
}

/// A receive timeout for blocking calls (`SO_RCVTIMEO`), so a worker wakes
/// up to look at its stop flag.
pub fn set_recv_timeout(sock: &UdpSocket, t: Duration) -> io::Result<()> {
    sock.set_read_timeout(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_filter_sees_the_udp_header_then_the_payload() {
        use crate::BpfInsn;
        // Accept datagrams whose payload starts with "ok" (offset 8: after the UDP header).
        let prog = [
            BpfInsn { code: 0x28, jt: 0, jf: 0, k: 8 },      // ldh [8]
            BpfInsn { code: 0x15, jt: 0, jf: 1, k: 0x6f6b }, // jeq #"ok"
            BpfInsn { code: 0x06, jt: 0, jf: 0, k: u32::MAX },
            BpfInsn { code: 0x06, jt: 0, jf: 0, k: 0 },
        ];
        let rx = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        crate::attach_filter(&rx, &prog).unwrap();
        set_recv_timeout(&rx, Duration::from_millis(500)).unwrap();
        let tx = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        for d in [&b"no"[..], b"ok 1", b"xok", b"ok 2"] {
            tx.send_to(d, rx.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 2 {
            let n = batch.recv(&rx).unwrap();
            got.extend((0..n).map(|i| batch.get(i).unwrap().data.to_vec()));
        }
        assert_eq!(got, [b"ok 1".to_vec(), b"ok 2".to_vec()]);
        assert_eq!(socket_drops(&rx).unwrap(), 2, "what the filter refuses counts as dropped");
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["10.1.2.3:4789", "[fd00::1]:4789", "[fe80::1%3]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let (raw, len) = RawAddr::encode(a);
            assert_eq!(raw.decode(len), Some(a));
        }
        assert_eq!(RawAddr::ZERO.decode(16), None);
    }

    #[test]
    fn batches_over_loopback_with_and_without_gso() {
        let rx = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        set_recv_timeout(&rx, Duration::from_secs(2)).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; if i == 4 { 50 } else { 100 }]).collect();
        let mut out = SendBatch::new(8, 16);
        assert!(out.push(to, 0, &[0]));
        if gso_supported(&tx) {
            assert!(out.push(to, 100, &[1, 2, 3, 4]));
        } else {
            for i in 1..5 {
                assert!(out.push(to, 0, &[i]));
            }
        }
        assert!(!out.push(to, 0, &[]));
        let mut sent = 0;
        while sent < out.len() {
            sent += out.send(&tx, frames.as_slice(), sent).unwrap();
        }
        let mut batch = RecvBatch::new(16, 2048);
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = batch.recv(&rx).unwrap();
            for i in 0..n {
                let d = batch.get(i).unwrap();
                assert_eq!(d.from, Some(tx.local_addr().unwrap()));
                assert!(!d.truncated);
                got.push(d.data.to_vec());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(socket_drops(&rx).unwrap(), 0);
        assert!(batch.get(99).is_none());
        assert_eq!(out.message(1).map(|m| m.0), Some(to));
    }

    #[test]
    fn truncation_is_reported_and_reuseport_shares_a_port() {
        let a = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = a.local_addr().unwrap();
        let _b = bind(addr, true).unwrap();
        assert!(bind(addr, false).is_err());
        let c = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        set_recv_timeout(&c, Duration::from_secs(2)).unwrap();
        a.send_to(&[7u8; 300], c.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(4, 64);
        assert_eq!(batch.recv(&c).unwrap(), 1);
        let d = batch.get(0).unwrap();
        assert!(d.truncated);
        assert_eq!(d.data.len(), 64);
        assert!(batch.try_recv(&c).is_err());
    }
}

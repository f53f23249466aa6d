//! The only crate of vipcast allowed `unsafe`: thin, safe wrappers over the
//! Linux calls the standard library and the crates we use do not offer.
//!
//! * [`PacketSocket`], an `AF_PACKET` raw socket bound to one interface, to see
//!   the frames a VM transmits (gratuitous ARPs, unsolicited NAs) and to send
//!   whole Ethernet frames into it (re-announcements);
//! * [`ifindex()`], for `if_nametoindex(3)`;
//! * [`enter_netns`], for `setns(2)` into a named network namespace, for a process
//!   that has not started other threads yet;
//! * [`udp`]: batched UDP I/O (`recvmmsg`, `sendmmsg`, UDP GSO trains),
//!   `SO_REUSEPORT` sockets and per-socket drop counters, for the replicator;
//! * [`thread_cpu_time`], the CPU time the calling thread has used;
//! * [`disable_transparent_huge_pages`], `prctl(PR_SET_THP_DISABLE)`;
//! * [`attach_filter`], a classic BPF socket filter on any socket;
//! * [`nofile_limit`] and [`raise_nofile_limit`]: `RLIMIT_NOFILE`, for a
//!   server that sizes its connection cap by the descriptors it may open;
//! * [`set_ipv6_recv_info`] and [`recv_ipv6`]: the destination, interface
//!   and hop limit of packets on an IPv6 (raw) socket, for VRRP over IPv6.
//!
//! Every `unsafe` block is a single libc call whose pointer arguments point at
//! live Rust values of the length passed alongside.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub mod raw;
pub mod udp;

/// EtherType ETH_P_ALL: every protocol.
pub const ETH_P_ALL: u16 = 0x0003;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// Where a received frame came from, relative to the interface (`sll_pkttype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the interface (from its link).
    Incoming,
    /// Sent out of the interface (by this host, or forwarded by a bridge).
    Outgoing,
}

/// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface, non-blocking.
///
/// Bound to one protocol (e.g. [`ETH_P_ARP`]) it sees only frames the
/// interface *receives* (the kernel hands outgoing frames to [`ETH_P_ALL`]
/// sockets only) — and nothing at all on a bridge port, whose frames the
/// bridge consumes before protocol handlers run. A socket never sees frames
/// it sent itself. On bridge ports use [`ETH_P_ALL`] with a filter such as
/// [`SNIFF_FILTER`].
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket seeing frames of EtherType `protocol` (host order) on
    /// interface `ifindex`.
    pub fn bind(ifindex: u32, protocol: u16) -> io::Result<PacketSocket> {
        let proto_be = protocol.to_be();
        // SAFETY: plain syscall with integer arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto_be),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sll = sockaddr_ll(ifindex, proto_be)?;
        // SAFETY: `sll` is a live sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&mut sll as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// The interface it is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives one frame into `buf`: its length (truncated to `buf`) and direction.
    /// `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Direction)> {
        // SAFETY: zeroed sockaddr_ll is a valid value of a plain C struct.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are live and their sizes are passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dir = if from.sll_pkttype == libc::PACKET_OUTGOING { Direction::Outgoing } else { Direction::Incoming };
        Ok((n as usize, dir))
    }

    /// Sends a whole Ethernet frame out of the interface. The frame's own
    /// EtherType is what the kernel sees as its protocol.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        let ethertype = match (frame.get(12), frame.get(13)) {
            (Some(&h), Some(&l)) => u16::from_be_bytes([h, l]),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame shorter than an Ethernet header")),
        };
        let mut to = sockaddr_ll(self.ifindex, ethertype.to_be())?;
        to.sll_halen = 6;
        if let Some(dst) = frame.get(..6) {
            to.sll_addr[..6].copy_from_slice(dst);
        }
        // SAFETY: `frame` and `to` are live and their sizes are passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn sockaddr_ll(ifindex: u32, proto_be: u16) -> io::Result<libc::sockaddr_ll> {
    let ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: zeroed sockaddr_ll is a valid value of a plain C struct.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto_be;
    sll.sll_ifindex = ifindex;
    Ok(sll)
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// Passes only frames a VM port's sniffer needs: of those the interface
/// *received* (sent by the VM), ARP, VRRP (IPv4 protocol 112 or IPv6 next
/// header 112) and IPv6 ICMPv6 type 136 (neighbour advertisement); of those
/// it *sent* (delivered to the VM), VRRP only (adverts of masters elsewhere,
/// which the agent follows to speak for a master whose chassis died). So a
/// sniffer on a busy VM port wakes up for those only. (IPv6 extension
/// headers are not walked: VRRP and ND are sent without them.)
///
/// ```text
///  0  ld  [pkttype]          ; ancillary: SKF_AD_OFF + SKF_AD_PKTTYPE
///  1  jeq #OUTGOING   -> 13
///  2  ldh [12]               ; EtherType
///  3  jeq #0x0806     -> 20
///  4  jeq #0x0800     -> 5 else 7
///  5  ldb [23]               ; IPv4 protocol
///  6  jeq #112        -> 20 else 21
///  7  jeq #0x86dd     -> 8 else 21
///  8  ldb [20]               ; IPv6 next header
///  9  jeq #112        -> 20
/// 10  jeq #58         -> 11 else 21
/// 11  ldb [54]               ; ICMPv6 type
/// 12  jeq #136        -> 20 else 21
/// 13  ldh [12]               ; outgoing: VRRP only
/// 14  jeq #0x0800     -> 15 else 17
/// 15  ldb [23]
/// 16  jeq #112        -> 20 else 21
/// 17  jeq #0x86dd     -> 18 else 21
/// 18  ldb [20]
/// 19  jeq #112        -> 20 else 21
/// 20  ret #262144            ; accept
/// 21  ret #0                 ; drop
/// ```
pub const SNIFF_FILTER: [BpfInsn; 22] = [
    insn(0x20, 0, 0, 0xffff_f004),
    insn(0x15, 11, 0, libc::PACKET_OUTGOING as u32),
    insn(0x28, 0, 0, 12),
    insn(0x15, 16, 0, 0x0806),
    insn(0x15, 0, 2, 0x0800),
    insn(0x30, 0, 0, 23),
    insn(0x15, 13, 14, 112),
    insn(0x15, 0, 13, 0x86dd),
    insn(0x30, 0, 0, 20),
    insn(0x15, 10, 0, 112),
    insn(0x15, 0, 10, 58),
    insn(0x30, 0, 0, 54),
    insn(0x15, 7, 8, 136),
    insn(0x28, 0, 0, 12),
    insn(0x15, 0, 2, 0x0800),
    insn(0x30, 0, 0, 23),
    insn(0x15, 3, 4, 112),
    insn(0x15, 0, 3, 0x86dd),
    insn(0x30, 0, 0, 20),
    insn(0x15, 0, 1, 112),
    insn(0x06, 0, 0, 0x0004_0000),
    insn(0x06, 0, 0, 0),
];

impl PacketSocket {
    /// Attaches a classic BPF filter: only frames it accepts are queued.
    pub fn attach_filter(&self, program: &[BpfInsn]) -> io::Result<()> {
        attach_filter(&self.fd, program)
    }

    /// Registers the socket with the tokio reactor of the current runtime.
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<PacketSocket>> {
        // SAFETY: the descriptor is owned by the `PacketSocket` (an `OwnedFd`),
        // which the `AsyncFd` owns in turn, so it stays open for as long as it
        // is registered and is closed only after deregistration on drop.
        unsafe { tokio::io::unix::AsyncFd::register(self) }.map_err(|e| e.into())
    }
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a live NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(io::Error::last_os_error()) } else { Ok(idx) }
}

/// The index of the interface holding address `ip`, if one does.
pub fn ifindex_of_addr(ip: std::net::IpAddr) -> io::Result<Option<u32>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` on success; it is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is an element of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        if addr == ip {
            // SAFETY: ifa_name is a NUL-terminated interface name.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found.map(|n| ifindex(&n)).transpose()
}

/// The name of interface `index`.
pub fn ifname(index: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Moves the calling thread into network namespace `name` (as created by
/// `ip netns add`, i.e. `/run/netns/<name>`). Call it before starting other
/// threads (e.g. before building a tokio runtime): namespaces are per thread.
pub fn enter_netns(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad namespace name {name:?}")));
    }
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: plain syscall on a descriptor we hold open.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Makes `cmd`'s child inherit each `(fd, at)` of `fds` (at most 16) as
/// descriptor number `at` (e.g. 3 and 4 for a program that talks on them,
/// as Chromium's `--remote-debugging-pipe`), whatever numbers they have
/// now. The descriptors must stay open until the child is spawned.
pub fn inherit_fds(cmd: &mut std::process::Command, fds: &[(RawFd, RawFd)]) {
    use std::os::unix::process::CommandExt;
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only dup2, which is async-signal-safe; it allocates nothing (the
    // vector was moved in before the fork).
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first (a source may already sit where another
            // goes), close-on-exec; then in place, where dup2 clears it.
            let mut moved = [0; 16];
            for (i, (fd, _)) in fds.iter().enumerate().take(moved.len()) {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 1000);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(m) = moved.get_mut(i) {
                    *m = high;
                }
            }
            for (high, (_, at)) in moved.iter().zip(&fds) {
                if libc::dup2(*high, *at) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// CPU time (user and system, including softirq work done on its behalf)
/// the calling thread has used: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
pub fn thread_cpu_time() -> io::Result<std::time::Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Stops the kernel from backing this process's memory with transparent
/// huge pages (`prctl(PR_SET_THP_DISABLE)`), for a small daemon whose
/// allocator asks for them: mimalloc marks its arenas `MADV_HUGEPAGE`, so a
/// few MiB of heap would otherwise be resident as 2 MiB pages (vrrpd with
/// 1000 instances: 36 MiB resident instead of 17 MiB). Pages already
/// faulted in keep their size.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The process's descriptor limit `RLIMIT_NOFILE`: (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a live rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (what an unprivileged
/// process may do; the usual soft limit of 1024 is there for `select(2)`,
/// which nothing here uses). Returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let r = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: `r` is a live rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Attaches a classic BPF filter (`SO_ATTACH_FILTER`) to any socket: only
/// what it accepts is queued; the rest is dropped in the kernel, counted in
/// the socket's drops. On a UDP socket the program sees the datagram from
/// its UDP header on (the payload starts at offset 8).
pub fn attach_filter(sock: &impl AsFd, program: &[BpfInsn]) -> io::Result<()> {
    let mut code: Vec<libc::sock_filter> =
        program.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let len = u16::try_from(code.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?;
    let prog = libc::sock_fprog { len, filter: code.as_mut_ptr() };
    // SAFETY: `prog` points at `code`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// What [`recv_ipv6`] learnt about a received IPv6 packet besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Info {
    /// Payload bytes written to the buffer (the packet may have been longer).
    pub len: usize,
    pub src: std::net::Ipv6Addr,
    /// Destination (IPV6_PKTINFO), if the socket asked for it.
    pub dst: Option<std::net::Ipv6Addr>,
    /// Arrival interface (IPV6_PKTINFO).
    pub ifindex: Option<u32>,
    /// Hop limit on arrival (IPV6_HOPLIMIT), if the socket asked for it.
    pub hop_limit: Option<u8>,
}

/// Asks an IPv6 socket for the destination, arrival interface and hop
/// limit of every packet (`IPV6_RECVPKTINFO`, `IPV6_RECVHOPLIMIT`), which
/// IPv6 raw sockets do not deliver in the payload; read them with
/// [`recv_ipv6`].
pub fn set_ipv6_recv_info(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    for opt in [libc::IPV6_RECVPKTINFO, libc::IPV6_RECVHOPLIMIT] {
        // SAFETY: `on` is a live c_int and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                opt,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one datagram from an IPv6 socket (`recvmsg`) into `buf`, with
/// its source and, if [`set_ipv6_recv_info`] was called, its destination,
/// arrival interface and hop limit. Non-blocking sockets return
/// `WouldBlock` when nothing is queued.
pub fn recv_ipv6(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Ipv6Info> {
    let mut from = libc::sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64 elements: the control buffer is aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut msg = libc::msghdr {
        msg_name: (&mut from as *mut libc::sockaddr_in6).cast(),
        msg_namelen: std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        msg_iov: &mut iov,
        msg_iovlen: 1,
        msg_control: control.as_mut_ptr().cast(),
        msg_controllen: std::mem::size_of_val(&control),
        msg_flags: 0,
    };
    // SAFETY: `msg` points at `from`, `iov` (over `buf`) and `control`, all
    // live for the call, with their sizes.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let controllen = msg.msg_controllen.min(std::mem::size_of_val(&control));
    let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).take(controllen).collect();
    let mut info = Ipv6Info {
        len: usize::try_from(n).unwrap_or(0).min(buf.len()),
        src: std::net::Ipv6Addr::from(from.sin6_addr.s6_addr),
        dst: None,
        ifindex: None,
        hop_limit: None,
    };
    for (level, kind, data) in cmsgs(&bytes) {
        match (level, kind) {
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
                if let (Some(a), Some(i)) = (data.get(..16), data.get(16..20)) {
                    info.dst = <[u8; 16]>::try_from(a).ok().map(std::net::Ipv6Addr::from);
                    info.ifindex = <[u8; 4]>::try_from(i).ok().map(u32::from_ne_bytes);
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                info.hop_limit = data
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| u8::try_from(i32::from_ne_bytes(b)).unwrap_or(0));
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The control messages in a `recvmsg` control buffer: (level, type, data),
/// parsed by hand (`cmsghdr` then data, each aligned to `usize`).
fn cmsgs(buf: &[u8]) -> Vec<(i32, i32, &[u8])> {
    const ALIGN: usize = std::mem::size_of::<usize>();
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = |n: usize| n.div_ceil(ALIGN) * ALIGN;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + hdr) {
        let len = h.get(..ALIGN).and_then(|b| <[u8; ALIGN]>::try_from(b).ok()).map(usize::from_ne_bytes);
        let level = h.get(ALIGN..ALIGN + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(i32::from_ne_bytes);
        let kind = h.get(ALIGN + 4..ALIGN + 8).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(i32::from_ne_bytes);
        let (Some(len), Some(level), Some(kind)) = (len, level, kind) else { break };
        let end = match at.checked_add(len) {
            Some(end) if len >= hdr && end <= buf.len() => end,
            _ => break,
        };
        if let Some(data) = buf.get(at + align(hdr)..end) {
            out.push((level, kind, data));
        }
        at = align(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_parsed_by_hand() {
        // Two messages: IPV6_HOPLIMIT (int 255), then IPV6_PKTINFO (20 bytes).
        let mut b = Vec::new();
        for (kind, data) in [(libc::IPV6_HOPLIMIT, 255i32.to_ne_bytes().to_vec()), (libc::IPV6_PKTINFO, vec![7u8; 20])]
        {
            let len = std::mem::size_of::<libc::cmsghdr>() + data.len();
            b.extend_from_slice(&len.to_ne_bytes());
            b.extend_from_slice(&libc::IPPROTO_IPV6.to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        let m = cmsgs(&b);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].0, m[0].1, m[0].2), (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &255i32.to_ne_bytes()[..]));
        assert_eq!((m[1].1, m[1].2.len()), (libc::IPV6_PKTINFO, 20));
        // Truncated or garbage input ends the walk without panicking.
        assert!(cmsgs(&b[..10]).is_empty());
        assert!(cmsgs(&[0xff; 40]).len() <= 1);
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(ifindex("no-such-if0").is_err());
        assert!(ifindex("bad\0name").is_err());
        assert!(enter_netns("../etc").is_err());
    }

    #[test]
    fn the_descriptor_limit_is_read_and_raised_to_the_hard_one() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft <= hard && soft > 0, "{soft} {hard}");
        assert_eq!(raise_nofile_limit().unwrap(), hard);
        assert_eq!(nofile_limit().unwrap(), (hard, hard));
    }

    #[test]
    fn thread_cpu_time_advances() {
        let a = thread_cpu_time().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_time().unwrap() > a, "{x}");
    }
}

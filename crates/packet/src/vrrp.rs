//! VRRP version 2 (RFC 3768) and version 3 (RFC 5798) advertisements.
//!
//! Version 2 (IPv4 only):
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Adver Int   |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         IP Address (1)                        |
//! |                              ...                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (1)                   |
//! |                     Authentication Data (2)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Version 3 (IPv4 or IPv6; the family is that of the enclosing IP packet):
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPvX Address(es)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Checksums: v2 over the VRRP message (RFC 3768 §5.3.8); v3 over the message
//! and the IPv4 (RFC 768) or IPv6 (RFC 8200 §8.1) pseudo-header, protocol 112
//! (RFC 5798 §5.2.8). The receive checks of RFC 5798 §7.1 that need no
//! configuration are made by [`parse_ip`]: TTL / hop limit 255, protocol 112,
//! version, type, length and checksum.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ethernet::EthernetRepr;
use crate::ip::{IpRepr, protocol};
use crate::{Error, Layer, Result, checksum};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = protocol::VRRP;
/// The IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const IPV4_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (RFC 5798 §5.1.2.2).
pub const IPV6_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit VRRP packets are sent with and must arrive with.
pub const TTL: u8 = 255;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data.
pub const AUTH_DATA_LEN: usize = 8;
/// The only VRRP packet type (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest VRRPv3 Max Adver Int, in centiseconds (12 bits).
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    /// The value of the version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Address family of the enclosing IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Length of one address.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// A typed view of a VRRP advertisement.
///
/// Once [`VrrpPacket::new_checked`] has returned `Ok`, no accessor panics and
/// every address index below [`VrrpPacket::count`] is in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
    family: Family,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps a buffer after checking its length against the version and the
    /// address count it announces.
    pub fn new_checked(buffer: T, family: Family) -> Result<Self> {
        let p = VrrpPacket { buffer, family };
        let len = p.buffer.as_ref().len();
        Error::check_len(Layer::Vrrp, HEADER_LEN, len)?;
        Error::check_len(Layer::Vrrp, p.message_len(), len)?;
        Ok(p)
    }

    fn byte(&self, i: usize) -> u8 {
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    /// Length of the message its header announces: header, addresses and, in
    /// version 2, the authentication data.
    pub fn message_len(&self) -> usize {
        let auth = if self.version() == 2 { AUTH_DATA_LEN } else { 0 };
        HEADER_LEN + usize::from(self.count()) * self.family.addr_len() + auth
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.byte(0) >> 4
    }

    /// The type field.
    pub fn kind(&self) -> u8 {
        self.byte(0) & 0x0f
    }

    /// Virtual router id.
    pub fn vrid(&self) -> u8 {
        self.byte(1)
    }

    /// Priority: 255 address owner, 0 master stopping, 100 keepalived's default.
    pub fn priority(&self) -> u8 {
        self.byte(2)
    }

    /// Number of addresses.
    pub fn count(&self) -> u8 {
        self.byte(3)
    }

    /// Version 2: authentication type.
    pub fn auth_type(&self) -> u8 {
        self.byte(4)
    }

    /// Version 2: advertisement interval in seconds.
    pub fn adver_int(&self) -> u8 {
        self.byte(5)
    }

    /// Version 3: maximum advertisement interval in centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        u16::from_be_bytes([self.byte(4), self.byte(5)]) & MAX_V3_INTERVAL_CS
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.byte(6), self.byte(7)])
    }

    /// Address `i` (below [`VrrpPacket::count`]).
    pub fn address(&self, i: usize) -> Option<IpAddr> {
        let n = self.family.addr_len();
        let at = HEADER_LEN + i * n;
        let b = self.buffer.as_ref().get(at..at + n)?;
        Some(match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?)),
        })
    }

    /// Version 2: the eight bytes of authentication data.
    pub fn auth_data(&self) -> [u8; AUTH_DATA_LEN] {
        let at = HEADER_LEN + usize::from(self.count()) * self.family.addr_len();
        let mut out = [0u8; AUTH_DATA_LEN];
        if let Some(b) = self.buffer.as_ref().get(at..at + AUTH_DATA_LEN) {
            out.copy_from_slice(b);
        }
        out
    }

    /// The checksum the message should carry when sent from `src` to `dst`.
    pub fn compute_checksum(&self, src: IpAddr, dst: IpAddr) -> u16 {
        let msg = self.buffer.as_ref().get(..self.message_len()).unwrap_or_default();
        let pseudo = (self.version() != 2).then_some((src, dst, PROTOCOL));
        checksum::compute(pseudo, msg, 6)
    }
}

/// A parsed VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VrrpRepr {
    pub version: Version,
    /// Virtual router id, 1..=255 (0 is refused by [`VrrpRepr::parse`]).
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval, centiseconds. Version 2 carries whole seconds,
    /// so there it is a multiple of 100 up to 25500; version 3: up to 4095.
    pub interval_cs: u16,
    /// Version 2 only (zero in version 3): authentication type; 0 is "none",
    /// 1 (simple text) and 2 (IP AH) come from RFC 2338.
    pub auth_type: u8,
    /// Version 2 only (zero in version 3): authentication data.
    pub auth_data: [u8; AUTH_DATA_LEN],
    /// The virtual addresses, all of the family of the enclosing IP packet.
    pub addresses: Vec<IpAddr>,
}

/// How strictly [`VrrpRepr::parse`] checks the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumPolicy {
    /// The checksum must match the RFC computation.
    #[default]
    Strict,
    /// Also accept, for version 3 unicast, a pseudo-header with the multicast
    /// group as destination (what keepalived's `old_unicast_checksum` sends).
    AllowLegacyUnicast,
}

impl VrrpRepr {
    /// Parses an advertisement sent from `src` to `dst` (the IP addresses of the
    /// enclosing packet, for the version 3 pseudo-header).
    pub fn parse<T: AsRef<[u8]>>(
        p: &VrrpPacket<T>,
        src: IpAddr,
        dst: IpAddr,
        policy: ChecksumPolicy,
    ) -> Result<VrrpRepr> {
        let version = match p.version() {
            2 => Version::V2,
            3 => Version::V3,
            v => return Err(Error::unsupported(Layer::Vrrp, "version", v)),
        };
        if p.kind() != TYPE_ADVERTISEMENT {
            return Err(Error::invalid(Layer::Vrrp, "type", p.kind()));
        }
        if p.vrid() == 0 {
            return Err(Error::invalid(Layer::Vrrp, "virtual router id", 0u8));
        }
        if Family::of(src) != p.family || Family::of(dst) != p.family {
            return Err(Error::invalid(Layer::Vrrp, "address family of src/dst", 1u8));
        }
        if version == Version::V2 && p.family == Family::V6 {
            return Err(Error::unsupported(Layer::Vrrp, "version 2 over IPv6", 2u8));
        }
        let received = p.checksum();
        let computed = p.compute_checksum(src, dst);
        if received != computed {
            let group = match p.family {
                Family::V4 => IpAddr::V4(IPV4_GROUP),
                Family::V6 => IpAddr::V6(IPV6_GROUP),
            };
            let legacy_ok = policy == ChecksumPolicy::AllowLegacyUnicast
                && version == Version::V3
                && p.compute_checksum(src, group) == received;
            if !legacy_ok {
                return Err(Error::Checksum { layer: Layer::Vrrp, received, computed });
            }
        }
        let addresses = (0..usize::from(p.count())).filter_map(|i| p.address(i)).collect();
        Ok(match version {
            Version::V2 => VrrpRepr {
                version,
                vrid: p.vrid(),
                priority: p.priority(),
                interval_cs: u16::from(p.adver_int()) * 100,
                auth_type: p.auth_type(),
                auth_data: p.auth_data(),
                addresses,
            },
            Version::V3 => VrrpRepr {
                version,
                vrid: p.vrid(),
                priority: p.priority(),
                interval_cs: p.max_adver_int(),
                auth_type: 0,
                auth_data: [0; AUTH_DATA_LEN],
                addresses,
            },
        })
    }

    /// The address family of the addresses (IPv4 when there are none).
    pub fn family(&self) -> Family {
        self.addresses.first().map_or(Family::V4, |a| Family::of(*a))
    }

    /// Length of the message.
    pub fn buffer_len(&self) -> usize {
        let auth = if self.version == Version::V2 { AUTH_DATA_LEN } else { 0 };
        HEADER_LEN + self.addresses.len() * self.family().addr_len() + auth
    }

    /// Appends the message, checksummed for `src` -> `dst`, to `out`.
    pub fn emit(&self, out: &mut Vec<u8>, src: IpAddr, dst: IpAddr) -> Result<()> {
        let family = Family::of(src);
        if Family::of(dst) != family || self.addresses.iter().any(|a| Family::of(*a) != family) {
            return Err(Error::invalid(Layer::Vrrp, "address family mix", 1u8));
        }
        let count = u8::try_from(self.addresses.len())
            .map_err(|_| Error::invalid(Layer::Vrrp, "address count", self.addresses.len() as u64))?;
        if self.vrid == 0 {
            return Err(Error::invalid(Layer::Vrrp, "virtual router id", 0u8));
        }
        let (b4, b5) = match self.version {
            Version::V2 => {
                if family == Family::V6 {
                    return Err(Error::unsupported(Layer::Vrrp, "version 2 over IPv6", 2u8));
                }
                let secs = u8::try_from(self.interval_cs / 100)
                    .ok()
                    .filter(|_| self.interval_cs.is_multiple_of(100))
                    .ok_or(Error::invalid(Layer::Vrrp, "v2 interval (centiseconds)", self.interval_cs))?;
                (self.auth_type, secs)
            }
            Version::V3 => {
                if self.interval_cs > MAX_V3_INTERVAL_CS {
                    return Err(Error::invalid(Layer::Vrrp, "v3 interval (centiseconds)", self.interval_cs));
                }
                let [h, l] = self.interval_cs.to_be_bytes();
                (h, l)
            }
        };
        let start = out.len();
        out.extend_from_slice(&[
            (self.version.number() << 4) | TYPE_ADVERTISEMENT,
            self.vrid,
            self.priority,
            count,
            b4,
            b5,
            0,
            0,
        ]);
        for a in &self.addresses {
            match a {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            }
        }
        if self.version == Version::V2 {
            out.extend_from_slice(&self.auth_data);
        }
        let msg = out.get(start..).unwrap_or_default();
        let pseudo = (self.version == Version::V3).then_some((src, dst, PROTOCOL));
        let sum = checksum::compute(pseudo, msg, 6);
        if let Some(f) = out.get_mut(start + 6..start + 8) {
            f.copy_from_slice(&sum.to_be_bytes());
        }
        Ok(())
    }
}

/// Parses an IP packet carrying VRRP, with the IP-level checks of RFC 5798
/// §7.1 (and RFC 3768 §7.1): protocol 112 and TTL / hop limit 255.
pub fn parse_ip(buf: &[u8], policy: ChecksumPolicy) -> Result<(IpRepr, VrrpRepr)> {
    let (ip, payload) = IpRepr::parse(buf)?;
    let layer = match ip {
        IpRepr::V4(_) => Layer::Ipv4,
        IpRepr::V6(_) => Layer::Ipv6,
    };
    if ip.protocol() != PROTOCOL {
        return Err(Error::invalid(layer, "protocol (not VRRP)", ip.protocol()));
    }
    if ip.hop_limit() != TTL {
        return Err(Error::invalid(Layer::Vrrp, "ttl / hop limit", ip.hop_limit()));
    }
    let p = VrrpPacket::new_checked(payload, Family::of(ip.src()))?;
    let repr = VrrpRepr::parse(&p, ip.src(), ip.dst(), policy)?;
    Ok((ip, repr))
}

/// Parses an Ethernet frame carrying a VRRP advertisement.
pub fn parse_frame(frame: &[u8], policy: ChecksumPolicy) -> Result<(EthernetRepr, IpRepr, VrrpRepr)> {
    let (eth, payload) = EthernetRepr::parse(frame)?;
    let (ip, vrrp) = parse_ip(payload, policy)?;
    Ok((eth, ip, vrrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(addrs: &[&str]) -> VrrpRepr {
        VrrpRepr {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 10,
            auth_type: 0,
            auth_data: [0; 8],
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v3_ipv4_round_trip_and_pseudo_header() {
        let r = v3(&["10.0.0.100", "10.0.0.101"]);
        let mut b = Vec::new();
        r.emit(&mut b, ip("10.0.0.1"), ip("224.0.0.18")).unwrap();
        assert_eq!(b.len(), r.buffer_len());
        let p = VrrpPacket::new_checked(&b[..], Family::V4).unwrap();
        assert_eq!(VrrpRepr::parse(&p, ip("10.0.0.1"), ip("224.0.0.18"), ChecksumPolicy::Strict).unwrap(), r);
        // The pseudo-header is covered: another source fails the checksum.
        assert!(matches!(
            VrrpRepr::parse(&p, ip("10.0.0.2"), ip("224.0.0.18"), ChecksumPolicy::Strict),
            Err(Error::Checksum { .. })
        ));
    }

    #[test]
    fn v3_ipv6_round_trip() {
        let r = v3(&["fd00::100"]);
        let mut b = Vec::new();
        r.emit(&mut b, ip("fe80::1"), ip("ff02::12")).unwrap();
        let p = VrrpPacket::new_checked(&b[..], Family::V6).unwrap();
        assert_eq!(VrrpRepr::parse(&p, ip("fe80::1"), ip("ff02::12"), ChecksumPolicy::Strict).unwrap(), r);
    }

    #[test]
    fn v2_round_trip_checksum_without_pseudo_header() {
        let r = VrrpRepr { version: Version::V2, interval_cs: 100, ..v3(&["10.0.0.100"]) };
        let mut b = Vec::new();
        r.emit(&mut b, ip("10.0.0.1"), ip("224.0.0.18")).unwrap();
        assert_eq!(b.len(), 8 + 4 + 8);
        assert_eq!(b[5], 1);
        assert_eq!(checksum::of(&b), 0);
        let p = VrrpPacket::new_checked(&b[..], Family::V4).unwrap();
        // No pseudo-header: any source verifies.
        assert_eq!(VrrpRepr::parse(&p, ip("10.9.9.9"), ip("10.0.0.2"), ChecksumPolicy::Strict).unwrap(), r);
        assert!(
            VrrpRepr { interval_cs: 10, ..r.clone() }.emit(&mut Vec::new(), ip("10.0.0.1"), ip("224.0.0.18")).is_err()
        );
        assert!(r.emit(&mut Vec::new(), ip("fe80::1"), ip("ff02::12")).is_err());
    }

    #[test]
    fn legacy_unicast_checksum_is_opt_in() {
        let r = v3(&["10.0.0.100"]);
        let mut b = Vec::new();
        r.emit(&mut b, ip("10.0.0.1"), ip("224.0.0.18")).unwrap();
        let p = VrrpPacket::new_checked(&b[..], Family::V4).unwrap();
        assert!(VrrpRepr::parse(&p, ip("10.0.0.1"), ip("10.0.0.2"), ChecksumPolicy::Strict).is_err());
        assert_eq!(VrrpRepr::parse(&p, ip("10.0.0.1"), ip("10.0.0.2"), ChecksumPolicy::AllowLegacyUnicast).unwrap(), r);
    }

    #[test]
    fn length_version_type_checks() {
        let r = v3(&["10.0.0.100"]);
        let mut b = Vec::new();
        r.emit(&mut b, ip("10.0.0.1"), ip("224.0.0.18")).unwrap();
        assert!(VrrpPacket::new_checked(&b[..11], Family::V4).is_err());
        let mut bad = b.clone();
        bad[3] = 2; // count claims two addresses
        assert!(VrrpPacket::new_checked(&bad[..], Family::V4).is_err());
        for (byte, val, field) in [(0usize, 0x41u8, "version"), (0, 0x32, "type"), (1, 0, "virtual router id")] {
            let mut bad = b.clone();
            bad[byte] = val;
            let p = VrrpPacket::new_checked(&bad[..], Family::V4).unwrap();
            let e = VrrpRepr::parse(&p, ip("10.0.0.1"), ip("224.0.0.18"), ChecksumPolicy::Strict).unwrap_err();
            assert!(
                matches!(e, Error::Invalid { field: f, .. } | Error::Unsupported { field: f, .. } if f == field),
                "{e}"
            );
        }
    }

    #[test]
    fn ip_level_checks() {
        let r = v3(&["10.0.0.100"]);
        let frame =
            crate::build::vrrp_frame(crate::MacAddr::vrrp_v4(51), None, ip("10.0.0.1"), ip("224.0.0.18"), &r).unwrap();
        let (_, ipr, back) = parse_frame(&frame, ChecksumPolicy::Strict).unwrap();
        assert_eq!((ipr.hop_limit(), back), (255, r.clone()));
        let mut ttl64 = frame.clone();
        ttl64[14 + 8] = 64;
        // Fix the IPv4 header checksum so only the TTL is wrong.
        ttl64[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = checksum::of(&ttl64[14..34]);
        ttl64[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        assert!(matches!(
            parse_frame(&ttl64, ChecksumPolicy::Strict),
            Err(Error::Invalid { field: "ttl / hop limit", value: 64, .. })
        ));
    }
}

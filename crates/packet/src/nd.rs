//! ICMPv6 neighbour discovery: solicitations and advertisements (RFC 4861 §4.3, §4.4).
//!
//! ```text
//! | type (135 NS / 136 NA) | code 0 | checksum (2)                 |
//! | NA: R S O + 29 reserved bits; NS: 32 reserved bits            |
//! | target address (16)                                           |
//! | options: type (1) | length in units of 8 bytes (1) | value... |
//! ```
//!
//! The option vipcast reads and writes is the link-layer address (type 1 source,
//! type 2 target); others are skipped. Written here rather than on etherparse,
//! whose ICMPv6 types stop before the target address and options.

use core::net::{IpAddr, Ipv6Addr};

use crate::{Error, Layer, MacAddr, Result, checksum, ip::protocol};

/// ICMPv6 type: neighbour solicitation.
pub const TYPE_NS: u8 = 135;
/// ICMPv6 type: neighbour advertisement.
pub const TYPE_NA: u8 = 136;
/// Length of an NS or NA without options.
pub const BODY_LEN: usize = 24;
/// Option: source link-layer address.
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// Option: target link-layer address.
pub const OPT_TARGET_LLADDR: u8 = 2;

/// A neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdRepr {
    Solicit { target: Ipv6Addr, source_lladdr: Option<MacAddr> },
    Advert { router: bool, solicited: bool, override_: bool, target: Ipv6Addr, target_lladdr: Option<MacAddr> },
}

impl NdRepr {
    /// Parses an ICMPv6 message carried from `src` to `dst` with the given hop
    /// limit. `Ok(None)` for ICMPv6 messages other than NS/NA. Checks what RFC
    /// 4861 §7.1 asks of a receiver: hop limit 255, code 0, length, checksum,
    /// no zero-length option, a non-multicast target, and no solicited flag on
    /// an advertisement sent to a multicast address.
    pub fn parse(icmp: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Result<Option<NdRepr>> {
        let (&kind, &code) = match (icmp.first(), icmp.get(1)) {
            (Some(k), Some(c)) => (k, c),
            _ => return Err(Error::truncated(Layer::Icmpv6, 4, icmp.len())),
        };
        if kind != TYPE_NS && kind != TYPE_NA {
            return Ok(None);
        }
        Error::check_len(Layer::Icmpv6, BODY_LEN, icmp.len())?;
        if hop_limit != 255 {
            return Err(Error::invalid(Layer::Icmpv6, "hop limit", hop_limit));
        }
        if code != 0 {
            return Err(Error::invalid(Layer::Icmpv6, "code", code));
        }
        let received = read_u16(icmp, 2);
        let computed = checksum::compute(Some((IpAddr::V6(src), IpAddr::V6(dst), protocol::ICMPV6)), icmp, 2);
        if received != computed {
            return Err(Error::Checksum { layer: Layer::Icmpv6, received, computed });
        }
        let flags = icmp.get(4).copied().unwrap_or(0);
        let mut t = [0u8; 16];
        t.copy_from_slice(icmp.get(8..24).unwrap_or(&[0; 16]));
        let target = Ipv6Addr::from(t);
        if target.is_multicast() {
            return Err(Error::invalid(Layer::Icmpv6, "target (multicast)", 1u8));
        }
        let want = if kind == TYPE_NS { OPT_SOURCE_LLADDR } else { OPT_TARGET_LLADDR };
        let lladdr = find_lladdr(icmp.get(BODY_LEN..).unwrap_or_default(), want)?;
        Ok(Some(if kind == TYPE_NS {
            NdRepr::Solicit { target, source_lladdr: lladdr }
        } else {
            let solicited = flags & 0x40 != 0;
            if solicited && dst.is_multicast() {
                return Err(Error::invalid(Layer::Icmpv6, "solicited flag on multicast", 1u8));
            }
            NdRepr::Advert {
                router: flags & 0x80 != 0,
                solicited,
                override_: flags & 0x20 != 0,
                target,
                target_lladdr: lladdr,
            }
        }))
    }

    /// The target address.
    pub fn target(&self) -> Ipv6Addr {
        match *self {
            NdRepr::Solicit { target, .. } | NdRepr::Advert { target, .. } => target,
        }
    }

    /// Length of the ICMPv6 message.
    pub fn buffer_len(&self) -> usize {
        let has_opt = match self {
            NdRepr::Solicit { source_lladdr, .. } => source_lladdr.is_some(),
            NdRepr::Advert { target_lladdr, .. } => target_lladdr.is_some(),
        };
        BODY_LEN + if has_opt { 8 } else { 0 }
    }

    /// Appends the ICMPv6 message, checksummed for `src` -> `dst`, to `out`.
    pub fn emit(&self, out: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr) {
        let start = out.len();
        let (kind, flags, target, opt) = match *self {
            NdRepr::Solicit { target, source_lladdr } => {
                (TYPE_NS, 0u8, target, source_lladdr.map(|m| (OPT_SOURCE_LLADDR, m)))
            }
            NdRepr::Advert { router, solicited, override_, target, target_lladdr } => (
                TYPE_NA,
                (u8::from(router) << 7) | (u8::from(solicited) << 6) | (u8::from(override_) << 5),
                target,
                target_lladdr.map(|m| (OPT_TARGET_LLADDR, m)),
            ),
        };
        out.extend_from_slice(&[kind, 0, 0, 0, flags, 0, 0, 0]);
        out.extend_from_slice(&target.octets());
        if let Some((t, mac)) = opt {
            out.extend_from_slice(&[t, 1]);
            out.extend_from_slice(&mac.0);
        }
        let body = out.get(start..).unwrap_or_default();
        let sum = checksum::compute(Some((IpAddr::V6(src), IpAddr::V6(dst), protocol::ICMPV6)), body, 2);
        if let Some(f) = out.get_mut(start + 2..start + 4) {
            f.copy_from_slice(&sum.to_be_bytes());
        }
    }
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    match (b.get(at), b.get(at + 1)) {
        (Some(&h), Some(&l)) => u16::from_be_bytes([h, l]),
        _ => 0,
    }
}

/// Walks the options; returns the first Ethernet link-layer address of type `want`.
fn find_lladdr(mut opts: &[u8], want: u8) -> Result<Option<MacAddr>> {
    let mut found = None;
    while !opts.is_empty() {
        let (kind, units) = match (opts.first(), opts.get(1)) {
            (Some(&k), Some(&u)) => (k, u),
            _ => return Err(Error::truncated(Layer::Icmpv6, 2, opts.len())),
        };
        if units == 0 {
            return Err(Error::invalid(Layer::Icmpv6, "option length", 0u8));
        }
        let len = usize::from(units) * 8;
        let opt = opts.get(..len).ok_or(Error::truncated(Layer::Icmpv6, len, opts.len()))?;
        if kind == want && found.is_none() {
            let mut m = [0u8; 6];
            m.copy_from_slice(opt.get(2..8).unwrap_or(&[0; 6]));
            found = Some(MacAddr(m));
        }
        opts = opts.get(len..).unwrap_or_default();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap())
    }

    #[test]
    fn advert_round_trip() {
        let (s, d) = addrs();
        let na = NdRepr::Advert {
            router: true,
            solicited: false,
            override_: true,
            target: "fd00::100".parse().unwrap(),
            target_lladdr: Some(MacAddr([2, 0, 0, 0, 0, 7])),
        };
        let mut b = Vec::new();
        na.emit(&mut b, s, d);
        assert_eq!(b.len(), na.buffer_len());
        assert_eq!(NdRepr::parse(&b, s, d, 255).unwrap(), Some(na));
        assert!(NdRepr::parse(&b, s, d, 64).is_err());
        b[30] ^= 1;
        assert!(matches!(NdRepr::parse(&b, s, d, 255), Err(Error::Checksum { .. })));
    }

    #[test]
    fn solicit_without_option() {
        let (s, _) = addrs();
        let d: Ipv6Addr = "ff02::1:ff00:100".parse().unwrap();
        let ns = NdRepr::Solicit { target: "fd00::100".parse().unwrap(), source_lladdr: None };
        let mut b = Vec::new();
        ns.emit(&mut b, s, d);
        assert_eq!(NdRepr::parse(&b, s, d, 255).unwrap(), Some(ns));
    }

    #[test]
    fn other_icmp_and_bad_options() {
        let (s, d) = addrs();
        assert_eq!(NdRepr::parse(&[128, 0, 0, 0, 0, 0, 0, 0], s, d, 64).unwrap(), None);
        let na = NdRepr::Advert {
            router: false,
            solicited: false,
            override_: true,
            target: "fd00::1".parse().unwrap(),
            target_lladdr: Some(MacAddr([2, 0, 0, 0, 0, 7])),
        };
        let mut b = Vec::new();
        na.emit(&mut b, s, d);
        b[25] = 0; // zero-length option
        let sum = checksum::compute(Some((IpAddr::V6(s), IpAddr::V6(d), protocol::ICMPV6)), &b, 2);
        b[2..4].copy_from_slice(&sum.to_be_bytes());
        assert!(matches!(NdRepr::parse(&b, s, d, 255), Err(Error::Invalid { field: "option length", .. })));
    }
}

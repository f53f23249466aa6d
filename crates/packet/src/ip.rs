//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers (codecs from etherparse).
//!
//! Parsing checks the version, the IPv4 header checksum and that the buffer
//! holds the length the header claims; the payload returned stops there
//! (Ethernet padding is cut off). IPv6 extension headers are not walked: the
//! representation reports the first next-header value as the protocol.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};

use crate::{Error, Layer, Result};

/// IP protocol numbers vipcast handles.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
    pub const VRRP: u8 = 112;
}

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// A parsed IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Differentiated services code point (6 bits).
    pub dscp: u8,
    /// Identification field.
    pub ident: u16,
    pub dont_fragment: bool,
    /// More-fragments set or a non-zero offset: this is a fragment.
    pub fragment: bool,
    /// Length of the payload.
    pub payload_len: usize,
}

/// A parsed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Length of the payload.
    pub payload_len: usize,
}

/// Either IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpRepr {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

impl Ipv4Repr {
    /// Parses an IPv4 header, verifying its checksum; returns it and the payload.
    pub fn parse(buf: &[u8]) -> Result<(Ipv4Repr, &[u8])> {
        let (hdr, _) = Ipv4Header::from_slice(buf).map_err(|e| {
            use etherparse::err::ipv4::HeaderError as H;
            use etherparse::err::ipv4::HeaderSliceError as S;
            match e {
                S::Len(_) => Error::truncated(Layer::Ipv4, IPV4_HEADER_LEN, buf.len()),
                S::Content(H::UnexpectedVersion { version_number }) => {
                    Error::invalid(Layer::Ipv4, "version", version_number)
                }
                S::Content(H::HeaderLengthSmallerThanHeader { ihl }) => {
                    Error::invalid(Layer::Ipv4, "header length", ihl)
                }
            }
        })?;
        let computed = hdr.calc_header_checksum();
        if computed != hdr.header_checksum {
            return Err(Error::Checksum { layer: Layer::Ipv4, received: hdr.header_checksum, computed });
        }
        let header_len = hdr.header_len();
        let total = usize::from(hdr.total_len);
        if total < header_len {
            return Err(Error::invalid(Layer::Ipv4, "total length", hdr.total_len));
        }
        let payload = buf.get(header_len..total).ok_or(Error::truncated(Layer::Ipv4, total, buf.len()))?;
        let repr = Ipv4Repr {
            src: Ipv4Addr::from(hdr.source),
            dst: Ipv4Addr::from(hdr.destination),
            protocol: hdr.protocol.0,
            ttl: hdr.time_to_live,
            dscp: hdr.dscp.value(),
            ident: hdr.identification,
            dont_fragment: hdr.dont_fragment,
            fragment: hdr.more_fragments || hdr.fragment_offset.value() != 0,
            payload_len: payload.len(),
        };
        Ok((repr, payload))
    }

    /// Appends the header (20 bytes, no options) to `out`. `fragment` must be false.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.fragment {
            return Err(Error::unsupported(Layer::Ipv4, "fragment", 1u8));
        }
        let payload_len = u16::try_from(self.payload_len)
            .ok()
            .filter(|&l| usize::from(l) <= usize::from(u16::MAX) - IPV4_HEADER_LEN)
            .ok_or(Error::invalid(Layer::Ipv4, "payload length", self.payload_len as u64))?;
        let mut hdr =
            Ipv4Header::new(payload_len, self.ttl, IpNumber(self.protocol), self.src.octets(), self.dst.octets())
                .map_err(|_| Error::invalid(Layer::Ipv4, "payload length", payload_len))?;
        hdr.dscp =
            etherparse::IpDscp::try_new(self.dscp).map_err(|_| Error::invalid(Layer::Ipv4, "dscp", self.dscp))?;
        hdr.identification = self.ident;
        hdr.dont_fragment = self.dont_fragment;
        hdr.header_checksum = hdr.calc_header_checksum();
        out.extend_from_slice(&hdr.to_bytes());
        Ok(())
    }
}

impl Ipv6Repr {
    /// Parses the fixed IPv6 header; returns it and the payload.
    pub fn parse(buf: &[u8]) -> Result<(Ipv6Repr, &[u8])> {
        let (hdr, _) = Ipv6Header::from_slice(buf).map_err(|e| {
            use etherparse::err::ipv6::HeaderError as H;
            use etherparse::err::ipv6::HeaderSliceError as S;
            match e {
                S::Len(_) => Error::truncated(Layer::Ipv6, IPV6_HEADER_LEN, buf.len()),
                S::Content(H::UnexpectedVersion { version_number }) => {
                    Error::invalid(Layer::Ipv6, "version", version_number)
                }
            }
        })?;
        let end = IPV6_HEADER_LEN + usize::from(hdr.payload_length);
        let payload = buf.get(IPV6_HEADER_LEN..end).ok_or(Error::truncated(Layer::Ipv6, end, buf.len()))?;
        let repr = Ipv6Repr {
            src: hdr.source_addr(),
            dst: hdr.destination_addr(),
            next_header: hdr.next_header.0,
            hop_limit: hdr.hop_limit,
            traffic_class: hdr.traffic_class,
            flow_label: hdr.flow_label.value(),
            payload_len: payload.len(),
        };
        Ok((repr, payload))
    }

    /// Appends the 40-byte header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        let payload_length = u16::try_from(self.payload_len)
            .map_err(|_| Error::invalid(Layer::Ipv6, "payload length", self.payload_len as u64))?;
        let flow_label = Ipv6FlowLabel::try_new(self.flow_label)
            .map_err(|_| Error::invalid(Layer::Ipv6, "flow label", self.flow_label))?;
        let hdr = Ipv6Header {
            traffic_class: self.traffic_class,
            flow_label,
            payload_length,
            next_header: IpNumber(self.next_header),
            hop_limit: self.hop_limit,
            source: self.src.octets(),
            destination: self.dst.octets(),
        };
        out.extend_from_slice(&hdr.to_bytes());
        Ok(())
    }
}

impl IpRepr {
    /// Parses an IPv4 or IPv6 header, chosen by the version nibble.
    pub fn parse(buf: &[u8]) -> Result<(IpRepr, &[u8])> {
        match buf.first().map(|b| b >> 4) {
            Some(4) => Ipv4Repr::parse(buf).map(|(r, p)| (IpRepr::V4(r), p)),
            Some(6) => Ipv6Repr::parse(buf).map(|(r, p)| (IpRepr::V6(r), p)),
            Some(v) => Err(Error::invalid(Layer::Ipv4, "version", v)),
            None => Err(Error::truncated(Layer::Ipv4, IPV4_HEADER_LEN, 0)),
        }
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        match self {
            IpRepr::V4(r) => IpAddr::V4(r.src),
            IpRepr::V6(r) => IpAddr::V6(r.src),
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        match self {
            IpRepr::V4(r) => IpAddr::V4(r.dst),
            IpRepr::V6(r) => IpAddr::V6(r.dst),
        }
    }

    /// Upper-layer protocol (IPv4 protocol or IPv6 next header).
    pub fn protocol(&self) -> u8 {
        match self {
            IpRepr::V4(r) => r.protocol,
            IpRepr::V6(r) => r.next_header,
        }
    }

    /// TTL or hop limit.
    pub fn hop_limit(&self) -> u8 {
        match self {
            IpRepr::V4(r) => r.ttl,
            IpRepr::V6(r) => r.hop_limit,
        }
    }

    /// Payload length.
    pub fn payload_len(&self) -> usize {
        match self {
            IpRepr::V4(r) => r.payload_len,
            IpRepr::V6(r) => r.payload_len,
        }
    }

    /// A header for `payload_len` bytes of `protocol` from `src` to `dst`, with
    /// the given TTL / hop limit and defaults elsewhere. The families of `src`
    /// and `dst` must match.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: u8, hop_limit: u8, payload_len: usize) -> Result<IpRepr> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ok(IpRepr::V4(Ipv4Repr {
                src,
                dst,
                protocol,
                ttl: hop_limit,
                dscp: 0,
                ident: 0,
                dont_fragment: false,
                fragment: false,
                payload_len,
            })),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ok(IpRepr::V6(Ipv6Repr {
                src,
                dst,
                next_header: protocol,
                hop_limit,
                traffic_class: 0,
                flow_label: 0,
                payload_len,
            })),
            _ => Err(Error::invalid(Layer::Ipv6, "address family mix", 1u8)),
        }
    }

    /// Appends the header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            IpRepr::V4(r) => r.emit(out),
            IpRepr::V6(r) => r.emit(out),
        }
    }

    /// EtherType of this IP version.
    pub fn ethertype(&self) -> u16 {
        match self {
            IpRepr::V4(_) => crate::ethernet::ethertype::IPV4,
            IpRepr::V6(_) => crate::ethernet::ethertype::IPV6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip_and_padding_cut() {
        let r =
            IpRepr::new("10.0.0.1".parse().unwrap(), "224.0.0.18".parse().unwrap(), protocol::VRRP, 255, 4).unwrap();
        let mut b = Vec::new();
        r.emit(&mut b).unwrap();
        b.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0]);
        let (back, payload) = IpRepr::parse(&b).unwrap();
        assert_eq!(back, r);
        assert_eq!(payload, &[1, 2, 3, 4]);
    }

    #[test]
    fn v4_bad_checksum_and_lengths() {
        let r = IpRepr::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 17, 64, 8).unwrap();
        let mut b = Vec::new();
        r.emit(&mut b).unwrap();
        b.extend_from_slice(&[0; 8]);
        let mut bad = b.clone();
        bad[8] = 63;
        assert!(matches!(IpRepr::parse(&bad), Err(Error::Checksum { layer: Layer::Ipv4, .. })));
        assert!(matches!(IpRepr::parse(&b[..25]), Err(Error::Truncated { .. })));
    }

    #[test]
    fn v6_round_trip() {
        let r = IpRepr::new("fe80::1".parse().unwrap(), "ff02::12".parse().unwrap(), protocol::VRRP, 255, 2).unwrap();
        let mut b = Vec::new();
        r.emit(&mut b).unwrap();
        b.extend_from_slice(&[9, 9]);
        assert_eq!(IpRepr::parse(&b).unwrap().0, r);
        assert!(IpRepr::parse(&b[..41]).is_err());
    }

    #[test]
    fn other_versions_are_refused() {
        assert!(matches!(IpRepr::parse(&[0x50; 40]), Err(Error::Invalid { field: "version", .. })));
        assert!(IpRepr::parse(&[]).is_err());
    }
}

//! UDP (RFC 768; header codec from etherparse).

use core::net::IpAddr;

use etherparse::UdpHeader;

use crate::{Error, Layer, Result, checksum, ip::protocol};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Well-known ports vipcast speaks.
pub mod port {
    /// VXLAN (RFC 7348).
    pub const VXLAN: u16 = 4789;
    /// GRE-in-UDP (RFC 8086).
    pub const GRE_IN_UDP: u16 = 4754;
}

/// A parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a datagram; returns the header and the payload (cut to the UDP
    /// length). When `addrs` (source, destination) is given the checksum is
    /// verified (a zero checksum over IPv4 means "none", RFC 768; over IPv6 it
    /// is invalid, RFC 8200 §8.1).
    pub fn parse(buf: &[u8], addrs: Option<(IpAddr, IpAddr)>) -> Result<(UdpRepr, &[u8])> {
        let (hdr, _) = UdpHeader::from_slice(buf).map_err(|_| Error::truncated(Layer::Udp, HEADER_LEN, buf.len()))?;
        let len = usize::from(hdr.length);
        if len < HEADER_LEN {
            return Err(Error::invalid(Layer::Udp, "length", hdr.length));
        }
        let datagram = buf.get(..len).ok_or(Error::truncated(Layer::Udp, len, buf.len()))?;
        if let Some((src, dst)) = addrs {
            let zero_ok = src.is_ipv4();
            if hdr.checksum == 0 && !zero_ok {
                return Err(Error::invalid(Layer::Udp, "checksum", 0u8));
            }
            if hdr.checksum != 0 {
                let computed = checksum::compute(Some((src, dst, protocol::UDP)), datagram, 6);
                // A computed 0 is sent as 0xffff (RFC 768).
                if computed != hdr.checksum && !(computed == 0 && hdr.checksum == 0xffff) {
                    return Err(Error::Checksum { layer: Layer::Udp, received: hdr.checksum, computed });
                }
            }
        }
        let payload = datagram.get(HEADER_LEN..).unwrap_or_default();
        Ok((UdpRepr { src_port: hdr.source_port, dst_port: hdr.destination_port }, payload))
    }

    /// Appends header and payload to `out`, with the checksum over the
    /// pseudo-header of `src`/`dst` (never zero: 0 is sent as 0xffff).
    pub fn emit(&self, out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<()> {
        let len = HEADER_LEN + payload.len();
        let length = u16::try_from(len).map_err(|_| Error::invalid(Layer::Udp, "length", len as u64))?;
        let start = out.len();
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(payload);
        let mut sum = checksum::compute(Some((src, dst, protocol::UDP)), out.get(start..).unwrap_or_default(), 6);
        if sum == 0 {
            sum = 0xffff;
        }
        if let Some(field) = out.get_mut(start + 6..start + 8) {
            field.copy_from_slice(&sum.to_be_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_checksum() {
        let (s, d): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let r = UdpRepr { src_port: 5000, dst_port: port::VXLAN };
        let mut b = Vec::new();
        r.emit(&mut b, s, d, b"hello").unwrap();
        b.push(0); // padding beyond the UDP length
        let (back, payload) = UdpRepr::parse(&b, Some((s, d))).unwrap();
        assert_eq!((back, payload), (r, &b"hello"[..]));
        b[9] ^= 1;
        assert!(matches!(UdpRepr::parse(&b, Some((s, d))), Err(Error::Checksum { .. })));
        assert!(UdpRepr::parse(&b, None).is_ok());
    }

    #[test]
    fn zero_checksum() {
        let b = [0x13, 0x88, 0x12, 0xb5, 0, 8, 0, 0];
        let v4 = Some(("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()));
        let v6 = Some(("::1".parse().unwrap(), "::2".parse().unwrap()));
        assert!(UdpRepr::parse(&b, v4).is_ok());
        assert!(UdpRepr::parse(&b, v6).is_err());
        assert!(UdpRepr::parse(&[0, 1, 0, 2, 0, 7, 0, 0], None).is_err());
        assert!(UdpRepr::parse(&[0, 1, 0, 2, 0, 9, 0, 0], None).is_err());
    }
}

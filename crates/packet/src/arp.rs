//! ARP for IPv4 over Ethernet (RFC 826; codec from etherparse).
//!
//! ```text
//! | htype=1 (2) | ptype=0x0800 (2) | hlen=6 | plen=4 | oper (2) |
//! | sender MAC (6) | sender IP (4) | target MAC (6) | target IP (4) |
//! ```

use core::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpOperation, ArpPacket};

use crate::{Error, Layer, MacAddr, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
    /// Any other operation code, preserved.
    Other(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            o => ArpOp::Other(o),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(op: ArpOp) -> u16 {
        match op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Other(o) => o,
        }
    }
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an ARP packet; anything but Ethernet/IPv4 ARP is `Unsupported`.
    /// Trailing bytes (Ethernet padding) are ignored.
    pub fn parse(buf: &[u8]) -> Result<ArpRepr> {
        let pkt = ArpPacket::from_slice(buf).map_err(|_| Error::truncated(Layer::Arp, PACKET_LEN, buf.len()))?;
        if pkt.hw_addr_type.0 != 1 {
            return Err(Error::unsupported(Layer::Arp, "hardware type", pkt.hw_addr_type.0));
        }
        if pkt.proto_addr_type.0 != crate::ethernet::ethertype::IPV4 {
            return Err(Error::unsupported(Layer::Arp, "protocol type", pkt.proto_addr_type.0));
        }
        let eth = pkt
            .try_eth_ipv4()
            .map_err(|_| Error::unsupported(Layer::Arp, "address lengths", u64::from(pkt.hw_addr_size())))?;
        Ok(ArpRepr {
            op: ArpOp::from(eth.operation.0),
            sender_mac: MacAddr(eth.sender_mac),
            sender_ip: eth.sender_ipv4_addr(),
            target_mac: MacAddr(eth.target_mac),
            target_ip: eth.target_ipv4_addr(),
        })
    }

    /// The 28 bytes of this packet.
    pub fn to_bytes(&self) -> [u8; PACKET_LEN] {
        ArpEthIpv4Packet {
            operation: ArpOperation(u16::from(self.op)),
            sender_mac: self.sender_mac.0,
            sender_ipv4: self.sender_ip.octets(),
            target_mac: self.target_mac.0,
            target_ipv4: self.target_ip.octets(),
        }
        .to_bytes()
    }

    /// A gratuitous ARP: a request or reply whose sender IP equals its target IP
    /// (RFC 5227 §3 "ARP announcement", RFC 5944 §4.6). An ARP probe (sender
    /// 0.0.0.0) is not one.
    pub fn is_gratuitous(&self) -> bool {
        matches!(self.op, ArpOp::Request | ArpOp::Reply)
            && self.sender_ip == self.target_ip
            && !self.sender_ip.is_unspecified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 9]),
            sender_ip: Ipv4Addr::new(10, 0, 0, 100),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 100),
        }
    }

    #[test]
    fn round_trip_with_padding() {
        let mut b = sample().to_bytes().to_vec();
        b.extend_from_slice(&[0; 18]);
        assert_eq!(ArpRepr::parse(&b).unwrap(), sample());
    }

    #[test]
    fn gratuitous() {
        assert!(sample().is_gratuitous());
        let reply = ArpRepr { op: ArpOp::Reply, ..sample() };
        assert!(reply.is_gratuitous());
        let normal = ArpRepr { target_ip: Ipv4Addr::new(10, 0, 0, 1), ..sample() };
        assert!(!normal.is_gratuitous());
        let probe = ArpRepr { sender_ip: Ipv4Addr::UNSPECIFIED, target_ip: Ipv4Addr::UNSPECIFIED, ..sample() };
        assert!(!probe.is_gratuitous());
        let rarp = ArpRepr { op: ArpOp::Other(3), ..sample() };
        assert!(!rarp.is_gratuitous());
    }

    #[test]
    fn refuses_non_ethernet_ipv4() {
        let mut b = sample().to_bytes();
        b[1] = 6; // IEEE 802 hardware type
        assert!(matches!(ArpRepr::parse(&b), Err(Error::Unsupported { field: "hardware type", .. })));
        assert!(ArpRepr::parse(&b[..20]).is_err());
    }
}

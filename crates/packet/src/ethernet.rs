//! Ethernet II frames with an optional 802.1Q tag (header codec from etherparse).
//!
//! ```text
//! +----------+----------+-------------------+-----------+---------
//! | dst (6)  | src (6)  | [0x8100 TCI] (4)  | type (2)  | payload
//! +----------+----------+-------------------+-----------+---------
//! ```

use etherparse::{EtherType, Ethernet2Header, SingleVlanHeader, VlanId, VlanPcp};

use crate::{Error, Layer, MacAddr, Result};

/// EtherType values vipcast handles.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet Bridging: an Ethernet frame inside GRE (RFC 1701).
    pub const TEB: u16 = 0x6558;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// An 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id, 0..=4095.
    pub vid: u16,
}

/// A parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The outer 802.1Q tag, if any (one tag; a second one is left in the payload,
    /// with `ethertype` 0x8100).
    pub vlan: Option<VlanTag>,
    /// EtherType of the payload.
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parses the header; returns it and the payload.
    pub fn parse(frame: &[u8]) -> Result<(EthernetRepr, &[u8])> {
        let (eth, rest) = Ethernet2Header::from_slice(frame)
            .map_err(|_| Error::truncated(Layer::Ethernet, HEADER_LEN, frame.len()))?;
        let mut repr = EthernetRepr {
            dst: MacAddr(eth.destination),
            src: MacAddr(eth.source),
            vlan: None,
            ethertype: eth.ether_type.0,
        };
        if repr.ethertype != ethertype::VLAN {
            return Ok((repr, rest));
        }
        let (tag, rest) = SingleVlanHeader::from_slice(rest)
            .map_err(|_| Error::truncated(Layer::Vlan, HEADER_LEN + VLAN_TAG_LEN, frame.len()))?;
        repr.vlan = Some(VlanTag { pcp: tag.pcp.value(), dei: tag.drop_eligible_indicator, vid: tag.vlan_id.value() });
        repr.ethertype = tag.ether_type.0;
        Ok((repr, rest))
    }

    /// Length of the header, with its tag.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
    }

    /// Appends the header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        let outer_type = if self.vlan.is_some() { ethertype::VLAN } else { self.ethertype };
        let eth = Ethernet2Header { destination: self.dst.0, source: self.src.0, ether_type: EtherType(outer_type) };
        out.extend_from_slice(&eth.to_bytes());
        if let Some(tag) = self.vlan {
            let pcp = VlanPcp::try_new(tag.pcp).map_err(|_| Error::invalid(Layer::Vlan, "pcp", tag.pcp))?;
            let vid = VlanId::try_new(tag.vid).map_err(|_| Error::invalid(Layer::Vlan, "vid", tag.vid))?;
            let hdr = SingleVlanHeader {
                pcp,
                drop_eligible_indicator: tag.dei,
                vlan_id: vid,
                ether_type: EtherType(self.ethertype),
            };
            out.extend_from_slice(&hdr.to_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_tagged() {
        let mut out = Vec::new();
        let repr = EthernetRepr {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            vlan: None,
            ethertype: ethertype::ARP,
        };
        repr.emit(&mut out).unwrap();
        out.push(0xaa);
        assert_eq!(out.len(), 15);
        let (back, payload) = EthernetRepr::parse(&out).unwrap();
        assert_eq!(back, repr);
        assert_eq!(payload, &[0xaa]);

        let tagged = EthernetRepr { vlan: Some(VlanTag { pcp: 5, dei: true, vid: 42 }), ..repr };
        out.clear();
        tagged.emit(&mut out).unwrap();
        assert_eq!(&out[12..14], &[0x81, 0x00]);
        assert_eq!(EthernetRepr::parse(&out).unwrap().0, tagged);
    }

    #[test]
    fn short_input_is_an_error() {
        assert!(EthernetRepr::parse(&[0; 13]).is_err());
        let mut f = vec![0u8; 14];
        f[12] = 0x81;
        assert_eq!(EthernetRepr::parse(&f).unwrap_err().layer(), Layer::Vlan);
    }

    #[test]
    fn bad_tag_values_are_refused_on_emit() {
        let repr = EthernetRepr {
            dst: MacAddr::BROADCAST,
            src: MacAddr::ZERO,
            vlan: Some(VlanTag { pcp: 8, dei: false, vid: 1 }),
            ethertype: 0x0800,
        };
        assert!(repr.emit(&mut Vec::new()).is_err());
    }
}

//! Recognising address announcements in Ethernet frames: gratuitous ARP,
//! broadcast ARP replies and unsolicited IPv6 neighbour advertisements.
//!
//! This is what the sniffers (agent and replicator) call on every ARP / ICMPv6
//! frame to learn where a virtual IP has moved. It allocates nothing.

use core::net::IpAddr;

use crate::arp::{ArpOp, ArpRepr};
use crate::ethernet::{EthernetRepr, ethertype};
use crate::ip::{Ipv6Repr, protocol};
use crate::nd::NdRepr;
use crate::{MacAddr, Result};

/// Which kind of announcement a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceKind {
    /// ARP request with sender IP == target IP.
    GratuitousRequest,
    /// ARP reply with sender IP == target IP.
    GratuitousReply,
    /// ARP reply sent to the broadcast address (sender IP != target IP).
    BroadcastReply,
    /// IPv6 neighbour advertisement with the solicited flag clear.
    UnsolicitedNa,
}

/// "IP is at MAC", as announced by a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announcement {
    pub kind: AnnounceKind,
    /// The announced address.
    pub ip: IpAddr,
    /// The link-layer address it is at: the ARP sender MAC, or the NA's target
    /// link-layer option (the Ethernet source when the option is absent).
    pub mac: MacAddr,
    /// Ethernet source of the frame.
    pub eth_src: MacAddr,
    /// 802.1Q VLAN id of the frame, if tagged.
    pub vlan: Option<u16>,
}

/// Classifies an Ethernet frame. `Ok(None)` for frames that are not
/// announcements (including ordinary ARP and other IPv6 traffic); `Err` for
/// ARP or ICMPv6 ND frames that are malformed.
pub fn classify(frame: &[u8]) -> Result<Option<Announcement>> {
    let (eth, payload) = EthernetRepr::parse(frame)?;
    let vlan = eth.vlan.map(|t| t.vid);
    match eth.ethertype {
        ethertype::ARP => {
            let arp = ArpRepr::parse(payload)?;
            let kind = if arp.is_gratuitous() {
                match arp.op {
                    ArpOp::Request => AnnounceKind::GratuitousRequest,
                    _ => AnnounceKind::GratuitousReply,
                }
            } else if arp.op == ArpOp::Reply && eth.dst.is_broadcast() && !arp.sender_ip.is_unspecified() {
                AnnounceKind::BroadcastReply
            } else {
                return Ok(None);
            };
            Ok(Some(Announcement { kind, ip: IpAddr::V4(arp.sender_ip), mac: arp.sender_mac, eth_src: eth.src, vlan }))
        }
        ethertype::IPV6 => {
            let (ip, body) = Ipv6Repr::parse(payload)?;
            if ip.next_header != protocol::ICMPV6 {
                return Ok(None);
            }
            match NdRepr::parse(body, ip.src, ip.dst, ip.hop_limit)? {
                Some(NdRepr::Advert { solicited: false, target, target_lladdr, .. }) => Ok(Some(Announcement {
                    kind: AnnounceKind::UnsolicitedNa,
                    ip: IpAddr::V6(target),
                    mac: target_lladdr.unwrap_or(eth.src),
                    eth_src: eth.src,
                    vlan,
                })),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use core::net::Ipv4Addr;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x42]);

    #[test]
    fn garp_request_and_reply() {
        let f = build::garp(MAC, Ipv4Addr::new(10, 0, 0, 100), ArpOp::Request);
        let a = classify(&f).unwrap().unwrap();
        assert_eq!((a.kind, a.ip, a.mac), (AnnounceKind::GratuitousRequest, "10.0.0.100".parse().unwrap(), MAC));
        let f = build::garp(MAC, Ipv4Addr::new(10, 0, 0, 100), ArpOp::Reply);
        assert_eq!(classify(&f).unwrap().unwrap().kind, AnnounceKind::GratuitousReply);
    }

    #[test]
    fn broadcast_reply_and_ordinary_arp() {
        let reply = ArpRepr {
            op: ArpOp::Reply,
            sender_mac: MAC,
            sender_ip: Ipv4Addr::new(10, 0, 0, 100),
            target_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            target_ip: Ipv4Addr::new(10, 0, 0, 1),
        };
        let bcast = build::arp_frame(MacAddr::BROADCAST, MAC, None, &reply).unwrap();
        assert_eq!(classify(&bcast).unwrap().unwrap().kind, AnnounceKind::BroadcastReply);
        let unicast = build::arp_frame(reply.target_mac, MAC, None, &reply).unwrap();
        assert_eq!(classify(&unicast).unwrap(), None);
        let request = ArpRepr { op: ArpOp::Request, ..reply };
        let req = build::arp_frame(MacAddr::BROADCAST, MAC, None, &request).unwrap();
        assert_eq!(classify(&req).unwrap(), None);
    }

    #[test]
    fn unsolicited_na_only() {
        let ip6 = "fd00::100".parse().unwrap();
        let f = build::unsolicited_na(MAC, ip6, "fe80::42".parse().unwrap(), true).unwrap();
        let a = classify(&f).unwrap().unwrap();
        assert_eq!((a.kind, a.ip, a.mac), (AnnounceKind::UnsolicitedNa, IpAddr::V6(ip6), MAC));
    }

    #[test]
    fn other_frames_and_garbage() {
        assert_eq!(classify(&[0u8; 60]).unwrap(), None);
        let mut f = build::garp(MAC, Ipv4Addr::new(10, 0, 0, 100), ArpOp::Request);
        f.truncate(30);
        assert!(classify(&f).is_err());
    }
}

//! Reading the kernel's tables as bytes, decoding only what reconciling
//! looks at. A chassis' link dump is mostly statistics, per-family settings
//! and bridge and bridge-port options, and its FDB dump mostly the
//! bridges' own entries: decoding every attribute of every message
//! (rtnetlink's messages) took twice as long as the kernel took to dump them.
//!
//! The messages kept are their bytes; what is deleted is decoded by
//! rtnetlink's own types from those bytes and sent back as the kernel
//! gave it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::future::Either;
use futures::{Stream, StreamExt};
use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::SocketAddr;
use vipcast_packet::MacAddr;

use super::diff::{Kind, Link, VxlanConf};
use crate::plan::{Fdb, VXLAN_PORT};

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_NEWNEIGH: u16 = 28;
pub(super) const RTM_GETNEIGH: u16 = 30;
const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const AF_INET6: u8 = 10;
const IFF_UP: u32 = 1;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PROXY: u16 = 11;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_PORT: u16 = 6;

/// A route netlink message, undecoded: its type and what follows the
/// netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Packed {
    pub kind: u16,
    pub body: Vec<u8>,
}

impl NetlinkSerializable for Packed {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        self.body.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.body);
    }
}

impl NetlinkDeserializable for Packed {
    type Error = std::convert::Infallible;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Packed, Self::Error> {
        Ok(Packed { kind: header.message_type, body: payload.to_vec() })
    }
}

/// A route netlink connection that hands messages over undecoded.
#[derive(Debug, Clone)]
pub(super) struct Reader {
    handle: ConnectionHandle<Packed>,
}

impl Reader {
    pub fn open() -> std::io::Result<Reader> {
        let (conn, handle, _) = rtnetlink::proto::new_connection::<Packed>(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
        tokio::spawn(conn);
        Ok(Reader { handle })
    }

    /// The answers to request `kind` with `body` (a dump with `dump`).
    pub fn request(
        &self,
        kind: u16,
        body: Vec<u8>,
        dump: bool,
    ) -> impl Stream<Item = Result<Packed, rtnetlink::Error>> + use<> {
        let mut req =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(Packed { kind, body }));
        req.header.message_type = kind;
        req.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        req.finalize();
        match self.handle.request(req, SocketAddr::new(0, 0)) {
            Ok(answers) => Either::Left(answers.filter_map(|m| {
                futures::future::ready(match m.payload {
                    NetlinkPayload::InnerMessage(m) => Some(Ok(m)),
                    NetlinkPayload::Error(e) if e.code.is_some() => Some(Err(rtnetlink::Error::NetlinkError(e))),
                    _ => None,
                })
            })),
            Err(_) => {
                Either::Right(futures::stream::once(futures::future::ready(Err(rtnetlink::Error::RequestFailed))))
            }
        }
    }
}

/// Every link, without statistics.
pub(super) fn links_request() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    push_attr(&mut b, IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    b
}

/// The link named `name`.
pub(super) fn link_request(name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    let mut s = name.as_bytes().to_vec();
    s.push(0);
    push_attr(&mut b, IFLA_IFNAME, &s);
    b
}

/// Neighbour entries (family 0: ARP and NDP) or FDB entries (`bridge`).
pub(super) fn neigh_request(bridge: bool) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[0] = if bridge { AF_BRIDGE } else { 0 };
    b
}

fn push_attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    b.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// The attributes in `b`: (type, payload), until one does not fit.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
        let kind = u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, payload))
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn string(p: &[u8]) -> Option<String> {
    let p = p.strip_suffix(&[0]).unwrap_or(p);
    String::from_utf8(p.to_vec()).ok()
}

fn mac(p: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(p).ok().map(MacAddr)
}

fn ip(p: &[u8]) -> Option<IpAddr> {
    match p.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p).ok()?))),
        _ => None,
    }
}

/// A link from an `RTM_NEWLINK` body (`ifinfomsg` and attributes).
pub(super) fn link(b: &[u8]) -> Option<Link> {
    let mut l = Link::new(u32_at(b, 4)?, "");
    l.up = u32_at(b, 8)? & IFF_UP != 0;
    for (kind, p) in attrs(b.get(16..)?) {
        match kind {
            IFLA_IFNAME => l.name = string(p)?,
            IFLA_MASTER => l.master = Some(u32_at(p, 0)?),
            IFLA_IFALIAS => l.alias = Some(string(p)?),
            IFLA_ADDRESS => l.mac = mac(p),
            IFLA_LINKINFO => {
                let mut is_vxlan = false;
                for (kind, p) in attrs(p) {
                    match kind {
                        IFLA_INFO_KIND => {
                            let k = string(p)?;
                            is_vxlan = k == "vxlan";
                            l.kind = Some(match k.as_str() {
                                "bridge" => Kind::Bridge,
                                "vxlan" => Kind::Vxlan,
                                _ => Kind::Other,
                            });
                        }
                        IFLA_INFO_DATA if is_vxlan => l.vxlan = vxlan(p)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

fn vxlan(b: &[u8]) -> Option<VxlanConf> {
    let mut c = VxlanConf::default();
    for (kind, p) in attrs(b) {
        match kind {
            IFLA_VXLAN_ID => c.id = Some(u32_at(p, 0)?),
            IFLA_VXLAN_LOCAL if p.len() == 4 => c.local = ip(p),
            IFLA_VXLAN_LOCAL6 if p.len() == 16 => c.local = ip(p),
            IFLA_VXLAN_PORT => c.port = Some(u16::from_be_bytes(p.try_into().ok()?)),
            IFLA_VXLAN_LEARNING => c.learning = Some(*p.first()? > 0),
            IFLA_VXLAN_PROXY => c.proxy = Some(*p.first()? > 0),
            _ => {}
        }
    }
    Some(c)
}

/// The fixed part of an `ndmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NeighHeader {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    pub flags: u8,
}

pub(super) fn neigh_header(b: &[u8]) -> Option<NeighHeader> {
    Some(NeighHeader {
        family: *b.first()?,
        ifindex: u32_at(b, 4)?,
        state: u16::from_ne_bytes(b.get(8..10)?.try_into().ok()?),
        flags: *b.get(10)?,
    })
}

impl NeighHeader {
    /// A device's own FDB entry (`self`), not its bridge's.
    pub fn is_own(&self) -> bool {
        self.flags & NTF_SELF != 0
    }

    pub fn is_permanent(&self) -> bool {
        self.state == NUD_PERMANENT
    }
}

/// The FDB entry in an `RTM_NEWNEIGH` body of the bridge family.
pub(super) fn fdb(b: &[u8]) -> Option<Fdb> {
    let (mut m, mut dst, mut port) = (None, None, None);
    for (kind, p) in attrs(b.get(12..)?) {
        match kind {
            NDA_LLADDR => m = mac(p),
            NDA_DST => dst = ip(p),
            NDA_PORT => port = Some(u16::from_be_bytes(p.try_into().ok()?)),
            _ => {}
        }
    }
    Some(Fdb { mac: m?, dst: dst?, port: port.filter(|p| *p != VXLAN_PORT) })
}

/// The address and MAC of an ARP or NDP entry.
pub(super) fn neigh(h: &NeighHeader, b: &[u8]) -> Option<(IpAddr, MacAddr)> {
    let (mut dst, mut m) = (None, None);
    for (kind, p) in attrs(b.get(12..)?) {
        match kind {
            NDA_DST => {
                dst = match (h.family, p.len()) {
                    (AF_INET, 4) | (AF_INET6, 16) => ip(p),
                    _ => None,
                }
            }
            NDA_LLADDR => m = mac(p),
            _ => {}
        }
    }
    Some((dst?, m?))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{
        InfoBridge, InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    };
    use netlink_packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    };
    use netlink_packet_route::{AddressFamily, route::RouteType};

    use super::*;

    fn bytes(m: &impl Emitable) -> Vec<u8> {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    #[test]
    fn a_vxlan_link_reads_as_rtnetlink_would_decode_it() {
        let mut m = LinkMessage::default();
        m.header.index = 42;
        m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        m.attributes = vec![
            LinkAttribute::Mtu(1450),
            LinkAttribute::IfName("vc-vx-4200".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
            LinkAttribute::Controller(41),
            LinkAttribute::IfAlias("vipcast-port:x".into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(4200),
                    InfoVxlan::Ttl(0),
                    InfoVxlan::Local("10.255.0.11".parse().unwrap()),
                    InfoVxlan::Learning(false),
                    InfoVxlan::Proxy(true),
                    InfoVxlan::Port(4789),
                ])),
            ]),
        ];
        let l = link(&bytes(&m)).unwrap();
        assert_eq!(
            l,
            Link {
                index: 42,
                name: "vc-vx-4200".into(),
                kind: Some(Kind::Vxlan),
                master: Some(41),
                alias: Some("vipcast-port:x".into()),
                up: true,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 7])),
                vxlan: VxlanConf {
                    id: Some(4200),
                    local: Some("10.255.0.11".parse().unwrap()),
                    port: Some(4789),
                    learning: Some(false),
                    proxy: Some(true),
                },
            }
        );
        // IPv6 underlay; a bridge (its data is not a VXLAN's); a link that is down.
        if let LinkAttribute::LinkInfo(i) = &mut m.attributes[5] {
            i[1] = LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Local6("fd00::b".parse().unwrap())]));
        }
        assert_eq!(link(&bytes(&m)).unwrap().vxlan.local, Some("fd00::b".parse().unwrap()));
        m.attributes[5] = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::ForwardDelay(1500), InfoBridge::VlanFiltering(false)])),
        ]);
        m.header.flags = LinkFlags::Broadcast;
        let l = link(&bytes(&m)).unwrap();
        assert_eq!((l.kind, l.vxlan, l.up), (Some(Kind::Bridge), VxlanConf::default(), false));
        m.attributes[5] = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]);
        assert_eq!(link(&bytes(&m)).unwrap().kind, Some(Kind::Other));
        m.attributes.truncate(2);
        let l = link(&bytes(&m)).unwrap();
        assert_eq!((l.kind, l.master, l.alias, l.mac), (None, None, None, None));
    }

    #[test]
    fn requests_are_what_rtnetlink_sends() {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::ExtMask(vec![netlink_packet_route::link::LinkExtentMask::SkipStats]));
        assert_eq!(links_request(), bytes(&m));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName("vc-br-7".into()));
        assert_eq!(link_request("vc-br-7"), bytes(&m));
        let mut m = NeighbourMessage::default();
        assert_eq!(neigh_request(false), bytes(&m));
        m.header.family = AddressFamily::Bridge;
        assert_eq!(neigh_request(true), bytes(&m));
    }

    fn fdb_message(port: Option<u16>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = 20;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Other(vec![10, 255, 0, 12])));
        if let Some(p) = port {
            m.attributes.push(NeighbourAttribute::Port(p));
        }
        m.attributes.push(NeighbourAttribute::Vni(4200));
        m
    }

    #[test]
    fn fdb_and_neighbour_entries_read_as_rtnetlink_would_decode_them() {
        let b = bytes(&fdb_message(Some(4790)));
        let h = neigh_header(&b).unwrap();
        assert_eq!(h, NeighHeader { family: AF_BRIDGE, ifindex: 20, state: NUD_PERMANENT, flags: NTF_SELF });
        assert!(h.is_own() && h.is_permanent());
        let dst = "10.255.0.12".parse().unwrap();
        assert_eq!(fdb(&b), Some(Fdb { mac: MacAddr::ZERO, dst, port: Some(4790) }));
        // The default port reads as none; an entry without destination is none.
        assert_eq!(fdb(&bytes(&fdb_message(Some(4789)))), Some(Fdb { mac: MacAddr::ZERO, dst, port: None }));
        let mut m = fdb_message(None);
        m.attributes.remove(1);
        assert_eq!(fdb(&bytes(&m)), None);
        // A bridge's entry (master, not self).
        let mut m = fdb_message(None);
        m.header.flags = NeighbourFlags::Controller;
        assert!(!neigh_header(&bytes(&m)).unwrap().is_own());

        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.ifindex = 7;
        m.header.state = NeighbourState::Reachable;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet6("fd00::1".parse().unwrap())));
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        let b = bytes(&m);
        let h = neigh_header(&b).unwrap();
        assert!(!h.is_permanent());
        assert_eq!(neigh(&h, &b), Some(("fd00::1".parse().unwrap(), MacAddr([2, 0, 0, 0, 0, 1]))));
        m.header.family = AddressFamily::Inet;
        m.attributes[0] = NeighbourAttribute::Destination(NeighbourAddress::Inet("192.168.10.1".parse().unwrap()));
        m.attributes[1] = NeighbourAttribute::LinkLayerAddress(vec![0; 20]);
        let b = bytes(&m);
        assert_eq!(neigh(&neigh_header(&b).unwrap(), &b), None, "an address that is not a MAC");
    }

    #[test]
    fn truncated_messages_read_as_nothing_rather_than_garbage() {
        assert_eq!(link(&[0; 8]), None);
        assert_eq!(neigh_header(&[0; 9]), None);
        let mut b = links_request();
        b.extend_from_slice(&[200, 0, 3, 0, b'x']);
        assert_eq!(attrs(&b[16..]).count(), 1);
    }
}

//! Property tests: every representation survives emit -> parse unchanged, no
//! parser panics on arbitrary bytes, and a flipped bit in a checksummed VRRP
//! message is always caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vipcast_packet::arp::{ArpOp, ArpRepr};
use vipcast_packet::build::{self, Outer};
use vipcast_packet::ethernet::{EthernetRepr, VlanTag};
use vipcast_packet::gre::GreRepr;
use vipcast_packet::nd::NdRepr;
use vipcast_packet::udp::{self, UdpRepr};
use vipcast_packet::vrrp::{self, ChecksumPolicy, Version, VrrpRepr};
use vipcast_packet::vxlan::VxlanRepr;
use vipcast_packet::{Error, MacAddr, announce, ip::IpRepr, pcap};

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

/// A VRRP advertisement with its source and destination addresses.
fn vrrp() -> impl Strategy<Value = (VrrpRepr, IpAddr, IpAddr)> {
    let v2 = (
        1u8..,
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<[u8; 8]>(),
        prop::collection::vec(v4(), 0..20),
        v4(),
        v4(),
    )
        .prop_map(|(vrid, priority, secs, auth_type, auth_data, addrs, s, d)| {
            let repr = VrrpRepr {
                version: Version::V2,
                vrid,
                priority,
                interval_cs: u16::from(secs) * 100,
                auth_type,
                auth_data,
                addresses: addrs.into_iter().map(IpAddr::V4).collect(),
            };
            (repr, IpAddr::V4(s), IpAddr::V4(d))
        });
    let v3v4 = (1u8.., any::<u8>(), 0u16..=4095, prop::collection::vec(v4(), 0..20), v4(), v4()).prop_map(
        |(vrid, priority, cs, addrs, s, d)| {
            (v3(vrid, priority, cs, addrs.into_iter().map(IpAddr::V4).collect()), IpAddr::V4(s), IpAddr::V4(d))
        },
    );
    let v3v6 = (1u8.., any::<u8>(), 0u16..=4095, prop::collection::vec(v6(), 0..10), v6(), v6()).prop_map(
        |(vrid, priority, cs, addrs, s, d)| {
            (v3(vrid, priority, cs, addrs.into_iter().map(IpAddr::V6).collect()), IpAddr::V6(s), IpAddr::V6(d))
        },
    );
    prop_oneof![v2, v3v4, v3v6]
}

fn v3(vrid: u8, priority: u8, interval_cs: u16, addresses: Vec<IpAddr>) -> VrrpRepr {
    VrrpRepr { version: Version::V3, vrid, priority, interval_cs, auth_type: 0, auth_data: [0; 8], addresses }
}

proptest! {
    #[test]
    fn vrrp_round_trip((repr, src, dst) in vrrp(), src_mac in mac(), dst_mac in mac()) {
        let frame = build::vrrp_frame(src_mac, Some(dst_mac), src, dst, &repr).unwrap();
        let (eth, ip, back) = vrrp::parse_frame(&frame, ChecksumPolicy::Strict).unwrap();
        prop_assert_eq!(back, repr);
        prop_assert_eq!((ip.src(), ip.dst(), ip.hop_limit()), (src, dst, 255));
        prop_assert_eq!(eth.src, src_mac);
    }

    #[test]
    fn vrrp_bit_flips_are_caught((repr, src, dst) in vrrp(), bit in any::<prop::sample::Index>()) {
        let mut msg = Vec::new();
        repr.emit(&mut msg, src, dst).unwrap();
        let i = bit.index(msg.len() * 8);
        msg[i / 8] ^= 1 << (i % 8);
        let family = vrrp::Family::of(src);
        // Either the flip changes the length the header announces (then the
        // view refuses it or reads a different message), or the checksum or a
        // field check refuses it. It never parses back to a different valid
        // advertisement of the same length.
        if let Ok(p) = vrrp::VrrpPacket::new_checked(&msg[..], family)
            && p.message_len() == msg.len()
        {
            prop_assert!(VrrpRepr::parse(&p, src, dst, ChecksumPolicy::Strict).is_err());
        }
    }

    #[test]
    fn arp_round_trip(op in 0u16..5, sm in mac(), si in v4(), tm in mac(), ti in v4(), dst in mac(), vid in prop::option::of(0u16..4096)) {
        let arp = ArpRepr { op: op.into(), sender_mac: sm, sender_ip: si, target_mac: tm, target_ip: ti };
        let vlan = vid.map(|vid| VlanTag { pcp: 3, dei: false, vid });
        let frame = build::arp_frame(dst, sm, vlan, &arp).unwrap();
        let (eth, payload) = EthernetRepr::parse(&frame).unwrap();
        prop_assert_eq!(eth.vlan, vlan);
        prop_assert_eq!(ArpRepr::parse(payload).unwrap(), arp);
        let is_announcement = announce::classify(&frame).unwrap().is_some();
        let expected = arp.is_gratuitous() || (arp.op == ArpOp::Reply && dst.is_broadcast() && !si.is_unspecified());
        prop_assert_eq!(is_announcement, expected);
    }

    #[test]
    fn nd_round_trip(router: bool, solicited: bool, o: bool, target in v6(), ll in prop::option::of(mac()), src in v6(), dst in v6()) {
        prop_assume!(!(target.is_multicast() || solicited && dst.is_multicast()));
        let na = NdRepr::Advert { router, solicited, override_: o, target, target_lladdr: ll };
        let mut b = Vec::new();
        na.emit(&mut b, src, dst);
        prop_assert_eq!(NdRepr::parse(&b, src, dst, 255).unwrap(), Some(na));
        let ns = NdRepr::Solicit { target, source_lladdr: ll };
        let mut b = Vec::new();
        ns.emit(&mut b, src, dst);
        prop_assert_eq!(NdRepr::parse(&b, src, dst, 255).unwrap(), Some(ns));
    }

    #[test]
    fn tunnels_round_trip(vni in 0u32..=0xff_ffff, key in prop::option::of(any::<u32>()), inner in prop::collection::vec(any::<u8>(), 0..200), s in v4(), d in v4(), port: u16) {
        let outer = Outer { src_mac: MacAddr([2, 0, 0, 0, 0, 1]), dst_mac: MacAddr([2, 0, 0, 0, 0, 2]), src: IpAddr::V4(s), dst: IpAddr::V4(d) };
        let f = build::vxlan_frame(&outer, port, vni, &inner).unwrap();
        let (_, ip_payload) = EthernetRepr::parse(&f).unwrap();
        let (ip, udp_bytes) = IpRepr::parse(ip_payload).unwrap();
        let (u, vx) = UdpRepr::parse(udp_bytes, Some((ip.src(), ip.dst()))).unwrap();
        prop_assert_eq!((u.src_port, u.dst_port), (port, udp::port::VXLAN));
        let (repr, payload) = VxlanRepr::parse_bytes(vx).unwrap();
        prop_assert_eq!((repr.vni, payload), (vni, &inner[..]));

        let f = build::gre_frame(&outer, key, &inner).unwrap();
        let (_, ip_payload) = EthernetRepr::parse(&f).unwrap();
        let (_, gre_bytes) = IpRepr::parse(ip_payload).unwrap();
        let (g, payload) = GreRepr::parse_bytes(gre_bytes).unwrap();
        prop_assert_eq!((g.key, g.protocol, payload), (key, 0x6558, &inner[..]));
    }

    #[test]
    fn gre_round_trip(protocol: u16, checksum: bool, key in prop::option::of(any::<u32>()), sequence in prop::option::of(any::<u32>()), payload in prop::collection::vec(any::<u8>(), 0..100)) {
        let r = GreRepr { protocol, checksum, key, sequence };
        let mut b = Vec::new();
        r.emit(&mut b, &payload);
        prop_assert_eq!(GreRepr::parse_bytes(&b).unwrap(), (r, &payload[..]));
    }

    #[test]
    fn no_parser_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), s in v4(), d in v4(), s6 in v6(), d6 in v6(), hl: u8) {
        let _ = EthernetRepr::parse(&bytes);
        let _ = ArpRepr::parse(&bytes);
        let _ = IpRepr::parse(&bytes);
        let _ = UdpRepr::parse(&bytes, Some((IpAddr::V4(s), IpAddr::V4(d))));
        let _ = NdRepr::parse(&bytes, s6, d6, hl);
        let _ = VxlanRepr::parse_bytes(&bytes);
        let _ = GreRepr::parse_bytes(&bytes);
        let _ = vrrp::parse_frame(&bytes, ChecksumPolicy::AllowLegacyUnicast);
        let _ = vrrp::parse_ip(&bytes, ChecksumPolicy::Strict);
        for fam in [vrrp::Family::V4, vrrp::Family::V6] {
            if let Ok(p) = vrrp::VrrpPacket::new_checked(&bytes[..], fam) {
                for i in 0..usize::from(p.count()) {
                    prop_assert!(p.address(i).is_some());
                }
                let _ = p.auth_data();
            }
        }
        let _ = announce::classify(&bytes);
        let _ = pcap::read(&bytes);
    }

    #[test]
    fn truncation_is_an_error_not_a_panic((repr, src, dst) in vrrp(), cut in any::<prop::sample::Index>()) {
        let frame = build::vrrp_frame(MacAddr::vrrp_v4(repr.vrid), None, src, dst, &repr).unwrap();
        let n = cut.index(frame.len());
        let e = vrrp::parse_frame(&frame[..n], ChecksumPolicy::Strict).unwrap_err();
        prop_assert!(matches!(e, Error::Truncated { .. }), "{e}");
    }
}

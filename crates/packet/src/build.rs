//! Whole frames, built from the representations: what the agent re-announces,
//! what a handover sends on a dead master's behalf, and what the tests feed
//! to tshark.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::arp::{ArpOp, ArpRepr};
use crate::ethernet::{EthernetRepr, VlanTag, ethertype};
use crate::gre::GreRepr;
use crate::ip::{IpRepr, protocol};
use crate::nd::NdRepr;
use crate::udp::{self, UdpRepr};
use crate::vrrp::{self, VrrpRepr};
use crate::vxlan::VxlanRepr;
use crate::{MacAddr, Result};

/// An Ethernet frame carrying `arp`.
pub fn arp_frame(dst: MacAddr, src: MacAddr, vlan: Option<VlanTag>, arp: &ArpRepr) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(18 + crate::arp::PACKET_LEN);
    EthernetRepr { dst, src, vlan, ethertype: ethertype::ARP }.emit(&mut out)?;
    out.extend_from_slice(&arp.to_bytes());
    Ok(out)
}

/// A gratuitous ARP for `ip` at `mac`, broadcast: sender and target IP both
/// `ip`, target MAC zero (request) or `mac` (reply).
pub fn garp(mac: MacAddr, ip: Ipv4Addr, op: ArpOp) -> Vec<u8> {
    let arp = ArpRepr {
        op,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: if op == ArpOp::Reply { mac } else { MacAddr::ZERO },
        target_ip: ip,
    };
    let mut out = Vec::with_capacity(14 + crate::arp::PACKET_LEN);
    // An untagged header with valid fields cannot fail to emit.
    let _ = EthernetRepr { dst: MacAddr::BROADCAST, src: mac, vlan: None, ethertype: ethertype::ARP }.emit(&mut out);
    out.extend_from_slice(&arp.to_bytes());
    out
}

/// An Ethernet frame carrying an IP packet: header for `payload`, then `payload`.
pub fn ip_frame(dst: MacAddr, src: MacAddr, ip: &IpRepr, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(14 + 40 + payload.len());
    EthernetRepr { dst, src, vlan: None, ethertype: ip.ethertype() }.emit(&mut out)?;
    ip.emit(&mut out)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// The Ethernet destination of an IP destination: the multicast mapping for a
/// multicast address, else `unicast`.
fn eth_dst(dst: IpAddr, unicast: Option<MacAddr>) -> MacAddr {
    match dst {
        IpAddr::V4(a) if a.is_multicast() => MacAddr::ipv4_multicast(a),
        IpAddr::V6(a) if a.is_multicast() => MacAddr::ipv6_multicast(a),
        _ => unicast.unwrap_or(MacAddr::BROADCAST),
    }
}

/// An unsolicited neighbour advertisement for `target` at `mac`, from
/// `src` (an address of the sender, usually its link-local) to all nodes
/// (ff02::1), override flag set, hop limit 255 (RFC 4861 §7.2.6). `router`
/// sets the Router flag: a VRRP router announcing its virtual addresses sets
/// it (RFC 5798 §6.4.2); a host moving an address of its own does not.
pub fn unsolicited_na(mac: MacAddr, target: Ipv6Addr, src: Ipv6Addr, router: bool) -> Result<Vec<u8>> {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let na = NdRepr::Advert { router, solicited: false, override_: true, target, target_lladdr: Some(mac) };
    let mut body = Vec::with_capacity(na.buffer_len());
    na.emit(&mut body, src, dst);
    let ip = IpRepr::new(IpAddr::V6(src), IpAddr::V6(dst), protocol::ICMPV6, 255, body.len())?;
    ip_frame(eth_dst(IpAddr::V6(dst), None), mac, &ip, &body)
}

/// A VRRP advertisement as a router sends it: from `src_mac` (the virtual MAC
/// or the interface's), `src` -> `dst` with TTL 255, to the group's multicast
/// MAC or, for unicast, `dst_mac`.
pub fn vrrp_frame(
    src_mac: MacAddr,
    dst_mac: Option<MacAddr>,
    src: IpAddr,
    dst: IpAddr,
    repr: &VrrpRepr,
) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(repr.buffer_len());
    repr.emit(&mut body, src, dst)?;
    let mut ip = IpRepr::new(src, dst, vrrp::PROTOCOL, vrrp::TTL, body.len())?;
    if let IpRepr::V4(v4) = &mut ip {
        v4.dscp = 0x30; // CS6, network control, as routers send it
    }
    ip_frame(eth_dst(dst, dst_mac), src_mac, &ip, &body)
}

/// Outer addressing of a tunnelled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// `inner` (an Ethernet frame) in UDP from `src_port` to `dst_port`.
fn udp_tunnel(outer: &Outer, src_port: u16, dst_port: u16, header: &[u8], inner: &[u8]) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(header.len() + inner.len());
    payload.extend_from_slice(header);
    payload.extend_from_slice(inner);
    let mut dgram = Vec::with_capacity(udp::HEADER_LEN + payload.len());
    UdpRepr { src_port, dst_port }.emit(&mut dgram, outer.src, outer.dst, &payload)?;
    let ip = IpRepr::new(outer.src, outer.dst, protocol::UDP, 64, dgram.len())?;
    ip_frame(outer.dst_mac, outer.src_mac, &ip, &dgram)
}

/// `inner` in VXLAN with `vni`, UDP source port `src_port` (RFC 7348 suggests a
/// hash of the inner flow), destination 4789.
pub fn vxlan_frame(outer: &Outer, src_port: u16, vni: u32, inner: &[u8]) -> Result<Vec<u8>> {
    let mut hdr = Vec::with_capacity(crate::vxlan::HEADER_LEN);
    VxlanRepr { vni }.emit(&mut hdr)?;
    udp_tunnel(outer, src_port, udp::port::VXLAN, &hdr, inner)
}

/// `inner` in GRE (protocol 0x6558, transparent Ethernet bridging), key `key`.
pub fn gre_frame(outer: &Outer, key: Option<u32>, inner: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(16 + inner.len());
    GreRepr { protocol: ethertype::TEB, checksum: false, key, sequence: None }.emit(&mut body, inner);
    let ip = IpRepr::new(outer.src, outer.dst, protocol::GRE, 64, body.len())?;
    ip_frame(outer.dst_mac, outer.src_mac, &ip, &body)
}

/// `inner` in GRE-in-UDP (RFC 8086): a GRE header with `key` as the payload
/// of UDP port 4754.
pub fn gre_in_udp_frame(outer: &Outer, src_port: u16, key: Option<u32>, inner: &[u8]) -> Result<Vec<u8>> {
    let mut hdr = Vec::with_capacity(8);
    GreRepr { protocol: ethertype::TEB, checksum: false, key, sequence: None }.emit(&mut hdr, &[]);
    udp_tunnel(outer, src_port, udp::port::GRE_IN_UDP, &hdr, inner)
}

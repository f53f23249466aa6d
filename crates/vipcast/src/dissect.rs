//! `vipcast dissect`: one line per frame of a capture, as vipcast's codecs see it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use vipcast_packet::announce;
use vipcast_packet::arp::ArpRepr;
use vipcast_packet::ethernet::{EthernetRepr, ethertype};
use vipcast_packet::gre::GreRepr;
use vipcast_packet::ip::{IpRepr, protocol};
use vipcast_packet::nd::NdRepr;
use vipcast_packet::udp::{UdpRepr, port};
use vipcast_packet::vrrp::{self, ChecksumPolicy, VrrpRepr};
use vipcast_packet::vxlan::VxlanRepr;
use vipcast_packet::{Result, pcap};

pub fn run(file: &Path, legacy: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let cap = pcap::read(&bytes).with_context(|| format!("{} is not a pcap file", file.display()))?;
    if cap.linktype != pcap::LINKTYPE_ETHERNET {
        bail!("{}: link type {} is not Ethernet (capture on an interface, not 'any')", file.display(), cap.linktype);
    }
    let policy = if legacy { ChecksumPolicy::AllowLegacyUnicast } else { ChecksumPolicy::Strict };
    let t0 = cap.records.first().map_or(0, |r| r.nanos);
    let mut out = std::io::stdout().lock();
    for (i, r) in cap.records.iter().enumerate() {
        let t = r.nanos.saturating_sub(t0) as f64 / 1e9;
        let line = match frame(r.data, policy, 0) {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        if let Err(e) = writeln!(out, "{:>5} {t:>10.6} {line}", i + 1) {
            // A closed pipe (`| head`) ends the listing quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}

fn frame(data: &[u8], policy: ChecksumPolicy, depth: u8) -> Result<String> {
    let (eth, payload) = EthernetRepr::parse(data)?;
    let mut s = format!("{} > {}", eth.src, eth.dst);
    if let Some(tag) = eth.vlan {
        let _ = write!(s, " vlan {}", tag.vid);
    }
    match eth.ethertype {
        ethertype::ARP => {
            let arp = ArpRepr::parse(payload)?;
            let _ = write!(
                s,
                " ARP {:?} {} ({}) -> {} ({})",
                arp.op, arp.sender_ip, arp.sender_mac, arp.target_ip, arp.target_mac
            );
        }
        ethertype::IPV4 | ethertype::IPV6 => s.push_str(&ip(payload, policy, depth)?),
        t => {
            let _ = write!(s, " ethertype {t:#06x}");
        }
    }
    if let Ok(Some(a)) = announce::classify(data) {
        let _ = write!(s, "  [announces {} at {} ({:?})]", a.ip, a.mac, a.kind);
    }
    Ok(s)
}

fn ip(packet: &[u8], policy: ChecksumPolicy, depth: u8) -> Result<String> {
    let (ipr, body) = IpRepr::parse(packet)?;
    let mut s = format!(" {} > {}", ipr.src(), ipr.dst());
    match ipr.protocol() {
        protocol::VRRP => {
            let (_, v) = vrrp::parse_ip(packet, policy)?;
            s.push_str(&vrrp_line(&v));
        }
        protocol::UDP => {
            let (u, payload) = UdpRepr::parse(body, Some((ipr.src(), ipr.dst())))?;
            let _ = write!(s, " UDP {} > {}", u.src_port, u.dst_port);
            if depth == 0 && u.dst_port == port::VXLAN {
                let (vx, inner) = VxlanRepr::parse_bytes(payload)?;
                let _ = write!(s, " VXLAN vni {} | {}", vx.vni, frame(inner, policy, depth + 1)?);
            } else if depth == 0 && u.dst_port == port::GRE_IN_UDP {
                s.push_str(&gre(payload, policy, depth)?);
            }
        }
        protocol::GRE if depth == 0 => s.push_str(&gre(body, policy, depth)?),
        protocol::ICMPV6 => {
            if let IpRepr::V6(v6) = ipr {
                match NdRepr::parse(body, v6.src, v6.dst, v6.hop_limit)? {
                    Some(nd) => {
                        let _ = write!(s, " ND {nd:?}");
                    }
                    None => s.push_str(" ICMPv6"),
                }
            }
        }
        p => {
            let _ = write!(s, " protocol {p}");
        }
    }
    Ok(s)
}

fn gre(body: &[u8], policy: ChecksumPolicy, depth: u8) -> Result<String> {
    let (g, inner) = GreRepr::parse_bytes(body)?;
    let mut s = format!(" GRE proto {:#06x}", g.protocol);
    if let Some(k) = g.key {
        let _ = write!(s, " key {k}");
    }
    if g.protocol == ethertype::TEB {
        let _ = write!(s, " | {}", frame(inner, policy, depth + 1)?);
    }
    Ok(s)
}

fn vrrp_line(v: &VrrpRepr) -> String {
    let addrs: Vec<String> = v.addresses.iter().map(ToString::to_string).collect();
    format!(
        " VRRPv{} vrid {} prio {} interval {} ms addrs [{}]{}",
        v.version.number(),
        v.vrid,
        v.priority,
        u32::from(v.interval_cs) * 10,
        addrs.join(", "),
        if v.version == vrrp::Version::V2 { format!(" auth {}", v.auth_type) } else { String::new() }
    )
}

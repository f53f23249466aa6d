//! What the kernel should hold on this chassis: a pure function of the
//! chassis view (and the replicator choice), compared with what it holds.
//!
//! Per VPC (VNI `n`):
//! ```text
//!   vc-br-<n>  bridge  ── VM ports (found by alias "vipcast-port:<port>")
//!       └── vc-vx-<n>  vxlan id n local <underlay> dstport 4789 nolearning [proxy]
//!              fdb  <remote mac> dst <chassis underlay>           (unicast)
//!              fdb  00:00:00:00:00:00 dst <chassis | replicator>  (BUM)
//!              neigh <ip> lladdr <mac> (every remote port and VIP owner: ARP suppression)
//!   gateways also: the subnets' gateway addresses on vc-br-<n>, and a
//!   neighbour entry on vc-br-<n> for each VIP -> its owner's MAC; the
//!   physical ports they serve, their devices (an interface, or a VLAN
//!   of one) in vc-br-<n> with the alias "vipcast-port:<port>"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use vipcast_model::Role;
use vipcast_model::view::{ChassisView, Flood};
use vipcast_packet::MacAddr;

/// Interface alias that marks a VM port: `vipcast-port:<port name>`.
pub const PORT_ALIAS_PREFIX: &str = "vipcast-port:";
/// The VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// Name of a VPC's bridge.
pub fn bridge_name(vni: u32) -> String {
    format!("vc-br-{vni}")
}

/// Name of a VPC's VXLAN device.
pub fn vxlan_name(vni: u32) -> String {
    format!("vc-vx-{vni}")
}

/// The VNI of one of our device names, if it is one.
pub fn our_vni(name: &str) -> Option<u32> {
    name.strip_prefix("vc-br-").or_else(|| name.strip_prefix("vc-vx-")).and_then(|v| v.parse().ok())
}

/// A forwarding entry of a VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub mac: MacAddr,
    pub dst: IpAddr,
    /// Destination UDP port, when not 4789.
    pub port: Option<u16>,
}

/// What one VPC needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcPlan {
    pub name: String,
    pub vni: u32,
    pub proxy: bool,
    /// Port names whose interfaces join the bridge.
    pub ports: BTreeSet<String>,
    /// The physical ones among them (bare-metal hosts on a gateway): the
    /// device each is attached through, by port name.
    pub physical: BTreeMap<String, Attachment>,
    pub fdb: BTreeSet<Fdb>,
    /// Neighbour entries on the VXLAN device.
    pub neigh: BTreeMap<IpAddr, MacAddr>,
    /// Addresses on the bridge (gateways).
    pub bridge_addrs: BTreeSet<IpNet>,
    /// Neighbour entries on the bridge (gateways: VIP -> owner).
    pub bridge_neigh: BTreeMap<IpAddr, MacAddr>,
    /// The bridge's MAC (gateways: the VPC's anycast router MAC).
    pub bridge_mac: Option<MacAddr>,
}

/// A physical port's device: an interface of the chassis, or a VLAN of it
/// that the agent creates (`<interface>.<vlan>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub device: String,
    pub interface: String,
    pub vlan: Option<u16>,
    /// The host's MAC, pinned to the device in the bridge when attached.
    pub mac: MacAddr,
}

/// What the chassis needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub local_ip: Option<IpAddr>,
    pub vpcs: BTreeMap<u32, VpcPlan>,
    /// Route between subnets (gateways).
    pub forwarding: bool,
    /// Subnets a gateway cannot route because they overlap a routed one of
    /// another VPC: (vpc, subnet, cidr).
    pub unrouted: Vec<(String, String, IpNet)>,
    /// VPCs this data plane cannot carry (GRE on the kernel).
    pub unsupported: Vec<String>,
}

/// Rendezvous (highest random weight) choice of a replicator for `vni`
/// among `candidates`: every chassis picks the same one, and losing one
/// moves only the VNIs it had.
pub fn rendezvous(vni: u32, candidates: &[(String, SocketAddr)]) -> Option<&(String, SocketAddr)> {
    candidates.iter().max_by_key(|(name, _)| {
        // FNV-1a over the name and the VNI, then a 64-bit mix.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes().iter().chain(vni.to_be_bytes().iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    })
}

/// The replicator carrying `vni`'s BUM traffic: rendezvous among the healthy
/// ones, or among all of them when none answers (better a guess than no path).
pub fn choose_replicator(
    vni: u32,
    replicators: &[(String, SocketAddr)],
    healthy: &dyn Fn(&str) -> bool,
) -> Option<(String, SocketAddr)> {
    let up: Vec<_> = replicators.iter().filter(|(n, _)| healthy(n)).cloned().collect();
    let pool = if up.is_empty() { replicators } else { &up[..] };
    rendezvous(vni, pool).cloned()
}

/// A gateway's routed subnets: VNI -> the gateway addresses (with the
/// subnet's prefix) it holds for the VPCs it `carries`, in VNI order; and
/// the subnets left unrouted because they overlap one routed before (one
/// routing table, no VRFs): (vpc, subnet, cidr). Empty off gateways.
#[allow(clippy::type_complexity)]
pub fn routed(
    view: &ChassisView,
    carries: &dyn Fn(&vipcast_model::view::VpcView) -> bool,
) -> (BTreeMap<u32, BTreeSet<IpNet>>, Vec<(String, String, IpNet)>) {
    let mut routes: BTreeMap<u32, BTreeSet<IpNet>> = BTreeMap::new();
    let mut unrouted = Vec::new();
    if view.role != Role::Gateway {
        return (routes, unrouted);
    }
    let mut vpcs: Vec<_> = view.vpcs.values().filter(|v| carries(v)).collect();
    vpcs.sort_by_key(|v| v.vni);
    let mut taken: Vec<IpNet> = Vec::new();
    for v in vpcs {
        for s in &v.subnets {
            let Some(net) = s.gateway.and_then(|g| IpNet::new(g, s.cidr.prefix_len()).ok()) else { continue };
            if taken.iter().any(|r| r.contains(&s.cidr) || s.cidr.contains(r)) {
                unrouted.push((v.name.clone(), s.name.clone(), s.cidr));
                continue;
            }
            taken.push(s.cidr);
            routes.entry(v.vni).or_default().insert(net);
        }
    }
    (routes, unrouted)
}

/// The plan for a chassis view. `healthy` filters replicator candidates
/// (all of them count as healthy when it returns true for none).
///
/// A gateway routes between the external network and every VPC subnet that
/// has a gateway address; without VRFs (this kernel has none) one routing
/// table cannot hold two VPCs' overlapping subnets, so where they overlap the
/// VPC with the lower VNI is routed and the other is not (see [`Plan::unrouted`]).
pub fn plan(view: &ChassisView, healthy: &dyn Fn(&str) -> bool) -> Plan {
    let mut vpcs = BTreeMap::new();
    let (mut routes, unrouted) = routed(view, &|v| v.encap != vipcast_model::Encap::Gre);
    let mut unsupported = Vec::new();
    for v in view.vpcs.values() {
        // The kernel here has no GRE devices: a GRE VPC is carried by Open
        // vSwitch chassis only (the controller refuses its ports elsewhere; a
        // kernel gateway takes no part in it).
        if v.encap == vipcast_model::Encap::Gre {
            unsupported.push(v.name.clone());
            continue;
        }
        let mut fdb: BTreeSet<Fdb> = v.fdb.iter().map(|(mac, dst)| Fdb { mac: *mac, dst: *dst, port: None }).collect();
        match &v.flood {
            Flood::Headend(targets) => {
                fdb.extend(targets.iter().map(|dst| Fdb { mac: MacAddr::ZERO, dst: *dst, port: None }));
            }
            Flood::Replicator(reps) => {
                if let Some((_, addr)) = choose_replicator(v.vni, reps, healthy) {
                    let port = (addr.port() != VXLAN_PORT).then_some(addr.port());
                    fdb.insert(Fdb { mac: MacAddr::ZERO, dst: addr.ip(), port });
                }
            }
        }
        let mut bridge_addrs = BTreeSet::new();
        let mut bridge_neigh = BTreeMap::new();
        if view.role == Role::Gateway {
            bridge_addrs = routes.remove(&v.vni).unwrap_or_default();
            for vip in &v.vips {
                if let Some((mac, _, _)) = &vip.owner {
                    bridge_neigh.insert(vip.ip, *mac);
                }
            }
        }
        // No neighbour entry on the VXLAN device for an address whose MAC is
        // behind a local port: the device's proxy answers ARP requests that
        // leave through it from its neighbour table, *including gratuitous
        // ones*, and injects the reply as received from the VXLAN port with
        // the entry's MAC as the Ethernet source. For a local MAC the bridge
        // then learns it behind the VXLAN port and black-holes the VM's
        // traffic until the VM sends again (seen: keepalived's GARP burst
        // after a takeover cut the new master off for one advert interval).
        // Local VMs reach local addresses through the bridge anyway.
        let local: BTreeSet<MacAddr> = v.local_ports.iter().map(|p| p.mac).collect();
        let neigh = v.neighbours.iter().filter(|(_, mac)| !local.contains(mac)).map(|(ip, mac)| (*ip, *mac)).collect();
        vpcs.insert(
            v.vni,
            VpcPlan {
                name: v.name.clone(),
                vni: v.vni,
                proxy: v.arp_suppression,
                ports: v.local_ports.iter().map(|p| p.name.clone()).collect(),
                physical: v
                    .local_ports
                    .iter()
                    .filter(|p| p.kind == vipcast_model::PortKind::Physical)
                    .filter_map(|p| {
                        let a = Attachment {
                            device: p.device()?,
                            interface: p.interface.clone()?,
                            vlan: p.vlan,
                            mac: p.mac,
                        };
                        Some((p.name.clone(), a))
                    })
                    .collect(),
                fdb,
                neigh,
                bridge_addrs,
                bridge_neigh,
                bridge_mac: if view.role == Role::Gateway { v.gateway_mac } else { None },
            },
        );
    }
    Plan { local_ip: Some(view.underlay_ip), vpcs, forwarding: view.role == Role::Gateway, unrouted, unsupported }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_parse_back() {
        assert_eq!(bridge_name(16_777_215).len(), 14);
        assert_eq!(our_vni(&vxlan_name(100)), Some(100));
        assert_eq!(our_vni("eth0"), None);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_lost_vnis() {
        let reps: Vec<(String, SocketAddr)> =
            (1..=3).map(|i| (format!("rep{i}"), format!("10.0.0.{i}:4789").parse().unwrap())).collect();
        let before: Vec<_> = (1..200).map(|vni| rendezvous(vni, &reps).unwrap().0.clone()).collect();
        // Every replicator gets some VNIs.
        for r in ["rep1", "rep2", "rep3"] {
            assert!(before.iter().filter(|x| *x == r).count() > 30, "{r}");
        }
        let without: Vec<_> = reps.iter().filter(|(n, _)| n != "rep2").cloned().collect();
        for (i, vni) in (1..200).enumerate() {
            let after = rendezvous(vni, &without).unwrap().0.clone();
            if before[i] != "rep2" {
                assert_eq!(after, before[i], "vni {vni} moved although its replicator stayed");
            }
        }
        assert!(rendezvous(1, &[]).is_none());
    }
}

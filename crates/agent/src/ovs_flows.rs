//! What an Open vSwitch chassis' `br-int` must hold: a pure function of the
//! chassis view, the OpenFlow port numbers of the VM and tunnel ports, and
//! the replicator chosen per VNI. [`crate::ovs`] sends it to the switch.
//!
//! ```text
//!  VM port ──► table 0 CLASSIFY ─────────────► table 1 ARP ──────────────► table 2 L2
//!              in_port=<vm>                    GARP/NA for a VIP (local)   eth_dst=<local mac>
//!               -> metadata=LOCAL|vni            -> CONTROLLER, goto 2       -> output:<port>
//!              in_port=<tunnel>,tun_id=vni     VRRP v4/v6 (local, tunnel)  eth_dst=<remote mac> (local)
//!               -> metadata=vni                  -> CONTROLLER, goto 2       -> tun_id=vni, tun_dst=<chassis>,
//!              else drop                       ARP about oneself -> goto 2      output:<tunnel>
//!                                              ARP request for a           multicast / unknown unicast
//!                                              neighbour (local, under       from local  -> group LOCAL(vni):
//!                                              ARP suppression)                 local ports + remote chassis
//!                                                -> reply, IN_PORT             (head-end) or the replicator
//!  tunnel ──►                                  else goto 2                   from tunnel -> group TUNNEL(vni):
//!                                                                               local ports only
//!                                                                          else drop
//! ```
//!
//! * Metadata: bits 0..32 the VNI, bit 32 ([`FROM_LOCAL`]) set when the frame
//!   came from a VM port. Every flow after table 0 matches the VNI, so no
//!   flow of one VPC can touch another's frames.
//! * A frame is never sent back where it came from: OpenFlow drops an output
//!   to the ingress port (the flooding groups rely on it), frames from the
//!   tunnel never go back into it, and unicast to a remote MAC is forwarded
//!   only when it came from a local port.
//! * Unknown unicast is flooded like broadcast (what the kernel data plane's
//!   bridge and VXLAN device do), which also carries frames to VRRP virtual
//!   MACs.
//! * The ARP responder answers only requests from local ports, for every
//!   IPv4 entry of the VPC's neighbours; a request about the requester's own
//!   address (gratuitous ARP, address probe) is not answered but flooded.
//! * The ND responder does the same for IPv6 entries: a neighbour
//!   solicitation from a local port, with a source link-layer option, is
//!   turned into the solicited NA in table 1 and finished in table 3
//!   ([`TABLE_ND`]: the target link-layer option can only be written where
//!   the match says NA). R is set for VIPs and subnet gateways (routers'
//!   addresses, as their announcements say). Duplicate address detection
//!   (from ::) and solicitations without the option are flooded.
//! * Replicator mode: copies to the replicator leave through the VPC's own
//!   tunnel port (the replicator replicates GRE VPCs over GRE, key = VNI),
//!   and come back the same way.
//! * Tunnel endpoints are IPv4 (`tun_dst`); remote chassis with an IPv6
//!   underlay are skipped.
//! * Cookies: every flow's cookie is a hash of its table, priority and
//!   match, with [`COOKIE_TAG`] in the top byte: the same flow has the same
//!   cookie in every run of the agent, so a restarted agent recognises what
//!   the switch already holds.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vipcast_model::Encap;
use vipcast_model::view::{ChassisView, Flood, VpcView};
use vipcast_openflow::action::OFPCML_NO_BUFFER;
use vipcast_openflow::action::{ICMPV6_NS, ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR};
use vipcast_openflow::{
    Action, Bucket, Instruction, Match, OFPP_CONTROLLER, OxmField, arp_responder, nd_responder_finish,
    nd_responder_start,
};
use vipcast_packet::MacAddr;

/// Classification: VM and tunnel ports to metadata.
pub const TABLE_CLASSIFY: u8 = 0;
/// ARP responder and the frames the agent must see.
pub const TABLE_ARP: u8 = 1;
/// Layer 2 forwarding.
pub const TABLE_L2: u8 = 2;
/// The ND responder's second half (entered only from [`TABLE_ARP`]).
pub const TABLE_ND: u8 = 3;

/// Metadata bit: the frame came from a local VM port.
pub const FROM_LOCAL: u64 = 1 << 32;
/// Metadata bits holding the VNI.
pub const VNI_MASK: u64 = 0xffff_ffff;
/// Top byte of every cookie the agent installs ("v").
pub const COOKIE_TAG: u64 = 0x76 << 56;

/// The bridge the agent programs.
pub const INT_BRIDGE: &str = "br-int";
/// Name of the VXLAN port of `br-int` (`type=vxlan`, `options:key=flow`,
/// `options:remote_ip=flow`).
pub const VXLAN_PORT_NAME: &str = "vc-vxlan";
/// Name of the GRE port of `br-int` (`type=gre`, `options:key=flow`,
/// `options:remote_ip=flow`).
pub const GRE_PORT_NAME: &str = "vc-gre";

const ETH_TYPE_IPV4: u16 = 0x0800;
const ETH_TYPE_ARP: u16 = 0x0806;
const ETH_TYPE_IPV6: u16 = 0x86dd;
const IP_PROTO_ICMPV6: u8 = 58;
const IP_PROTO_VRRP: u8 = 112;
const ICMPV6_NA: u8 = 136;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const MULTICAST: MacAddr = MacAddr([1, 0, 0, 0, 0, 0]);

/// Priorities.
pub mod prio {
    /// Table 0: a VM port or a tunnel with a VPC's VNI.
    pub const CLASSIFY: u16 = 100;
    /// Table 1: gratuitous ARP / unsolicited NA for a VIP.
    pub const ANNOUNCE: u16 = 130;
    /// Table 1: VRRP adverts.
    pub const VRRP: u16 = 120;
    /// Table 1: ARP about the requester's own address.
    pub const ARP_SELF: u16 = 110;
    /// Table 1: the ARP responder.
    pub const ARP_REPLY: u16 = 100;
    /// Table 2: a known MAC.
    pub const UNICAST: u16 = 100;
    /// Table 2: multicast and broadcast.
    pub const MULTICAST: u16 = 50;
    /// Table 2: unknown unicast.
    pub const UNKNOWN: u16 = 10;
    /// Every table's last flow.
    pub const MISS: u16 = 0;
}

/// OpenFlow port numbers on `br-int`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    /// vipcast port name -> OpenFlow port (ports not on the bridge are absent).
    pub vm: BTreeMap<String, u32>,
    pub vxlan: Option<u32>,
    pub gre: Option<u32>,
    /// Gateways: VNI -> the OpenFlow port of the VPC's router port
    /// ([`router_port_name`]), an internal port holding the subnets'
    /// gateway addresses and the anycast router MAC: switched like a local
    /// port with that MAC; the kernel routes behind it.
    pub routers: BTreeMap<u32, u32>,
}

/// The name of VPC `vni`'s router port on an Open vSwitch gateway.
pub fn router_port_name(vni: u32) -> String {
    format!("vc-gw-{vni}")
}

/// One flow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub table: u8,
    pub priority: u16,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
    /// [`cookie`] of table, priority and match.
    pub cookie: u64,
}

impl Flow {
    fn new(table: u8, priority: u16, match_: Match, instructions: Vec<Instruction>) -> Self {
        let cookie = cookie(table, priority, &match_);
        Flow { table, priority, match_, instructions, cookie }
    }
}

/// A group of type ALL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: u32,
    pub buckets: Vec<Bucket>,
}

/// Everything `br-int` must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// By cookie.
    pub flows: BTreeMap<u64, Flow>,
    /// By group id.
    pub groups: BTreeMap<u32, Group>,
}

impl Desired {
    fn flow(&mut self, f: Flow) {
        self.flows.insert(f.cookie, f);
    }
}

/// The stable cookie of the flow at (`table`, `priority`, `match_`): FNV-1a
/// of those, encoded, with [`COOKIE_TAG`] in the top byte.
pub fn cookie(table: u8, priority: u16, match_: &Match) -> u64 {
    let mut bytes = vec![table];
    bytes.extend_from_slice(&priority.to_be_bytes());
    // Every field this module builds encodes; a failure only weakens the hash.
    let _ = match_.encode(&mut bytes);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    COOKIE_TAG | (h & !(0xff << 56))
}

/// Group flooding a VPC's frames from local ports.
pub fn group_from_local(vni: u32) -> u32 {
    vni << 1
}

/// Group flooding a VPC's frames from the tunnel (to local ports).
pub fn group_from_tunnel(vni: u32) -> u32 {
    (vni << 1) | 1
}

fn from_local(vni: u32) -> OxmField {
    OxmField::Metadata { value: FROM_LOCAL | u64::from(vni), mask: None }
}

fn from_tunnel(vni: u32) -> OxmField {
    OxmField::Metadata { value: u64::from(vni), mask: None }
}

fn in_vpc(vni: u32) -> OxmField {
    OxmField::Metadata { value: u64::from(vni), mask: Some(VNI_MASK) }
}

fn to_controller() -> Action {
    Action::Output { port: OFPP_CONTROLLER, max_len: OFPCML_NO_BUFFER }
}

fn tunnel_to(vni: u32, dst: Ipv4Addr, port: u32) -> Vec<Action> {
    vec![
        Action::SetField(OxmField::tunnel_id(u64::from(vni))),
        Action::SetField(OxmField::TunIpv4Dst { value: dst, mask: None }),
        Action::output(port),
    ]
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    }
}

/// The flows and groups for `view`. `replicator(vni)` is the replicator a
/// VPC in replicator mode floods to (`None`: none healthy; its BUM then
/// stays local).
pub fn desired(view: &ChassisView, ports: &Ports, replicator: &dyn Fn(u32) -> Option<IpAddr>) -> Desired {
    let mut d = Desired::default();
    d.flow(Flow::new(TABLE_CLASSIFY, prio::MISS, Match::new(), vec![]));
    d.flow(Flow::new(TABLE_ARP, prio::MISS, Match::new(), vec![Instruction::GotoTable(TABLE_L2)]));
    d.flow(Flow::new(TABLE_L2, prio::MISS, Match::new(), vec![]));
    for vpc in view.vpcs.values() {
        vpc_flows(&mut d, vpc, ports, replicator);
    }
    d
}

fn vpc_flows(d: &mut Desired, vpc: &VpcView, ports: &Ports, replicator: &dyn Fn(u32) -> Option<IpAddr>) {
    let vni = vpc.vni;
    let goto_l2 = Instruction::GotoTable(TABLE_L2);
    let tunnel = match vpc.encap {
        Encap::Vxlan => ports.vxlan,
        Encap::Gre => ports.gre,
    };
    let mut local: Vec<(u32, MacAddr)> =
        vpc.local_ports.iter().filter_map(|p| ports.vm.get(&p.name).map(|n| (*n, p.mac))).collect();
    if let (Some(port), Some(mac)) = (ports.routers.get(&vni), vpc.gateway_mac) {
        local.push((*port, mac));
    }

    // Table 0.
    for (port, _) in &local {
        d.flow(Flow::new(
            TABLE_CLASSIFY,
            prio::CLASSIFY,
            Match::new().with(OxmField::InPort(*port)),
            vec![
                Instruction::WriteMetadata { metadata: FROM_LOCAL | u64::from(vni), mask: u64::MAX },
                Instruction::GotoTable(TABLE_ARP),
            ],
        ));
    }
    if let Some(port) = tunnel {
        d.flow(Flow::new(
            TABLE_CLASSIFY,
            prio::CLASSIFY,
            Match::new().with(OxmField::InPort(port)).with(OxmField::tunnel_id(u64::from(vni))),
            vec![
                Instruction::WriteMetadata { metadata: u64::from(vni), mask: u64::MAX },
                Instruction::GotoTable(TABLE_ARP),
            ],
        ));
    }

    // Table 1: what the agent must see.
    let sniff = vec![Instruction::ApplyActions(vec![to_controller()]), goto_l2.clone()];
    for vip in &vpc.vips {
        let m = match vip.ip {
            IpAddr::V4(ip) => Match::new()
                .with(from_local(vni))
                .with(OxmField::EthType(ETH_TYPE_ARP))
                .with(OxmField::arp_spa(ip))
                .with(OxmField::arp_tpa(ip)),
            IpAddr::V6(ip) => Match::new()
                .with(from_local(vni))
                .with(OxmField::EthType(ETH_TYPE_IPV6))
                .with(OxmField::IpProto(IP_PROTO_ICMPV6))
                .with(OxmField::Icmpv6Type(ICMPV6_NA))
                .with(OxmField::Ipv6NdTarget(ip)),
        };
        d.flow(Flow::new(TABLE_ARP, prio::ANNOUNCE, m, sniff.clone()));
        // The other announcement form: an ARP reply for the VIP, broadcast.
        if let IpAddr::V4(ip) = vip.ip {
            let m = Match::new()
                .with(from_local(vni))
                .with(OxmField::eth_dst(MacAddr::BROADCAST))
                .with(OxmField::EthType(ETH_TYPE_ARP))
                .with(OxmField::ArpOp(ARP_OP_REPLY))
                .with(OxmField::arp_spa(ip));
            d.flow(Flow::new(TABLE_ARP, prio::ANNOUNCE, m, sniff.clone()));
        }
    }
    for eth_type in [ETH_TYPE_IPV4, ETH_TYPE_IPV6] {
        let m = Match::new().with(in_vpc(vni)).with(OxmField::EthType(eth_type)).with(OxmField::IpProto(IP_PROTO_VRRP));
        d.flow(Flow::new(TABLE_ARP, prio::VRRP, m, sniff.clone()));
    }
    // Table 1: the ARP responder.
    if vpc.arp_suppression {
        for (ip, mac) in &vpc.neighbours {
            let Some(ip) = v4(ip) else { continue };
            let request = || {
                Match::new()
                    .with(from_local(vni))
                    .with(OxmField::EthType(ETH_TYPE_ARP))
                    .with(OxmField::ArpOp(ARP_OP_REQUEST))
                    .with(OxmField::arp_tpa(ip))
            };
            let own = Match::new()
                .with(from_local(vni))
                .with(OxmField::eth_src(*mac))
                .with(OxmField::EthType(ETH_TYPE_ARP))
                .with(OxmField::ArpOp(ARP_OP_REQUEST))
                .with(OxmField::arp_tpa(ip));
            d.flow(Flow::new(TABLE_ARP, prio::ARP_SELF, own, vec![goto_l2.clone()]));
            d.flow(Flow::new(
                TABLE_ARP,
                prio::ARP_REPLY,
                request(),
                vec![Instruction::ApplyActions(arp_responder(*mac, ip))],
            ));
        }
    }

    // Tables 1 and 3: the ND responder.
    if vpc.arp_suppression {
        let routers: std::collections::BTreeSet<IpAddr> =
            vpc.vips.iter().map(|v| v.ip).chain(vpc.subnets.iter().filter_map(|s| s.gateway)).collect();
        let mut any = false;
        for (ip, mac) in &vpc.neighbours {
            let IpAddr::V6(ip6) = ip else { continue };
            any = true;
            let ns = || {
                Match::new()
                    .with(from_local(vni))
                    .with(OxmField::EthType(ETH_TYPE_IPV6))
                    .with(OxmField::IpProto(IP_PROTO_ICMPV6))
                    .with(OxmField::Icmpv6Type(ICMPV6_NS))
                    .with(OxmField::Ipv6NdTarget(*ip6))
            };
            let dad = ns().with(OxmField::Ipv6Src { value: Ipv6Addr::UNSPECIFIED, mask: None });
            d.flow(Flow::new(TABLE_ARP, prio::ARP_SELF, dad, vec![goto_l2.clone()]));
            d.flow(Flow::new(TABLE_ARP, prio::ARP_SELF, ns().with(OxmField::eth_src(*mac)), vec![goto_l2.clone()]));
            d.flow(Flow::new(
                TABLE_ARP,
                prio::ARP_REPLY,
                ns().with(OxmField::NdOptionsType(ND_OPT_SOURCE_LLADDR)),
                vec![
                    Instruction::ApplyActions(nd_responder_start(*mac, *ip6, routers.contains(ip))),
                    Instruction::GotoTable(TABLE_ND),
                ],
            ));
        }
        if any {
            let na = Match::new()
                .with(in_vpc(vni))
                .with(OxmField::EthType(ETH_TYPE_IPV6))
                .with(OxmField::IpProto(IP_PROTO_ICMPV6))
                .with(OxmField::Icmpv6Type(ICMPV6_NA))
                .with(OxmField::NdOptionsType(ND_OPT_TARGET_LLADDR));
            d.flow(Flow::new(TABLE_ND, prio::ARP_REPLY, na, vec![Instruction::ApplyActions(nd_responder_finish())]));
        }
    }

    // Table 2.
    for (port, mac) in &local {
        d.flow(Flow::new(
            TABLE_L2,
            prio::UNICAST,
            Match::new().with(in_vpc(vni)).with(OxmField::eth_dst(*mac)),
            vec![Instruction::ApplyActions(vec![Action::output(*port)])],
        ));
    }
    if let Some(tunnel) = tunnel {
        for (mac, chassis) in &vpc.fdb {
            let Some(dst) = v4(chassis) else { continue };
            // A local port's MAC wins over a stale remote entry.
            if local.iter().any(|(_, m)| m == mac) {
                continue;
            }
            d.flow(Flow::new(
                TABLE_L2,
                prio::UNICAST,
                Match::new().with(from_local(vni)).with(OxmField::eth_dst(*mac)),
                vec![Instruction::ApplyActions(tunnel_to(vni, dst, tunnel))],
            ));
        }
    }
    let to_locals: Vec<Bucket> = local.iter().map(|(p, _)| Bucket::new(vec![Action::output(*p)])).collect();
    let mut flood = to_locals.clone();
    match &vpc.flood {
        Flood::Headend(chassis) => {
            if let Some(tunnel) = tunnel {
                flood.extend(chassis.iter().filter_map(v4).map(|dst| Bucket::new(tunnel_to(vni, dst, tunnel))));
            }
        }
        Flood::Replicator(_) => {
            if let (Some(dst), Some(tunnel)) = (replicator(vni).as_ref().and_then(v4), tunnel) {
                flood.push(Bucket::new(tunnel_to(vni, dst, tunnel)));
            }
        }
    }
    let (g_local, g_tunnel) = (group_from_local(vni), group_from_tunnel(vni));
    d.groups.insert(g_local, Group { id: g_local, buckets: flood });
    d.groups.insert(g_tunnel, Group { id: g_tunnel, buckets: to_locals });
    for (source, group) in [(from_local(vni), g_local), (from_tunnel(vni), g_tunnel)] {
        let to_group = vec![Instruction::ApplyActions(vec![Action::Group(group)])];
        d.flow(Flow::new(
            TABLE_L2,
            prio::MULTICAST,
            Match::new().with(source.clone()).with(OxmField::EthDst { value: MULTICAST, mask: Some(MULTICAST) }),
            to_group.clone(),
        ));
        d.flow(Flow::new(TABLE_L2, prio::UNKNOWN, Match::new().with(source), to_group));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use vipcast_model::Object;
    use vipcast_model::objects::*;
    use vipcast_model::view::chassis_view;
    use vipcast_model::{Role, State};

    use super::*;

    const VM1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const VM2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const VM3: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
    const VM4: MacAddr = MacAddr([2, 0, 0, 0, 0, 4]);
    const VM5: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn chassis(name: &str, underlay: &str) -> Object {
        Object::Chassis(Chassis {
            name: name.into(),
            underlay_ip: ip(underlay),
            role: Role::Hypervisor,
            dataplane: Dataplane::Ovs,
            liveness: None,
        })
    }

    fn port(name: &str, vpc: &str, chassis: &str, mac: MacAddr, addr: &str) -> Object {
        Object::Port(Port::vm(name, vpc, "s", chassis, mac, ip(addr)))
    }

    /// VPC "a" (VNI 100, VXLAN, head-end, ARP suppression): a1 here, a2 on
    /// hv2, VIP 10.0.0.100 owned by a2. VPC "b" (VNI 200, GRE, replicator):
    /// b1 here, b2 on hv3, with the same addresses as VPC a.
    fn state() -> State {
        let mut s = State::default();
        s.put(chassis("hv1", "172.31.0.1"));
        s.put(chassis("hv2", "172.31.0.2"));
        s.put(chassis("hv3", "172.31.0.3"));
        s.put(Object::Replicator(Replicator { name: "rep1".into(), address: "172.31.1.1:4789".parse().unwrap() }));
        for (name, vni, bum, encap) in
            [("a", 100, BumMode::Headend, Encap::Vxlan), ("b", 200, BumMode::Replicator, Encap::Gre)]
        {
            s.put(Object::Vpc(Vpc { name: name.into(), vni, bum, arp_suppression: true, assist: true, encap }));
            s.put(Object::Subnet(Subnet {
                name: "s".into(),
                vpc: name.into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway: None,
            }));
        }
        s.put(port("a1", "a", "hv1", VM1, "10.0.0.1"));
        s.put(port("a2", "a", "hv2", VM2, "10.0.0.2"));
        s.put(port("b1", "b", "hv1", VM3, "10.0.0.1"));
        s.put(port("b2", "b", "hv3", VM4, "10.0.0.2"));
        s.put(Object::Vip(Vip {
            spec: VipSpec {
                name: "va".into(),
                vpc: "a".into(),
                subnet: "s".into(),
                ip: ip("10.0.0.100"),
                members: vec!["a1".into(), "a2".into()],
            },
            owner: Some(Owner { port: "a2".into(), mac: VM2, chassis: "hv2".into(), generation: 1, since: 0 }),
            recent_moves: vec![],
            split_brain_until: 0,
            ineligible: vec![],
        }));
        s
    }

    fn ports() -> Ports {
        Ports {
            vm: [("a1".to_string(), 10), ("b1".to_string(), 11)].into(),
            vxlan: Some(2),
            gre: Some(1),
            routers: BTreeMap::new(),
        }
    }

    fn rep(_: u32) -> Option<IpAddr> {
        Some(ip("172.31.1.1"))
    }

    fn find(d: &Desired, table: u8, priority: u16, m: &Match) -> Flow {
        d.flows.get(&cookie(table, priority, m)).cloned().unwrap_or_else(|| panic!("no flow {table}/{priority} {m:?}"))
    }

    fn metadata_of(f: &Flow) -> Option<u64> {
        f.match_.fields.iter().find_map(|x| match x {
            OxmField::Metadata { value, .. } => Some(*value & VNI_MASK),
            _ => None,
        })
    }

    #[test]
    fn exact_flows_and_groups() {
        let view = chassis_view(&state(), "hv1").unwrap();
        let d = desired(&view, &ports(), &rep);
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();

        // Classification.
        let f = find(&d, 0, 100, &Match::new().with(OxmField::InPort(10)));
        assert_eq!(
            f.instructions,
            [Instruction::WriteMetadata { metadata: FROM_LOCAL | 100, mask: u64::MAX }, Instruction::GotoTable(1)]
        );
        let f = find(&d, 0, 100, &Match::new().with(OxmField::InPort(2)).with(OxmField::tunnel_id(100)));
        assert_eq!(f.instructions[0], Instruction::WriteMetadata { metadata: 100, mask: u64::MAX });
        // GRE VPC b: from its GRE port only (its replicator's copies too).
        find(&d, 0, 100, &Match::new().with(OxmField::InPort(1)).with(OxmField::tunnel_id(200)));
        assert!(!d.flows.contains_key(&cookie(
            0,
            100,
            &Match::new().with(OxmField::InPort(2)).with(OxmField::tunnel_id(200))
        )));
        assert!(!d.flows.contains_key(&cookie(
            0,
            100,
            &Match::new().with(OxmField::InPort(1)).with(OxmField::tunnel_id(100))
        )));

        // The ARP responder answers the VIP with its owner's MAC.
        let m = Match::new()
            .with(from_local(100))
            .with(OxmField::EthType(ETH_TYPE_ARP))
            .with(OxmField::ArpOp(1))
            .with(OxmField::arp_tpa(v4("10.0.0.100")));
        assert_eq!(
            find(&d, 1, 100, &m).instructions,
            [Instruction::ApplyActions(arp_responder(VM2, v4("10.0.0.100")))]
        );
        // GARP for the VIP from a local port goes to the agent.
        let m = Match::new()
            .with(from_local(100))
            .with(OxmField::EthType(ETH_TYPE_ARP))
            .with(OxmField::arp_spa(v4("10.0.0.100")))
            .with(OxmField::arp_tpa(v4("10.0.0.100")));
        assert_eq!(
            find(&d, 1, 130, &m).instructions,
            [Instruction::ApplyActions(vec![to_controller()]), Instruction::GotoTable(2)]
        );
        // VRRP from either side.
        let m = Match::new().with(in_vpc(200)).with(OxmField::EthType(0x86dd)).with(OxmField::IpProto(112));
        find(&d, 1, 120, &m);

        // Unicast: local port, remote port through VXLAN to hv2, b2 through GRE to hv3.
        let m = Match::new().with(in_vpc(100)).with(OxmField::eth_dst(VM1));
        assert_eq!(find(&d, 2, 100, &m).instructions, [Instruction::ApplyActions(vec![Action::output(10)])]);
        let m = Match::new().with(from_local(100)).with(OxmField::eth_dst(VM2));
        assert_eq!(find(&d, 2, 100, &m).instructions, [Instruction::ApplyActions(tunnel_to(100, v4("172.31.0.2"), 2))]);
        let m = Match::new().with(from_local(200)).with(OxmField::eth_dst(VM4));
        assert_eq!(find(&d, 2, 100, &m).instructions, [Instruction::ApplyActions(tunnel_to(200, v4("172.31.0.3"), 1))]);

        // Flooding: head-end for a, the replicator (over GRE) for b.
        assert_eq!(
            d.groups[&group_from_local(100)].buckets,
            [Bucket::new(vec![Action::output(10)]), Bucket::new(tunnel_to(100, v4("172.31.0.2"), 2))]
        );
        assert_eq!(d.groups[&group_from_tunnel(100)].buckets, [Bucket::new(vec![Action::output(10)])]);
        assert_eq!(
            d.groups[&group_from_local(200)].buckets,
            [Bucket::new(vec![Action::output(11)]), Bucket::new(tunnel_to(200, v4("172.31.1.1"), 1))]
        );
        let bcast =
            |source| Match::new().with(source).with(OxmField::EthDst { value: MULTICAST, mask: Some(MULTICAST) });
        assert_eq!(
            find(&d, 2, 50, &bcast(from_tunnel(100))).instructions,
            [Instruction::ApplyActions(vec![Action::Group(group_from_tunnel(100))])]
        );
        find(&d, 2, 10, &Match::new().with(from_local(200)));

        // No healthy replicator: b's BUM stays local.
        let d2 = desired(&view, &ports(), &|_| None);
        assert_eq!(d2.groups[&group_from_local(200)].buckets, [Bucket::new(vec![Action::output(11)])]);

        // Counts: 3 misses; a: 1+1 classify, 1+1 announcements (GARP, broadcast reply), 2 VRRP, 2x3
        // neighbours (a1, a2, VIP), 1+1 unicast, 2+2 flood = 18; b: 1+1 classify, 2 VRRP, 2x2 neighbours,
        // 1+1 unicast, 4 flood = 14.
        assert_eq!(d.flows.len(), 3 + 18 + 14);
        assert_eq!(d.groups.len(), 4);
        // Every cookie is tagged and unique per (table, priority, match).
        assert!(d.flows.iter().all(|(c, f)| *c & (0xff << 56) == COOKIE_TAG && f.cookie == *c));
    }

    #[test]
    fn vpcs_are_isolated() {
        let view = chassis_view(&state(), "hv1").unwrap();
        let d = desired(&view, &ports(), &rep);
        let a = BTreeSet::from([10u32]);
        for f in d.flows.values() {
            if f.table == 0 {
                // A VM port's metadata is its own VPC's; a tunnel's VNI is that VPC's.
                let meta = f.instructions.iter().find_map(|i| match i {
                    Instruction::WriteMetadata { metadata, .. } => Some(*metadata & VNI_MASK),
                    _ => None,
                });
                let port = f.match_.fields.iter().find_map(|x| match x {
                    OxmField::InPort(p) => Some(*p),
                    _ => None,
                });
                let tun = f.match_.fields.iter().find_map(|x| match x {
                    OxmField::TunnelId { value, .. } => Some(*value),
                    _ => None,
                });
                match (port, tun, meta) {
                    (Some(p), None, Some(m)) => assert_eq!(m, if a.contains(&p) { 100 } else { 200 }, "{f:?}"),
                    (Some(_), Some(t), Some(m)) => assert_eq!(t, m, "{f:?}"),
                    _ => assert!(f.match_.fields.is_empty() && f.instructions.is_empty(), "{f:?}"),
                }
                continue;
            }
            let Some(vni) = metadata_of(f) else {
                assert_eq!(f.priority, prio::MISS, "a flow without a VNI: {f:?}");
                continue;
            };
            // Outputs stay within the VPC: its local port, its tunnel id, its groups.
            let own_port: u32 = if vni == 100 { 10 } else { 11 };
            for i in &f.instructions {
                let Instruction::ApplyActions(actions) = i else { continue };
                for act in actions {
                    match act {
                        Action::Output { port, .. } if *port < 10 || *port == OFPP_CONTROLLER => {}
                        Action::Output { port, .. } if *port == vipcast_openflow::OFPP_IN_PORT => {}
                        Action::Output { port, .. } => assert_eq!(*port, own_port, "{f:?}"),
                        Action::Group(g) => assert_eq!(u64::from(g >> 1), vni, "{f:?}"),
                        Action::SetField(OxmField::TunnelId { value, .. }) => assert_eq!(*value, vni),
                        _ => {}
                    }
                }
            }
        }
        for g in d.groups.values() {
            let vni = g.id >> 1;
            for b in &g.buckets {
                for act in &b.actions {
                    match act {
                        Action::Output { port, .. } if *port >= 10 => {
                            assert_eq!(*port, if vni == 100 { 10 } else { 11 })
                        }
                        Action::SetField(OxmField::TunnelId { value, .. }) => assert_eq!(*value, u64::from(vni)),
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn a_vip_move_changes_only_what_depends_on_it() {
        let mut s = state();
        let before = desired(&chassis_view(&s, "hv1").unwrap(), &ports(), &rep);
        // The VIP moves from a2 (hv2) to a new port a3 on hv2 with its own MAC.
        s.put(port("a3", "a", "hv2", VM5, "10.0.0.3"));
        let with_a3 = desired(&chassis_view(&s, "hv1").unwrap(), &ports(), &rep);
        let mut vip = s.vips["va"].clone();
        vip.spec.members.push("a3".into());
        vip.owner = Some(Owner { port: "a3".into(), mac: VM5, chassis: "hv2".into(), generation: 2, since: 1 });
        s.put(Object::Vip(vip));
        let after = desired(&chassis_view(&s, "hv1").unwrap(), &ports(), &rep);
        assert_eq!(with_a3.groups, after.groups);
        let changed: BTreeSet<u64> = with_a3
            .flows
            .keys()
            .chain(after.flows.keys())
            .filter(|c| with_a3.flows.get(c) != after.flows.get(c))
            .copied()
            .collect();
        let vip = "10.0.0.100".parse::<Ipv4Addr>().unwrap();
        let request = Match::new()
            .with(from_local(100))
            .with(OxmField::EthType(ETH_TYPE_ARP))
            .with(OxmField::ArpOp(1))
            .with(OxmField::arp_tpa(vip));
        let own = |mac| {
            Match::new()
                .with(from_local(100))
                .with(OxmField::eth_src(mac))
                .with(OxmField::EthType(ETH_TYPE_ARP))
                .with(OxmField::ArpOp(1))
                .with(OxmField::arp_tpa(vip))
        };
        // The responder (new MAC), and the "ARP about oneself" flow of the old and the new owner.
        let want = BTreeSet::from([cookie(1, 100, &request), cookie(1, 110, &own(VM2)), cookie(1, 110, &own(VM5))]);
        assert_eq!(changed, want);
        assert_eq!(
            after.flows[&cookie(1, 100, &request)].instructions,
            [Instruction::ApplyActions(arp_responder(VM5, vip))]
        );
        // Nothing of VPC b changed when a3 came.
        assert!(
            before
                .flows
                .values()
                .filter(|f| metadata_of(f) == Some(200))
                .all(|f| with_a3.flows.get(&f.cookie) == Some(f))
        );
    }
}

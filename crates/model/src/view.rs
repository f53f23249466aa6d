//! Views: pure functions of the state computing what one chassis must program
//! and what the replicators need, and which objects each subscriber is sent.
//!
//! A chassis takes part in a VPC when it hosts one of the VPC's ports, or when
//! it is a gateway (gateways route for every VPC).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use vipcast_packet::MacAddr;

use crate::objects::*;
use crate::state::{ObjectKey, State};

/// Where a VPC's broadcast, unknown-unicast and multicast frames go from a chassis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase", tag = "mode", content = "targets")]
pub enum Flood {
    /// To every other chassis of the VPC (their underlay IPs).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    Headend(Vec<IpAddr>),
    /// To one of these replicators (the agent picks per VNI among the healthy).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<(String, String)>))]
    Replicator(Vec<(String, SocketAddr)>),
}

/// A VIP as a chassis programs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VipEntry {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "192.168.10.100"))]
    pub ip: IpAddr,
    /// Current owner: (MAC, chassis, generation), if any.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<(String, String, u64)>))]
    pub owner: Option<(MacAddr, String, u64)>,
    /// Local member ports (where the agent sniffs and re-announces).
    pub local_members: Vec<String>,
}

/// What a chassis programs for one VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpcView {
    pub name: String,
    pub vni: u32,
    pub encap: Encap,
    pub arp_suppression: bool,
    pub subnets: Vec<Subnet>,
    /// Ports on this chassis.
    pub local_ports: Vec<Port>,
    /// Remote MAC -> underlay IP of the chassis it is behind (static FDB).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub fdb: BTreeMap<MacAddr, IpAddr>,
    /// IP -> MAC for every port and VIP owner of the VPC (neighbour entries,
    /// answered locally under ARP suppression).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub neighbours: BTreeMap<IpAddr, MacAddr>,
    pub flood: Flood,
    pub vips: Vec<VipEntry>,
    /// The VPC's router MAC ([`gateway_mac`]) when a gateway chassis routes
    /// it: what the subnets' gateway addresses resolve to.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub gateway_mac: Option<MacAddr>,
}

/// The router MAC of VPC `vni`: `06:76:63` ("vc", locally administered
/// unicast) followed by the VNI. Every gateway chassis gives its bridge of the
/// VPC this MAC (an anycast gateway), and every chassis resolves the subnets'
/// gateway addresses to it, so ARP suppression answers for the gateway too.
pub fn gateway_mac(vni: u32) -> MacAddr {
    let [_, a, b, c] = vni.to_be_bytes();
    MacAddr([0x06, 0x76, 0x63, a, b, c])
}

/// What one chassis programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChassisView {
    pub chassis: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "172.31.0.1"))]
    pub underlay_ip: IpAddr,
    pub role: Role,
    pub vpcs: BTreeMap<String, VpcView>,
}

/// Chassis taking part in `vpc`: those of its ports, and the gateways
/// that can carry it (only Open vSwitch carries GRE).
pub fn participants(state: &State, vpc: &str) -> BTreeSet<String> {
    let idx = state.index();
    let mut out: BTreeSet<String> =
        idx.vpc_chassis(vpc).keys().filter(|c| state.chassis.contains_key(*c)).cloned().collect();
    let v = state.vpcs.get(vpc);
    out.extend(
        idx.gateways().iter().filter(|g| v.zip(state.chassis.get(*g)).is_none_or(|(v, c)| carries(v, c))).cloned(),
    );
    out
}

/// Whether chassis `c` can carry `vpc`'s tunnels.
fn carries(vpc: &Vpc, c: &Chassis) -> bool {
    vpc.encap != Encap::Gre || c.dataplane == Dataplane::Ovs
}

/// Whether `chassis` (registered) takes part in `vpc`: one of
/// [`participants`], without building the set.
pub fn takes_part(state: &State, chassis: &str, vpc: &str) -> bool {
    state.chassis.contains_key(chassis)
        && (state.index().gateways().contains(chassis) || state.index().vpc_chassis(vpc).contains_key(chassis))
}

/// VPCs `chassis` takes part in.
pub fn participation(state: &State, chassis: &str) -> BTreeSet<String> {
    match state.chassis.get(chassis) {
        Some(c) if c.role == Role::Gateway => state.vpcs.keys().cloned().collect(),
        Some(_) => state.index().chassis_vpcs(chassis).keys().cloned().collect(),
        None => BTreeSet::new(),
    }
}

/// What `chassis` must program; `None` if it is not registered.
pub fn chassis_view(state: &State, chassis: &str) -> Option<ChassisView> {
    let me = state.chassis.get(chassis)?;
    let mut vpcs = BTreeMap::new();
    for name in participation(state, chassis) {
        let Some(vpc) = state.vpcs.get(&name) else { continue };
        let underlay = |c: &str| state.chassis.get(c).map(|c| c.underlay_ip);
        let ports: Vec<&Port> = state.vpc_ports(&name).collect();
        let mut fdb = BTreeMap::new();
        let mut neighbours = BTreeMap::new();
        for p in &ports {
            neighbours.extend(p.addresses().map(|a| (a, p.mac)));
            if p.chassis != chassis
                && let Some(ip) = underlay(&p.chassis)
            {
                fdb.insert(p.mac, ip);
            }
        }
        let mut vips = Vec::new();
        for v in state.vpc_vips(&name) {
            if let Some(o) = &v.owner {
                neighbours.insert(v.spec.ip, o.mac);
                if o.chassis != chassis
                    && let Some(ip) = underlay(&o.chassis)
                {
                    fdb.insert(o.mac, ip);
                }
            }
            let local_members = v
                .spec
                .members
                .iter()
                .filter(|m| state.ports.get(*m).is_some_and(|p| p.chassis == chassis))
                .cloned()
                .collect();
            vips.push(VipEntry {
                name: v.spec.name.clone(),
                ip: v.spec.ip,
                owner: v.owner.as_ref().map(|o| (o.mac, o.chassis.clone(), o.generation)),
                local_members,
            });
        }
        // The anycast gateway: subnet gateway addresses resolve to the router
        // MAC, which lives behind the first gateway chassis (for the others).
        let gateways: Vec<&Chassis> =
            state.index().gateways().iter().filter_map(|g| state.chassis.get(g)).filter(|c| carries(vpc, c)).collect();
        let gateway_mac = (!gateways.is_empty()).then(|| gateway_mac(vpc.vni));
        if let Some(gmac) = gateway_mac {
            for s in state.vpc_subnets(&name) {
                if let Some(g) = s.gateway {
                    neighbours.insert(g, gmac);
                }
            }
            if me.role != Role::Gateway
                && let Some(first) = gateways.first()
            {
                fdb.insert(gmac, first.underlay_ip);
            }
        }
        let flood = match vpc.bum {
            BumMode::Headend => Flood::Headend(
                participants(state, &name)
                    .iter()
                    .filter(|c| c.as_str() != chassis)
                    .filter_map(|c| underlay(c))
                    .collect(),
            ),
            BumMode::Replicator => {
                Flood::Replicator(state.replicators.values().map(|r| (r.name.clone(), r.address)).collect())
            }
        };
        vpcs.insert(
            name.clone(),
            VpcView {
                name: name.clone(),
                vni: vpc.vni,
                encap: vpc.encap,
                arp_suppression: vpc.arp_suppression,
                subnets: state.vpc_subnets(&name).cloned().collect(),
                local_ports: ports.iter().filter(|p| p.chassis == chassis).map(|p| (*p).clone()).collect(),
                fdb,
                neighbours,
                flood,
                vips,
                gateway_mac,
            },
        );
    }
    Some(ChassisView { chassis: chassis.to_string(), underlay_ip: me.underlay_ip, role: me.role, vpcs })
}

/// One VNI as the replicators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VniEntry {
    pub vpc: String,
    /// How its chassis encapsulate (VXLAN datagrams or GRE packets).
    #[serde(default)]
    pub encap: Encap,
    /// Underlay IPs of the chassis taking part.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub members: Vec<IpAddr>,
    /// The VPC's VIPs (the replicator sniffs announcements of these).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub vips: Vec<IpAddr>,
}

/// What the replicators need: VNI -> members and VIPs, for VPCs in replicator mode.
pub fn replicator_view(state: &State) -> BTreeMap<u32, VniEntry> {
    state.vpcs.values().filter_map(|v| replicator_entry(state, v)).collect()
}

/// One VPC's part of [`replicator_view`]: `None` unless it is in replicator mode.
pub fn replicator_entry(state: &State, v: &Vpc) -> Option<(u32, VniEntry)> {
    if v.bum != BumMode::Replicator {
        return None;
    }
    let members =
        participants(state, &v.name).iter().filter_map(|c| state.chassis.get(c).map(|c| c.underlay_ip)).collect();
    let vips = state.vpc_vips(&v.name).map(|x| x.spec.ip).collect();
    Some((v.vni, VniEntry { vpc: v.name.clone(), encap: v.encap, members, vips }))
}

/// What may differ in the replicators' view between two states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicatorChanges {
    /// VPCs whose [`replicator_entry`] may differ (by name, in either
    /// state); `None`: any may (a gateway changed: gateways take part in
    /// every VPC).
    pub vpcs: Option<BTreeSet<String>>,
    /// Whether the registered chassis' underlay IPs may differ.
    pub chassis: bool,
}

/// What [`replicator_view`] of `new` may change from that of `old`, found
/// from the objects that differ: cheap for two states one delta apart
/// (their maps share structure, and a diff skips what is shared). A VIP
/// changing owner, or a chassis its liveness, changes nothing here.
pub fn replicator_changes(old: &State, new: &State) -> ReplicatorChanges {
    use imbl::ordmap::DiffItem;
    /// The old and new values of an entry that differs.
    fn sides<'a, K, V>(d: DiffItem<'a, 'a, K, V>) -> (Option<&'a V>, Option<&'a V>) {
        match d {
            DiffItem::Add(_, v) => (None, Some(v)),
            DiffItem::Update { old: (_, o), new: (_, n) } => (Some(o), Some(n)),
            DiffItem::Remove(_, v) => (Some(v), None),
        }
    }
    let mut vpcs = BTreeSet::new();
    let mut chassis = false;
    for d in old.chassis.diff(&new.chassis) {
        let (o, n) = sides(d);
        let key = |c: &Chassis| (c.underlay_ip, c.role);
        if o.map(key) == n.map(key) {
            continue;
        }
        chassis = true;
        if o.into_iter().chain(n).any(|c| c.role == Role::Gateway) {
            return ReplicatorChanges { vpcs: None, chassis };
        }
        for (c, s) in o.iter().map(|c| (c, old)).chain(n.iter().map(|c| (c, new))) {
            vpcs.extend(s.index().chassis_vpcs(&c.name).keys().cloned());
        }
    }
    for d in old.vpcs.diff(&new.vpcs) {
        let (o, n) = sides(d);
        vpcs.extend(o.into_iter().chain(n).map(|v| v.name.clone()));
    }
    for d in old.ports.diff(&new.ports) {
        let (o, n) = sides(d);
        let key = |p: &Port| (p.vpc.clone(), p.chassis.clone());
        if o.map(key) != n.map(key) {
            vpcs.extend(o.into_iter().chain(n).map(|p| p.vpc.clone()));
        }
    }
    for d in old.vips.diff(&new.vips) {
        let (o, n) = sides(d);
        let key = |v: &Vip| (v.spec.vpc.clone(), v.spec.ip);
        if o.map(key) != n.map(key) {
            vpcs.extend(o.into_iter().chain(n).map(|v| v.spec.vpc.clone()));
        }
    }
    ReplicatorChanges { vpcs: Some(vpcs), chassis }
}

/// Who a watch stream is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscriber {
    Chassis(String),
    Replicator,
}

/// The objects `sub` is sent: for a chassis, its own record, every
/// replicator, and for each VPC it takes part in the VPC, its subnets, ports
/// and VIPs and the chassis taking part; for replicators, everything but
/// subnets and history.
pub fn objects_for(state: &State, sub: &Subscriber) -> BTreeSet<ObjectKey> {
    let mut out = BTreeSet::new();
    out.extend(state.replicators.keys().map(|n| ObjectKey::Replicator(n.clone())));
    match sub {
        Subscriber::Replicator => {
            out.extend(state.vpcs.keys().map(|n| ObjectKey::Vpc(n.clone())));
            out.extend(state.chassis.keys().map(|n| ObjectKey::Chassis(n.clone())));
            out.extend(state.ports.keys().map(|n| ObjectKey::Port(n.clone())));
            out.extend(state.vips.keys().map(|n| ObjectKey::Vip(n.clone())));
        }
        Subscriber::Chassis(me) => {
            if state.chassis.contains_key(me) {
                out.insert(ObjectKey::Chassis(me.clone()));
            }
            for vpc in participation(state, me) {
                out.insert(ObjectKey::Vpc(vpc.clone()));
                out.extend(state.vpc_subnets(&vpc).map(|s| ObjectKey::Subnet(vpc.clone(), s.name.clone())));
                out.extend(state.index().vpc_ports(&vpc).iter().map(|p| ObjectKey::Port(p.clone())));
                out.extend(state.index().vpc_vips(&vpc).iter().map(|v| ObjectKey::Vip(v.clone())));
                out.extend(participants(state, &vpc).into_iter().map(ObjectKey::Chassis));
            }
        }
    }
    out
}

/// Whether `key` is sent to `sub`, given the VPCs `sub` takes part in (as
/// computed by [`participation`]). Cheaper than [`objects_for`] when the
/// participation did not change.
pub fn concerns(state: &State, sub: &Subscriber, vpcs: &BTreeSet<String>, key: &ObjectKey) -> bool {
    match (sub, key) {
        (_, ObjectKey::History(..) | ObjectKey::Router(..) | ObjectKey::Arbitration(_)) => false,
        (_, ObjectKey::Replicator(_)) => true,
        (Subscriber::Replicator, ObjectKey::Subnet(..)) => false,
        (Subscriber::Replicator, _) => true,
        (Subscriber::Chassis(_), ObjectKey::Vpc(v) | ObjectKey::Subnet(v, _)) => vpcs.contains(v),
        (Subscriber::Chassis(_), ObjectKey::Port(p)) => state.ports.get(p).is_some_and(|p| vpcs.contains(&p.vpc)),
        (Subscriber::Chassis(_), ObjectKey::Vip(v)) => state.vips.get(v).is_some_and(|v| vpcs.contains(&v.spec.vpc)),
        (Subscriber::Chassis(me), ObjectKey::Chassis(c)) => c == me || vpcs.iter().any(|v| takes_part(state, c, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Object;

    mod replicator_changes_props {
        use proptest::prelude::*;

        use super::*;
        use crate::index::tests::{Op, apply, op};

        proptest! {
            /// Whatever changes between two states (the second the first
            /// with more changes applied, sharing its structure as a
            /// delta's state does), every VPC [`replicator_changes`] leaves
            /// out has the same [`replicator_entry`], and the registered
            /// underlay IPs are the same unless it says otherwise.
            #[test]
            fn untouched_vpcs_keep_their_entries(
                before in proptest::collection::vec(op(), 0..60),
                after in proptest::collection::vec(op(), 0..6),
            ) {
                let mut old = State::default();
                before.iter().for_each(|o: &Op| apply(&mut old, o));
                let mut new = old.clone();
                after.iter().for_each(|o| apply(&mut new, o));
                let ch = replicator_changes(&old, &new);
                let ips = |s: &State| s.chassis.values().map(|c| c.underlay_ip).collect::<BTreeSet<_>>();
                if !ch.chassis {
                    prop_assert_eq!(ips(&old), ips(&new));
                }
                let Some(touched) = ch.vpcs else { return Ok(()) };
                let names: BTreeSet<String> = old.vpcs.keys().chain(new.vpcs.keys()).cloned().collect();
                for name in names.difference(&touched) {
                    let entry = |s: &State| s.vpcs.get(name).and_then(|v| replicator_entry(s, v));
                    prop_assert_eq!(entry(&old), entry(&new), "VPC {} changed but was not named", name);
                }
                if old == new {
                    prop_assert_eq!(touched.len(), 0);
                }
            }
        }
    }

    fn state() -> State {
        let mut s = crate::state::tests::sample();
        s.put(Object::Replicator(Replicator { name: "rep1".into(), address: "172.31.1.1:4789".parse().unwrap() }));
        s.put(Object::Vpc(Vpc {
            name: "dev".into(),
            vni: 200,
            bum: BumMode::Headend,
            arp_suppression: false,
            assist: true,
            encap: Encap::Vxlan,
        }));
        s
    }

    #[test]
    fn chassis_view_of_a_member() {
        let mut s = state();
        let v = chassis_view(&s, "hv1").unwrap();
        assert_eq!(v.vpcs.keys().collect::<Vec<_>>(), ["prod"]);
        let prod = &v.vpcs["prod"];
        assert_eq!(prod.local_ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["pay1"]);
        assert_eq!(prod.fdb.len(), 2); // pay2 on hv2, client on hv3
        assert_eq!(prod.neighbours.len(), 3); // no VIP owner yet
        assert!(matches!(&prod.flood, Flood::Replicator(r) if r.len() == 1));
        assert_eq!(prod.vips[0].local_members, ["pay1"]);

        // The VIP moves to pay2 on hv2: hv1 answers the VIP with pay2's MAC.
        let mut vip = s.vips["pay-vip"].clone();
        vip.owner = Some(Owner {
            port: "pay2".into(),
            mac: s.ports["pay2"].mac,
            chassis: "hv2".into(),
            generation: 1,
            since: 0,
        });
        s.put(Object::Vip(vip));
        let prod = chassis_view(&s, "hv1").unwrap().vpcs.remove("prod").unwrap();
        assert_eq!(prod.neighbours[&"192.168.10.100".parse::<IpAddr>().unwrap()], s.ports["pay2"].mac);

        // Head-end: the flood list is every other participant.
        let mut vpc = s.vpcs["prod"].clone();
        vpc.bum = BumMode::Headend;
        s.put(Object::Vpc(vpc));
        let prod = chassis_view(&s, "hv1").unwrap().vpcs.remove("prod").unwrap();
        assert_eq!(prod.flood, Flood::Headend(vec!["172.31.0.2".parse().unwrap(), "172.31.0.3".parse().unwrap()]));
        assert!(chassis_view(&s, "ghost").is_none());
    }

    #[test]
    fn gateways_take_part_everywhere() {
        let mut s = state();
        s.put(Object::Chassis(Chassis {
            name: "gw1".into(),
            underlay_ip: "172.31.0.9".parse().unwrap(),
            role: Role::Gateway,
            dataplane: Dataplane::Kernel,
            liveness: None,
        }));
        assert_eq!(participation(&s, "gw1").len(), 2);
        assert!(participants(&s, "prod").contains("gw1"));
        // Subnet gateways resolve to the anycast router MAC, behind gw1.
        let prod = chassis_view(&s, "hv1").unwrap().vpcs.remove("prod").unwrap();
        let gw_ip: IpAddr = "192.168.10.1".parse().unwrap();
        assert_eq!(prod.neighbours[&gw_ip], gateway_mac(100));
        assert_eq!(prod.fdb[&gateway_mac(100)], "172.31.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(gateway_mac(100).to_string(), "06:76:63:00:00:64");
        let on_gw = chassis_view(&s, "gw1").unwrap().vpcs.remove("prod").unwrap();
        assert!(!on_gw.fdb.contains_key(&gateway_mac(100)));
        let rv = replicator_view(&s);
        assert_eq!(rv[&100].members.len(), 4);
        assert_eq!(rv[&100].vips, ["192.168.10.100".parse::<IpAddr>().unwrap()]);
        assert!(!rv.contains_key(&200)); // head-end VPCs need no replicator
    }

    #[test]
    fn concerns_agrees_with_objects_for() {
        let s = state();
        for sub in [Subscriber::Chassis("hv1".into()), Subscriber::Chassis("hv3".into()), Subscriber::Replicator] {
            let all = objects_for(&s, &sub);
            let vpcs = match &sub {
                Subscriber::Chassis(c) => participation(&s, c),
                Subscriber::Replicator => BTreeSet::new(),
            };
            let keys = s
                .vpcs
                .keys()
                .map(|n| ObjectKey::Vpc(n.clone()))
                .chain(s.subnets.keys().map(|(v, n)| ObjectKey::Subnet(v.clone(), n.clone())))
                .chain(s.chassis.keys().map(|n| ObjectKey::Chassis(n.clone())))
                .chain(s.ports.keys().map(|n| ObjectKey::Port(n.clone())))
                .chain(s.vips.keys().map(|n| ObjectKey::Vip(n.clone())))
                .chain(s.replicators.keys().map(|n| ObjectKey::Replicator(n.clone())));
            for k in keys {
                assert_eq!(concerns(&s, &sub, &vpcs, &k), all.contains(&k), "{sub:?} {k:?}");
            }
        }
    }
}

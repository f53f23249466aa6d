//! Secondary indexes of a [`State`](crate::State), kept in step by its `put`
//! and `delete`.
//!
//! A region holds tens of thousands of ports; what one chassis or one VPC
//! needs must be found without walking all of them. The indexes are
//! persistent maps like the state's own, so a cloned state shares them and
//! one put or delete costs O(log n):
//!
//! ```text
//!  port p {vpc V, chassis C} ─► vpc_ports[V] ∋ p
//!                              chassis_ports[C] ∋ p
//!                              vpc_chassis[V][C] += 1   (participants of V)
//!                              chassis_vpcs[C][V] += 1  (participation of C)
//!  vip v {vpc V}             ─► vpc_vips[V] ∋ v
//!  chassis C {role gateway}  ─► gateways ∋ C
//! ```

use imbl::{OrdMap, OrdSet};

use crate::objects::{Chassis, Port, Role, Vip};

/// What the state's maps say, indexed the ways views and validation ask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    vpc_ports: OrdMap<String, OrdSet<String>>,
    vpc_vips: OrdMap<String, OrdSet<String>>,
    chassis_ports: OrdMap<String, OrdSet<String>>,
    /// vpc -> chassis -> how many of the VPC's ports it hosts.
    vpc_chassis: OrdMap<String, OrdMap<String, u32>>,
    /// chassis -> vpc -> how many of the VPC's ports it hosts.
    chassis_vpcs: OrdMap<String, OrdMap<String, u32>>,
    gateways: OrdSet<String>,
}

fn count(map: &mut OrdMap<String, OrdMap<String, u32>>, outer: &str, inner: &str, add: bool) {
    let entry = map.entry(outer.to_string()).or_default();
    if add {
        *entry.entry(inner.to_string()).or_insert(0) += 1;
    } else if let Some(n) = entry.get_mut(inner) {
        *n -= 1;
        if *n == 0 {
            entry.remove(inner);
        }
    }
    if entry.is_empty() {
        map.remove(outer);
    }
}

fn member(map: &mut OrdMap<String, OrdSet<String>>, outer: &str, name: &str, add: bool) {
    let entry = map.entry(outer.to_string()).or_default();
    if add {
        entry.insert(name.to_string());
    } else {
        entry.remove(name);
    }
    if entry.is_empty() {
        map.remove(outer);
    }
}

static EMPTY_SET: std::sync::LazyLock<OrdSet<String>> = std::sync::LazyLock::new(OrdSet::new);
static EMPTY_COUNTS: std::sync::LazyLock<OrdMap<String, u32>> = std::sync::LazyLock::new(OrdMap::new);

impl Index {
    pub(crate) fn port(&mut self, p: &Port, add: bool) {
        member(&mut self.vpc_ports, &p.vpc, &p.name, add);
        member(&mut self.chassis_ports, &p.chassis, &p.name, add);
        count(&mut self.vpc_chassis, &p.vpc, &p.chassis, add);
        count(&mut self.chassis_vpcs, &p.chassis, &p.vpc, add);
    }

    pub(crate) fn vip(&mut self, v: &Vip, add: bool) {
        member(&mut self.vpc_vips, &v.spec.vpc, &v.spec.name, add);
    }

    pub(crate) fn chassis(&mut self, c: &Chassis, add: bool) {
        if add && c.role == Role::Gateway {
            self.gateways.insert(c.name.clone());
        } else {
            self.gateways.remove(&c.name);
        }
    }

    /// Names of the ports of `vpc`.
    pub fn vpc_ports(&self, vpc: &str) -> &OrdSet<String> {
        self.vpc_ports.get(vpc).unwrap_or(&EMPTY_SET)
    }

    /// Names of the VIPs of `vpc`.
    pub fn vpc_vips(&self, vpc: &str) -> &OrdSet<String> {
        self.vpc_vips.get(vpc).unwrap_or(&EMPTY_SET)
    }

    /// Names of the ports bound to `chassis`.
    pub fn chassis_ports(&self, chassis: &str) -> &OrdSet<String> {
        self.chassis_ports.get(chassis).unwrap_or(&EMPTY_SET)
    }

    /// Chassis hosting ports of `vpc` (registered or not), with how many.
    pub fn vpc_chassis(&self, vpc: &str) -> &OrdMap<String, u32> {
        self.vpc_chassis.get(vpc).unwrap_or(&EMPTY_COUNTS)
    }

    /// VPCs with ports on `chassis`, with how many.
    pub fn chassis_vpcs(&self, chassis: &str) -> &OrdMap<String, u32> {
        self.chassis_vpcs.get(chassis).unwrap_or(&EMPTY_COUNTS)
    }

    /// Registered gateway chassis.
    pub fn gateways(&self) -> &OrdSet<String> {
        &self.gateways
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use crate::objects::*;
    use crate::{Object, ObjectKey, State};

    /// A change to a small region: 4 VPCs, 5 chassis, 12 ports, 4 VIPs.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Port { name: u8, vpc: u8, chassis: u8 },
        DeletePort(u8),
        Vip { name: u8, vpc: u8, ip: u8, owner: bool },
        DeleteVip(u8),
        Chassis { name: u8, gateway: bool, ip: u8, alive: bool },
        DeleteChassis(u8),
        Vpc { name: u8, vni: u8, replicator: bool },
        DeleteVpc(u8),
    }

    pub(crate) fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12u8, 0..4u8, 0..5u8).prop_map(|(name, vpc, chassis)| Op::Port { name, vpc, chassis }),
            2 => (0..12u8).prop_map(Op::DeletePort),
            1 => (0..4u8, 0..4u8, 0..3u8, any::<bool>()).prop_map(|(name, vpc, ip, owner)| Op::Vip { name, vpc, ip, owner }),
            1 => (0..4u8).prop_map(Op::DeleteVip),
            1 => (0..5u8, any::<bool>(), 0..2u8, any::<bool>())
                .prop_map(|(name, gateway, ip, alive)| Op::Chassis { name, gateway, ip, alive }),
            1 => (0..5u8).prop_map(Op::DeleteChassis),
            1 => (0..4u8, 0..3u8, any::<bool>()).prop_map(|(name, vni, replicator)| Op::Vpc { name, vni, replicator }),
            1 => (0..4u8).prop_map(Op::DeleteVpc),
        ]
    }

    pub(crate) fn apply(s: &mut State, op: &Op) {
        match *op {
            Op::Port { name, vpc, chassis } => s.put(Object::Port(Port::vm(
                format!("p{name}"),
                format!("v{vpc}"),
                "net",
                format!("hv{chassis}"),
                vipcast_packet::MacAddr([2, 0, 0, 0, 0, name]),
                format!("10.0.0.{name}").parse().unwrap(),
            ))),
            Op::DeletePort(n) => drop(s.delete(&ObjectKey::Port(format!("p{n}")))),
            Op::Vip { name, vpc, ip, owner } => {
                let mut v = Vip::new(VipSpec {
                    name: format!("vip{name}"),
                    vpc: format!("v{vpc}"),
                    subnet: "net".into(),
                    ip: format!("10.0.1.{}", name * 4 + ip).parse().unwrap(),
                    members: vec![],
                });
                v.owner = owner.then(|| Owner {
                    port: "p0".into(),
                    mac: vipcast_packet::MacAddr([2, 0, 0, 0, 0, 0]),
                    chassis: "hv0".into(),
                    generation: u64::from(ip) + 1,
                    since: 0,
                });
                s.put(Object::Vip(v))
            }
            Op::DeleteVip(n) => drop(s.delete(&ObjectKey::Vip(format!("vip{n}")))),
            Op::Chassis { name, gateway, ip, alive } => s.put(Object::Chassis(Chassis {
                name: format!("hv{name}"),
                underlay_ip: format!("172.31.{ip}.{}", name + 1).parse().unwrap(),
                role: if gateway { Role::Gateway } else { Role::Hypervisor },
                dataplane: Dataplane::Kernel,
                liveness: Some(Liveness { alive, since_ms: 0, last_heard_ms: 0 }),
            })),
            Op::DeleteChassis(n) => drop(s.delete(&ObjectKey::Chassis(format!("hv{n}")))),
            Op::Vpc { name, vni, replicator } => s.put(Object::Vpc(Vpc {
                name: format!("v{name}"),
                vni: 100 + u32::from(vni),
                bum: if replicator { BumMode::Replicator } else { BumMode::Headend },
                arp_suppression: true,
                assist: false,
                encap: Encap::Vxlan,
            })),
            Op::DeleteVpc(n) => drop(s.delete(&ObjectKey::Vpc(format!("v{n}")))),
        }
    }

    type Counts = BTreeMap<String, BTreeMap<String, u32>>;

    /// The indexes worked out the slow way, from the maps alone.
    fn brute(s: &State) -> (Counts, Counts, BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
        let (mut by_vpc, mut by_chassis) = (Counts::new(), Counts::new());
        let mut vips: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in s.ports.values() {
            *by_vpc.entry(p.vpc.clone()).or_default().entry(p.chassis.clone()).or_default() += 1;
            *by_chassis.entry(p.chassis.clone()).or_default().entry(p.vpc.clone()).or_default() += 1;
        }
        for v in s.vips.values() {
            vips.entry(v.spec.vpc.clone()).or_default().insert(v.spec.name.clone());
        }
        let gateways = s.chassis.values().filter(|c| c.role == Role::Gateway).map(|c| c.name.clone()).collect();
        (by_vpc, by_chassis, vips, gateways)
    }

    proptest! {
        /// After any sequence of puts (new or replacing, moving a port
        /// between VPCs and chassis) and deletes, every index says what the
        /// maps say.
        #[test]
        fn indexes_follow_puts_and_deletes(ops in proptest::collection::vec(op(), 0..80)) {
            let mut s = State::default();
            for op in &ops {
                apply(&mut s, op);
            }
            let (by_vpc, by_chassis, vips, gateways) = brute(&s);
            let idx = s.index();
            for v in 0..4 {
                let vpc = format!("v{v}");
                let want: BTreeMap<String, u32> = by_vpc.get(&vpc).cloned().unwrap_or_default();
                prop_assert_eq!(idx.vpc_chassis(&vpc).clone().into_iter().collect::<BTreeMap<_, _>>(), want);
                let ports: BTreeSet<String> = s.ports.values().filter(|p| p.vpc == vpc).map(|p| p.name.clone()).collect();
                prop_assert_eq!(idx.vpc_ports(&vpc).iter().cloned().collect::<BTreeSet<_>>(), ports);
                prop_assert_eq!(
                    idx.vpc_vips(&vpc).iter().cloned().collect::<BTreeSet<_>>(),
                    vips.get(&vpc).cloned().unwrap_or_default()
                );
            }
            for c in 0..5 {
                let ch = format!("hv{c}");
                let want: BTreeMap<String, u32> = by_chassis.get(&ch).cloned().unwrap_or_default();
                prop_assert_eq!(idx.chassis_vpcs(&ch).clone().into_iter().collect::<BTreeMap<_, _>>(), want);
                let ports: BTreeSet<String> =
                    s.ports.values().filter(|p| p.chassis == ch).map(|p| p.name.clone()).collect();
                prop_assert_eq!(idx.chassis_ports(&ch).iter().cloned().collect::<BTreeSet<_>>(), ports);
            }
            prop_assert_eq!(idx.gateways().iter().cloned().collect::<BTreeSet<_>>(), gateways);
        }
    }
}

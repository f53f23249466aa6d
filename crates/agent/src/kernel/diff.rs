//! What the kernel holds ([`Observed`], plain values read in one pass) and
//! the operations that bring it in line with a [`Plan`] ([`diff`]): a pure
//! function, testable without root or netlink.
//!
//! The operations come out in the order they must be applied. Per VPC, in
//! VNI order: the bridge, the VXLAN device and its enslaving, the device's
//! FDB, its neighbours, then (gateways) the bridge's addresses and
//! neighbours; after every VPC, the VM ports (attached or detached), and
//! last the devices of VPCs no longer here. The order matters because the
//! kernel itself changes tables as links change:
//! - a deleted device takes its FDB, neighbours and addresses with it, so a
//!   device created or recreated here starts empty;
//! - a bridge flushes its neighbour table (permanent entries included) when
//!   its MAC changes: set explicitly, or following its ports when it was
//!   never set; and when its last IPv4 (or IPv6) address goes.
//!
//! Where such a flush may have happened before a bridge's neighbours are
//! made right, and whether it did cannot be known beforehand (a port's MAC,
//! an address cascade), the op is [`KernelOp::SyncNeigh`]: read that
//! bridge's neighbours again when applying, as a reconcile that read every
//! table just before writing it would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use vipcast_packet::MacAddr;

use crate::plan::{self, Fdb, PORT_ALIAS_PREFIX, Plan, VXLAN_PORT, VpcPlan};

/// The kind of a link, as far as reconciling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bridge,
    Vxlan,
    Other,
}

/// A VXLAN device's settings, as read (absent attributes are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanConf {
    pub id: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
    pub proxy: Option<bool>,
}

/// One link as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<Kind>,
    /// The bridge (or other controller) it is enslaved to.
    pub master: Option<u32>,
    pub alias: Option<String>,
    pub up: bool,
    pub mac: Option<MacAddr>,
    pub vxlan: VxlanConf,
}

impl Link {
    /// A link with only a name and an index (the rest absent or down).
    pub fn new(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.to_string(),
            kind: None,
            master: None,
            alias: None,
            up: false,
            mac: None,
            vxlan: VxlanConf::default(),
        }
    }

    /// The port name of a VM port (its alias is `vipcast-port:<port>`).
    pub fn port(&self) -> Option<&str> {
        self.alias.as_deref()?.strip_prefix(PORT_ALIAS_PREFIX)
    }

    /// Whether this is a VXLAN device configured as `v` needs.
    pub fn vxlan_matches(&self, v: &VpcPlan, local: Option<IpAddr>) -> bool {
        let x = &self.vxlan;
        self.kind == Some(Kind::Vxlan)
            && x.id == Some(v.vni)
            && x.local == local
            && x.port == Some(VXLAN_PORT)
            && x.learning == Some(false)
            && x.proxy.unwrap_or(false) == v.proxy
    }
}

/// What the kernel holds that reconciling looks at, read in one pass: every
/// link; and for the devices of the plan's VPCs, their own FDB entries
/// (`self`, not the bridge's), permanent neighbour entries and addresses
/// (link-local IPv6 left out). Tables are keyed by interface index.
#[derive(Debug, Default)]
pub struct Observed {
    /// In the kernel's order.
    pub links: Vec<Link>,
    pub fdb: BTreeMap<u32, BTreeSet<Fdb>>,
    pub neigh: BTreeMap<u32, BTreeMap<IpAddr, MacAddr>>,
    /// Read only when a VPC needs bridge addresses (gateways).
    pub addrs: BTreeMap<u32, BTreeSet<IpNet>>,
    /// The messages read, to delete exactly what was read.
    pub(super) raw: super::Raw,
}

/// A device an operation acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dev {
    /// One that was observed, by interface index.
    Index(u32),
    /// One created by an earlier operation of the same apply, by name.
    New(String),
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// `ip link del`
    DelLink { index: u32, name: String },
    /// `ip link add NAME [address MAC] up type bridge`, and IPv6 off on it.
    CreateBridge { name: String, mac: Option<MacAddr> },
    /// `ip link set INDEX up [address MAC]`
    SetBridge { index: u32, name: String, mac: Option<MacAddr> },
    /// `ip link add NAME type vxlan id VNI dstport 4789 nolearning [proxy] [local IP]`
    CreateVxlan { name: String, vni: u32, local: Option<IpAddr>, proxy: bool },
    /// A VXLAN device whose settings differ, deleted and created again: the
    /// proxy flag (and the rest) cannot change on a live device.
    RecreateVxlan { index: u32, name: String, vni: u32, local: Option<IpAddr>, proxy: bool },
    /// `ip link set DEV master BRIDGE up`
    SetMaster { dev: Dev, name: String, bridge: Dev },
    /// `ip link set INDEX nomaster`
    Detach { index: u32, name: String },
    /// `ip link add NAME link INTERFACE type vlan id VID` (a physical
    /// port's VLAN), with `alias`.
    CreateVlan { name: String, interface: String, vid: u16, alias: String },
    /// `ip link set INDEX alias ALIAS` (a physical port's device).
    SetAlias { index: u32, name: String, alias: String },
    /// `bridge fdb replace MAC dev DEV master static`: a physical port's
    /// host behind its device from the moment it is attached. (While the
    /// other gateway served it, this bridge learned the MAC behind the
    /// VXLAN device, and would drop frames for it until the host spoke.)
    PinMac { dev: Dev, name: String, mac: MacAddr },
    /// `bridge fdb append MAC dev DEV dst IP [port P] self permanent`
    AddFdb { dev: Dev, fdb: Fdb },
    /// Deletes an observed FDB entry.
    DelFdb { dev: u32, fdb: Fdb },
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`
    SetNeigh { dev: Dev, ip: IpAddr, mac: MacAddr },
    /// Deletes an observed neighbour entry.
    DelNeigh { dev: u32, ip: IpAddr },
    /// `ip addr add NET dev DEV`
    AddAddr { dev: Dev, net: IpNet },
    /// Deletes an observed address.
    DelAddr { dev: u32, net: IpNet },
    /// Permanent neighbours on `dev` made exactly `want`, against the table
    /// as it is when applied (an earlier op may have flushed it).
    SyncNeigh { dev: Dev, want: BTreeMap<IpAddr, MacAddr> },
}

/// What turns table `have` into `want`: the keys to remove (in `have` only)
/// and the entries to write (missing from `have`, or with another value
/// there), each in key order. Sets are tables of `()`.
pub fn set_diff<'a, K: Ord + 'a, V: PartialEq + 'a>(
    have: impl IntoIterator<Item = (&'a K, &'a V)>,
    want: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> (Vec<&'a K>, Vec<(&'a K, &'a V)>) {
    use std::cmp::Ordering;
    let (mut gone, mut set) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (have.into_iter().peekable(), want.into_iter().peekable());
    loop {
        match (h.peek(), w.peek()) {
            (None, None) => break,
            (Some(_), None) => gone.extend(h.by_ref().map(|(k, _)| k)),
            (None, Some(_)) => set.extend(w.by_ref()),
            (Some((hk, hv)), Some((wk, wv))) => match hk.cmp(wk) {
                Ordering::Less => {
                    gone.push(*hk);
                    h.next();
                }
                Ordering::Greater => {
                    set.push((*wk, *wv));
                    w.next();
                }
                Ordering::Equal => {
                    if hv != wv {
                        set.push((*wk, *wv));
                    }
                    h.next();
                    w.next();
                }
            },
        }
    }
    (gone, set)
}

fn units<K>(s: &BTreeSet<K>) -> impl Iterator<Item = (&K, &())> {
    s.iter().map(|k| (k, &()))
}

/// The operations that make the kernel, as `obs` saw it, what `plan` needs
/// (in the order to apply them; see the module's documentation).
pub fn diff(plan: &Plan, obs: &Observed) -> Vec<KernelOp> {
    let mut ops = Vec::new();
    let by_name: BTreeMap<&str, &Link> = obs.links.iter().map(|l| (l.name.as_str(), l)).collect();
    // Observed bridges whose set of ports an op already changed (their MAC
    // may have followed, flushing their neighbours).
    let mut ports_changed: BTreeSet<u32> = BTreeSet::new();
    let mut wanted_ports: BTreeMap<&str, Dev> = BTreeMap::new();
    // Physical ports by device name: (port, bridge, attachment).
    let mut wanted_physical: BTreeMap<&str, (&str, Dev, &plan::Attachment)> = BTreeMap::new();
    let empty_fdb = BTreeSet::new();
    let empty_neigh = BTreeMap::new();
    let empty_addrs = BTreeSet::new();
    for v in plan.vpcs.values() {
        // The bridge, up, with the plan's MAC.
        let br_name = plan::bridge_name(v.vni);
        let mut br_flushed = false;
        let br = match by_name.get(br_name.as_str()) {
            Some(l) if l.kind == Some(Kind::Bridge) => {
                let wrong_mac = v.bridge_mac.is_some_and(|m| l.mac != Some(m));
                if !l.up || wrong_mac {
                    let mac = v.bridge_mac.filter(|_| wrong_mac);
                    br_flushed |= mac.is_some();
                    ops.push(KernelOp::SetBridge { index: l.index, name: br_name.clone(), mac });
                }
                Dev::Index(l.index)
            }
            existing => {
                if let Some(l) = existing {
                    del_link(&mut ops, &mut ports_changed, l);
                }
                ops.push(KernelOp::CreateBridge { name: br_name.clone(), mac: v.bridge_mac });
                Dev::New(br_name.clone())
            }
        };
        // The VXLAN device, as configured as the plan needs, in the bridge and up.
        let vx_name = plan::vxlan_name(v.vni);
        let vx = match by_name.get(vx_name.as_str()) {
            Some(l) if l.vxlan_matches(v, plan.local_ip) => Some(*l),
            existing => {
                let (vni, local, proxy, name) = (v.vni, plan.local_ip, v.proxy, vx_name.clone());
                match existing {
                    Some(l) => {
                        if let Some(m) = l.master {
                            ports_changed.insert(m);
                        }
                        ops.push(KernelOp::RecreateVxlan { index: l.index, name, vni, local, proxy })
                    }
                    None => ops.push(KernelOp::CreateVxlan { name, vni, local, proxy }),
                }
                None
            }
        };
        let vx_dev = match vx {
            Some(l) => {
                ensure_port(&mut ops, &mut ports_changed, l, &br, false);
                Dev::Index(l.index)
            }
            None => {
                if let Dev::Index(b) = br {
                    ports_changed.insert(b);
                }
                ops.push(KernelOp::SetMaster {
                    dev: Dev::New(vx_name.clone()),
                    name: vx_name.clone(),
                    bridge: br.clone(),
                });
                Dev::New(vx_name.clone())
            }
        };
        for p in &v.ports {
            match v.physical.get(p) {
                Some(a) => {
                    wanted_physical.insert(a.device.as_str(), (p.as_str(), br.clone(), a));
                }
                None => {
                    wanted_ports.insert(p.as_str(), br.clone());
                }
            }
        }
        // The device's FDB and neighbours (none yet on a new device).
        let (have_fdb, have_neigh) = match vx {
            Some(l) => (obs.fdb.get(&l.index).unwrap_or(&empty_fdb), obs.neigh.get(&l.index).unwrap_or(&empty_neigh)),
            None => (&empty_fdb, &empty_neigh),
        };
        let (gone, add) = set_diff(units(have_fdb), units(&v.fdb));
        let idx = vx.map(|l| l.index);
        ops.extend(gone.into_iter().filter_map(|f| Some(KernelOp::DelFdb { dev: idx?, fdb: *f })));
        ops.extend(add.into_iter().map(|(f, _)| KernelOp::AddFdb { dev: vx_dev.clone(), fdb: *f }));
        neigh_ops(&mut ops, idx, &vx_dev, have_neigh, &v.neigh);
        // Gateways: the bridge's addresses, then its neighbours.
        if plan.forwarding || !v.bridge_addrs.is_empty() {
            let br_idx = match br {
                Dev::Index(i) => Some(i),
                Dev::New(_) => None,
            };
            let have = br_idx.and_then(|i| obs.addrs.get(&i)).unwrap_or(&empty_addrs);
            let (gone, add) = set_diff(units(have), units(&v.bridge_addrs));
            br_flushed |= !gone.is_empty();
            ops.extend(gone.into_iter().filter_map(|n| Some(KernelOp::DelAddr { dev: br_idx?, net: *n })));
            ops.extend(add.into_iter().map(|(n, _)| KernelOp::AddAddr { dev: br.clone(), net: *n }));
            match br_idx {
                Some(i) if br_flushed || ports_changed.contains(&i) => {
                    ops.push(KernelOp::SyncNeigh { dev: br.clone(), want: v.bridge_neigh.clone() })
                }
                _ => {
                    let have = br_idx.and_then(|i| obs.neigh.get(&i)).unwrap_or(&empty_neigh);
                    neigh_ops(&mut ops, br_idx, &br, have, &v.bridge_neigh);
                }
            }
        }
    }
    // VM ports: into their VPC's bridge; out of ours when no longer wanted.
    let our_bridges: BTreeSet<u32> = obs
        .links
        .iter()
        .filter(|l| l.name.starts_with("vc-br-") && l.kind == Some(Kind::Bridge))
        .map(|l| l.index)
        .collect();
    let mut found_physical = BTreeSet::new();
    for l in &obs.links {
        // A physical port's device is known by its name, and labelled.
        if let Some((port, br, a)) = wanted_physical.get(l.name.as_str()) {
            found_physical.insert(l.name.as_str());
            let alias = format!("{PORT_ALIAS_PREFIX}{port}");
            if l.alias.as_deref() != Some(alias.as_str()) {
                ops.push(KernelOp::SetAlias { index: l.index, name: l.name.clone(), alias });
            }
            let attaching = !matches!(br, Dev::Index(b) if l.master == Some(*b));
            ensure_port(&mut ops, &mut ports_changed, l, br, true);
            if attaching {
                ops.push(KernelOp::PinMac { dev: Dev::Index(l.index), name: l.name.clone(), mac: a.mac });
            }
            continue;
        }
        let Some(port) = l.port() else { continue };
        match wanted_ports.get(port) {
            Some(br) => ensure_port(&mut ops, &mut ports_changed, l, br, false),
            None if l.master.is_some_and(|m| our_bridges.contains(&m)) => {
                ops.push(KernelOp::Detach { index: l.index, name: l.name.clone() })
            }
            None => {}
        }
    }
    // A physical port's VLAN device, made on its interface (a missing
    // interface is reported as a missing port by the data plane).
    for (device, (port, br, a)) in &wanted_physical {
        if found_physical.contains(device) {
            continue;
        }
        let Some(vid) = a.vlan.filter(|_| by_name.contains_key(a.interface.as_str())) else { continue };
        let alias = format!("{PORT_ALIAS_PREFIX}{port}");
        let name = device.to_string();
        ops.push(KernelOp::CreateVlan { name: name.clone(), interface: a.interface.clone(), vid, alias });
        if let Dev::Index(b) = br {
            ports_changed.insert(*b);
        }
        ops.push(KernelOp::SetMaster { dev: Dev::New(name.clone()), name: name.clone(), bridge: br.clone() });
        ops.push(KernelOp::PinMac { dev: Dev::New(name.clone()), name, mac: a.mac });
    }
    // Devices of VPCs this chassis no longer takes part in.
    for l in &obs.links {
        if let Some(vni) = plan::our_vni(&l.name)
            && !plan.vpcs.contains_key(&vni)
        {
            del_link(&mut ops, &mut ports_changed, l);
        }
    }
    ops
}

/// The interface indexes of one VPC's bridge and VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpcDevs {
    pub bridge: u32,
    pub vxlan: u32,
}

/// The operations that take a kernel holding exactly `old` (what the last
/// reconcile left, its devices at `devs`) to `new`, without reading it:
/// `None` unless only the VPCs' tables differ (FDB, the device's
/// neighbours, a gateway bridge's neighbours). Any other change (VPCs,
/// ports, device settings, addresses, the bridge MAC) may create, delete
/// or flush something and needs [`diff`] against a fresh observation.
///
/// No op here flushes a table: FDB and neighbour entries are written and
/// deleted one by one, so the result is what [`diff`] of an observation
/// of `old` would give for `new`.
pub fn delta(old: &Plan, new: &Plan, devs: &BTreeMap<u32, VpcDevs>) -> Option<Vec<KernelOp>> {
    if old.local_ip != new.local_ip || old.forwarding != new.forwarding || old.vpcs.len() != new.vpcs.len() {
        return None;
    }
    let mut ops = Vec::new();
    for ((ovni, o), (nvni, n)) in old.vpcs.iter().zip(&new.vpcs) {
        let same_shape = ovni == nvni
            && o.proxy == n.proxy
            && o.ports == n.ports
            && o.bridge_addrs == n.bridge_addrs
            && o.bridge_mac == n.bridge_mac;
        if !same_shape {
            return None;
        }
        let d = devs.get(nvni)?;
        let vx = Dev::Index(d.vxlan);
        let (gone, add) = set_diff(units(&o.fdb), units(&n.fdb));
        ops.extend(gone.into_iter().map(|f| KernelOp::DelFdb { dev: d.vxlan, fdb: *f }));
        ops.extend(add.into_iter().map(|(f, _)| KernelOp::AddFdb { dev: vx.clone(), fdb: *f }));
        neigh_ops(&mut ops, Some(d.vxlan), &vx, &o.neigh, &n.neigh);
        if new.forwarding || !n.bridge_addrs.is_empty() {
            neigh_ops(&mut ops, Some(d.bridge), &Dev::Index(d.bridge), &o.bridge_neigh, &n.bridge_neigh);
        }
    }
    Some(ops)
}

fn del_link(ops: &mut Vec<KernelOp>, ports_changed: &mut BTreeSet<u32>, l: &Link) {
    if let Some(m) = l.master {
        ports_changed.insert(m);
    }
    ops.push(KernelOp::DelLink { index: l.index, name: l.name.clone() });
}

/// `l` enslaved to bridge `br` and up. A VM port is brought up only when it
/// is attached: once attached, its administrative state is the operator's (a
/// port set down stays down — that is how a dead VM looks). A physical
/// port's device is not a VM port: the gateway keeps it up (a host that
/// is gone shows as lost carrier).
fn ensure_port(ops: &mut Vec<KernelOp>, ports_changed: &mut BTreeSet<u32>, l: &Link, br: &Dev, physical: bool) {
    let is_vm_port = !physical && l.alias.as_deref().is_some_and(|a| a.starts_with(PORT_ALIAS_PREFIX));
    let in_br = matches!(br, Dev::Index(b) if l.master == Some(*b));
    if !in_br || (!l.up && !is_vm_port) {
        if !in_br {
            ports_changed.extend(l.master);
            if let Dev::Index(b) = br {
                ports_changed.insert(*b);
            }
        }
        ops.push(KernelOp::SetMaster { dev: Dev::Index(l.index), name: l.name.clone(), bridge: br.clone() });
    }
}

/// Permanent neighbours on `dev` (observed as `idx`, holding `have`) made exactly `want`.
fn neigh_ops(
    ops: &mut Vec<KernelOp>,
    idx: Option<u32>,
    dev: &Dev,
    have: &BTreeMap<IpAddr, MacAddr>,
    want: &BTreeMap<IpAddr, MacAddr>,
) {
    let (gone, set) = set_diff(have, want);
    ops.extend(gone.into_iter().filter_map(|ip| Some(KernelOp::DelNeigh { dev: idx?, ip: *ip })));
    ops.extend(set.into_iter().map(|(ip, mac)| KernelOp::SetNeigh { dev: dev.clone(), ip: *ip, mac: *mac }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const LOCAL: &str = "10.255.0.11";
    const VX: u32 = 20;
    const BR: u32 = 21;

    fn vpc(vni: u32) -> VpcPlan {
        VpcPlan {
            physical: Default::default(),
            name: format!("vpc{vni}"),
            vni,
            proxy: true,
            ports: BTreeSet::from(["pay1".to_string()]),
            fdb: BTreeSet::from([
                Fdb { mac: mac("02:00:00:00:00:02"), dst: ip("10.255.0.12"), port: None },
                Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.12"), port: None },
                Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.99"), port: Some(4790) },
            ]),
            neigh: BTreeMap::from([
                (ip("192.168.10.12"), mac("02:00:00:00:00:02")),
                (ip("192.168.10.100"), mac("02:00:00:00:00:02")),
            ]),
            bridge_addrs: BTreeSet::new(),
            bridge_neigh: BTreeMap::new(),
            bridge_mac: None,
        }
    }

    fn hypervisor() -> Plan {
        Plan {
            local_ip: Some(ip(LOCAL)),
            vpcs: BTreeMap::from([(4200, vpc(4200))]),
            forwarding: false,
            unrouted: vec![],
            unsupported: vec![],
        }
    }

    fn gateway() -> Plan {
        let mut p = hypervisor();
        p.forwarding = true;
        let v = p.vpcs.get_mut(&4200).unwrap();
        v.ports.clear();
        v.bridge_mac = Some(mac("06:76:63:00:10:68"));
        v.bridge_addrs = BTreeSet::from([net("192.168.10.1/24"), net("192.168.20.1/24")]);
        v.bridge_neigh = BTreeMap::from([(ip("192.168.10.100"), mac("02:00:00:00:00:02"))]);
        p
    }

    fn link(index: u32, name: &str, kind: Option<Kind>, master: Option<u32>) -> Link {
        Link { kind, master, up: true, ..Link::new(index, name) }
    }

    fn vm_port(index: u32, name: &str, port: &str, master: Option<u32>) -> Link {
        Link { alias: Some(format!("{PORT_ALIAS_PREFIX}{port}")), ..link(index, name, Some(Kind::Other), master) }
    }

    fn vxlan(v: &VpcPlan, index: u32, master: Option<u32>) -> Link {
        Link {
            vxlan: VxlanConf {
                id: Some(v.vni),
                local: Some(ip(LOCAL)),
                port: Some(VXLAN_PORT),
                learning: Some(false),
                proxy: Some(v.proxy),
            },
            ..link(index, &plan::vxlan_name(v.vni), Some(Kind::Vxlan), master)
        }
    }

    /// A chassis with only an underlay interface and the VM port of pay1.
    fn bare() -> Observed {
        Observed {
            links: vec![
                link(1, "lo", None, None),
                link(2, "eth0", Some(Kind::Other), None),
                vm_port(5, "tap1", "pay1", None),
            ],
            ..Default::default()
        }
    }

    /// What the kernel holds once `plan` was applied to `obs`: a model of
    /// the kernel, down to the tables a deleted device takes with it and
    /// the neighbours a bridge flushes when its MAC is set.
    fn model(obs: &Observed, ops: &[KernelOp]) -> Observed {
        let mut o = Observed {
            links: obs.links.clone(),
            fdb: obs.fdb.clone(),
            neigh: obs.neigh.clone(),
            addrs: obs.addrs.clone(),
            ..Default::default()
        };
        let mut created = BTreeMap::new();
        let mut next = o.links.iter().map(|l| l.index).max().unwrap_or(0) + 100;
        fn del(o: &mut Observed, index: u32) {
            o.links.retain(|l| l.index != index);
            o.fdb.remove(&index);
            o.neigh.remove(&index);
            o.addrs.remove(&index);
            for l in &mut o.links {
                if l.master == Some(index) {
                    l.master = None;
                }
            }
        }
        for op in ops {
            let res = |d: &Dev| match d {
                Dev::Index(i) => *i,
                Dev::New(n) => created[n],
            };
            match op {
                KernelOp::DelLink { index, .. } => del(&mut o, *index),
                KernelOp::CreateBridge { name, mac } => {
                    next += 1;
                    created.insert(name.clone(), next);
                    let mac = mac.or(Some(MacAddr([2, 0xbb, 0, 0, 0, 1])));
                    o.links.push(Link { mac, ..link(next, name, Some(Kind::Bridge), None) });
                }
                KernelOp::SetBridge { index, mac, .. } => {
                    let l = o.links.iter_mut().find(|l| l.index == *index).unwrap();
                    l.up = true;
                    if mac.is_some() {
                        l.mac = *mac;
                        o.neigh.remove(index);
                    }
                }
                KernelOp::CreateVxlan { name, vni, local, proxy }
                | KernelOp::RecreateVxlan { name, vni, local, proxy, .. } => {
                    if let KernelOp::RecreateVxlan { index, .. } = op {
                        del(&mut o, *index);
                    }
                    next += 1;
                    created.insert(name.clone(), next);
                    let vxlan = VxlanConf {
                        id: Some(*vni),
                        local: *local,
                        port: Some(VXLAN_PORT),
                        learning: Some(false),
                        proxy: Some(*proxy),
                    };
                    o.links.push(Link { up: false, vxlan, ..link(next, name, Some(Kind::Vxlan), None) });
                }
                KernelOp::SetMaster { dev, bridge, .. } => {
                    let (d, b) = (res(dev), res(bridge));
                    let l = o.links.iter_mut().find(|l| l.index == d).unwrap();
                    l.master = Some(b);
                    l.up = true;
                }
                KernelOp::Detach { index, .. } => {
                    o.links.iter_mut().find(|l| l.index == *index).unwrap().master = None;
                }
                KernelOp::CreateVlan { name, interface, alias, .. } => {
                    assert!(o.links.iter().any(|l| &l.name == interface), "{interface} missing");
                    next += 1;
                    created.insert(name.clone(), next);
                    o.links.push(Link { alias: Some(alias.clone()), up: true, ..link(next, name, None, None) });
                }
                KernelOp::SetAlias { index, alias, .. } => {
                    o.links.iter_mut().find(|l| l.index == *index).unwrap().alias = Some(alias.clone());
                }
                KernelOp::PinMac { dev, .. } => assert!(o.links.iter().any(|l| l.index == res(dev))),
                KernelOp::AddFdb { dev, fdb } => assert!(o.fdb.entry(res(dev)).or_default().insert(*fdb)),
                KernelOp::DelFdb { dev, fdb } => assert!(o.fdb.get_mut(dev).unwrap().remove(fdb)),
                KernelOp::SetNeigh { dev, ip, mac } => {
                    o.neigh.entry(res(dev)).or_default().insert(*ip, *mac);
                }
                KernelOp::DelNeigh { dev, ip } => assert!(o.neigh.get_mut(dev).unwrap().remove(ip).is_some()),
                KernelOp::AddAddr { dev, net } => assert!(o.addrs.entry(res(dev)).or_default().insert(*net)),
                KernelOp::DelAddr { dev, net } => assert!(o.addrs.get_mut(dev).unwrap().remove(net)),
                KernelOp::SyncNeigh { dev, want } => {
                    o.neigh.insert(res(dev), want.clone());
                }
            }
        }
        o.fdb.retain(|_, t| !t.is_empty());
        o.neigh.retain(|_, t| !t.is_empty());
        o.addrs.retain(|_, t| !t.is_empty());
        o
    }

    /// Physical ports of a gateway: an untagged interface labelled and
    /// bridged, a VLAN made on its interface; both detached (not deleted)
    /// when the port is served elsewhere; a missing interface left alone.
    #[test]
    fn physical_ports() {
        let mut p = gateway();
        let v = p.vpcs.get_mut(&4200).unwrap();
        v.ports.extend(["h1".to_string(), "h2".to_string(), "h3".to_string()]);
        let att = |device: &str, interface: &str, vlan| plan::Attachment {
            device: device.into(),
            interface: interface.into(),
            vlan,
            mac: MacAddr([2, 0, 0, 0, 0x0e, 1]),
        };
        v.physical.insert("h1".into(), att("eth1", "eth1", None));
        v.physical.insert("h2".into(), att("eth2.10", "eth2", Some(10)));
        v.physical.insert("h3".into(), att("eth9.10", "eth9", Some(10)));
        let mut o = gateway_programmed();
        o.links.push(link(40, "eth1", None, None));
        o.links.push(Link { up: true, ..link(41, "eth2", None, None) });
        let ops = diff(&p, &o);
        assert!(ops.contains(&KernelOp::SetAlias { index: 40, name: "eth1".into(), alias: "vipcast-port:h1".into() }));
        assert!(ops.contains(&KernelOp::CreateVlan {
            name: "eth2.10".into(),
            interface: "eth2".into(),
            vid: 10,
            alias: "vipcast-port:h2".into()
        }));
        assert!(!ops.iter().any(|op| format!("{op:?}").contains("eth9")), "{ops:?}");
        let pinned = ops.iter().filter(|op| matches!(op, KernelOp::PinMac { .. })).count();
        assert_eq!(pinned, 2, "{ops:?}");
        let o = converge(&p, &o);
        let l = |n: &str| o.links.iter().find(|l| l.name == n).unwrap().clone();
        assert_eq!((l("eth1").master, l("eth1").up), (Some(BR), true));
        assert_eq!(l("eth2.10").master, Some(BR));
        // Served by the standby now: both leave the bridge, nothing is deleted.
        let v = p.vpcs.get_mut(&4200).unwrap();
        v.ports.retain(|n| !n.starts_with('h'));
        v.physical.clear();
        let ops = diff(&p, &o);
        assert_eq!(
            ops,
            vec![
                KernelOp::Detach { index: l("eth1").index, name: "eth1".into() },
                KernelOp::Detach { index: l("eth2.10").index, name: "eth2.10".into() },
            ]
        );
    }

    /// `plan` applied to `obs`, checked to need nothing more.
    fn converge(plan: &Plan, obs: &Observed) -> Observed {
        let o = model(obs, &diff(plan, obs));
        assert_eq!(diff(plan, &o), vec![], "a second diff after applying the first");
        o
    }

    /// A chassis where `hypervisor()` was applied, at known indexes.
    fn programmed() -> Observed {
        let v = vpc(4200);
        let mut o = bare();
        o.links[2].master = Some(BR);
        o.links.push(vxlan(&v, VX, Some(BR)));
        o.links.push(link(BR, "vc-br-4200", Some(Kind::Bridge), None));
        o.fdb.insert(VX, v.fdb.clone());
        o.neigh.insert(VX, v.neigh.clone());
        o
    }

    #[test]
    fn set_diff_removes_adds_and_rewrites_in_key_order() {
        let have = BTreeMap::from([(1, 'a'), (2, 'b'), (4, 'd'), (6, 'f')]);
        let want = BTreeMap::from([(0, 'z'), (2, 'b'), (4, 'x'), (5, 'e')]);
        let (gone, set) = set_diff(&have, &want);
        assert_eq!(gone, vec![&1, &6]);
        assert_eq!(set, vec![(&0, &'z'), (&4, &'x'), (&5, &'e')]);
        let (a, b) = (BTreeSet::from([1, 2]), BTreeSet::from([2, 3]));
        let (gone, set) = set_diff(units(&a), units(&b));
        assert_eq!((gone, set.into_iter().map(|(k, _)| k).collect::<Vec<_>>()), (vec![&1], vec![&3]));
        let none = BTreeMap::<u8, u8>::new();
        let (gone, set) = set_diff(&none, &none);
        assert!(gone.is_empty() && set.is_empty());
    }

    #[test]
    fn a_fresh_chassis_gets_bridge_device_entries_and_its_port() {
        let p = hypervisor();
        let v = &p.vpcs[&4200];
        let (br, vx) = (Dev::New("vc-br-4200".into()), Dev::New("vc-vx-4200".into()));
        let mut want = vec![
            KernelOp::CreateBridge { name: "vc-br-4200".into(), mac: None },
            KernelOp::CreateVxlan { name: "vc-vx-4200".into(), vni: 4200, local: Some(ip(LOCAL)), proxy: true },
            KernelOp::SetMaster { dev: vx.clone(), name: "vc-vx-4200".into(), bridge: br.clone() },
        ];
        want.extend(v.fdb.iter().map(|f| KernelOp::AddFdb { dev: vx.clone(), fdb: *f }));
        want.extend(v.neigh.iter().map(|(ip, mac)| KernelOp::SetNeigh { dev: vx.clone(), ip: *ip, mac: *mac }));
        want.push(KernelOp::SetMaster { dev: Dev::Index(5), name: "tap1".into(), bridge: br });
        assert_eq!(diff(&p, &bare()), want);
        // All-zeros (BUM) entries, one per flood destination, are there.
        let o = converge(&p, &bare());
        let vx = o.links.iter().find(|l| l.name == "vc-vx-4200").unwrap();
        assert_eq!(o.fdb[&vx.index].iter().filter(|f| f.mac == MacAddr::ZERO).count(), 2);
        assert!(vx.vxlan_matches(v, p.local_ip) && vx.up);
    }

    #[test]
    fn nothing_changed_means_no_op() {
        assert_eq!(diff(&hypervisor(), &programmed()), vec![]);
        converge(&gateway(), &bare());
        converge(&Plan::default(), &bare());
        // A VM port set down by the operator stays down.
        let mut o = programmed();
        o.links[2].up = false;
        assert_eq!(diff(&hypervisor(), &o), vec![]);
    }

    #[test]
    fn a_vip_move_is_one_neighbour_op() {
        let mut p = hypervisor();
        let vip = ip("192.168.10.100");
        p.vpcs.get_mut(&4200).unwrap().neigh.insert(vip, mac("02:00:00:00:00:03"));
        assert_eq!(
            diff(&p, &programmed()),
            vec![KernelOp::SetNeigh { dev: Dev::Index(VX), ip: vip, mac: mac("02:00:00:00:00:03") }]
        );
        // To a local port: the plan drops the entry (none for local MACs on the device).
        p.vpcs.get_mut(&4200).unwrap().neigh.remove(&vip);
        assert_eq!(diff(&p, &programmed()), vec![KernelOp::DelNeigh { dev: VX, ip: vip }]);
    }

    #[test]
    fn a_proxy_change_recreates_the_device_and_refills_it() {
        let mut p = hypervisor();
        p.vpcs.get_mut(&4200).unwrap().proxy = false;
        let v = &p.vpcs[&4200];
        let vx = Dev::New("vc-vx-4200".into());
        let mut want = vec![
            KernelOp::RecreateVxlan {
                index: VX,
                name: "vc-vx-4200".into(),
                vni: 4200,
                local: Some(ip(LOCAL)),
                proxy: false,
            },
            KernelOp::SetMaster { dev: vx.clone(), name: "vc-vx-4200".into(), bridge: Dev::Index(BR) },
        ];
        // The old device's entries went with it: everything is added, nothing deleted.
        want.extend(v.fdb.iter().map(|f| KernelOp::AddFdb { dev: vx.clone(), fdb: *f }));
        want.extend(v.neigh.iter().map(|(ip, mac)| KernelOp::SetNeigh { dev: vx.clone(), ip: *ip, mac: *mac }));
        assert_eq!(diff(&p, &programmed()), want);
        converge(&p, &programmed());
        // Any other setting that differs does the same; the names stay.
        for f in [
            |l: &mut Link| l.vxlan.learning = Some(true),
            |l: &mut Link| l.vxlan.port = Some(8472),
            |l: &mut Link| l.vxlan.local = None,
            |l: &mut Link| l.vxlan.id = Some(1),
        ] {
            let mut o = programmed();
            f(o.links.iter_mut().find(|l| l.index == VX).unwrap());
            assert!(matches!(diff(&hypervisor(), &o)[0], KernelOp::RecreateVxlan { index: VX, .. }));
        }
    }

    #[test]
    fn stale_entries_are_deleted_before_the_new_ones_are_added() {
        let mut o = programmed();
        let stale_fdb = Fdb { mac: mac("02:00:00:00:00:09"), dst: ip("10.255.0.19"), port: None };
        o.fdb.get_mut(&VX).unwrap().insert(stale_fdb);
        o.neigh.get_mut(&VX).unwrap().insert(ip("192.168.10.19"), mac("02:00:00:00:00:09"));
        let mut p = hypervisor();
        let new_fdb = Fdb { mac: mac("02:00:00:00:00:04"), dst: ip("10.255.0.14"), port: None };
        p.vpcs.get_mut(&4200).unwrap().fdb.insert(new_fdb);
        assert_eq!(
            diff(&p, &o),
            vec![
                KernelOp::DelFdb { dev: VX, fdb: stale_fdb },
                KernelOp::AddFdb { dev: Dev::Index(VX), fdb: new_fdb },
                KernelOp::DelNeigh { dev: VX, ip: ip("192.168.10.19") },
            ]
        );
    }

    #[test]
    fn what_is_not_ours_is_left_alone() {
        let mut o = programmed();
        // A bridge of someone else's, with a port of its own and a VM port not in the plan.
        o.links.push(link(30, "br0", Some(Kind::Bridge), None));
        o.links.push(link(31, "veth0", Some(Kind::Other), Some(30)));
        o.links.push(vm_port(32, "tap2", "other", Some(30)));
        // A VM port of ours with no VPC here: unattached, so untouched.
        o.links.push(vm_port(33, "tap3", "gone", None));
        // Entries on devices that are not the plan's.
        o.fdb.insert(2, BTreeSet::from([Fdb { mac: MacAddr::ZERO, dst: ip("10.1.1.1"), port: None }]));
        o.neigh.insert(2, BTreeMap::from([(ip("10.1.1.1"), mac("02:00:00:00:01:01"))]));
        o.neigh.insert(30, BTreeMap::from([(ip("10.2.2.2"), mac("02:00:00:00:02:02"))]));
        assert_eq!(diff(&hypervisor(), &o), vec![]);
        assert_eq!(
            diff(&gateway(), &o).iter().filter(|op| matches!(op, KernelOp::DelNeigh { dev: 30, .. })).count(),
            0
        );
    }

    #[test]
    fn a_vpc_that_left_frees_its_port_and_loses_its_devices() {
        let p = Plan { local_ip: Some(ip(LOCAL)), ..Default::default() };
        assert_eq!(
            diff(&p, &programmed()),
            vec![
                KernelOp::Detach { index: 5, name: "tap1".into() },
                KernelOp::DelLink { index: VX, name: "vc-vx-4200".into() },
                KernelOp::DelLink { index: BR, name: "vc-br-4200".into() },
            ]
        );
        // The port moved to another VPC's bridge.
        let mut p = hypervisor();
        let mut v = p.vpcs.remove(&4200).unwrap();
        v.vni = 4300;
        p.vpcs.insert(4300, v);
        let ops = diff(&p, &programmed());
        assert!(ops.contains(&KernelOp::SetMaster {
            dev: Dev::Index(5),
            name: "tap1".into(),
            bridge: Dev::New("vc-br-4300".into())
        }));
        assert!(ops.ends_with(&[
            KernelOp::DelLink { index: VX, name: "vc-vx-4200".into() },
            KernelOp::DelLink { index: BR, name: "vc-br-4200".into() },
        ]));
        converge(&p, &programmed());
    }

    #[test]
    fn links_in_the_wrong_state_are_put_right() {
        let p = hypervisor();
        // A bridge that is down; a device that is down, or out of the bridge.
        let mut o = programmed();
        o.links.iter_mut().find(|l| l.index == BR).unwrap().up = false;
        o.links.iter_mut().find(|l| l.index == VX).unwrap().up = false;
        assert_eq!(
            diff(&p, &o),
            vec![
                KernelOp::SetBridge { index: BR, name: "vc-br-4200".into(), mac: None },
                KernelOp::SetMaster { dev: Dev::Index(VX), name: "vc-vx-4200".into(), bridge: Dev::Index(BR) },
            ]
        );
        let mut o = programmed();
        o.links.iter_mut().find(|l| l.index == VX).unwrap().master = None;
        o.links[2].master = Some(30);
        assert_eq!(diff(&p, &o).len(), 2);
        // Something else under the bridge's name is replaced by a bridge.
        let mut o = programmed();
        o.links.iter_mut().find(|l| l.index == BR).unwrap().kind = Some(Kind::Other);
        let ops = diff(&p, &o);
        assert_eq!(
            ops[..2],
            [
                KernelOp::DelLink { index: BR, name: "vc-br-4200".into() },
                KernelOp::CreateBridge { name: "vc-br-4200".into(), mac: None },
            ]
        );
        converge(&p, &o);
    }

    /// A gateway where `gateway()` was applied.
    fn gateway_programmed() -> Observed {
        let p = gateway();
        let v = &p.vpcs[&4200];
        let mut o = programmed();
        o.links[2].master = None;
        let br = o.links.iter_mut().find(|l| l.index == BR).unwrap();
        br.mac = v.bridge_mac;
        o.addrs.insert(BR, v.bridge_addrs.clone());
        o.neigh.insert(BR, v.bridge_neigh.clone());
        assert_eq!(diff(&p, &o), vec![]);
        o
    }

    #[test]
    fn gateway_addresses_and_neighbours() {
        let o = gateway_programmed();
        // A VIP move on a gateway: its entry on the bridge too.
        let mut p = gateway();
        let vip = ip("192.168.10.100");
        let v = p.vpcs.get_mut(&4200).unwrap();
        v.neigh.insert(vip, mac("02:00:00:00:00:03"));
        v.bridge_neigh.insert(vip, mac("02:00:00:00:00:03"));
        assert_eq!(
            diff(&p, &o),
            vec![
                KernelOp::SetNeigh { dev: Dev::Index(VX), ip: vip, mac: mac("02:00:00:00:00:03") },
                KernelOp::SetNeigh { dev: Dev::Index(BR), ip: vip, mac: mac("02:00:00:00:00:03") },
            ]
        );
        // A subnet added: one address; one removed: the address goes, and
        // the bridge's neighbours are read again (its last address may have
        // taken them).
        let mut p = gateway();
        p.vpcs.get_mut(&4200).unwrap().bridge_addrs.insert(net("192.168.30.1/24"));
        assert_eq!(diff(&p, &o), vec![KernelOp::AddAddr { dev: Dev::Index(BR), net: net("192.168.30.1/24") }]);
        let mut p = gateway();
        p.vpcs.get_mut(&4200).unwrap().bridge_addrs.remove(&net("192.168.20.1/24"));
        assert_eq!(
            diff(&p, &o),
            vec![
                KernelOp::DelAddr { dev: BR, net: net("192.168.20.1/24") },
                KernelOp::SyncNeigh { dev: Dev::Index(BR), want: p.vpcs[&4200].bridge_neigh.clone() },
            ]
        );
        converge(&p, &o);
        // The bridge's MAC set: the kernel flushes its neighbours.
        let mut o2 = gateway_programmed();
        o2.links.iter_mut().find(|l| l.index == BR).unwrap().mac = Some(mac("02:00:00:00:0b:0b"));
        let p = gateway();
        assert_eq!(
            diff(&p, &o2),
            vec![
                KernelOp::SetBridge { index: BR, name: "vc-br-4200".into(), mac: p.vpcs[&4200].bridge_mac },
                KernelOp::SyncNeigh { dev: Dev::Index(BR), want: p.vpcs[&4200].bridge_neigh.clone() },
            ]
        );
        converge(&p, &o2);
        // The device recreated under the bridge: its ports changed, and so may have its MAC.
        let mut p = gateway();
        p.vpcs.get_mut(&4200).unwrap().proxy = false;
        assert!(matches!(diff(&p, &o).last(), Some(KernelOp::SyncNeigh { dev: Dev::Index(BR), .. })));
        // Stale addresses and neighbours of a bridge are removed; link-local
        // IPv6 never is (it is not observed).
        let mut o3 = gateway_programmed();
        o3.neigh.get_mut(&BR).unwrap().insert(ip("192.168.10.50"), mac("02:00:00:00:00:50"));
        assert_eq!(diff(&gateway(), &o3), vec![KernelOp::DelNeigh { dev: BR, ip: ip("192.168.10.50") }]);
    }

    #[test]
    fn a_hypervisor_leaves_bridge_tables_alone() {
        // Without forwarding and without addresses, the bridge's own tables are not the plan's.
        let mut o = programmed();
        o.addrs.insert(BR, BTreeSet::from([net("192.0.2.1/24")]));
        o.neigh.insert(BR, BTreeMap::from([(ip("192.0.2.9"), mac("02:00:00:00:00:09"))]));
        assert_eq!(diff(&hypervisor(), &o), vec![]);
    }

    #[test]
    fn vpcs_come_in_vni_order_and_ports_after_them() {
        let mut p = hypervisor();
        let mut v = vpc(7);
        v.ports = BTreeSet::from(["pay7".to_string()]);
        p.vpcs.insert(7, v);
        let mut o = bare();
        o.links.push(vm_port(6, "tap7", "pay7", None));
        let ops = diff(&p, &o);
        let pos =
            |name: &str| ops.iter().position(|op| matches!(op, KernelOp::CreateBridge { name: n, .. } if n == name));
        assert!(pos("vc-br-7") < pos("vc-br-4200"));
        let first_port = ops.iter().position(|op| matches!(op, KernelOp::SetMaster { dev: Dev::Index(_), .. }));
        assert_eq!(first_port, Some(ops.len() - 2));
        converge(&p, &o);
    }

    /// The devices of `plan`'s VPCs in `obs`, as the reconciler records them.
    fn devs_in(plan: &Plan, obs: &Observed) -> BTreeMap<u32, VpcDevs> {
        let index = |name: String| obs.links.iter().find(|l| l.name == name).unwrap().index;
        plan.vpcs
            .keys()
            .map(|&vni| (vni, VpcDevs { bridge: index(plan::bridge_name(vni)), vxlan: index(plan::vxlan_name(vni)) }))
            .collect()
    }

    mod delta_props {
        use proptest::prelude::*;

        use super::*;

        /// Tables drawn from small universes, so that old and new overlap.
        fn tables() -> impl Strategy<Value = (BTreeSet<Fdb>, BTreeMap<IpAddr, MacAddr>, BTreeMap<IpAddr, MacAddr>)> {
            let m = |n: u8| MacAddr([2, 0, 0, 0, 0, n]);
            let fdb = proptest::collection::btree_set((0u8..4, 10u8..14), 0..8).prop_map(move |s| {
                s.into_iter()
                    .map(|(mac, dst)| Fdb {
                        mac: if mac == 0 { MacAddr::ZERO } else { m(mac) },
                        dst: IpAddr::from([10, 255, 0, dst]),
                        port: None,
                    })
                    .collect()
            });
            let neigh = move || {
                proptest::collection::btree_map(0u8..8, 1u8..5, 0..6).prop_map(move |t| {
                    t.into_iter().map(|(i, mac)| (IpAddr::from([192, 168, 10, i]), m(mac))).collect()
                })
            };
            (fdb, neigh(), neigh())
        }

        /// A plan of one to three VPCs; gateways route and own their bridges' neighbours.
        fn plan() -> impl Strategy<Value = Plan> {
            (
                any::<bool>(),
                proptest::collection::btree_map(4200u32..4203, (tables(), any::<bool>(), any::<bool>()), 1..3),
            )
                .prop_map(|(gw, vpcs)| {
                    let mut p = Plan { local_ip: Some(ip(LOCAL)), forwarding: gw, ..Default::default() };
                    for (vni, ((fdb, neigh, bneigh), proxy, port)) in vpcs {
                        let mut v = vpc(vni);
                        (v.fdb, v.neigh, v.proxy) = (fdb, neigh, proxy);
                        if !port || vni != 4200 {
                            v.ports.clear();
                        }
                        if gw {
                            v.bridge_mac = Some(MacAddr([6, 0x76, 0x63, 0, 0, vni as u8]));
                            v.bridge_addrs = BTreeSet::from([IpNet::new(IpAddr::from([192, 168, 10, 1]), 24).unwrap()]);
                            v.bridge_neigh = bneigh;
                        }
                        p.vpcs.insert(vni, v);
                    }
                    p
                })
        }

        proptest! {
            /// Whenever the reconciler may skip reading the kernel, the ops
            /// it computes from the two plans are exactly those a full
            /// observation would have given, and they converge.
            #[test]
            fn a_delta_is_what_a_full_reconcile_would_do(old in plan(), new in plan(), keep_shape in any::<bool>()) {
                let mut new = new;
                if keep_shape {
                    // Same VPCs and settings; only tables from `new`.
                    let mut same = old.clone();
                    for (v, n) in same.vpcs.values_mut().zip(new.vpcs.values().cycle()) {
                        (v.fdb, v.neigh) = (n.fdb.clone(), n.neigh.clone());
                        if same.forwarding {
                            v.bridge_neigh = n.bridge_neigh.clone();
                        }
                    }
                    new = same;
                }
                let before = converge(&old, &bare());
                let devs = devs_in(&old, &before);
                match delta(&old, &new, &devs) {
                    Some(ops) => {
                        prop_assert_eq!(&ops, &diff(&new, &before));
                        let after = model(&before, &ops);
                        prop_assert_eq!(diff(&new, &after), vec![]);
                    }
                    None => {
                        prop_assert!(!keep_shape);
                        let shape = |p: &Plan| {
                            (p.forwarding, p.vpcs.iter().map(|(k, v)| (*k, v.proxy, v.ports.clone(), v.bridge_mac)).collect::<Vec<_>>())
                        };
                        prop_assert_ne!(shape(&old), shape(&new));
                    }
                }
            }
        }
    }
}

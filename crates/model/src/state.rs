//! The state of a region, how it maps to store keys, and the validation every
//! write goes through. A write is checked against the state it will apply to,
//! so a refused write changes nothing.

use std::net::IpAddr;

use imbl::OrdMap;

use ipnet::IpNet;

use crate::index::Index;
use crate::objects::*;

/// Prefix of every key vipcast stores.
pub const PREFIX: &str = "/vipcast/";

/// The prefix of all object keys (what the controller loads and watches).
pub fn objects_prefix() -> &'static str {
    PREFIX
}

/// The store key prefix of a VIP's ownership history.
pub fn history_prefix(vip: &str) -> String {
    format!("{PREFIX}history/{vip}/")
}

/// The identity of an object, and its store key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    Vpc(String),
    /// (vpc, name)
    Subnet(String, String),
    Chassis(String),
    Port(String),
    Vip(String),
    Replicator(String),
    /// (vip, generation)
    History(String, u64),
    /// (vpc, `<vrid>-ipv4|ipv6`): the VRRP view.
    Router(String, String),
    /// What claim arbitration keeps about a VIP (never sent to agents).
    Arbitration(String),
}

impl ObjectKey {
    /// The store key: `/vipcast/<kind>/<name>[/<name>]`.
    pub fn store_key(&self) -> String {
        match self {
            ObjectKey::Vpc(n) => format!("{PREFIX}vpcs/{n}"),
            ObjectKey::Subnet(v, n) => format!("{PREFIX}subnets/{v}/{n}"),
            ObjectKey::Chassis(n) => format!("{PREFIX}chassis/{n}"),
            ObjectKey::Port(n) => format!("{PREFIX}ports/{n}"),
            ObjectKey::Vip(n) => format!("{PREFIX}vips/{n}"),
            ObjectKey::Replicator(n) => format!("{PREFIX}replicators/{n}"),
            ObjectKey::History(v, g) => format!("{PREFIX}history/{v}/{g:020}"),
            ObjectKey::Router(v, id) => format!("{PREFIX}vrrp/{v}/{id}"),
            ObjectKey::Arbitration(n) => format!("{PREFIX}arbitration/{n}"),
        }
    }

    /// Parses a store key; `None` for keys that are not objects.
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let rest = key.strip_prefix(PREFIX)?;
        let mut parts = rest.split('/');
        let kind = parts.next()?;
        let a = parts.next()?.to_string();
        let b = parts.next();
        if parts.next().is_some() {
            return None;
        }
        Some(match (kind, b) {
            ("vpcs", None) => ObjectKey::Vpc(a),
            ("subnets", Some(b)) => ObjectKey::Subnet(a, b.to_string()),
            ("chassis", None) => ObjectKey::Chassis(a),
            ("ports", None) => ObjectKey::Port(a),
            ("vips", None) => ObjectKey::Vip(a),
            ("replicators", None) => ObjectKey::Replicator(a),
            ("history", Some(g)) => ObjectKey::History(a, g.parse().ok()?),
            ("vrrp", Some(id)) => ObjectKey::Router(a, id.to_string()),
            ("arbitration", None) => ObjectKey::Arbitration(a),
            _ => return None,
        })
    }
}

/// Any object. Its OpenAPI schema (`AnyObject`) is written out in `openapi.rs`:
/// a new variant goes there too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Object {
    Vpc(Vpc),
    Subnet(Subnet),
    Chassis(Chassis),
    Port(Port),
    Vip(Vip),
    Replicator(Replicator),
    History(OwnershipChange),
    Router(VrrpRouter),
    Arbitration(Arbitration),
}

impl Object {
    /// Its key.
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Vpc(o) => ObjectKey::Vpc(o.name.clone()),
            Object::Subnet(o) => ObjectKey::Subnet(o.vpc.clone(), o.name.clone()),
            Object::Chassis(o) => ObjectKey::Chassis(o.name.clone()),
            Object::Port(o) => ObjectKey::Port(o.name.clone()),
            Object::Vip(o) => ObjectKey::Vip(o.spec.name.clone()),
            Object::Replicator(o) => ObjectKey::Replicator(o.name.clone()),
            Object::History(o) => ObjectKey::History(o.vip.clone(), o.generation),
            Object::Router(o) => ObjectKey::Router(o.vpc.clone(), o.id.clone()),
            Object::Arbitration(o) => ObjectKey::Arbitration(o.vip.clone()),
        }
    }

    /// The stored bytes (JSON of the object without the kind tag).
    pub fn to_value(&self) -> Vec<u8> {
        let r = match self {
            Object::Vpc(o) => serde_json::to_vec(o),
            Object::Subnet(o) => serde_json::to_vec(o),
            Object::Chassis(o) => serde_json::to_vec(o),
            Object::Port(o) => serde_json::to_vec(o),
            Object::Vip(o) => serde_json::to_vec(o),
            Object::Replicator(o) => serde_json::to_vec(o),
            Object::History(o) => serde_json::to_vec(o),
            Object::Router(o) => serde_json::to_vec(o),
            Object::Arbitration(o) => serde_json::to_vec(o),
        };
        // Serializing these plain structs to a Vec cannot fail.
        r.unwrap_or_default()
    }

    /// Decodes stored bytes for `key`.
    pub fn from_value(key: &ObjectKey, value: &[u8]) -> Result<Object, serde_json::Error> {
        Ok(match key {
            ObjectKey::Vpc(_) => Object::Vpc(serde_json::from_slice(value)?),
            ObjectKey::Subnet(..) => Object::Subnet(serde_json::from_slice(value)?),
            ObjectKey::Chassis(_) => Object::Chassis(serde_json::from_slice(value)?),
            ObjectKey::Port(_) => Object::Port(serde_json::from_slice(value)?),
            ObjectKey::Vip(_) => Object::Vip(serde_json::from_slice(value)?),
            ObjectKey::Replicator(_) => Object::Replicator(serde_json::from_slice(value)?),
            ObjectKey::History(..) => Object::History(serde_json::from_slice(value)?),
            ObjectKey::Router(..) => Object::Router(serde_json::from_slice(value)?),
            ObjectKey::Arbitration(_) => Object::Arbitration(serde_json::from_slice(value)?),
        })
    }
}

/// The class of a refused write (the REST layer maps it to a status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// Malformed or out-of-range input (400).
    BadRequest,
    /// The object addressed does not exist (404).
    NotFound,
    /// Clashes with existing state: duplicates, still-referenced (409).
    Conflict,
    /// Not allowed, e.g. a claim from a MAC that is not a member's (403).
    Forbidden,
}

/// Why a write is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub kind: InvalidKind,
    /// Machine-readable code, e.g. `duplicate_vni`.
    pub code: &'static str,
    /// The request field at fault, if one is.
    pub field: Option<&'static str>,
    pub message: String,
}

impl Invalid {
    fn new(kind: InvalidKind, code: &'static str, field: Option<&'static str>, message: String) -> Invalid {
        Invalid { kind, code, field, message }
    }
    pub fn bad(code: &'static str, field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid::new(InvalidKind::BadRequest, code, Some(field), message.into())
    }
    pub fn conflict(code: &'static str, field: Option<&'static str>, message: impl Into<String>) -> Invalid {
        Invalid::new(InvalidKind::Conflict, code, field, message.into())
    }
    pub fn not_found(what: &str, name: &str) -> Invalid {
        Invalid::new(InvalidKind::NotFound, "not_found", None, format!("{what} {name:?} does not exist"))
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Invalid {
        Invalid::new(InvalidKind::Forbidden, code, None, message.into())
    }
}

/// Every object of a region.
///
/// The maps are persistent (structure-sharing): cloning a `State` is O(1) and
/// a changed copy shares everything it did not change, so the controller can
/// keep one version per store revision cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub vpcs: OrdMap<String, Vpc>,
    pub subnets: OrdMap<(String, String), Subnet>,
    pub chassis: OrdMap<String, Chassis>,
    pub ports: OrdMap<String, Port>,
    pub vips: OrdMap<String, Vip>,
    pub replicators: OrdMap<String, Replicator>,
    /// The VRRP view, by (vpc, id).
    pub routers: OrdMap<(String, String), VrrpRouter>,
    /// Claim arbitration's records, by VIP.
    pub arbitration: OrdMap<String, Arbitration>,
    /// Kept by [`State::put`] and [`State::delete`].
    index: Index,
}

/// Largest VNI.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Names: 1 to 63 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn check_name(field: &'static str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Invalid::bad(
            "invalid_name",
            field,
            format!("{field} {name:?} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        ))
    }
}

fn same_family(a: IpAddr, net: &IpNet) -> bool {
    a.is_ipv4() == matches!(net, IpNet::V4(_))
}

/// An address a host may hold in `net`: inside, not the network address and,
/// for IPv4 prefixes shorter than /31, not the broadcast address.
/// An interface name the kernel accepts.
fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_graphic() && !b"/:".contains(&b))
}

fn host_in(net: &IpNet, ip: IpAddr) -> bool {
    if !same_family(ip, net) || !net.contains(&ip) {
        return false;
    }
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => ip != IpAddr::V4(n.network()) && ip != IpAddr::V4(n.broadcast()),
        IpNet::V6(n) if n.prefix_len() < 127 => ip != IpAddr::V6(n.network()),
        _ => true,
    }
}

impl State {
    /// Applies a stored object.
    pub fn put(&mut self, obj: Object) {
        match obj {
            Object::Vpc(o) => {
                self.vpcs.insert(o.name.clone(), o);
            }
            Object::Subnet(o) => {
                self.subnets.insert((o.vpc.clone(), o.name.clone()), o);
            }
            Object::Chassis(o) => {
                self.index.chassis(&o, true);
                self.chassis.insert(o.name.clone(), o);
            }
            Object::Port(o) => {
                if let Some(old) = self.ports.get(&o.name) {
                    self.index.port(old, false);
                }
                self.index.port(&o, true);
                self.ports.insert(o.name.clone(), o);
            }
            Object::Vip(o) => {
                if let Some(old) = self.vips.get(&o.spec.name) {
                    self.index.vip(old, false);
                }
                self.index.vip(&o, true);
                self.vips.insert(o.spec.name.clone(), o);
            }
            Object::Replicator(o) => {
                self.replicators.insert(o.name.clone(), o);
            }
            Object::History(_) => {}
            Object::Router(o) => {
                self.routers.insert((o.vpc.clone(), o.id.clone()), o);
            }
            Object::Arbitration(o) => {
                self.arbitration.insert(o.vip.clone(), o);
            }
        }
    }

    /// Removes an object; returns it if it existed.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Object> {
        match key {
            ObjectKey::Vpc(n) => self.vpcs.remove(n).map(Object::Vpc),
            ObjectKey::Subnet(v, n) => self.subnets.remove(&(v.clone(), n.clone())).map(Object::Subnet),
            ObjectKey::Chassis(n) => {
                self.chassis.remove(n).inspect(|o| self.index.chassis(o, false)).map(Object::Chassis)
            }
            ObjectKey::Port(n) => self.ports.remove(n).inspect(|o| self.index.port(o, false)).map(Object::Port),
            ObjectKey::Vip(n) => self.vips.remove(n).inspect(|o| self.index.vip(o, false)).map(Object::Vip),
            ObjectKey::Replicator(n) => self.replicators.remove(n).map(Object::Replicator),
            ObjectKey::History(..) => None,
            ObjectKey::Router(v, id) => self.routers.remove(&(v.clone(), id.clone())).map(Object::Router),
            ObjectKey::Arbitration(n) => self.arbitration.remove(n).map(Object::Arbitration),
        }
    }

    /// The secondary indexes (ports and VIPs by VPC, ports by chassis,
    /// participation, gateways).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The ports of `vpc`.
    pub fn vpc_ports<'a>(&'a self, vpc: &str) -> impl Iterator<Item = &'a Port> + 'a {
        self.index.vpc_ports(vpc).iter().filter_map(|n| self.ports.get(n))
    }

    /// The VIPs of `vpc`.
    pub fn vpc_vips<'a>(&'a self, vpc: &str) -> impl Iterator<Item = &'a Vip> + 'a {
        self.index.vpc_vips(vpc).iter().filter_map(|n| self.vips.get(n))
    }

    /// The subnets of `vpc`.
    pub fn vpc_subnets<'a>(&'a self, vpc: &str) -> impl Iterator<Item = &'a Subnet> + 'a {
        let vpc = vpc.to_string();
        self.subnets.range((vpc.clone(), String::new())..).take_while(move |((v, _), _)| *v == vpc).map(|(_, s)| s)
    }

    /// The object stored under `key`, if any.
    pub fn get(&self, key: &ObjectKey) -> Option<Object> {
        match key {
            ObjectKey::Vpc(n) => self.vpcs.get(n).cloned().map(Object::Vpc),
            ObjectKey::Subnet(v, n) => self.subnets.get(&(v.clone(), n.clone())).cloned().map(Object::Subnet),
            ObjectKey::Chassis(n) => self.chassis.get(n).cloned().map(Object::Chassis),
            ObjectKey::Port(n) => self.ports.get(n).cloned().map(Object::Port),
            ObjectKey::Vip(n) => self.vips.get(n).cloned().map(Object::Vip),
            ObjectKey::Replicator(n) => self.replicators.get(n).cloned().map(Object::Replicator),
            ObjectKey::History(..) => None,
            ObjectKey::Router(v, id) => self.routers.get(&(v.clone(), id.clone())).cloned().map(Object::Router),
            ObjectKey::Arbitration(n) => self.arbitration.get(n).cloned().map(Object::Arbitration),
        }
    }

    fn subnet(&self, vpc: &str, name: &str) -> Option<&Subnet> {
        self.subnets.get(&(vpc.to_string(), name.to_string()))
    }

    fn need_vpc(&self, vpc: &str) -> Result<&Vpc, Invalid> {
        self.vpcs.get(vpc).ok_or_else(|| Invalid::bad("unknown_vpc", "vpc", format!("VPC {vpc:?} does not exist")))
    }

    fn need_subnet(&self, vpc: &str, name: &str) -> Result<&Subnet, Invalid> {
        self.subnet(vpc, name).ok_or_else(|| {
            Invalid::bad("unknown_subnet", "subnet", format!("subnet {name:?} does not exist in VPC {vpc:?}"))
        })
    }

    /// Who already uses `ip` in `vpc` (a port or a VIP), other than `except`.
    fn ip_user(&self, vpc: &str, ip: IpAddr, except: Option<&str>) -> Option<String> {
        let port = self.vpc_ports(vpc).find(|p| p.addresses().any(|a| a == ip) && Some(p.name.as_str()) != except);
        if let Some(p) = port {
            return Some(format!("port {:?}", p.name));
        }
        let vip = self.vpc_vips(vpc).find(|v| v.spec.ip == ip && Some(v.spec.name.as_str()) != except);
        vip.map(|v| format!("VIP {:?}", v.spec.name))
    }

    /// Checks a new VPC.
    pub fn check_vpc(&self, v: &Vpc) -> Result<(), Invalid> {
        check_name("name", &v.name)?;
        if v.vni == 0 || v.vni > MAX_VNI {
            return Err(Invalid::bad("invalid_vni", "vni", format!("vni {} is outside 1..=16777215", v.vni)));
        }
        if self.vpcs.contains_key(&v.name) {
            return Err(Invalid::conflict("exists", Some("name"), format!("VPC {:?} already exists", v.name)));
        }
        if let Some(o) = self.vpcs.values().find(|o| o.vni == v.vni) {
            return Err(Invalid::conflict(
                "duplicate_vni",
                Some("vni"),
                format!("vni {} is used by VPC {:?}", v.vni, o.name),
            ));
        }
        Ok(())
    }

    /// Checks a new subnet.
    pub fn check_subnet(&self, s: &Subnet) -> Result<(), Invalid> {
        check_name("name", &s.name)?;
        self.need_vpc(&s.vpc)?;
        if s.cidr.trunc() != s.cidr {
            return Err(Invalid::bad(
                "invalid_cidr",
                "cidr",
                format!("cidr {} has host bits set (did you mean {}?)", s.cidr, s.cidr.trunc()),
            ));
        }
        if let Some(g) = s.gateway
            && !host_in(&s.cidr, g)
        {
            return Err(Invalid::bad(
                "gateway_outside_subnet",
                "gateway",
                format!("gateway {g} is not a host address of {}", s.cidr),
            ));
        }
        if self.subnet(&s.vpc, &s.name).is_some() {
            return Err(Invalid::conflict(
                "exists",
                Some("name"),
                format!("subnet {:?} already exists in VPC {:?}", s.name, s.vpc),
            ));
        }
        let overlap = self.vpc_subnets(&s.vpc).find(|o| o.cidr.contains(&s.cidr) || s.cidr.contains(&o.cidr));
        if let Some(o) = overlap {
            return Err(Invalid::conflict(
                "overlapping_cidr",
                Some("cidr"),
                format!("cidr {} overlaps subnet {:?} ({}) of VPC {:?}", s.cidr, o.name, o.cidr, s.vpc),
            ));
        }
        Ok(())
    }

    /// Checks a chassis registration (creating or updating it).
    pub fn check_chassis(&self, c: &Chassis) -> Result<(), Invalid> {
        check_name("name", &c.name)?;
        let ip = c.underlay_ip;
        let refuse =
            |code, why: &str| Err(Invalid::bad(code, "underlay_ip", format!("{ip} cannot be a tunnel endpoint{why}")));
        if ip.is_unspecified() || ip.is_multicast() {
            return refuse("invalid_underlay_ip", "");
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            let why = format!(": an IPv4-mapped IPv6 address is the IPv4 address {v4}; register that");
            return refuse("ipv4_mapped_underlay_ip", &why);
        }
        if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return refuse("broadcast_underlay_ip", ": it is the limited broadcast address");
        }
        if ip.is_loopback() {
            return refuse("loopback_underlay_ip", ": a loopback address is every host's own");
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if link_local {
            return refuse("link_local_underlay_ip", ": a link-local address does not identify a host on the underlay");
        }
        // Compared as the addresses they are (`::ffff:a.b.c.d` is a.b.c.d).
        let same = |o: &Chassis| o.underlay_ip.to_canonical() == ip.to_canonical();
        if let Some(o) = self.chassis.values().find(|o| same(o) && o.name != c.name) {
            return Err(Invalid::conflict(
                "duplicate_underlay_ip",
                Some("underlay_ip"),
                format!("underlay ip {ip} is used by chassis {:?}", o.name),
            ));
        }
        Ok(())
    }

    /// Checks a new port.
    pub fn check_port(&self, p: &Port) -> Result<(), Invalid> {
        check_name("name", &p.name)?;
        if self.ports.contains_key(&p.name) {
            return Err(Invalid::conflict("exists", Some("name"), format!("port {:?} already exists", p.name)));
        }
        self.need_vpc(&p.vpc)?;
        let subnet = self.need_subnet(&p.vpc, &p.subnet)?;
        let Some(chassis) = self.chassis.get(&p.chassis) else {
            return Err(Invalid::bad("unknown_chassis", "chassis", format!("chassis {:?} does not exist", p.chassis)));
        };
        if self.vpcs.get(&p.vpc).is_some_and(|v| v.encap == Encap::Gre) && chassis.dataplane != Dataplane::Ovs {
            return Err(Invalid::conflict(
                "encap_unsupported",
                Some("chassis"),
                format!("VPC {:?} uses GRE, which chassis {:?} (kernel data plane) cannot carry", p.vpc, p.chassis),
            ));
        }
        if !p.mac.is_unicast() {
            return Err(Invalid::bad("invalid_mac", "mac", format!("mac {} is multicast or zero", p.mac)));
        }
        if let Some(vrid) = p.mac.vrrp_vrid() {
            return Err(Invalid::bad(
                "vrrp_virtual_mac",
                "mac",
                format!("mac {} is the VRRP virtual MAC of VRID {vrid} (RFC 5798 §7.3), not a port's own", p.mac),
            ));
        }
        if !host_in(&subnet.cidr, p.ip) {
            return Err(Invalid::bad(
                "ip_outside_subnet",
                "ip",
                format!("ip {} is not a host address of subnet {:?} ({})", p.ip, subnet.name, subnet.cidr),
            ));
        }
        if subnet.gateway == Some(p.ip) {
            return Err(Invalid::conflict("duplicate_ip", Some("ip"), format!("ip {} is the subnet's gateway", p.ip)));
        }
        if let Some(user) = self.ip_user(&p.vpc, p.ip, None) {
            return Err(Invalid::conflict(
                "duplicate_ip",
                Some("ip"),
                format!("ip {} is used by {user} in VPC {:?}", p.ip, p.vpc),
            ));
        }
        if let Some(o) = self.vpc_ports(&p.vpc).find(|o| o.mac == p.mac) {
            return Err(Invalid::conflict(
                "duplicate_mac",
                Some("mac"),
                format!("mac {} is used by port {:?} in VPC {:?}", p.mac, o.name, p.vpc),
            ));
        }
        self.check_port_ip6(p)?;
        self.check_attachment(p, chassis)
    }

    /// A dual-stack port's second address: IPv6, in an IPv6 subnet of the
    /// same VPC, unused.
    fn check_port_ip6(&self, p: &Port) -> Result<(), Invalid> {
        let (ip6, name) = match (p.ip6, &p.subnet6) {
            (None, None) => return Ok(()),
            (Some(ip6), Some(name)) => (ip6, name),
            (Some(_), None) => return Err(Invalid::bad("missing_subnet6", "subnet6", "ip6 needs subnet6")),
            (None, Some(_)) => return Err(Invalid::bad("missing_ip6", "ip6", "subnet6 needs ip6")),
        };
        if p.ip.is_ipv6() {
            return Err(Invalid::bad("ip6_needs_ipv4_ip", "ip6", "ip6 is the IPv6 address of a port whose ip is IPv4"));
        }
        let subnet6 = self.subnet(&p.vpc, name).ok_or_else(|| {
            Invalid::bad("unknown_subnet", "subnet6", format!("subnet {name:?} does not exist in VPC {:?}", p.vpc))
        })?;
        let ip = IpAddr::V6(ip6);
        if !host_in(&subnet6.cidr, ip) {
            return Err(Invalid::bad(
                "ip_outside_subnet",
                "ip6",
                format!("ip6 {ip6} is not a host address of subnet {name:?} ({})", subnet6.cidr),
            ));
        }
        if subnet6.gateway == Some(ip) {
            return Err(Invalid::conflict("duplicate_ip", Some("ip6"), format!("ip6 {ip6} is the subnet's gateway")));
        }
        if let Some(user) = self.ip_user(&p.vpc, ip, None) {
            return Err(Invalid::conflict(
                "duplicate_ip",
                Some("ip6"),
                format!("ip6 {ip6} is used by {user} in VPC {:?}", p.vpc),
            ));
        }
        Ok(())
    }

    /// A physical port: on a kernel gateway (and its standby), through an
    /// interface whose device (with the VLAN) fits an interface name and
    /// carries no other port; a VM port has none of that.
    fn check_attachment(&self, p: &Port, chassis: &Chassis) -> Result<(), Invalid> {
        if p.kind == PortKind::Vm {
            for (field, set) in [
                ("interface", p.interface.is_some()),
                ("vlan", p.vlan.is_some()),
                ("standby_chassis", p.standby_chassis.is_some()),
            ] {
                if set {
                    return Err(Invalid::bad(
                        "not_physical",
                        field,
                        format!("{field} is for physical ports (type \"physical\")"),
                    ));
                }
            }
            return Ok(());
        }
        let gateway = |c: &Chassis, field: &'static str| -> Result<(), Invalid> {
            if c.role != Role::Gateway || c.dataplane != Dataplane::Kernel {
                return Err(Invalid::conflict(
                    "not_a_kernel_gateway",
                    Some(field),
                    format!(
                        "chassis {:?} is not a gateway on the kernel data plane: physical ports attach there",
                        c.name
                    ),
                ));
            }
            Ok(())
        };
        gateway(chassis, "chassis")?;
        let Some(interface) = p.interface.as_deref() else {
            return Err(Invalid::bad(
                "missing_interface",
                "interface",
                "a physical port needs the gateway's interface",
            ));
        };
        if !is_ifname(interface) {
            return Err(Invalid::bad(
                "invalid_interface",
                "interface",
                format!("interface {interface:?} is not an interface name (1-15 bytes, no '/', ':' or space)"),
            ));
        }
        if let Some(vlan) = p.vlan {
            if !(1..=4094).contains(&vlan) {
                return Err(Invalid::bad("invalid_vlan", "vlan", format!("vlan {vlan} is outside 1..=4094")));
            }
            if p.device().is_none_or(|d| d.len() > 15) {
                return Err(Invalid::bad(
                    "invalid_interface",
                    "interface",
                    format!("\"{interface}.{vlan}\", the VLAN's device, is longer than 15 bytes"),
                ));
            }
        }
        if let Some(standby) = &p.standby_chassis {
            if standby == &p.chassis {
                return Err(Invalid::bad(
                    "standby_is_chassis",
                    "standby_chassis",
                    "the standby must be another gateway",
                ));
            }
            let Some(s) = self.chassis.get(standby) else {
                return Err(Invalid::bad(
                    "unknown_chassis",
                    "standby_chassis",
                    format!("chassis {standby:?} does not exist"),
                ));
            };
            gateway(s, "standby_chassis")?;
        }
        // One port per attachment: the gateway knows the host by the device.
        let serves = |o: &Port| {
            [Some(&o.chassis), o.standby_chassis.as_ref()].into_iter().flatten().cloned().collect::<Vec<_>>()
        };
        let mine = serves(p);
        if let Some(o) = self.ports.values().find(|o| {
            o.kind == PortKind::Physical && o.device() == p.device() && serves(o).iter().any(|c| mine.contains(c))
        }) {
            return Err(Invalid::conflict(
                "attachment_in_use",
                Some("interface"),
                format!("port {:?} is attached through {} already", o.name, p.device().unwrap_or_default()),
            ));
        }
        Ok(())
    }

    /// Checks a new VIP.
    pub fn check_vip(&self, v: &VipSpec) -> Result<(), Invalid> {
        check_name("name", &v.name)?;
        if self.vips.contains_key(&v.name) {
            return Err(Invalid::conflict("exists", Some("name"), format!("VIP {:?} already exists", v.name)));
        }
        self.need_vpc(&v.vpc)?;
        let subnet = self.need_subnet(&v.vpc, &v.subnet)?;
        if !host_in(&subnet.cidr, v.ip) {
            return Err(Invalid::bad(
                "ip_outside_subnet",
                "ip",
                format!("ip {} is not a host address of subnet {:?} ({})", v.ip, subnet.name, subnet.cidr),
            ));
        }
        if subnet.gateway == Some(v.ip) {
            return Err(Invalid::conflict("duplicate_ip", Some("ip"), format!("ip {} is the subnet's gateway", v.ip)));
        }
        if let Some(user) = self.ip_user(&v.vpc, v.ip, None) {
            return Err(Invalid::conflict(
                "duplicate_ip",
                Some("ip"),
                format!("ip {} is used by {user} in VPC {:?}", v.ip, v.vpc),
            ));
        }
        self.check_members(v)
    }

    /// Checks a VIP's member list (on creation, or when it is replaced).
    pub fn check_members(&self, v: &VipSpec) -> Result<(), Invalid> {
        if v.members.is_empty() {
            return Err(Invalid::bad("no_members", "members", "a VIP needs at least one member port"));
        }
        for (i, m) in v.members.iter().enumerate() {
            if v.members.get(..i).is_some_and(|before| before.contains(m)) {
                return Err(Invalid::bad("duplicate_member", "members", format!("port {m:?} is listed twice")));
            }
            let port = self
                .ports
                .get(m)
                .ok_or_else(|| Invalid::bad("unknown_port", "members", format!("port {m:?} does not exist")))?;
            if port.vpc != v.vpc || (port.subnet != v.subnet && port.subnet6.as_ref() != Some(&v.subnet)) {
                return Err(Invalid::bad(
                    "member_outside_subnet",
                    "members",
                    format!(
                        "port {m:?} is in {}/{}, not in the VIP's subnet {}/{}",
                        port.vpc, port.subnet, v.vpc, v.subnet
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks a replicator registration.
    pub fn check_replicator(&self, r: &Replicator) -> Result<(), Invalid> {
        check_name("name", &r.name)?;
        let ip = r.address.ip();
        if ip.is_unspecified() || ip.is_multicast() || r.address.port() == 0 {
            return Err(Invalid::bad("invalid_address", "address", format!("{} cannot receive VXLAN", r.address)));
        }
        if let Some(o) = self.replicators.values().find(|o| o.address == r.address && o.name != r.name) {
            return Err(Invalid::conflict(
                "duplicate_address",
                Some("address"),
                format!("address {} is used by replicator {:?}", r.address, o.name),
            ));
        }
        Ok(())
    }

    /// Checks the deletion of `key`: it must exist and nothing may refer to it.
    pub fn check_delete(&self, key: &ObjectKey) -> Result<(), Invalid> {
        let in_use = |what: String| Err(Invalid::conflict("in_use", None, what));
        match key {
            ObjectKey::Vpc(n) => {
                if !self.vpcs.contains_key(n) {
                    return Err(Invalid::not_found("VPC", n));
                }
                if let Some(s) = self.vpc_subnets(n).next() {
                    return in_use(format!("VPC {n:?} still has subnet {:?}", s.name));
                }
            }
            ObjectKey::Subnet(v, n) => {
                if self.subnet(v, n).is_none() {
                    return Err(Invalid::not_found("subnet", &format!("{v}/{n}")));
                }
                if let Some(p) = self.vpc_ports(v).find(|p| &p.subnet == n || p.subnet6.as_ref() == Some(n)) {
                    return in_use(format!("subnet {v}/{n} still has port {:?}", p.name));
                }
                if let Some(x) = self.vpc_vips(v).find(|x| &x.spec.subnet == n) {
                    return in_use(format!("subnet {v}/{n} still has VIP {:?}", x.spec.name));
                }
            }
            ObjectKey::Chassis(n) => {
                if !self.chassis.contains_key(n) {
                    return Err(Invalid::not_found("chassis", n));
                }
                if let Some(p) = self.index.chassis_ports(n).iter().next().and_then(|p| self.ports.get(p)) {
                    return in_use(format!("chassis {n:?} still hosts port {:?}", p.name));
                }
                if let Some(p) = self.ports.values().find(|p| p.standby_chassis.as_ref() == Some(n)) {
                    return in_use(format!("chassis {n:?} is the standby of port {:?}", p.name));
                }
            }
            ObjectKey::Port(n) => {
                if !self.ports.contains_key(n) {
                    return Err(Invalid::not_found("port", n));
                }
                if let Some(x) = self.vips.values().find(|x| x.spec.members.contains(n)) {
                    return in_use(format!("port {n:?} is a member of VIP {:?}", x.spec.name));
                }
            }
            ObjectKey::Vip(n) => {
                if !self.vips.contains_key(n) {
                    return Err(Invalid::not_found("VIP", n));
                }
            }
            ObjectKey::Replicator(n) => {
                if !self.replicators.contains_key(n) {
                    return Err(Invalid::not_found("replicator", n));
                }
            }
            ObjectKey::History(v, _) => return Err(Invalid::not_found("history of", v)),
            ObjectKey::Arbitration(n) => {
                if !self.arbitration.contains_key(n) {
                    return Err(Invalid::not_found("arbitration record of", n));
                }
            }
            ObjectKey::Router(v, id) => {
                if !self.routers.contains_key(&(v.clone(), id.clone())) {
                    return Err(Invalid::not_found("VRRP router", &format!("{v}/{id}")));
                }
            }
        }
        Ok(())
    }

    /// Checks a VRRP view report from chassis `r.master.chassis` and fills in
    /// the master's port (from its MAC): the reporter must host a port of
    /// the VPC with that MAC.
    pub fn check_router(&self, r: &mut VrrpRouter) -> Result<(), Invalid> {
        self.need_vpc(&r.vpc)?;
        if r.vrid == 0 {
            return Err(Invalid::bad("invalid_vrid", "vrid", "vrid must be 1 to 255"));
        }
        if !matches!(r.version, 2 | 3) {
            return Err(Invalid::bad(
                "invalid_version",
                "version",
                format!("VRRP version {} is not 2 or 3", r.version),
            ));
        }
        if r.interval_cs == 0 || (r.version == 3 && r.interval_cs > 4095) {
            return Err(Invalid::bad("invalid_interval", "interval_cs", "interval must be 1 to 4095 centiseconds"));
        }
        let v6 = r.master.ip.is_ipv6();
        if r.version == 2 && v6 {
            return Err(Invalid::bad("invalid_version", "version", "VRRPv2 has no IPv6"));
        }
        if r.addresses.is_empty() || r.addresses.iter().any(|a| a.is_ipv6() != v6) {
            return Err(Invalid::bad(
                "invalid_addresses",
                "addresses",
                "addresses must be one or more of the master's address family",
            ));
        }
        if r.destinations.is_empty() || r.destinations.iter().any(|a| a.is_ipv6() != v6) {
            return Err(Invalid::bad(
                "invalid_destinations",
                "destinations",
                "destinations must be one or more of the master's address family",
            ));
        }
        if r.destinations.len() > 255 || r.addresses.len() > 255 {
            return Err(Invalid::bad("too_many", "addresses", "at most 255 addresses and 255 destinations"));
        }
        if r.id != crate::objects::vrrp_router_id(r.vrid, v6) {
            return Err(Invalid::bad("invalid_id", "id", "id must be <vrid>-ipv4 or <vrid>-ipv6"));
        }
        // Adverts come from the master's address in one of the VPC's
        // subnets, or over IPv6 from its link-local address (RFC 5798 §5.1.2.1).
        let ip = r.master.ip;
        let in_subnet = self.vpc_subnets(&r.vpc).any(|s| host_in(&s.cidr, ip));
        if !in_subnet && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            return Err(Invalid::bad(
                "master_outside_subnet",
                "master_ip",
                format!("master ip {ip} is not a host address of any subnet of VPC {:?}", r.vpc),
            ));
        }
        let port = self.vpc_ports(&r.vpc).find(|p| p.mac == r.master.mac && p.chassis == r.master.chassis).ok_or_else(
            || {
                Invalid::forbidden(
                    "not_a_local_port",
                    format!("no port of VPC {:?} on chassis {:?} has MAC {}", r.vpc, r.master.chassis, r.master.mac),
                )
            },
        )?;
        r.master.port = port.name.clone();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> State {
        let mut s = State::default();
        s.put(Object::Vpc(Vpc {
            name: "prod".into(),
            vni: 100,
            bum: BumMode::Replicator,
            arp_suppression: true,
            assist: true,
            encap: Encap::Vxlan,
        }));
        s.put(Object::Subnet(Subnet {
            vpc: "prod".into(),
            name: "web".into(),
            cidr: "192.168.10.0/24".parse().unwrap(),
            gateway: Some("192.168.10.1".parse().unwrap()),
        }));
        for (i, name) in ["hv1", "hv2", "hv3"].iter().enumerate() {
            s.put(Object::Chassis(Chassis {
                name: name.to_string(),
                underlay_ip: format!("172.31.0.{}", i + 1).parse().unwrap(),
                role: Role::Hypervisor,
                dataplane: Dataplane::Kernel,
                liveness: None,
            }));
        }
        for (i, (name, ch)) in [("pay1", "hv1"), ("pay2", "hv2"), ("client", "hv3")].iter().enumerate() {
            s.put(Object::Port(Port::vm(
                name.to_string(),
                "prod",
                "web",
                ch.to_string(),
                format!("02:00:00:00:00:{:02x}", i + 1).parse().unwrap(),
                format!("192.168.10.{}", 11 + i).parse().unwrap(),
            )));
        }
        s.put(Object::Vip(Vip::new(VipSpec {
            name: "pay-vip".into(),
            vpc: "prod".into(),
            subnet: "web".into(),
            ip: "192.168.10.100".parse().unwrap(),
            members: vec!["pay1".into(), "pay2".into()],
        })));
        s
    }

    #[test]
    fn keys_round_trip() {
        for k in [
            ObjectKey::Vpc("a".into()),
            ObjectKey::Subnet("a".into(), "b".into()),
            ObjectKey::History("v".into(), 7),
            ObjectKey::Replicator("r".into()),
        ] {
            assert_eq!(ObjectKey::parse(&k.store_key()), Some(k));
        }
        assert_eq!(ObjectKey::parse("/vipcast/vpcs/a/b"), None);
        assert_eq!(ObjectKey::parse("/other/vpcs/a"), None);
    }

    #[test]
    fn vpc_rules() {
        let s = sample();
        let v = |name: &str, vni| Vpc {
            name: name.into(),
            vni,
            bum: BumMode::Headend,
            arp_suppression: false,
            assist: true,
            encap: Encap::Vxlan,
        };
        assert!(s.check_vpc(&v("dev", 200)).is_ok());
        assert_eq!(s.check_vpc(&v("dev", 0)).unwrap_err().code, "invalid_vni");
        assert_eq!(s.check_vpc(&v("dev", 1 << 24)).unwrap_err().code, "invalid_vni");
        assert_eq!(s.check_vpc(&v("dev", 100)).unwrap_err().code, "duplicate_vni");
        assert_eq!(s.check_vpc(&v("prod", 200)).unwrap_err().kind, InvalidKind::Conflict);
        assert_eq!(s.check_vpc(&v("a/b", 200)).unwrap_err().code, "invalid_name");
    }

    #[test]
    fn subnet_rules() {
        let s = sample();
        let sn = |cidr: &str, gw: Option<&str>| Subnet {
            vpc: "prod".into(),
            name: "db".into(),
            cidr: cidr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
        };
        assert!(s.check_subnet(&sn("192.168.20.0/24", Some("192.168.20.1"))).is_ok());
        assert_eq!(s.check_subnet(&sn("192.168.20.5/24", None)).unwrap_err().code, "invalid_cidr");
        assert_eq!(
            s.check_subnet(&sn("192.168.20.0/24", Some("192.168.21.1"))).unwrap_err().code,
            "gateway_outside_subnet"
        );
        assert_eq!(
            s.check_subnet(&sn("192.168.20.0/24", Some("192.168.20.255"))).unwrap_err().code,
            "gateway_outside_subnet"
        );
        assert_eq!(s.check_subnet(&sn("192.168.0.0/16", None)).unwrap_err().code, "overlapping_cidr");
        let other_vpc = Subnet { vpc: "nope".into(), ..sn("192.168.20.0/24", None) };
        assert_eq!(s.check_subnet(&other_vpc).unwrap_err().code, "unknown_vpc");
    }

    #[test]
    fn port_rules() {
        let s = sample();
        let p = |ip: &str, mac: &str| Port::vm("new", "prod", "web", "hv1", mac.parse().unwrap(), ip.parse().unwrap());
        assert!(s.check_port(&p("192.168.10.50", "02:00:00:00:01:01")).is_ok());
        assert_eq!(s.check_port(&p("192.168.11.50", "02:00:00:00:01:01")).unwrap_err().code, "ip_outside_subnet");
        assert_eq!(s.check_port(&p("192.168.10.11", "02:00:00:00:01:01")).unwrap_err().code, "duplicate_ip");
        assert_eq!(s.check_port(&p("192.168.10.100", "02:00:00:00:01:01")).unwrap_err().code, "duplicate_ip");
        assert_eq!(s.check_port(&p("192.168.10.1", "02:00:00:00:01:01")).unwrap_err().code, "duplicate_ip");
        assert_eq!(s.check_port(&p("192.168.10.50", "02:00:00:00:00:01")).unwrap_err().code, "duplicate_mac");
        assert_eq!(s.check_port(&p("192.168.10.50", "01:00:5e:00:00:01")).unwrap_err().code, "invalid_mac");
        assert_eq!(s.check_port(&p("192.168.10.50", "00:00:00:00:00:00")).unwrap_err().code, "invalid_mac");
        assert_eq!(s.check_port(&p("fd00::5", "02:00:00:00:01:01")).unwrap_err().code, "ip_outside_subnet");
    }

    #[test]
    fn vip_rules_and_deletes() {
        let s = sample();
        let v = |ip: &str, members: &[&str]| VipSpec {
            name: "v2".into(),
            vpc: "prod".into(),
            subnet: "web".into(),
            ip: ip.parse().unwrap(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        assert!(s.check_vip(&v("192.168.10.101", &["pay1"])).is_ok());
        assert_eq!(s.check_vip(&v("192.168.10.12", &["pay1"])).unwrap_err().code, "duplicate_ip");
        assert_eq!(s.check_vip(&v("192.168.10.101", &["ghost"])).unwrap_err().code, "unknown_port");
        assert_eq!(s.check_vip(&v("192.168.10.101", &["pay1", "pay1"])).unwrap_err().code, "duplicate_member");
        assert_eq!(s.check_vip(&v("192.168.10.101", &[])).unwrap_err().code, "no_members");
        assert_eq!(s.check_delete(&ObjectKey::Port("pay1".into())).unwrap_err().code, "in_use");
        assert_eq!(s.check_delete(&ObjectKey::Vpc("prod".into())).unwrap_err().code, "in_use");
        assert_eq!(s.check_delete(&ObjectKey::Chassis("hv1".into())).unwrap_err().code, "in_use");
        assert_eq!(s.check_delete(&ObjectKey::Vpc("ghost".into())).unwrap_err().kind, InvalidKind::NotFound);
        assert!(s.check_delete(&ObjectKey::Port("client".into())).is_ok());
    }

    #[test]
    fn underlay_addresses_that_cannot_be_tunnel_endpoints_are_refused() {
        let s = sample();
        let ch = |ip: &str| Chassis {
            name: "hv9".into(),
            underlay_ip: ip.parse().unwrap(),
            role: Role::Hypervisor,
            dataplane: Dataplane::Kernel,
            liveness: None,
        };
        for (ip, code) in [
            ("0.0.0.0", "invalid_underlay_ip"),
            ("224.0.0.1", "invalid_underlay_ip"),
            ("::ffff:172.31.0.1", "ipv4_mapped_underlay_ip"),
            ("::ffff:172.31.9.9", "ipv4_mapped_underlay_ip"),
            ("255.255.255.255", "broadcast_underlay_ip"),
            ("127.0.0.1", "loopback_underlay_ip"),
            ("127.1.2.3", "loopback_underlay_ip"),
            ("::1", "loopback_underlay_ip"),
            ("169.254.1.1", "link_local_underlay_ip"),
            ("fe80::1", "link_local_underlay_ip"),
            ("172.31.0.1", "duplicate_underlay_ip"),
        ] {
            let e = s.check_chassis(&ch(ip)).unwrap_err();
            assert_eq!((e.code, e.field), (code, Some("underlay_ip")), "{ip}");
        }
        for ip in ["172.31.0.9", "10.255.0.11", "fd00::9", "2001:db8::9"] {
            assert!(s.check_chassis(&ch(ip)).is_ok(), "{ip}");
        }
        // A mapped address stored before it was refused still clashes with its IPv4 form.
        let mut s = s;
        s.put(Object::Chassis(Chassis { name: "old".into(), ..ch("::ffff:172.31.0.7") }));
        assert_eq!(s.check_chassis(&ch("172.31.0.7")).unwrap_err().code, "duplicate_underlay_ip");
    }

    #[test]
    fn a_vrrp_virtual_mac_is_no_port_mac() {
        let s = sample();
        let p =
            |mac: &str| Port::vm("new", "prod", "web", "hv1", mac.parse().unwrap(), "192.168.10.50".parse().unwrap());
        for mac in ["00:00:5e:00:01:33", "00:00:5e:00:02:01"] {
            let e = s.check_port(&p(mac)).unwrap_err();
            assert_eq!((e.code, e.field), ("vrrp_virtual_mac", Some("mac")), "{mac}");
        }
        assert!(s.check_port(&p("00:00:5e:00:03:01")).is_ok());
    }

    #[test]
    fn a_vrrp_master_must_be_in_a_subnet_of_its_vpc() {
        let s = sample();
        let r = |ip: &str, addr: &str, dest: &str| VrrpRouter {
            vpc: "prod".into(),
            id: vrrp_router_id(51, ip.contains(':')),
            vrid: 51,
            version: 3,
            master: VrrpMaster {
                ip: ip.parse().unwrap(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                port: String::new(),
                chassis: "hv1".into(),
            },
            priority: 150,
            interval_cs: 10,
            addresses: vec![addr.parse().unwrap()],
            destinations: vec![dest.parse().unwrap()],
            auth_type: 0,
            observed_at: 1,
            assists: 0,
            last_assist: None,
        };
        for ip in ["10.9.9.9", "192.168.11.1", "192.168.10.0", "192.168.10.255"] {
            let e = s.check_router(&mut r(ip, "192.168.10.100", "224.0.0.18")).unwrap_err();
            assert_eq!((e.code, e.field), ("master_outside_subnet", Some("master_ip")), "{ip}");
        }
        assert!(s.check_router(&mut r("192.168.10.11", "192.168.10.100", "224.0.0.18")).is_ok());
        // IPv6 adverts come from the link-local address.
        assert!(s.check_router(&mut r("fe80::1", "fd00::100", "ff02::12")).is_ok());
        let e = s.check_router(&mut r("fd00::1", "fd00::100", "ff02::12")).unwrap_err();
        assert_eq!(e.code, "master_outside_subnet");
    }
}

//! The lab file (TOML): what `vipcast lab up FILE.toml` builds.
//!
//! Parsing refuses unknown keys; [`LabConfig::validate`] then checks
//! everything that would otherwise fail half-way through building (names,
//! references, addresses, interface-name lengths) and reports every problem
//! at once, each naming the table and key it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// Longest lab name (it prefixes every namespace name).
pub const MAX_LAB_NAME: usize = 32;
/// Longest node name: chassis and replicator names are also interface names
/// in the underlay namespace, so every node name must fit 15 bytes.
pub const MAX_NODE_NAME: usize = 15;
/// At most this many chassis (underlay 10.255.0.10 .. 10.255.0.99).
pub const MAX_CHASSIS: usize = 90;
/// At most this many replicators (underlay 10.255.0.100 .. 10.255.0.249).
pub const MAX_REPLICATORS: usize = 150;
/// At most this many external clients (172.30.0.0/30 .. 172.30.255.0/30).
pub const MAX_EXTERNALS: usize = 256;
/// At most this many VMs (MACs carry the index in two bytes).
pub const MAX_VMS: usize = 65536;

/// Names of the nodes of a lab that are not in the file.
pub const RESERVED_NODE_NAMES: &[&str] = &["net"];
/// Interface names of the underlay namespace that chassis and replicator
/// names (their ports there) must not take.
const RESERVED_IF_NAMES: &[&str] = &["lo", "ul0", "mgmt0"];

/// A whole lab file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// The lab's name; namespaces are `<name>-<node>`.
    pub name: String,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub vpc: Vec<VpcConfig>,
    #[serde(default)]
    pub subnet: Vec<SubnetConfig>,
    #[serde(default)]
    pub chassis: Vec<ChassisConfig>,
    #[serde(default)]
    pub replicator: Vec<ReplicatorConfig>,
    /// VMs, then (after parsing) the `[[host]]`s as members of this list
    /// with [`VmConfig::host`] set: a VIP member, a probe target and a
    /// workload node alike.
    #[serde(default)]
    pub vm: Vec<VmConfig>,
    /// `[[host]]` as read; [`LabConfig::parse`] moves them into `vm`.
    #[serde(default, skip_serializing)]
    pub host: Vec<HostConfig>,
    #[serde(default)]
    pub vip: Vec<VipConfig>,
    #[serde(default)]
    pub external: Vec<ExternalConfig>,
}

/// `[controller]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(default)]
    pub store: StoreKind,
    /// The whole control plane over mutual TLS (default true): the lab
    /// issues a CA, the controller's certificate and one per agent,
    /// replicator and the host (`admin:lab`), and signs heartbeats.
    /// `false` runs it over plain HTTP (`--insecure-plaintext`).
    #[serde(default = "yes")]
    pub tls: bool,
}

impl Default for ControllerConfig {
    fn default() -> ControllerConfig {
        ControllerConfig { store: StoreKind::File, tls: true }
    }
}

/// `[controller] store`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store, in the lab's state directory.
    #[default]
    File,
    /// An etcd started in the underlay namespace.
    Etcd,
}

/// `[[vpc]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcConfig {
    pub name: String,
    pub vni: u32,
    #[serde(default)]
    pub bum: Bum,
    #[serde(default = "yes")]
    pub arp_suppression: bool,
    /// Platform-assisted VRRP handover (default true).
    #[serde(default = "yes")]
    pub assist: bool,
    /// Tunnel encapsulation between chassis (default VXLAN).
    #[serde(default)]
    pub encap: Encap,
}

fn yes() -> bool {
    true
}

/// `[[vpc]] bum`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bum {
    Headend,
    #[default]
    Replicator,
}

impl Bum {
    /// The controller's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Bum::Headend => "headend",
            Bum::Replicator => "replicator",
        }
    }
}

/// `[[vpc]] encap`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// VXLAN (UDP 4789): every data plane.
    #[default]
    Vxlan,
    /// GRE with the VNI as key: Open vSwitch chassis only.
    Gre,
}

impl Encap {
    /// The controller's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Gre => "gre",
        }
    }
}

/// `[[subnet]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    pub vpc: String,
    pub name: String,
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// `[[chassis]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChassisConfig {
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// What switches the chassis' traffic (default the kernel).
    #[serde(default)]
    pub dataplane: Dataplane,
}

/// `[[chassis]] dataplane`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// Linux bridges and VXLAN devices, programmed by the agent over netlink.
    #[default]
    Kernel,
    /// A private Open vSwitch (userspace datapath) in the chassis' namespace,
    /// programmed by the agent over OpenFlow 1.3.
    Ovs,
}

impl Dataplane {
    /// The controller's and the agent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Kernel => "kernel",
            Dataplane::Ovs => "ovs",
        }
    }
}

/// `[[chassis]] role`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Hypervisor,
    Gateway,
}

impl Role {
    /// The controller's and the agent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hypervisor => "hypervisor",
            Role::Gateway => "gateway",
        }
    }
}

/// `[[replicator]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatorConfig {
    pub name: String,
}

/// `[[vm]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    pub chassis: String,
    pub vpc: String,
    pub subnet: String,
    pub ip: IpAddr,
    /// Dual stack: an IPv6 address in subnet `subnet6` of the same VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// Set for a `[[host]]` (whose `chassis` is its gateway).
    #[serde(skip)]
    pub host: Option<HostAttach>,
}

impl VmConfig {
    /// Its address in subnet `subnet` (`ip`, or `ip6` in `subnet6`).
    pub fn ip_in(&self, subnet: &str) -> Option<IpAddr> {
        if self.subnet == subnet {
            Some(self.ip)
        } else if self.subnet6.as_deref() == Some(subnet) {
            self.ip6
        } else {
            None
        }
    }
}

/// `[[host]]`: a bare-metal host, cabled to a gateway chassis (a physical
/// port of the VPC there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    /// A `[[chassis]]` with `role = "gateway"` (kernel data plane).
    pub gateway: String,
    pub vpc: String,
    pub subnet: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// The 802.1Q VLAN the host's frames carry to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// A second gateway, cabled too, that takes the attachment over when the
    /// first is declared dead; the host's side is then a switch (a bridge
    /// in its namespace) with an uplink to each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_gateway: Option<String>,
}

/// How a `[[host]]` is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAttach {
    /// Its index among the `[[host]]` tables.
    pub index: usize,
    pub vlan: Option<u16>,
    pub standby_gateway: Option<String>,
}

/// `[[vip]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    pub name: String,
    pub vpc: String,
    pub subnet: String,
    pub ip: IpAddr,
    pub members: Vec<String>,
    #[serde(default)]
    pub vrrp: Vrrp,
    /// Seconds between adverts.
    #[serde(default = "one_second")]
    pub advert_int: f64,
    /// unicast_peer instead of multicast adverts.
    #[serde(default)]
    pub unicast: bool,
    /// VRRP version, 3 unless 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_version: Option<u8>,
    /// virtual_router_id; 1 + the VIP's index in the file unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrid: Option<u8>,
    /// What the members run behind the VIP (see [`crate::workload`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// `workload = "http"`: the VIP (a `workload = "mariadb"` pair) the
    /// payment service writes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// `[[vip]] workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// A semi-synchronous MariaDB pair: the first member starts as master.
    Mariadb,
    /// A payment service on each member: nginx in front of `vipcast
    /// payment-backend`, writing through the `database` VIP.
    Http,
}

fn one_second() -> f64 {
    1.0
}

/// `[[vip]] vrrp`: who runs VRRP in the member VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vrrp {
    /// Debian's keepalived, started by the lab.
    #[default]
    Keepalived,
    /// vipcast's own `vipcast vrrpd`, started by the lab with the same
    /// keepalived.conf keepalived would get.
    Vipcast,
    /// Nothing: the user runs their own.
    None,
}

/// `[[external]]`: a client outside the VPCs, behind a gateway chassis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    pub name: String,
    /// A `[[chassis]]` with `role = "gateway"`.
    pub gateway: String,
}

/// A lab file that cannot be used: every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The lab's underlay: chassis and replicators are on 10.255.0.0/24.
pub const UNDERLAY: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 255, 0, 0), 24) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};
/// External clients' links are /30s out of this.
pub const EXTERNAL_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 30, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};

impl LabConfig {
    /// Parses TOML (unknown keys refused), moves the hosts into the VM
    /// list and validates it.
    pub fn parse(text: &str) -> Result<LabConfig, ConfigError> {
        let mut cfg: LabConfig = toml::from_str(text).map_err(|e| ConfigError { problems: vec![e.to_string()] })?;
        for (index, h) in std::mem::take(&mut cfg.host).into_iter().enumerate() {
            cfg.vm.push(VmConfig {
                name: h.name,
                chassis: h.gateway,
                vpc: h.vpc,
                subnet: h.subnet,
                ip: h.ip,
                ip6: h.ip6,
                subnet6: h.subnet6,
                host: Some(HostAttach { index, vlan: h.vlan, standby_gateway: h.standby_gateway }),
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a lab file.
    pub fn load(path: &Path) -> Result<LabConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { problems: vec![format!("cannot read {}: {e}", path.display())] })?;
        LabConfig::parse(&text).map_err(|e| ConfigError {
            problems: e.problems.into_iter().map(|p| format!("{}: {p}", path.display())).collect(),
        })
    }

    /// Every problem with this configuration, or nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Validator::default();
        v.check(self);
        if v.problems.is_empty() { Ok(()) } else { Err(ConfigError { problems: v.problems }) }
    }

    /// The VPC named `name`.
    pub fn vpc(&self, name: &str) -> Option<&VpcConfig> {
        self.vpc.iter().find(|v| v.name == name)
    }

    /// The subnet `name` of VPC `vpc`.
    pub fn subnet(&self, vpc: &str, name: &str) -> Option<&SubnetConfig> {
        self.subnet.iter().find(|s| s.vpc == vpc && s.name == name)
    }

    /// The chassis named `name` and its index in the file.
    pub fn chassis(&self, name: &str) -> Option<(usize, &ChassisConfig)> {
        self.chassis.iter().enumerate().find(|(_, c)| c.name == name)
    }

    /// The VM named `name` and its index in the file.
    pub fn vm(&self, name: &str) -> Option<(usize, &VmConfig)> {
        self.vm.iter().enumerate().find(|(_, v)| v.name == name)
    }

    /// The virtual_router_id of VIP number `index`.
    pub fn vrid(&self, index: usize) -> Option<u8> {
        let vip = self.vip.get(index)?;
        vip.vrid.or_else(|| u8::try_from(index + 1).ok())
    }
}

/// Whether `s` is a lab name: letters, digits, `_` (no `-`: it separates the
/// lab from the node in namespace names, so `lab down a` never touches lab `a-b`).
pub fn is_lab_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LAB_NAME && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Names of VPCs, subnets and VIPs: they appear in URLs, file names and
/// keepalived configurations.
fn is_object_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NODE_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !s.starts_with('-')
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

/// How a problem names what it is about: `vm[2] "pay1"`.
fn at(table: &str, index: usize, name: &str) -> String {
    format!("{table}[{index}] {name:?}")
}

/// The table and index of entry `i` of the VM list: `vm`, or `host` for a
/// `[[host]]` moved there.
fn machine<'c>(_c: &LabConfig, i: usize, vm: &'c VmConfig) -> (&'static str, usize, &'c str) {
    match &vm.host {
        Some(h) => ("host", h.index, vm.name.as_str()),
        None => ("vm", i, vm.name.as_str()),
    }
}

fn at_vm(c: &LabConfig, i: usize, vm: &VmConfig) -> String {
    let (table, index, name) = machine(c, i, vm);
    at(table, index, name)
}

impl Validator {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn check(&mut self, c: &LabConfig) {
        if !is_lab_name(&c.name) {
            self.problem(format!(
                "key \"name\": lab name {:?} must be 1..={MAX_LAB_NAME} letters, digits or '_' (no '-': \
                 namespaces are \"<name>-<node>\")",
                c.name
            ));
        }
        self.check_nodes(c);
        self.check_vpcs(c);
        self.check_subnets(c);
        self.check_vms(c);
        self.check_vips(c);
        self.check_externals(c);
    }

    /// Names shared by every kind of node (they are all namespaces).
    fn check_nodes(&mut self, c: &LabConfig) {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        let nodes = c
            .chassis
            .iter()
            .enumerate()
            .map(|(i, n)| ("chassis", i, n.name.as_str()))
            .chain(c.replicator.iter().enumerate().map(|(i, n)| ("replicator", i, n.name.as_str())))
            .chain(c.vm.iter().enumerate().map(|(i, n)| machine(c, i, n)))
            .chain(c.external.iter().enumerate().map(|(i, n)| ("external", i, n.name.as_str())));
        for (table, i, name) in nodes {
            let here = at(table, i, name);
            if !is_node_name(name) {
                self.problem(format!(
                    "{here}, key \"name\": node names are 1..={MAX_NODE_NAME} bytes of letters, digits, '_' and \
                     '-' (not first): they are interface names in the underlay namespace"
                ));
            }
            if RESERVED_NODE_NAMES.contains(&name) {
                self.problem(format!(
                    "{here}, key \"name\": {name:?} is reserved (the namespace \"{}-net\" holds the underlay)",
                    c.name
                ));
            }
            if matches!(table, "chassis" | "replicator") && RESERVED_IF_NAMES.contains(&name) {
                self.problem(format!(
                    "{here}, key \"name\": {name:?} is an interface name the underlay namespace uses already"
                ));
            }
            match seen.get(name) {
                Some(first) => {
                    self.problem(format!("{here}, key \"name\": duplicate node name (also {first})"));
                }
                None => {
                    seen.insert(name, here);
                }
            }
        }
        if c.chassis.len() > MAX_CHASSIS {
            self.problem(format!("[[chassis]]: at most {MAX_CHASSIS} chassis (underlay 10.255.0.10-99)"));
        }
        if c.replicator.len() > MAX_REPLICATORS {
            self.problem(format!("[[replicator]]: at most {MAX_REPLICATORS} replicators (underlay 10.255.0.100-249)"));
        }
        if c.vm.len() > MAX_VMS {
            self.problem(format!("[[vm]]: at most {MAX_VMS} VMs"));
        }
        if c.external.len() > MAX_EXTERNALS {
            self.problem(format!("[[external]]: at most {MAX_EXTERNALS} external clients (172.30.<index>.0/30)"));
        }
    }

    fn check_vpcs(&mut self, c: &LabConfig) {
        let mut names = BTreeSet::new();
        let mut vnis = BTreeMap::new();
        for (i, v) in c.vpc.iter().enumerate() {
            let here = at("vpc", i, &v.name);
            if !is_object_name(&v.name) {
                self.problem(format!("{here}, key \"name\": names are 1..=63 letters, digits, '_', '-' or '.'"));
            }
            if !names.insert(v.name.as_str()) {
                self.problem(format!("{here}, key \"name\": duplicate VPC name"));
            }
            if !(1..=16_777_215).contains(&v.vni) {
                self.problem(format!("{here}, key \"vni\": {} is not in 1..=16777215", v.vni));
            }
            if let Some(other) = vnis.insert(v.vni, v.name.as_str()) {
                self.problem(format!("{here}, key \"vni\": {} is also the VNI of vpc {other:?}", v.vni));
            }
        }
    }

    fn check_subnets(&mut self, c: &LabConfig) {
        let mut names = BTreeSet::new();
        for (i, s) in c.subnet.iter().enumerate() {
            let here = at("subnet", i, &s.name);
            if !is_object_name(&s.name) {
                self.problem(format!("{here}, key \"name\": names are 1..=63 letters, digits, '_', '-' or '.'"));
            }
            if c.vpc(&s.vpc).is_none() {
                self.problem(format!("{here}, key \"vpc\": no [[vpc]] named {:?}", s.vpc));
            }
            if !names.insert((s.vpc.as_str(), s.name.as_str())) {
                self.problem(format!("{here}, key \"name\": duplicate subnet name in vpc {:?}", s.vpc));
            }
            if s.cidr != s.cidr.trunc() {
                self.problem(format!(
                    "{here}, key \"cidr\": {} has host bits set (did you mean {}?)",
                    s.cidr,
                    s.cidr.trunc()
                ));
            }
            if let Some(gw) = s.gateway
                && !usable_host(&s.cidr, gw)
            {
                self.problem(format!("{here}, key \"gateway\": {gw} is not a host address of {}", s.cidr));
            }
            for (j, other) in c.subnet.iter().enumerate().take(i) {
                if other.vpc == s.vpc && overlaps(&other.cidr, &s.cidr) {
                    self.problem(format!(
                        "{here}, key \"cidr\": {} overlaps {} ({}) in the same vpc",
                        s.cidr,
                        other.cidr,
                        at("subnet", j, &other.name)
                    ));
                }
            }
            if overlaps(&s.cidr, &IpNet::V4(UNDERLAY)) {
                self.problem(format!("{here}, key \"cidr\": {} overlaps the lab's underlay {UNDERLAY}", s.cidr));
            }
            if !c.external.is_empty() && overlaps(&s.cidr, &IpNet::V4(EXTERNAL_NET)) {
                self.problem(format!(
                    "{here}, key \"cidr\": {} overlaps {EXTERNAL_NET}, the lab's links to external clients",
                    s.cidr
                ));
            }
        }
    }

    fn check_vms(&mut self, c: &LabConfig) {
        // (vpc, ip) -> who has it, VMs and gateways alike.
        let mut taken: BTreeMap<(&str, IpAddr), String> = BTreeMap::new();
        for (i, s) in c.subnet.iter().enumerate() {
            if let Some(gw) = s.gateway {
                taken.insert((s.vpc.as_str(), gw), format!("the gateway of {}", at("subnet", i, &s.name)));
            }
        }
        for (i, vm) in c.vm.iter().enumerate() {
            let here = at_vm(c, i, vm);
            let key = if vm.host.is_some() { "gateway" } else { "chassis" };
            if let Some(h) = &vm.host {
                self.check_host(c, &here, vm, h);
            }
            match c.chassis(&vm.chassis) {
                None => self.problem(format!("{here}, key \"{key}\": no [[chassis]] named {:?}", vm.chassis)),
                Some((j, ch)) => {
                    if ch.dataplane == Dataplane::Kernel
                        && let Some(vpc) = c.vpc(&vm.vpc)
                        && vpc.encap == Encap::Gre
                    {
                        self.problem(format!(
                            "{here}, key \"chassis\": vpc {:?} has encap = \"gre\", which only Open vSwitch chassis \
                             carry, but {} has dataplane = \"kernel\" (set dataplane = \"ovs\" there, or encap = \
                             \"vxlan\")",
                            vpc.name,
                            at("chassis", j, &ch.name)
                        ));
                    }
                }
            }
            if c.vpc(&vm.vpc).is_none() {
                self.problem(format!("{here}, key \"vpc\": no [[vpc]] named {:?}", vm.vpc));
                continue;
            }
            let Some(subnet) = c.subnet(&vm.vpc, &vm.subnet) else {
                self.problem(format!("{here}, key \"subnet\": vpc {:?} has no subnet {:?}", vm.vpc, vm.subnet));
                continue;
            };
            if !usable_host(&subnet.cidr, vm.ip) {
                self.problem(format!(
                    "{here}, key \"ip\": {} is not a host address of subnet {:?} ({})",
                    vm.ip, subnet.name, subnet.cidr
                ));
            }
            match (vm.ip6, &vm.subnet6) {
                (None, None) => {}
                (Some(ip6), Some(name)) => match c.subnet(&vm.vpc, name) {
                    None => self.problem(format!("{here}, key \"subnet6\": vpc {:?} has no subnet {name:?}", vm.vpc)),
                    Some(s6) => {
                        if !ip6.is_ipv6() || vm.ip.is_ipv6() {
                            self.problem(format!(
                                "{here}, key \"ip6\": {ip6} must be IPv6, the second address of an IPv4 {}",
                                if vm.host.is_some() { "host" } else { "VM" }
                            ));
                        } else if !usable_host(&s6.cidr, ip6) {
                            self.problem(format!(
                                "{here}, key \"ip6\": {ip6} is not a host address of subnet {name:?} ({})",
                                s6.cidr
                            ));
                        }
                        match taken.get(&(vm.vpc.as_str(), ip6)) {
                            Some(other) => self.problem(format!("{here}, key \"ip6\": {ip6} is also {other}")),
                            None => {
                                taken.insert((vm.vpc.as_str(), ip6), here.clone());
                            }
                        }
                    }
                },
                (Some(_), None) => self.problem(format!("{here}, key \"subnet6\": ip6 needs subnet6")),
                (None, Some(_)) => self.problem(format!("{here}, key \"ip6\": subnet6 needs ip6")),
            }
            match taken.get(&(vm.vpc.as_str(), vm.ip)) {
                Some(other) => self.problem(format!("{here}, key \"ip\": {} is also {other}", vm.ip)),
                None => {
                    taken.insert((vm.vpc.as_str(), vm.ip), here);
                }
            }
        }
    }

    /// A host's gateways: kernel gateways, two different ones; its VLAN.
    fn check_host(&mut self, c: &LabConfig, here: &str, vm: &VmConfig, h: &HostAttach) {
        let gateways =
            std::iter::once(("gateway", &vm.chassis)).chain(h.standby_gateway.iter().map(|g| ("standby_gateway", g)));
        for (key, g) in gateways {
            match c.chassis(g) {
                None => {
                    if key == "standby_gateway" {
                        self.problem(format!("{here}, key \"{key}\": no [[chassis]] named {g:?}"));
                    }
                }
                Some((_, ch)) if ch.role != Role::Gateway || ch.dataplane != Dataplane::Kernel => {
                    self.problem(format!(
                        "{here}, key \"{key}\": chassis {g:?} must have role = \"gateway\" and dataplane = \"kernel\" \
                         (hosts attach to kernel gateways)"
                    ));
                }
                Some(_) => {}
            }
        }
        if h.standby_gateway.as_ref() == Some(&vm.chassis) {
            self.problem(format!("{here}, key \"standby_gateway\": the standby must be another gateway"));
        }
        if let Some(v) = h.vlan
            && !(1..=4094).contains(&v)
        {
            self.problem(format!("{here}, key \"vlan\": {v} is not in 1..=4094"));
        }
    }

    fn check_vips(&mut self, c: &LabConfig) {
        let mut names = BTreeSet::new();
        let mut vrids: BTreeMap<(&str, u8), String> = BTreeMap::new();
        for (i, vip) in c.vip.iter().enumerate() {
            let here = at("vip", i, &vip.name);
            if !is_object_name(&vip.name) {
                self.problem(format!("{here}, key \"name\": names are 1..=63 letters, digits, '_', '-' or '.'"));
            }
            if !names.insert(vip.name.as_str()) {
                self.problem(format!("{here}, key \"name\": duplicate VIP name"));
            }
            if c.vpc(&vip.vpc).is_none() {
                self.problem(format!("{here}, key \"vpc\": no [[vpc]] named {:?}", vip.vpc));
            }
            match c.subnet(&vip.vpc, &vip.subnet) {
                None => {
                    self.problem(format!("{here}, key \"subnet\": vpc {:?} has no subnet {:?}", vip.vpc, vip.subnet))
                }
                Some(s) => {
                    if !usable_host(&s.cidr, vip.ip) {
                        self.problem(format!(
                            "{here}, key \"ip\": {} is not a host address of subnet {:?} ({})",
                            vip.ip, s.name, s.cidr
                        ));
                    }
                    if s.gateway == Some(vip.ip) {
                        self.problem(format!("{here}, key \"ip\": {} is the subnet's gateway", vip.ip));
                    }
                }
            }
            if let Some((j, vm)) =
                c.vm.iter().enumerate().find(|(_, vm)| vm.vpc == vip.vpc && (vm.ip == vip.ip || vm.ip6 == Some(vip.ip)))
            {
                self.problem(format!("{here}, key \"ip\": {} is the address of {}", vip.ip, at_vm(c, j, vm)));
            }
            for (j, other) in c.vip.iter().enumerate().take(i) {
                if other.vpc == vip.vpc && other.ip == vip.ip {
                    self.problem(format!("{here}, key \"ip\": {} is also {}", vip.ip, at("vip", j, &other.name)));
                }
            }
            if vip.members.is_empty() {
                self.problem(format!("{here}, key \"members\": a VIP needs at least one member VM"));
            }
            let mut members = BTreeSet::new();
            for m in &vip.members {
                if !members.insert(m.as_str()) {
                    self.problem(format!("{here}, key \"members\": {m:?} is listed twice"));
                }
                match c.vm(m) {
                    None => self.problem(format!("{here}, key \"members\": no [[vm]] or [[host]] named {m:?}")),
                    Some((_, vm)) if vm.vpc != vip.vpc || vm.ip_in(&vip.subnet).is_none() => self.problem(format!(
                        "{here}, key \"members\": {m:?} is in vpc {:?} subnet {:?}, the VIP in vpc {:?} subnet {:?}",
                        vm.vpc, vm.subnet, vip.vpc, vip.subnet
                    )),
                    Some(_) => {}
                }
            }
            match vip.vrrp {
                Vrrp::None => {}
                Vrrp::Keepalived | Vrrp::Vipcast => self.check_keepalived(c, i, vip, &here, &mut vrids),
            }
            match (vip.workload, &vip.database) {
                (Some(Workload::Http), None) => self.problem(format!(
                    "{here}, key \"database\": a payment service needs the VIP of a MariaDB pair to write through"
                )),
                (Some(Workload::Http), Some(db)) => match c.vip.iter().find(|v| &v.name == db) {
                    Some(d) if d.workload == Some(Workload::Mariadb) && d.vpc == vip.vpc => {}
                    Some(_) => self.problem(format!(
                        "{here}, key \"database\": vip {db:?} is not a workload = \"mariadb\" VIP of vpc {:?}",
                        vip.vpc
                    )),
                    None => self.problem(format!("{here}, key \"database\": no [[vip]] named {db:?}")),
                },
                (_, Some(_)) => self.problem(format!("{here}, key \"database\": only for workload = \"http\"")),
                _ => {}
            }
            if vip.workload == Some(Workload::Http) && vip.vrrp != Vrrp::Keepalived {
                self.problem(format!(
                    "{here}, key \"workload\": the payment service is tracked by keepalived's track_file; set vrrp = \
                     \"keepalived\""
                ));
            }
            if vip.workload == Some(Workload::Mariadb) {
                if vip.members.len() != 2 {
                    self.problem(format!(
                        "{here}, key \"workload\": a MariaDB pair needs exactly 2 members, not {}",
                        vip.members.len()
                    ));
                }
                if vip.vrrp != Vrrp::Keepalived {
                    self.problem(format!(
                        "{here}, key \"workload\": the MariaDB pair is driven by keepalived's notify and \
                         track_file; set vrrp = \"keepalived\""
                    ));
                }
            }
        }
    }

    fn check_keepalived<'c>(
        &mut self,
        c: &'c LabConfig,
        i: usize,
        vip: &'c VipConfig,
        here: &str,
        vrids: &mut BTreeMap<(&'c str, u8), String>,
    ) {
        let version = vip.vrrp_version.unwrap_or(3);
        match version {
            2 => {
                let int = vip.advert_int;
                if !(int.fract() == 0.0 && (1.0..=255.0).contains(&int)) {
                    self.problem(format!(
                        "{here}, key \"advert_int\": VRRP version 2 needs whole seconds 1..=255, not {int} \
                         (use vrrp_version = 3 for sub-second adverts)"
                    ));
                }
                if vip.ip.is_ipv6() {
                    self.problem(format!("{here}, key \"vrrp_version\": VRRP version 2 is IPv4 only"));
                }
            }
            3 => {
                let int = vip.advert_int;
                let cs = (int * 100.0).round();
                if !(0.01..=40.95).contains(&int) || (cs - int * 100.0).abs() > 1e-6 {
                    self.problem(format!(
                        "{here}, key \"advert_int\": VRRP version 3 needs 0.01..=40.95 seconds in steps of 0.01, not {int}"
                    ));
                }
            }
            v => self.problem(format!("{here}, key \"vrrp_version\": {v} is neither 2 nor 3")),
        }
        match c.vrid(i) {
            None | Some(0) => self.problem(format!(
                "{here}, key \"vrid\": virtual_router_id must be 1..=255 (the default is 1 + the VIP's index; set \
                 `vrid`)"
            )),
            Some(id) => {
                if let Some(other) = vrids.insert((vip.vpc.as_str(), id), here.to_string()) {
                    self.problem(format!(
                        "{here}, key \"vrid\": virtual_router_id {id} is also used by {other} in vpc {:?}",
                        vip.vpc
                    ));
                }
            }
        }
    }

    fn check_externals(&mut self, c: &LabConfig) {
        for (i, e) in c.external.iter().enumerate() {
            let here = at("external", i, &e.name);
            match c.chassis(&e.gateway) {
                None => self.problem(format!("{here}, key \"gateway\": no [[chassis]] named {:?}", e.gateway)),
                Some((_, ch)) if ch.role != Role::Gateway => self.problem(format!(
                    "{here}, key \"gateway\": chassis {:?} has role = \"{}\", not \"gateway\"",
                    e.gateway,
                    ch.role.as_str()
                )),
                Some(_) => {}
            }
        }
    }
}

/// Whether `ip` is an address a host can have in `net` (not the network or
/// broadcast address of an IPv4 subnet larger than /31).
pub fn usable_host(net: &IpNet, ip: IpAddr) -> bool {
    if !net.contains(&ip) {
        return false;
    }
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => IpAddr::V4(n.network()) != ip && IpAddr::V4(n.broadcast()) != ip,
        IpNet::V6(n) if n.prefix_len() < 127 => IpAddr::V6(n.network()) != ip,
        _ => true,
    }
}

/// Whether two prefixes share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

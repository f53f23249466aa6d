//! What a lab file becomes: every namespace, interface, address and MAC, and
//! the keepalived configurations, computed before anything is built (pure).
//!
//! The conventions here are what the agent and the drills rely on:
//! - namespaces `<lab>-<node>` for every chassis, replicator, VM and external
//!   client, and `<lab>-net` for the underlay;
//! - in `<lab>-net`: bridge `ul0` with 10.255.0.254/24, one port per chassis
//!   and replicator named after the node, and `mgmt0` (the host's way in);
//! - chassis `i` (its index in the file): `ul0` with 10.255.0.(10+i)/24;
//!   replicator `i`: `ul0` with 10.255.0.(100+i)/24;
//! - VM `i`: `eth0`, MTU 1450, MAC [`vm_mac`], its `ip` with the subnet's
//!   prefix length; its peer in the chassis namespace is [`vm_port_name`],
//!   with the alias `vipcast-port:<vm>`;
//! - external client `i`: `eth0` with 172.30.i.2/30, default route via
//!   172.30.i.1 on `ext<i>` in the gateway chassis' namespace;
//! - an Open vSwitch chassis (`dataplane = "ovs"`) keeps its underlay
//!   address on `br-phy` (an OVS bridge whose port is `ul0`, MAC
//!   [`br_phy_mac`]) and has `br-int` with the tunnel ports `vc-vxlan` and
//!   `vc-gre` and its VMs' ports; its daemons run from [`ovs_dir_name`] in the
//!   lab's state directory (see [`crate::ovs`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{Dataplane, LabConfig, Role, StoreKind, Vrrp, Workload};

/// The underlay bridge in `<lab>-net`, and the chassis' underlay interface.
pub const UNDERLAY_IF: &str = "ul0";
/// The underlay bridge's address: where the controller (and etcd) listen.
pub const UNDERLAY_GW: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 254);
/// Prefix length of the underlay.
pub const UNDERLAY_PREFIX: u8 = 24;
/// The controller's port.
pub const CONTROLLER_PORT: u16 = 7600;
/// The interface in `<lab>-net` that the host's veth ends in.
pub const MGMT_IF: &str = "mgmt0";
/// The VMs' interface and the external clients'.
pub const VM_IF: &str = "eth0";
/// MTU inside VMs, on every chassis: the largest inner IP packet that fits a
/// 1500-byte underlay in VXLAN (+50 bytes with the outer Ethernet header);
/// GRE with a key (+42) has 8 bytes to spare. Open vSwitch drops an
/// encapsulated frame that does not fit without an ICMP error, so VMs must
/// never send more; one MTU for all VMs keeps VMs of a VPC that spans kernel
/// and OVS chassis able to talk at full size.
pub const VM_MTU: u32 = 1450;
/// MTU of the underlay.
pub const UNDERLAY_MTU: u32 = 1500;
/// Alias prefix by which the agent finds a VM's port: `vipcast-port:<vm>`.
pub const PORT_ALIAS_PREFIX: &str = "vipcast-port:";
/// Alias of the host end of the management veth: `vipcast-lab:<lab>`.
pub const HOST_ALIAS_PREFIX: &str = "vipcast-lab:";
/// An OVS chassis' bridge that holds its underlay address (port `ul0`).
pub const OVS_PHY_BRIDGE: &str = "br-phy";
/// An OVS chassis' bridge that the agent programs: tunnels and VM ports.
pub const OVS_INT_BRIDGE: &str = "br-int";
/// The VXLAN port of `br-int` (flow-based: remote and key set per flow).
pub const OVS_VXLAN_PORT: &str = "vc-vxlan";
/// The GRE port of `br-int` (flow-based).
pub const OVS_GRE_PORT: &str = "vc-gre";
/// Where an OVS chassis' agent listens for its switch (inside the chassis
/// namespace), and `br-int`'s controller.
pub const OPENFLOW_LISTEN: &str = "127.0.0.1:6653";

/// The name of the underlay namespace of lab `lab`.
pub fn net_namespace(lab: &str) -> String {
    format!("{lab}-net")
}

/// The namespace of node `node` of lab `lab`.
pub fn namespace(lab: &str, node: &str) -> String {
    format!("{lab}-{node}")
}

/// The controller's URL as agents (inside the lab) use it.
pub fn inner_controller_url(tls: bool) -> String {
    format!("{}://{UNDERLAY_GW}:{CONTROLLER_PORT}", if tls { "https" } else { "http" })
}

/// Underlay address of chassis number `index`.
pub fn chassis_underlay_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 0, u8::try_from(10 + index).unwrap_or(u8::MAX))
}

/// Underlay address of replicator number `index`.
pub fn replicator_underlay_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 0, u8::try_from(100 + index).unwrap_or(u8::MAX))
}

/// The deterministic MAC of VM number `index` of lab `lab`: locally
/// administered unicast `02:` + 3 bytes of a hash of the lab name + the index.
pub fn vm_mac(lab: &str, index: usize) -> String {
    let [_, a, b, c] = lab_hash(lab).to_be_bytes();
    let i = u16::try_from(index).unwrap_or(u16::MAX).to_be_bytes();
    format!("02:{a:02x}:{b:02x}:{c:02x}:{:02x}:{:02x}", i[0], i[1])
}

/// The name of VM number `index`'s port in its chassis namespace:
/// `vp<index>-<vm>`, cut to 15 bytes (`vp<index>` alone is already unique).
pub fn vm_port_name(index: usize, vm: &str) -> String {
    let mut s = format!("vp{index}-{vm}");
    s.truncate(15);
    s.trim_end_matches('-').to_string()
}

/// The MAC of `br-phy` on OVS chassis number `index` of lab `lab`: never
/// `ul0`'s (the kernel would then also take the tunnel packets and answer
/// them with ICMP unreachable). `0e:` + 3 bytes of a hash of the lab name +
/// `00:` + the last byte of the chassis' underlay address.
pub fn br_phy_mac(lab: &str, index: usize) -> String {
    let [_, a, b, c] = lab_hash(lab).to_be_bytes();
    let host = chassis_underlay_ip(index).octets()[3];
    format!("0e:{a:02x}:{b:02x}:{c:02x}:00:{host:02x}")
}

/// The run directory of chassis `chassis`' Open vSwitch, relative to the
/// lab's state directory: `ovs-<chassis>`.
pub fn ovs_dir_name(chassis: &str) -> String {
    format!("ovs-{chassis}")
}

/// FNV-1a (32 bits) of the lab name.
fn lab_hash(lab: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in lab.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The /30 of external client number `index`: (gateway side, client side).
pub fn external_addrs(index: usize) -> (Ipv4Net, Ipv4Net) {
    let x = u8::try_from(index).unwrap_or(u8::MAX);
    let net = |host| Ipv4Net::new(Ipv4Addr::new(172, 30, x, host), 30).unwrap_or_default();
    (net(1), net(2))
}

/// The IPv6 /64 of external client number `index`, fd00:30:0:<index>::/64:
/// (gateway side ::1, client side ::2).
pub fn external_addrs6(index: usize) -> (Ipv6Net, Ipv6Net) {
    let x = u16::try_from(index).unwrap_or(u16::MAX);
    let net = |host| Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x30, 0, x, 0, 0, 0, host), 64).unwrap_or_default();
    (net(1), net(2))
}

/// The interface of `[[host]]` number `index` on its gateways (and its
/// VLAN device, `ph<index>.<vlan>`, fits an interface name).
pub fn host_port_name(index: usize) -> String {
    format!("ph{index}")
}

/// A whole lab, planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub lab: String,
    pub net_ns: String,
    pub store: StoreKind,
    /// The control plane over mutual TLS (`[controller] tls`).
    pub tls: bool,
    pub chassis: Vec<ChassisPlan>,
    pub replicators: Vec<ReplicatorPlan>,
    pub vms: Vec<VmPlan>,
    pub externals: Vec<ExternalPlan>,
    pub keepalived: Vec<KeepalivedPlan>,
}

/// A hypervisor or gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisPlan {
    pub name: String,
    pub ns: String,
    pub role: Role,
    pub dataplane: Dataplane,
    pub underlay_ip: Ipv4Addr,
    /// `br-phy`'s MAC on an OVS chassis.
    pub br_phy_mac: Option<String>,
}

/// A replicator node (namespace and underlay address only, for now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatorPlan {
    pub name: String,
    pub ns: String,
    pub underlay_ip: Ipv4Addr,
}

/// A VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub name: String,
    pub index: usize,
    pub ns: String,
    pub chassis: String,
    pub chassis_ns: String,
    /// The chassis' data plane.
    pub dataplane: Dataplane,
    /// Its port (veth peer) in the chassis namespace.
    pub port: String,
    pub mac: String,
    pub vpc: String,
    pub subnet: String,
    /// The VM's address with the subnet's prefix length.
    pub addr: IpNet,
    pub gateway: Option<IpAddr>,
    /// Dual stack: its IPv6 address (with `subnet6`'s prefix length) and
    /// that subnet's gateway.
    pub addr6: Option<IpNet>,
    pub subnet6: Option<String>,
    pub gateway6: Option<IpAddr>,
    /// A `[[host]]`: how it is cabled (then `chassis` is its gateway and
    /// `port` its interface there).
    pub host: Option<HostPlan>,
}

/// A bare-metal host's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub vlan: Option<u16>,
    /// The standby gateway and its namespace (cabled with the same
    /// interface name).
    pub standby: Option<(String, String)>,
}

impl VmPlan {
    /// The device the chassis bridges: the port, or its VLAN for a host.
    pub fn attached_dev(&self) -> String {
        match self.host.as_ref().and_then(|h| h.vlan) {
            Some(v) => format!("{}.{v}", self.port),
            None => self.port.clone(),
        }
    }
}

/// An external client behind a gateway chassis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPlan {
    pub name: String,
    pub index: usize,
    pub ns: String,
    pub gateway: String,
    pub gateway_ns: String,
    /// `ext<index>` in the gateway namespace.
    pub gateway_if: String,
    pub gateway_addr: Ipv4Net,
    pub addr: Ipv4Net,
    /// The IPv6 link to the gateway ([`external_addrs6`]).
    pub gateway_addr6: Ipv6Net,
    pub addr6: Ipv6Net,
}

/// One VRRP daemon (keepalived, or `vipcast vrrpd` with the same
/// keepalived.conf): one VIP in one member VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepalivedPlan {
    /// [`Vrrp::Keepalived`] or [`Vrrp::Vipcast`].
    pub daemon: Vrrp,
    pub vip: String,
    pub vm: String,
    pub ns: String,
    /// The keepalived.conf text.
    pub config: String,
}

/// Stands for the lab's state directory in [`KeepalivedPlan::config`]
/// (paths of a workload's scripts); replaced when the file is written.
pub const STATE_DIR_TOKEN: &str = "@STATE_DIR@";

impl KeepalivedPlan {
    /// A file-name stem unique in the lab: `keepalived-<vip>-<vm>` or
    /// `vrrpd-<vip>-<vm>`.
    pub fn stem(&self) -> String {
        let daemon = if self.daemon == Vrrp::Vipcast { "vrrpd" } else { "keepalived" };
        format!("{daemon}-{}-{}", self.vip, self.vm)
    }
}

impl Plan {
    /// Plans a validated configuration.
    pub fn new(c: &LabConfig) -> Plan {
        let lab = c.name.clone();
        let chassis = c
            .chassis
            .iter()
            .enumerate()
            .map(|(i, ch)| ChassisPlan {
                name: ch.name.clone(),
                ns: namespace(&lab, &ch.name),
                role: ch.role,
                dataplane: ch.dataplane,
                underlay_ip: chassis_underlay_ip(i),
                br_phy_mac: (ch.dataplane == Dataplane::Ovs).then(|| br_phy_mac(&lab, i)),
            })
            .collect();
        let replicators = c
            .replicator
            .iter()
            .enumerate()
            .map(|(i, r)| ReplicatorPlan {
                name: r.name.clone(),
                ns: namespace(&lab, &r.name),
                underlay_ip: replicator_underlay_ip(i),
            })
            .collect();
        let vms =
            c.vm.iter()
                .enumerate()
                .map(|(i, vm)| {
                    let subnet = c.subnet(&vm.vpc, &vm.subnet);
                    let prefix = subnet.map(|s| s.cidr.prefix_len()).unwrap_or(if vm.ip.is_ipv4() { 32 } else { 128 });
                    let subnet6 = vm.subnet6.as_deref().and_then(|n| c.subnet(&vm.vpc, n));
                    let addr6 = vm.ip6.map(|ip6| {
                        let len = subnet6.map(|s| s.cidr.prefix_len()).unwrap_or(128);
                        IpNet::new(ip6, len).unwrap_or_else(|_| IpNet::from(ip6))
                    });
                    let host = vm.host.as_ref().map(|h| HostPlan {
                        vlan: h.vlan,
                        standby: h.standby_gateway.as_ref().map(|g| (g.clone(), namespace(&lab, g))),
                    });
                    let port = match &vm.host {
                        Some(h) => host_port_name(h.index),
                        None => vm_port_name(i, &vm.name),
                    };
                    VmPlan {
                        name: vm.name.clone(),
                        index: i,
                        ns: namespace(&lab, &vm.name),
                        chassis: vm.chassis.clone(),
                        chassis_ns: namespace(&lab, &vm.chassis),
                        dataplane: c.chassis(&vm.chassis).map(|(_, ch)| ch.dataplane).unwrap_or_default(),
                        port,
                        mac: vm_mac(&lab, i),
                        vpc: vm.vpc.clone(),
                        subnet: vm.subnet.clone(),
                        addr: IpNet::new(vm.ip, prefix).unwrap_or_else(|_| IpNet::from(vm.ip)),
                        gateway: subnet.and_then(|s| s.gateway),
                        addr6,
                        subnet6: vm.subnet6.clone(),
                        gateway6: subnet6.and_then(|s| s.gateway),
                        host,
                    }
                })
                .collect();
        let externals = c
            .external
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (gateway_addr, addr) = external_addrs(i);
                let (gateway_addr6, addr6) = external_addrs6(i);
                ExternalPlan {
                    name: e.name.clone(),
                    index: i,
                    ns: namespace(&lab, &e.name),
                    gateway: e.gateway.clone(),
                    gateway_ns: namespace(&lab, &e.gateway),
                    gateway_if: format!("ext{i}"),
                    gateway_addr,
                    addr,
                    gateway_addr6,
                    addr6,
                }
            })
            .collect();
        let mut keepalived = Vec::new();
        for (i, vip) in c.vip.iter().enumerate() {
            if vip.vrrp == Vrrp::None {
                continue;
            }
            let prefix = c.subnet(&vip.vpc, &vip.subnet).map(|s| s.cidr.prefix_len()).unwrap_or(32);
            let member_ips: Vec<IpAddr> =
                vip.members.iter().filter_map(|m| c.vm(m).and_then(|(_, vm)| vm.ip_in(&vip.subnet))).collect();
            for (k, member) in vip.members.iter().enumerate() {
                let Some(member_ip) = c.vm(member).and_then(|(_, vm)| vm.ip_in(&vip.subnet)) else { continue };
                // A workload member's priority follows its role (track_file);
                // both start equal.
                let token = std::path::Path::new(STATE_DIR_TOKEN);
                let workload = vip.workload.map(|w| match w {
                    Workload::Mariadb => {
                        crate::workload::keepalived_lines(&crate::workload::member_dir(token, &vip.name, member))
                    }
                    Workload::Http => {
                        crate::workload::web_keepalived_lines(&crate::workload::web_dir(token, &vip.name, member))
                    }
                });
                let instance = KeepalivedInstance {
                    router_id: member,
                    instance: &vip.name,
                    vrid: c.vrid(i).unwrap_or(1),
                    priority: if k == 0 && vip.workload != Some(Workload::Mariadb) { 150 } else { 100 },
                    advert_int: vip.advert_int,
                    version: vip.vrrp_version.unwrap_or(3),
                    unicast: vip.unicast.then(|| {
                        (member_ip, member_ips.iter().copied().filter(|ip| *ip != member_ip).collect::<Vec<_>>())
                    }),
                    vip: format!("{}/{prefix}", vip.ip),
                    workload,
                };
                keepalived.push(KeepalivedPlan {
                    daemon: vip.vrrp,
                    vip: vip.name.clone(),
                    vm: member.clone(),
                    ns: namespace(&lab, member),
                    config: instance.render(),
                });
            }
        }
        Plan {
            net_ns: net_namespace(&lab),
            lab,
            store: c.controller.store,
            tls: c.controller.tls,
            chassis,
            replicators,
            vms,
            externals,
            keepalived,
        }
    }

    /// Whether any chassis runs Open vSwitch.
    pub fn has_ovs(&self) -> bool {
        self.chassis.iter().any(|c| c.dataplane == Dataplane::Ovs)
    }

    /// Every namespace of the lab, the underlay's first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.net_ns.clone()];
        v.extend(self.chassis.iter().map(|c| c.ns.clone()));
        v.extend(self.replicators.iter().map(|r| r.ns.clone()));
        v.extend(self.vms.iter().map(|m| m.ns.clone()));
        v.extend(self.externals.iter().map(|e| e.ns.clone()));
        v
    }
}

/// The parameters of one keepalived vrrp_instance.
#[derive(Debug)]
struct KeepalivedInstance<'a> {
    router_id: &'a str,
    instance: &'a str,
    vrid: u8,
    priority: u8,
    advert_int: f64,
    version: u8,
    /// (unicast_src_ip, unicast_peer list)
    unicast: Option<(IpAddr, Vec<IpAddr>)>,
    /// VIP/prefix
    vip: String,
    /// A workload's top-level and instance lines.
    workload: Option<(String, String)>,
}

impl KeepalivedInstance<'_> {
    fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("global_defs {{\n    router_id {}\n", self.router_id));
        if self.workload.is_some() {
            s.push_str("    script_user root\n");
        }
        s.push_str("}\n");
        if let Some((top, _)) = &self.workload {
            s.push_str(top);
        }
        s.push_str(&format!("vrrp_instance {} {{\n", self.instance));
        s.push_str("    state BACKUP\n");
        s.push_str(&format!("    interface {VM_IF}\n"));
        s.push_str(&format!("    virtual_router_id {}\n", self.vrid));
        s.push_str(&format!("    priority {}\n", self.priority));
        s.push_str(&format!("    advert_int {}\n", self.advert_int));
        s.push_str(&format!("    version {}\n", self.version));
        if let Some((src, peers)) = &self.unicast {
            s.push_str(&format!("    unicast_src_ip {src}\n    unicast_peer {{\n"));
            for p in peers {
                s.push_str(&format!("        {p}\n"));
            }
            s.push_str("    }\n");
        }
        if let Some((_, lines)) = &self.workload {
            s.push_str(lines);
        }
        s.push_str(&format!("    virtual_ipaddress {{\n        {} dev {VM_IF}\n    }}\n}}\n", self.vip));
        s
    }
}

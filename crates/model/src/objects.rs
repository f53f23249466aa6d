//! The objects of a region. JSON conventions: MACs lowercase colon-separated,
//! IPs and CIDRs as strings, names as given, times in milliseconds since the
//! Unix epoch.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vipcast_packet::MacAddr;

/// How a VPC's broadcast, unknown-unicast and multicast frames are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BumMode {
    /// Each chassis copies BUM frames to every other chassis of the VPC.
    Headend,
    /// Chassis send BUM frames to a replicator, which copies them.
    #[default]
    Replicator,
}

/// How a VPC's frames travel between chassis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// VXLAN (UDP 4789), VNI = the VPC's vni. Every data plane.
    #[default]
    Vxlan,
    /// GRE with key = the VPC's vni. Open vSwitch chassis only.
    Gre,
}

/// What programs a chassis' switching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// The Linux kernel: bridge, VXLAN device, FDB and neighbour entries.
    #[default]
    Kernel,
    /// A local Open vSwitch, programmed by the agent over OpenFlow 1.3.
    Ovs,
}

/// What a chassis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts VM ports.
    #[default]
    Hypervisor,
    /// Routes between VPC subnets and an external network.
    Gateway,
}

fn default_true() -> bool {
    true
}

/// A virtual private cloud: one VXLAN segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Vpc {
    pub name: String,
    /// VXLAN network identifier, 1..=16777215, unique in the region.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16777215, example = 100))]
    pub vni: u32,
    /// BUM handling; default `replicator`.
    #[serde(default)]
    pub bum: BumMode,
    /// Answer ARP / ND on each chassis from the control plane (VXLAN `proxy`);
    /// default true.
    #[cfg_attr(feature = "openapi", schema(default = true))]
    #[serde(default = "default_true")]
    pub arp_suppression: bool,
    /// Platform-assisted VRRP handover: when a VRRP master's port goes down,
    /// its chassis sends the priority-0 advert the master no longer can;
    /// default true.
    #[cfg_attr(feature = "openapi", schema(default = true))]
    #[serde(default = "default_true")]
    pub assist: bool,
    /// Tunnel encapsulation; default `vxlan`. `gre` needs Open vSwitch chassis.
    #[serde(default)]
    pub encap: Encap,
}

/// An IP subnet of a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub vpc: String,
    /// Unique within the VPC.
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "cidr", example = "192.168.10.0/24"))]
    pub cidr: IpNet,
    /// Default gateway of the subnet (inside the CIDR), if routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = "ip", example = "192.168.10.1"))]
    pub gateway: Option<IpAddr>,
}

/// A hypervisor or gateway: one VXLAN tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Chassis {
    pub name: String,
    /// Tunnel endpoint address on the underlay.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "172.31.0.1"))]
    pub underlay_ip: IpAddr,
    #[serde(default)]
    pub role: Role,
    /// What programs its switching; default `kernel`.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Whether the chassis' agent is heard from, as decided by the controller
    /// from its heartbeats; absent until the first heartbeat. Server-managed:
    /// registering again keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Liveness>,
}

impl Chassis {
    /// Declared dead by the control plane (missed heartbeats).
    pub fn is_dead(&self) -> bool {
        self.liveness.is_some_and(|l| !l.alive)
    }
}

/// A chassis' liveness, as last decided by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// Heard within the liveness timeout.
    pub alive: bool,
    /// When the controller decided so (ms since the Unix epoch).
    pub since_ms: u64,
    /// When its last heartbeat before that decision arrived (ms).
    pub last_heard_ms: u64,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A VM's interface on a hypervisor (found by its alias
    /// `vipcast-port:<name>`).
    #[default]
    Vm,
    /// A bare-metal host attached to a gateway chassis through a physical
    /// interface (optionally one 802.1Q VLAN of it), bridged into the VPC.
    Physical,
}

impl PortKind {
    /// Serde: a VM port omits `kind`.
    pub fn is_vm(&self) -> bool {
        *self == PortKind::Vm
    }
}

/// An interface in a VPC subnet, on a chassis: a VM's, or a bare-metal
/// host's attachment to a gateway (`kind: physical`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Unique in the region.
    pub name: String,
    pub vpc: String,
    pub subnet: String,
    /// Where the port is: a VM's hypervisor, or the gateway serving a
    /// physical attachment now (the controller swaps it with
    /// `standby_chassis` when this chassis is declared dead).
    pub chassis: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "mac", example = "02:00:00:00:00:01"))]
    pub mac: MacAddr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "192.168.10.11"))]
    pub ip: IpAddr,
    /// Dual stack: a second address, IPv6, in subnet `subnet6` of the same
    /// VPC (when `ip` is IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = "ipv6", example = "fd00:10::11"))]
    pub ip6: Option<Ipv6Addr>,
    /// The IPv6 subnet of `ip6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// `vm` (default) or `physical`. (JSON `type`: `kind` tags objects in
    /// the store and the watch stream.)
    #[serde(rename = "type", default, skip_serializing_if = "PortKind::is_vm")]
    pub kind: PortKind,
    /// Physical: the gateway's interface the host is cabled to (the same
    /// name on the standby gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "eth1"))]
    pub interface: Option<String>,
    /// Physical: the 802.1Q VLAN of `interface` that carries this host
    /// (1..=4094); untagged when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4094))]
    pub vlan: Option<u16>,
    /// Physical: a second gateway that takes the attachment over when
    /// `chassis` is declared dead (one at a time, never both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_chassis: Option<String>,
}

impl Port {
    /// A VM port with one address.
    pub fn vm(
        name: impl Into<String>,
        vpc: impl Into<String>,
        subnet: impl Into<String>,
        chassis: impl Into<String>,
        mac: MacAddr,
        ip: IpAddr,
    ) -> Port {
        Port {
            name: name.into(),
            vpc: vpc.into(),
            subnet: subnet.into(),
            chassis: chassis.into(),
            mac,
            ip,
            ip6: None,
            subnet6: None,
            kind: PortKind::Vm,
            interface: None,
            vlan: None,
            standby_chassis: None,
        }
    }

    /// The port's addresses: `ip`, and `ip6` when dual stack.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.ip6.map(IpAddr::V6))
    }

    /// Physical: the device the gateway bridges: `interface`, or
    /// `<interface>.<vlan>` for a VLAN.
    pub fn device(&self) -> Option<String> {
        let i = self.interface.as_deref()?;
        Some(match self.vlan {
            Some(v) => format!("{i}.{v}"),
            None => i.to_string(),
        })
    }
}

/// What an operator asks for when creating a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VipSpec {
    /// Unique in the region.
    pub name: String,
    pub vpc: String,
    pub subnet: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "192.168.10.100"))]
    pub ip: IpAddr,
    /// Names of the ports that may hold the VIP.
    pub members: Vec<String>,
}

/// Who holds a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub port: String,
    /// The MAC the VIP answers from (the port's, or the VRRP virtual MAC).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "mac", example = "02:00:00:00:00:01"))]
    pub mac: MacAddr,
    pub chassis: String,
    /// Increases by one with every change of owner.
    pub generation: u64,
    /// When this owner was accepted (ms since the Unix epoch).
    pub since: u64,
}

/// A VIP as stored: the spec plus the control plane's view of it.
/// (Stored data, so no `deny_unknown_fields`: serde does not support it with `flatten`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vip {
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::vip_spec_flattened))]
    pub spec: VipSpec,
    pub owner: Option<Owner>,
    /// When the last changes of owner were accepted (ms, oldest first): at
    /// most [`Damping::moves`](crate::claim::Damping::moves) of them, for
    /// split-brain detection. (Records written before this was bounded may
    /// hold more; the next change of owner trims them.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_moves: Vec<u64>,
    /// Split-brain is reported until this time (ms), 0 for never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub split_brain_until: u64,
    /// Members that may not take the VIP (sorted, no repeats): their claims
    /// are refused and agents do not hand the VIP over to them. E.g. a
    /// database standby that is behind, marked by its health agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ineligible: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Vip {
    /// A new VIP with no owner.
    pub fn new(spec: VipSpec) -> Vip {
        Vip { spec, owner: None, recent_moves: Vec::new(), split_brain_until: 0, ineligible: Vec::new() }
    }

    /// Whether member `port` may take the VIP.
    pub fn eligible(&self, port: &str) -> bool {
        !self.ineligible.iter().any(|p| p == port)
    }

    /// Whether members have been alternating as owner recently.
    pub fn split_brain(&self, now_ms: u64) -> bool {
        now_ms < self.split_brain_until
    }
}

/// What claim arbitration keeps about a VIP between claims, beside the VIP
/// (`/vipcast/arbitration/<vip>`): the controller's bookkeeping, never sent
/// to agents, so that it can change on every move without growing what
/// they are pushed. Fixed size: counters, no lists. See [`crate::claim`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Arbitration {
    pub vip: String,
    /// `observed_at` of the claim that made the current owner (ms, its
    /// sniffer's clock): a claim observed before it is stale.
    #[serde(default)]
    pub owner_observed_at: u64,
    #[serde(default)]
    pub damping: DampingState,
    #[serde(default)]
    pub history: HistorySpan,
}

impl Arbitration {
    /// The record of a new VIP, or of a VIP stored before arbitration
    /// records existed (`vip`'s owner says how far its history went).
    pub fn new(vip: &Vip) -> Arbitration {
        let history = match &vip.owner {
            // Its history may reach back to generation 1.
            Some(o) => HistorySpan { first: 1, last: o.generation, first_at: 0 },
            None => HistorySpan::default(),
        };
        Arbitration { vip: vip.spec.name.clone(), owner_observed_at: 0, damping: DampingState::default(), history }
    }
}

/// Flap damping counters of a VIP (the policy is in [`crate::claim`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DampingState {
    /// When the current counting window opened (ms; its first move).
    pub window_start: u64,
    /// Changes of owner accepted since `window_start`.
    pub moves_in_window: u32,
    /// Claims that would move the VIP are damped until then (ms), unless
    /// its owner has a certain fault; 0 when it never was held.
    pub held_until: u64,
    /// Holds served in a row (each doubles the next one); back to 0 once
    /// the VIP has been calm as long as its last hold lasted.
    pub holds: u32,
}

/// Which generations of a VIP's history are stored: `first..=last`
/// (`/vipcast/history/<vip>/<generation>`), none when `last` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistorySpan {
    pub first: u64,
    pub last: u64,
    /// No later than when `first` was accepted (ms; 0: unknown): while it
    /// is older than the age retention, the oldest records may be due.
    pub first_at: u64,
}

impl HistorySpan {
    /// Whether generation `g` is retained.
    pub fn contains(&self, g: u64) -> bool {
        self.last != 0 && (self.first..=self.last).contains(&g)
    }
}

/// A BUM replicator node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Replicator {
    pub name: String,
    /// Where it receives VXLAN (ip:port).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "172.31.1.1:4789"))]
    pub address: SocketAddr,
}

/// A VRRP virtual router as the platform sees it (the VRRP view): learned
/// passively by the agent of the master's chassis from the adverts the
/// master sends, reported when the master or what it advertises changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VrrpRouter {
    pub vpc: String,
    /// `<vrid>-ipv4` or `<vrid>-ipv6`.
    pub id: String,
    pub vrid: u8,
    /// VRRP version: 2 or 3.
    pub version: u8,
    pub master: VrrpMaster,
    /// The master's advertised priority.
    pub priority: u8,
    /// Advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// The virtual addresses it advertises.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub addresses: Vec<IpAddr>,
    /// Where its adverts go: the VRRP multicast group or each unicast peer.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub destinations: Vec<IpAddr>,
    /// VRRPv2 authentication type (0: none; 1: simple text, which the
    /// platform cannot speak for). Always 0 for v3.
    pub auth_type: u8,
    /// When this master was first seen advertising so (ms since the epoch).
    pub observed_at: u64,
    /// Platform-assisted handovers done for this router (server-managed).
    #[serde(default)]
    pub assists: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_assist: Option<AssistRecord>,
}

/// A router's master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VrrpMaster {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip"))]
    pub ip: IpAddr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "mac"))]
    pub mac: MacAddr,
    /// The port behind which it runs.
    pub port: String,
    pub chassis: String,
}

/// An assisted handover, as reported by the agent that did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssistRecord {
    /// `port-down` (the master's port lost carrier) or `chassis-dead`.
    pub fault: AssistFault,
    /// The chassis whose agent sent the priority-0 advert.
    pub by: String,
    /// The master spoken for.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip"))]
    pub master: IpAddr,
    /// When (ms since the epoch, the agent's clock).
    pub at_ms: u64,
}

/// The certain fault an assisted handover answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum AssistFault {
    PortDown,
    ChassisDead,
}

impl AssistFault {
    pub fn as_str(self) -> &'static str {
        match self {
            AssistFault::PortDown => "port-down",
            AssistFault::ChassisDead => "chassis-dead",
        }
    }
}

/// The id of a router: `<vrid>-ipv4` / `<vrid>-ipv6`.
pub fn vrrp_router_id(vrid: u8, ipv6: bool) -> String {
    format!("{vrid}-{}", if ipv6 { "ipv6" } else { "ipv4" })
}

/// Who reported a GARP / NA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClaimSource {
    Agent,
    Replicator,
}

/// One change of a VIP's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OwnershipChange {
    pub vip: String,
    pub generation: u64,
    /// The new owner.
    pub owner: Owner,
    /// The previous owner's port, if any.
    pub previous_port: Option<String>,
    pub source: ClaimSource,
    /// When the sniffer saw the announcement (ms, its clock).
    pub observed_at: u64,
    /// When the controller accepted the claim (ms).
    pub accepted_at: u64,
    /// Who posted the claim, from its client certificate (`agent:hv1`,
    /// `replicator:rep1`); absent without mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

//! What programs the chassis: the Linux kernel (rtnetlink, packet sockets
//! on the VM ports) or a local Open vSwitch (OpenFlow), behind one trait.
//!
//! The agent's driver computes the plan and the BUM paths; a data plane
//! programs them, names its local ports by interface index (for carrier
//! events), and sends frames into a port (towards its VM) or as if from a
//! port (through the VPC's switching, to local ports and the overlay).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;

use tokio::sync::{mpsc, watch};
use vipcast_model::view::ChassisView;

use crate::kernel::{Kernel, Reconciler};
use crate::metrics::ProgramReport;
use crate::plan::{self, Plan};
use crate::ports::{PortIo, Seen};

/// One chassis' data plane.
pub trait Dataplane: Send {
    /// Programs `view` as `plan` says (`bum`: the replicator's underlay IP
    /// chosen for each replicator-mode VNI). With `read`, what is
    /// programmed is read back in full and what differs repaired (drift);
    /// without, a data plane may write only what changed since its last
    /// call. Failures are logged, and repaired by the next call.
    fn program(
        &mut self,
        view: &ChassisView,
        plan: Plan,
        bum: &BTreeMap<u32, IpAddr>,
        why: &str,
        revision: i64,
        read: bool,
    ) -> impl Future<Output = ProgramReport> + Send;

    /// The local port behind interface `ifindex`, if it is one.
    fn port_of(&self, ifindex: u32) -> Option<String>;

    /// Whether frames can be sent into local port `port`.
    fn has_port(&self, port: &str) -> bool;

    /// Sends `frame` into local port `port` (towards its VM).
    fn send_to_port(&mut self, port: &str, frame: &[u8]) -> anyhow::Result<()>;

    /// Sends `frame` into VNI `vni`'s switching as if it came from local
    /// port `port` (so it reaches the other local ports and the overlay).
    fn send_from_port(&mut self, vni: u32, port: &str, frame: &[u8]) -> anyhow::Result<()>;

    /// Changes that call for a reconcile (a switch (re)connecting), if any.
    fn reconnects(&self) -> Option<watch::Receiver<bool>> {
        None
    }

    /// Where each of `wanted` (VNI, address) is sent, read back from the
    /// data plane where it can be (for `vipcast ctl vip check`); by
    /// default as `plan` says.
    fn forwarding(
        &mut self,
        plan: &Plan,
        wanted: &[(u32, IpAddr)],
    ) -> impl Future<Output = anyhow::Result<Vec<Forward>>> + Send {
        let out = wanted.iter().map(|(vni, ip)| Forward::planned(plan, *vni, *ip)).collect();
        async move { Ok(out) }
    }
}

/// What a data plane does with traffic to an address of a VPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forward {
    /// The MAC its ARP / ND is answered with here (the VXLAN device's
    /// neighbour entry, under ARP suppression).
    pub mac: Option<vipcast_packet::MacAddr>,
    /// The underlay address frames to that MAC are sent to (none: a local
    /// port, or not known here).
    pub underlay: Option<IpAddr>,
    /// Gateways: the MAC routed traffic to it goes to.
    pub routed_mac: Option<vipcast_packet::MacAddr>,
    /// Read from the data plane itself; false: what the agent programmed
    /// last (the switch's flows are read back on every full reconcile).
    pub read_back: bool,
}

impl Forward {
    /// As `plan` says it should be.
    fn planned(plan: &Plan, vni: u32, ip: IpAddr) -> Forward {
        let Some(v) = plan.vpcs.get(&vni) else { return Forward::default() };
        let mac = v.neigh.get(&ip).copied();
        let underlay = mac.and_then(|m| v.fdb.iter().find(|f| f.mac == m).map(|f| f.dst));
        Forward { mac, underlay, routed_mac: v.bridge_neigh.get(&ip).copied(), read_back: false }
    }
}

/// Whether a local port of `view` is not among those `found` last time.
fn any_missing(view: &ChassisView, found: impl Fn(&str) -> bool) -> bool {
    view.vpcs.values().flat_map(|v| &v.local_ports).any(|p| !found(&p.name))
}

/// The kernel data plane: bridges and VXLAN devices over rtnetlink, and a
/// sniffing/sending packet socket on each local VM port.
#[derive(Debug)]
pub struct KernelDataplane {
    kernel: Reconciler,
    /// Open sockets on local ports (only if sniffing or re-announcing).
    ports: BTreeMap<String, PortIo>,
    /// Whether to open them.
    port_sockets: bool,
    /// The view's local ports whose interfaces the last listing found.
    present: BTreeSet<String>,
    seen: mpsc::Sender<Seen>,
    /// VPCs this data plane cannot carry, as last reported.
    unsupported: Vec<String>,
    /// Send-only packet sockets on VPC bridges, by ifindex.
    send_socks: HashMap<u32, vipcast_sys::PacketSocket>,
}

impl KernelDataplane {
    /// `port_sockets`: open a socket on each local port (to sniff what VMs
    /// send, and to send into them); sniffed frames go to `seen`.
    pub fn new(kernel: Kernel, port_sockets: bool, seen: mpsc::Sender<Seen>) -> KernelDataplane {
        KernelDataplane {
            kernel: Reconciler::new(kernel),
            ports: BTreeMap::new(),
            port_sockets,
            present: BTreeSet::new(),
            seen,
            unsupported: Vec::new(),
            send_socks: HashMap::new(),
        }
    }

    /// Lists the local ports' interfaces; opens sockets on those that
    /// appeared, closes those that went.
    async fn sync_ports(&mut self, view: &ChassisView) {
        let wanted: BTreeMap<&str, ()> =
            view.vpcs.values().flat_map(|v| v.local_ports.iter().map(|p| (p.name.as_str(), ()))).collect();
        let present = match self.kernel.kernel().ports().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing ports");
                return;
            }
        };
        self.present = wanted.keys().filter(|p| present.contains_key(**p)).map(|p| p.to_string()).collect();
        if !self.port_sockets {
            return;
        }
        self.ports.retain(|name, io| {
            wanted.contains_key(name.as_str()) && present.get(name).map(|p| p.0) == Some(io.ifindex)
        });
        for name in wanted.keys() {
            if self.ports.contains_key(*name) {
                continue;
            }
            let Some((ifindex, ifname)) = present.get(*name) else { continue };
            match PortIo::open(name, *ifindex, self.seen.clone()) {
                Ok(io) => {
                    tracing::info!(port = name, ifname, "port sockets open");
                    self.ports.insert(name.to_string(), io);
                }
                Err(e) => tracing::warn!(port = name, error = %e, "opening port sockets"),
            }
        }
    }
}

impl Dataplane for KernelDataplane {
    async fn program(
        &mut self,
        view: &ChassisView,
        plan: Plan,
        _bum: &BTreeMap<u32, IpAddr>,
        why: &str,
        revision: i64,
        read: bool,
    ) -> ProgramReport {
        if plan.unsupported != self.unsupported {
            for vpc in &plan.unsupported {
                tracing::warn!(vpc, "VPC uses GRE, which the kernel data plane cannot carry: not programmed here");
            }
            self.unsupported = plan.unsupported.clone();
        }
        // A local port not found last time may have appeared: read, to
        // attach it. Ports' links are listed again only when the kernel
        // was read (the VPCs' ports changed, a snapshot, periodically,
        // after a failure).
        let missing = any_missing(view, |p| self.present.contains(p));
        let report = match self.kernel.reconcile(plan, read || missing).await {
            Ok(out) => {
                let ch = &out.changes;
                if out.drift.total() > 0 {
                    tracing::warn!(why, drift = ?out.drift, revision, "data plane had drifted from what was programmed: repaired");
                } else if ch.total() > 0 {
                    tracing::info!(why, ?ch, revision, read = out.read, "data plane updated");
                }
                ProgramReport { read: out.read, failed: false, drift: out.drift }
            }
            Err(e) => {
                tracing::warn!(why, error = %e, "reconciling the data plane");
                ProgramReport { read: true, failed: true, drift: Default::default() }
            }
        };
        if report.read {
            self.sync_ports(view).await;
        }
        report
    }

    async fn forwarding(&mut self, plan: &Plan, wanted: &[(u32, IpAddr)]) -> anyhow::Result<Vec<Forward>> {
        let obs = self.kernel.kernel().observe(plan).await?;
        let index = |name: String| obs.links.iter().find(|l| l.name == name).map(|l| l.index);
        Ok(wanted
            .iter()
            .map(|(vni, ip)| {
                let vx = index(plan::vxlan_name(*vni));
                let neigh = |dev: Option<u32>| dev.and_then(|i| obs.neigh.get(&i)?.get(ip).copied());
                let mac = neigh(vx);
                let underlay =
                    vx.zip(mac).and_then(|(i, m)| obs.fdb.get(&i)?.iter().find(|f| f.mac == m).map(|f| f.dst));
                Forward { mac, underlay, routed_mac: neigh(index(plan::bridge_name(*vni))), read_back: true }
            })
            .collect())
    }

    fn port_of(&self, ifindex: u32) -> Option<String> {
        self.ports.iter().find(|(_, io)| io.ifindex == ifindex).map(|(p, _)| p.clone())
    }

    fn has_port(&self, port: &str) -> bool {
        self.ports.contains_key(port)
    }

    fn send_to_port(&mut self, port: &str, frame: &[u8]) -> anyhow::Result<()> {
        let io = self.ports.get(port).ok_or_else(|| anyhow::anyhow!("no socket on port {port}"))?;
        Ok(io.send(frame)?)
    }

    fn send_from_port(&mut self, vni: u32, _port: &str, frame: &[u8]) -> anyhow::Result<()> {
        // Into the VPC's bridge, which switches it like a frame from the
        // master's port. Kept per bridge, and bound with protocol 0 (send
        // only): opening an ETH_P_ALL socket and binding it waits for an RCU
        // grace period (~30 ms here), which would delay the advert that much.
        let bridge = vipcast_sys::ifindex(&plan::bridge_name(vni))?;
        let sock = match self.send_socks.entry(bridge) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(vipcast_sys::PacketSocket::bind(bridge, 0)?),
        };
        if let Err(e) = sock.send(frame) {
            // The bridge may have been recreated: open again next time.
            self.send_socks.remove(&bridge);
            return Err(e.into());
        }
        Ok(())
    }
}

/// The Open vSwitch data plane: the agent is the OpenFlow controller of a
/// local switch; the kernel is only asked which VM interfaces exist.
#[derive(Debug)]
pub struct OvsDataplane {
    ovs: crate::ovs::Ovs,
    kernel: Kernel,
    /// Local ports -> (ifindex, interface), as last listed.
    vm_ifnames: BTreeMap<String, (u32, String)>,
    /// Gateways: the switch's database (`ovs-vsctl --db`), where router
    /// ports are added.
    ovsdb: String,
    /// Router ports added to the switch.
    routers_added: BTreeSet<String>,
}

impl OvsDataplane {
    pub fn new(ovs: crate::ovs::Ovs, kernel: Kernel, ovsdb: String) -> OvsDataplane {
        OvsDataplane { ovs, kernel, vm_ifnames: BTreeMap::new(), ovsdb, routers_added: BTreeSet::new() }
    }

    /// Gateways: each routed VPC's router port, an internal port of
    /// `br-int` (added once with `ovs-vsctl`), programmed in the kernel
    /// with the anycast router MAC, the subnets' gateway addresses and a
    /// neighbour entry for each VIP -> its owner; the kernel routes between
    /// it and the external side. VNI -> the ports ready.
    async fn routers(&mut self, view: &ChassisView) -> BTreeMap<u32, String> {
        let mut ready = BTreeMap::new();
        let (routes, _) = plan::routed(view, &|_| true);
        for v in view.vpcs.values() {
            let (Some(addrs), Some(mac)) = (routes.get(&v.vni), v.gateway_mac) else { continue };
            let name = crate::ovs_flows::router_port_name(v.vni);
            if !self.routers_added.contains(&name) {
                let out = tokio::process::Command::new("ovs-vsctl")
                    .arg(format!("--db={}", self.ovsdb))
                    .args(["--timeout=10", "--", "--may-exist", "add-port", crate::ovs_flows::INT_BRIDGE, &name])
                    .args(["--", "set", "Interface", &name, "type=internal"])
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() => {
                        self.routers_added.insert(name.clone());
                    }
                    Ok(o) => {
                        let err = String::from_utf8_lossy(&o.stderr);
                        tracing::warn!(port = name, error = %err.trim(), "adding the router port");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(port = name, error = %e, "running ovs-vsctl");
                        continue;
                    }
                }
            }
            let neigh = v.vips.iter().filter_map(|x| x.owner.as_ref().map(|(m, _, _)| (x.ip, *m))).collect();
            match self.kernel.program_router_port(&name, mac, addrs, &neigh).await {
                Ok(Some(_)) => {
                    ready.insert(v.vni, name);
                }
                Ok(None) => tracing::info!(port = name, "router port not there yet"),
                Err(e) => tracing::warn!(port = name, error = %e, "programming the router port"),
            }
        }
        ready
    }

    fn ifname(&self, port: &str) -> anyhow::Result<&str> {
        self.vm_ifnames
            .get(port)
            .map(|(_, n)| n.as_str())
            .ok_or_else(|| anyhow::anyhow!("no interface for port {port}"))
    }
}

impl Dataplane for OvsDataplane {
    async fn program(
        &mut self,
        view: &ChassisView,
        _plan: Plan,
        bum: &BTreeMap<u32, IpAddr>,
        why: &str,
        revision: i64,
        read: bool,
    ) -> ProgramReport {
        // The VM interfaces are listed again only when they may have
        // changed: a read, or a local port the last listing did not find.
        if read || any_missing(view, |p| self.vm_ifnames.contains_key(p)) {
            match self.kernel.ports().await {
                Ok(p) => self.vm_ifnames = p,
                Err(e) => tracing::warn!(error = %e, "listing ports"),
            }
        }
        let ifnames: BTreeMap<String, String> =
            self.vm_ifnames.iter().map(|(p, (_, n))| (p.clone(), n.clone())).collect();
        let routers =
            if view.role == vipcast_model::Role::Gateway { self.routers(view).await } else { BTreeMap::new() };
        let failed = match self.ovs.apply(view, &ifnames, &routers, &|vni| bum.get(&vni).copied()).await {
            Ok(ch) if ch.total() > 0 => {
                tracing::info!(why, ?ch, revision, "data plane updated (Open vSwitch)");
                false
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(why, error = %e, "programming Open vSwitch");
                true
            }
        };
        // The switch's tables are read on every (re)connection, not here.
        ProgramReport { read: false, failed, drift: Default::default() }
    }

    fn port_of(&self, ifindex: u32) -> Option<String> {
        self.vm_ifnames.iter().find(|(_, (i, _))| *i == ifindex).map(|(p, _)| p.clone())
    }

    fn has_port(&self, port: &str) -> bool {
        self.vm_ifnames.contains_key(port)
    }

    fn send_to_port(&mut self, port: &str, frame: &[u8]) -> anyhow::Result<()> {
        self.ovs.packet_out(self.ifname(port)?, frame)
    }

    fn send_from_port(&mut self, _vni: u32, port: &str, frame: &[u8]) -> anyhow::Result<()> {
        // Through the pipeline as if from the master's own port.
        self.ovs.packet_out_from(self.ifname(port)?, frame)
    }

    fn reconnects(&self) -> Option<watch::Receiver<bool>> {
        Some(self.ovs.subscribe())
    }
}

//! `vipcast lab up`: builds a planned lab step by step. Every step's result
//! is held by a guard ([`Netns`], [`Child`], the host link, the state
//! directory) until [`Builder::commit`]; if a step fails, or the builder is
//! dropped before that, everything built so far is torn down.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::config::{Bum, Dataplane, LabConfig, Role, StoreKind, Vrrp};
use crate::ovs::{Ovs, tx_checksum_off};
use crate::plan::{
    self, CONTROLLER_PORT, ChassisPlan, HOST_ALIAS_PREFIX, HostPlan, MGMT_IF, OPENFLOW_LISTEN, OVS_INT_BRIDGE,
    OVS_PHY_BRIDGE, PORT_ALIAS_PREFIX, Plan, STATE_DIR_TOKEN, UNDERLAY_GW, UNDERLAY_IF, UNDERLAY_MTU, UNDERLAY_PREFIX,
    VM_IF, VM_MTU, VmPlan,
};
use crate::state::{HostLinkState, LabState, NodeState, ProcessState, Root, TlsState, http_get, log_tail};
use crate::{Child, Error, Netns, Result, ip, unique_id};

/// The name of the host's client certificate in a TLS lab (role admin).
pub const HOST_IDENTITY: &str = "lab";

/// How long a daemon must stay up after it is started to count as started.
pub const START_CHECK: Duration = Duration::from_millis(300);
/// etcd's client port in the underlay namespace (TLS when the lab is).
const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's plain port for `/health` (and `/metrics`).
const ETCD_METRICS_PORT: u16 = 2381;

/// How long the controller (and etcd) may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's management addresses are /30s out of this.
pub const MGMT_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 254, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};

/// Held while a lab picks and takes its /30 of [`MGMT_NET`], so that labs
/// built at the same time never take the same one.
pub const HOST_LINK_LOCK: &str = "/run/vipcast/host-link.lock";

/// What `up` needs besides the lab file.
#[derive(Clone, Copy)]
pub struct UpOptions<'a> {
    /// Where state files and directories go.
    pub root: &'a Root,
    /// The vipcast binary (controller and agents are its subcommands).
    pub exe: &'a Path,
    /// The lab file, recorded in the state.
    pub file: Option<&'a Path>,
    /// One line per step.
    pub progress: &'a dyn Fn(&str),
    /// Set (e.g. by Ctrl-C) to stop building and tear down.
    pub cancel: Option<&'a AtomicBool>,
}

impl std::fmt::Debug for UpOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpOptions").field("root", &self.root).field("exe", &self.exe).field("file", &self.file).finish()
    }
}

/// Builds the whole lab: namespaces, underlay, host link, VMs, external
/// clients, the controller, registration, agents, VRRP. On error nothing is
/// left behind.
pub fn up(cfg: &LabConfig, opts: UpOptions<'_>) -> Result<LabState> {
    let mut b = Builder::new(cfg, opts)?;
    b.underlay()?;
    b.host_link()?;
    b.chassis()?;
    b.replicators()?;
    b.vms()?;
    b.externals()?;
    b.controller()?;
    b.register()?;
    b.start_replicators()?;
    b.agents()?;
    b.integration_bridges()?;
    b.wait_ports_attached()?;
    b.workloads()?;
    b.vrrp()?;
    b.commit()
}

/// A daemon started by the builder.
#[derive(Debug)]
struct Started {
    state: ProcessState,
    child: Child,
}

/// The host end of the management veth (deleted on drop unless released).
#[derive(Debug)]
struct HostLink {
    name: String,
    addr: Ipv4Net,
    peer_addr: Ipv4Net,
    keep: bool,
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if !self.keep {
            let _ = ip(&["link", "del", &self.name]);
        }
    }
}

/// A lab under construction.
pub struct Builder<'a> {
    cfg: LabConfig,
    plan: Plan,
    opts: UpOptions<'a>,
    state_dir: PathBuf,
    /// Whether the state directory is ours to remove on failure.
    owns_dir: bool,
    committed: bool,
    // Guards, torn down in this order on failure.
    children: Vec<Started>,
    host: Option<HostLink>,
    namespaces: Vec<Netns>,
    nodes: Vec<NodeState>,
    store: String,
    /// The lab's PKI, once the controller step has created it (TLS labs).
    tls: Option<TlsState>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("lab", &self.plan.lab).field("state_dir", &self.state_dir).finish()
    }
}

impl<'a> Builder<'a> {
    /// Validates `cfg`, checks that the lab is not up (no namespace named
    /// `<name>-…`, no state) and claims its state directory. Creates nothing
    /// else.
    pub fn new(cfg: &LabConfig, opts: UpOptions<'a>) -> Result<Builder<'a>> {
        cfg.validate()?;
        let name = &cfg.name;
        if let Some(ch) = cfg.chassis.iter().find(|c| c.dataplane == Dataplane::Ovs) {
            let missing = crate::ovs::missing_tools();
            if !missing.is_empty() {
                return Err(Error::Lab(format!(
                    "chassis {:?} has dataplane = \"ovs\", but {} {} not in PATH (packages openvswitch-switch and \
                     ethtool; scripts/setup.sh installs them)",
                    ch.name,
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                )));
            }
        }
        let hint = format!("run `vipcast lab down {name}` first");
        if opts.root.state_file(name).exists() {
            return Err(Error::AlreadyUp(format!("lab {name:?} is already up ({hint})")));
        }
        let existing = crate::teardown::lab_namespaces(name)?;
        if !existing.is_empty() {
            return Err(Error::AlreadyUp(format!(
                "lab {name:?} is already up or left over: namespaces {} exist ({hint})",
                existing.join(", ")
            )));
        }
        std::fs::create_dir_all(&opts.root.0)
            .map_err(|e| Error::Lab(format!("cannot create {}: {e}", opts.root.0.display())))?;
        let state_dir = opts.root.state_dir(name);
        // create_dir (not _all) is the lock against a concurrent `lab up` of the same name.
        if let Err(e) = std::fs::create_dir(&state_dir) {
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyUp(format!(
                    "lab {name:?} is being built or left over: {} exists ({hint})",
                    state_dir.display()
                ))
            } else {
                Error::Lab(format!("cannot create {}: {e}", state_dir.display()))
            });
        }
        let store = match cfg.controller.store {
            StoreKind::File => format!("file:{}", state_dir.join("store").display()),
            StoreKind::Etcd => format!("etcd://{UNDERLAY_GW}:{ETCD_CLIENT_PORT}"),
        };
        Ok(Builder {
            cfg: cfg.clone(),
            plan: Plan::new(cfg),
            opts,
            state_dir,
            owns_dir: true,
            committed: false,
            children: Vec::new(),
            host: None,
            namespaces: Vec::new(),
            nodes: Vec::new(),
            store,
            tls: None,
        })
    }

    /// The plan being built.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The lab's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The controller's URL from the host, once the host link exists.
    pub fn controller_url(&self) -> Option<String> {
        let scheme = if self.plan.tls { "https" } else { "http" };
        self.host.as_ref().map(|h| format!("{scheme}://{}:{CONTROLLER_PORT}", h.peer_addr.addr()))
    }

    /// The files the host presents to the controller, once the PKI exists.
    pub fn client_files(&self) -> Option<vipcast_tls::ClientFiles> {
        self.tls.as_ref().map(TlsState::files)
    }

    /// Issues `name`'s certificate (and, for an agent, heartbeat key) from
    /// the lab's CA (created on first use); returns `--ca/--cert/--key` for it.
    fn issue(&mut self, role: vipcast_api::PeerRole, name: &str, sans: Vec<String>) -> Result<Vec<OsString>> {
        if self.tls.is_none() {
            self.pki()?;
        }
        let Some(tls) = &self.tls else {
            return Err(Error::Lab("the lab's CA is missing".into()));
        };
        let req =
            vipcast_tls::pki::Request { role, name: name.to_string(), sans, days: vipcast_tls::pki::DEFAULT_DAYS };
        vipcast_tls::pki::issue(&tls.dir, &req)
            .map_err(|e| Error::Lab(format!("issuing the certificate of {role} {name}: {e}")))?;
        let d = vipcast_tls::pki::Dir(tls.dir.clone());
        Ok(vec![
            "--ca".into(),
            d.ca_cert().into_os_string(),
            "--cert".into(),
            d.cert(name).into_os_string(),
            "--key".into(),
            d.key(name).into_os_string(),
        ])
    }

    /// Creates the lab's CA in `<state dir>/pki` and the host's identity,
    /// `admin:lab`.
    fn pki(&mut self) -> Result<()> {
        let dir = self.state_dir.join("pki");
        let d = vipcast_tls::pki::init(&dir).map_err(|e| Error::Lab(format!("creating the lab's CA: {e}")))?;
        self.tls = Some(TlsState {
            dir: dir.clone(),
            ca: d.ca_cert(),
            cert: d.cert(HOST_IDENTITY),
            key: d.key(HOST_IDENTITY),
        });
        self.issue(vipcast_api::PeerRole::Admin, HOST_IDENTITY, Vec::new())?;
        self.say(&format!("CA in {}; the host is admin:{HOST_IDENTITY}", dir.display()));
        Ok(())
    }

    /// The Open vSwitch of chassis `chassis` (its run directory is
    /// `<state dir>/ovs-<chassis>`).
    pub fn ovs(&self, chassis: &str) -> Ovs {
        Ovs::new(self.state_dir.join(plan::ovs_dir_name(chassis)))
    }

    fn say(&self, line: &str) {
        (self.opts.progress)(&format!("lab {}: {line}", self.plan.lab));
    }

    fn check_cancel(&self) -> Result<()> {
        match self.opts.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    fn new_netns(&mut self, name: &str) -> Result<()> {
        let ns = Netns::new(name)?;
        self.namespaces.push(ns);
        Ok(())
    }

    fn node(&mut self, name: &str, kind: &str, namespace: &str, addresses: Vec<String>, detail: String) {
        self.nodes.push(NodeState {
            name: name.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            addresses,
            detail,
        });
    }

    /// `<lab>-net` with the underlay bridge `ul0` (10.255.0.254/24).
    pub fn underlay(&mut self) -> Result<()> {
        self.check_cancel()?;
        let ns = self.plan.net_ns.clone();
        self.new_netns(&ns)?;
        let gw = format!("{UNDERLAY_GW}/{UNDERLAY_PREFIX}");
        ip(&["-n", &ns, "link", "add", UNDERLAY_IF, "mtu", &UNDERLAY_MTU.to_string(), "type", "bridge"])?;
        ip(&["-n", &ns, "addr", "add", &gw, "dev", UNDERLAY_IF])?;
        ip(&["-n", &ns, "link", "set", UNDERLAY_IF, "up"])?;
        self.node("net", "underlay", &ns, vec![format!("{UNDERLAY_IF} {gw}")], "controller".into());
        self.say(&format!("namespace {ns}: underlay bridge {UNDERLAY_IF} {gw}"));
        Ok(())
    }

    /// The host veth `vc<id>h` <-> `<lab>-net` `mgmt0`, on a /30 of
    /// 10.254.0.0/16 that no host address or route overlaps.
    pub fn host_link(&mut self) -> Result<()> {
        self.check_cancel()?;
        // One lab at a time picks and takes its /30.
        // The lock is the host's, whatever state root a lab uses.
        let lock_path = Path::new(HOST_LINK_LOCK);
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Lab(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = std::fs::File::create(lock_path)
            .map_err(|e| Error::Lab(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.lock().map_err(|e| Error::Lab(format!("cannot lock {}: {e}", lock_path.display())))?;
        let taken = host_prefixes()?;
        let Some(block) = (0..=255u8)
            .map(|x| Ipv4Net::new(Ipv4Addr::new(10, 254, x, 0), 30).unwrap_or_default())
            .find(|b| !taken.iter().any(|t| t.contains(&b.network()) || b.contains(&t.network())))
        else {
            return Err(Error::Lab(
                "no free /30 in 10.254.0.0/16 for the host link: every 10.254.x.0/30 overlaps a host address or route"
                    .into(),
            ));
        };
        let mut name = format!("vc{}h", unique_id());
        while ip(&["link", "show", "dev", &name]).is_ok() {
            name = format!("vc{}h", unique_id());
        }
        let octets = block.network().octets();
        let host_addr = Ipv4Net::new(Ipv4Addr::new(octets[0], octets[1], octets[2], 1), 30).unwrap_or_default();
        let peer_addr = Ipv4Net::new(Ipv4Addr::new(octets[0], octets[1], octets[2], 2), 30).unwrap_or_default();
        let ns = self.plan.net_ns.clone();
        ip(&["link", "add", &name, "type", "veth", "peer", "name", MGMT_IF, "netns", &ns])?;
        self.host = Some(HostLink { name: name.clone(), addr: host_addr, peer_addr, keep: false });
        ip(&["link", "set", "dev", &name, "alias", &format!("{HOST_ALIAS_PREFIX}{}", self.plan.lab)])?;
        ip(&["addr", "add", &host_addr.to_string(), "dev", &name])?;
        ip(&["link", "set", &name, "up"])?;
        ip(&["-n", &ns, "addr", "add", &peer_addr.to_string(), "dev", MGMT_IF])?;
        ip(&["-n", &ns, "link", "set", MGMT_IF, "up"])?;
        drop(lock);
        if let Some(n) = self.nodes.iter_mut().find(|n| n.kind == "underlay") {
            n.addresses.push(format!("{MGMT_IF} {peer_addr}"));
        }
        self.say(&format!("host link {name} {host_addr} <-> {ns} {MGMT_IF} {peer_addr}"));
        Ok(())
    }

    /// A namespace per chassis, its `ul0` on the underlay bridge with
    /// 10.255.0.(10+i)/24; gateways forward IPv4. An OVS chassis gets its
    /// Open vSwitch (see [`Builder::start_ovs`]) and keeps the address on
    /// `br-phy` instead of `ul0`.
    pub fn chassis(&mut self) -> Result<()> {
        let net = self.plan.net_ns.clone();
        for ch in self.plan.chassis.clone() {
            self.check_cancel()?;
            self.new_netns(&ch.ns)?;
            let addr = format!("{}/{UNDERLAY_PREFIX}", ch.underlay_ip);
            let on = match ch.dataplane {
                Dataplane::Kernel => {
                    underlay_port(&net, &ch.ns, &ch.name, Some(&addr))?;
                    UNDERLAY_IF
                }
                Dataplane::Ovs => {
                    underlay_port(&net, &ch.ns, &ch.name, None)?;
                    // What enters an OVS chassis must carry finished checksums: Open
                    // vSwitch reads ul0 through AF_PACKET and takes a checksum a veth
                    // left for "hardware" as it is (a kernel chassis' VXLAN packets
                    // fail tnl_pop, TCP of its VMs dies). With TX checksum offload off
                    // on the underlay bridge's port towards this chassis, the kernel
                    // finishes every checksum (and splits every GSO train, such as
                    // the replicators' UDP GSO) before the frame crosses to it,
                    // whoever sent it: kernel chassis keep the default udpcsum and
                    // their own offloads.
                    tx_checksum_off(&net, &ch.name)?;
                    self.start_ovs(&ch, &addr)?;
                    OVS_PHY_BRIDGE
                }
            };
            if ch.role == Role::Gateway {
                sysctl(&ch.ns, "net.ipv4.ip_forward=1")?;
                sysctl(&ch.ns, "net.ipv6.conf.all.forwarding=1")?;
            }
            let detail = match ch.dataplane {
                Dataplane::Kernel => ch.role.as_str().to_string(),
                Dataplane::Ovs => format!("{}, ovs in {}", ch.role.as_str(), self.ovs(&ch.name).dir().display()),
            };
            self.node(&ch.name, "chassis", &ch.ns, vec![format!("{on} {addr}")], detail);
            self.say(&format!(
                "chassis {} ({}, {}): namespace {}, {on} {addr}",
                ch.name,
                ch.role.as_str(),
                ch.dataplane.as_str(),
                ch.ns
            ));
        }
        Ok(())
    }

    /// Starts chassis `ch`'s Open vSwitch in its namespace: a database in
    /// `<state dir>/ovs-<chassis>/`, `ovsdb-server` and `ovs-vswitchd` (lab
    /// daemons, logs in that directory), then `br-phy` with `ul0` as its port
    /// and the underlay address `addr` on it (routes stay those of the
    /// prefix, so the agent reaches the controller as on a kernel chassis).
    pub fn start_ovs(&mut self, ch: &ChassisPlan, addr: &str) -> Result<()> {
        let ovs = self.ovs(&ch.name);
        let dir = plan::ovs_dir_name(&ch.name);
        ovs.create_db()?;
        let env = ovs.env();
        self.spawn_env(
            "ovsdb-server",
            &ch.name,
            &ch.ns,
            Path::new("ovsdb-server"),
            &ovs.server_args(),
            &format!("{dir}/ovsdb-server.log"),
            &env,
        )?;
        let index = self.children.len() - 1;
        self.wait_ready(index, "ovsdb-server", || ovs.db_ready())?;
        ovs.init_db()?;
        self.spawn_env(
            "ovs-vswitchd",
            &ch.name,
            &ch.ns,
            Path::new("ovs-vswitchd"),
            &ovs.vswitchd_args(),
            &format!("{dir}/ovs-vswitchd.log"),
            &env,
        )?;
        let index = self.children.len() - 1;
        self.wait_ready(index, "ovs-vswitchd", || ovs.vswitchd_ready())?;
        let mac = ch.br_phy_mac.clone().unwrap_or_else(|| plan::br_phy_mac(&self.plan.lab, 0));
        ovs.add_phy_bridge(&ch.ns, &mac, addr)?;
        self.say(&format!(
            "chassis {}: Open vSwitch in {}, {OVS_PHY_BRIDGE} {mac} {addr} (port {UNDERLAY_IF})",
            ch.name,
            ovs.dir().display()
        ));
        Ok(())
    }

    /// A namespace per replicator with its underlay address (the replicator
    /// itself starts after registration, see [`Builder::start_replicators`]).
    pub fn replicators(&mut self) -> Result<()> {
        let net = self.plan.net_ns.clone();
        for r in self.plan.replicators.clone() {
            self.check_cancel()?;
            self.new_netns(&r.ns)?;
            let addr = format!("{}/{UNDERLAY_PREFIX}", r.underlay_ip);
            underlay_port(&net, &r.ns, &r.name, Some(&addr))?;
            self.node(&r.name, "replicator", &r.ns, vec![format!("{UNDERLAY_IF} {addr}")], "replicator".into());
            self.say(&format!("replicator {}: namespace {}, {UNDERLAY_IF} {addr}", r.name, r.ns));
        }
        Ok(())
    }

    /// A namespace per VM: `eth0` (MTU 1450, its MAC, its address, default
    /// route via the subnet gateway, no DAD); the peer in the chassis
    /// namespace is up, unattached, with the alias `vipcast-port:<vm>`. On
    /// an OVS chassis `eth0` has TX checksum offload off (Open vSwitch reads
    /// the peer through AF_PACKET and would forward unfinished checksums).
    pub fn vms(&mut self) -> Result<()> {
        for vm in self.plan.vms.clone() {
            self.check_cancel()?;
            self.new_netns(&vm.ns)?;
            match &vm.host {
                None => self.cable_vm(&vm)?,
                Some(h) => self.cable_host(&vm, h)?,
            }
            sysctl(&vm.ns, &format!("net.ipv6.conf.{VM_IF}.accept_dad=0"))?;
            // A VM whose cable is pulled keeps its addresses (carrier loss);
            // the drills' link-down sets eth0 administratively down, which
            // would otherwise flush its IPv6 addresses.
            sysctl(&vm.ns, &format!("net.ipv6.conf.{VM_IF}.keep_addr_on_down=1"))?;
            let mut addresses = Vec::new();
            for a in std::iter::once(vm.addr).chain(vm.addr6) {
                let addr = a.to_string();
                let mut add = vec!["-n", vm.ns.as_str(), "addr", "add", addr.as_str(), "dev", VM_IF];
                if a.addr().is_ipv6() {
                    add.push("nodad");
                }
                ip(&add)?;
                addresses.push(format!("{VM_IF} {addr}"));
            }
            ip(&["-n", &vm.ns, "link", "set", VM_IF, "up"])?;
            for gw in [vm.gateway, vm.gateway6].into_iter().flatten() {
                let family = if gw.is_ipv6() { "-6" } else { "-4" };
                ip(&["-n", &vm.ns, family, "route", "add", "default", "via", &gw.to_string(), "dev", VM_IF])?;
            }
            let (kind, what) = if vm.host.is_some() { ("host", "gateway") } else { ("vm", "chassis") };
            let detail = format!("on {} port {}, {} {}/{}", vm.chassis, vm.attached_dev(), vm.mac, vm.vpc, vm.subnet);
            self.node(&vm.name, kind, &vm.ns, addresses.clone(), detail);
            self.say(&format!(
                "{kind} {}: namespace {}, {}, {}{}; port {} in {what} {}",
                vm.name,
                vm.ns,
                addresses.join(", "),
                vm.mac,
                vm.gateway.map(|g| format!(" via {g}")).unwrap_or_default(),
                vm.attached_dev(),
                vm.chassis
            ));
        }
        Ok(())
    }

    /// A VM's `eth0` and its port in the chassis namespace.
    fn cable_vm(&mut self, vm: &VmPlan) -> Result<()> {
        let mtu = VM_MTU.to_string();
        #[rustfmt::skip]
        ip(&[
            "link", "add", VM_IF, "netns", &vm.ns, "mtu", &mtu, "address", &vm.mac, "type", "veth",
            "peer", "name", &vm.port, "netns", &vm.chassis_ns, "mtu", &mtu,
        ])?;
        if vm.dataplane == Dataplane::Ovs {
            // The device's setting: the same whether made before or after the move.
            tx_checksum_off(&vm.ns, VM_IF)?;
        }
        let alias = format!("{PORT_ALIAS_PREFIX}{}", vm.name);
        ip(&["-n", &vm.chassis_ns, "link", "set", "dev", &vm.port, "alias", &alias])?;
        ip(&["-n", &vm.chassis_ns, "link", "set", &vm.port, "up"])?;
        Ok(())
    }

    /// A bare-metal host: a cable from its NIC to `ph<i>` on its gateway;
    /// with a standby gateway, a switch in between (bridge `tor0` in the
    /// host's namespace, an uplink `up1`/`up2` to `ph<i>` on each gateway,
    /// the NIC on `tor-h`); with a VLAN, `eth0` is that VLAN of the NIC
    /// (`link0`). The gateways' ends are up and unlabelled: their agents
    /// label and bridge the one serving the host.
    fn cable_host(&mut self, vm: &VmPlan, h: &HostPlan) -> Result<()> {
        let mtu = VM_MTU.to_string();
        let veth = |a: &str, a_ns: &str, b: &str, b_ns: &str| {
            #[rustfmt::skip]
            let r = ip(&[
                "link", "add", a, "netns", a_ns, "mtu", &mtu, "type", "veth", "peer", "name", b, "netns", b_ns, "mtu", &mtu,
            ]);
            r
        };
        let nic = if h.vlan.is_some() { "link0" } else { VM_IF };
        match &h.standby {
            None => {
                veth(nic, &vm.ns, &vm.port, &vm.chassis_ns)?;
            }
            Some((_, standby_ns)) => {
                ip(&["-n", &vm.ns, "link", "add", "tor0", "type", "bridge"])?;
                veth("up1", &vm.ns, &vm.port, &vm.chassis_ns)?;
                veth("up2", &vm.ns, &vm.port, standby_ns)?;
                veth(nic, &vm.ns, "tor-h", &vm.ns)?;
                for p in ["up1", "up2", "tor-h"] {
                    ip(&["-n", &vm.ns, "link", "set", p, "master", "tor0", "up"])?;
                }
                ip(&["-n", &vm.ns, "link", "set", "tor0", "up"])?;
                ip(&["-n", standby_ns, "link", "set", &vm.port, "up"])?;
            }
        }
        if let Some(vid) = h.vlan {
            ip(&["-n", &vm.ns, "link", "set", nic, "up"])?;
            #[rustfmt::skip]
            ip(&["-n", &vm.ns, "link", "add", "link", nic, "name", VM_IF, "type", "vlan", "id", &vid.to_string()])
                .map_err(|e| Error::Lab(format!(
                    "host {}: vlan = {vid} needs 802.1Q VLAN devices, which this kernel does not have \
                     (CONFIG_VLAN_8021Q): {e}",
                    vm.name
                )))?;
        }
        ip(&["-n", &vm.ns, "link", "set", VM_IF, "address", &vm.mac])?;
        ip(&["-n", &vm.chassis_ns, "link", "set", &vm.port, "up"])?;
        Ok(())
    }

    /// A namespace per external client: `eth0` 172.30.i.2/30 to `ext<i>`
    /// 172.30.i.1/30 on its gateway chassis, default route via the gateway.
    pub fn externals(&mut self) -> Result<()> {
        for e in self.plan.externals.clone() {
            self.check_cancel()?;
            self.new_netns(&e.ns)?;
            ip(&[
                "link",
                "add",
                VM_IF,
                "netns",
                &e.ns,
                "type",
                "veth",
                "peer",
                "name",
                &e.gateway_if,
                "netns",
                &e.gateway_ns,
            ])?;
            ip(&["-n", &e.ns, "addr", "add", &e.addr.to_string(), "dev", VM_IF])?;
            ip(&["-n", &e.ns, "addr", "add", &e.addr6.to_string(), "dev", VM_IF, "nodad"])?;
            ip(&["-n", &e.ns, "link", "set", VM_IF, "up"])?;
            ip(&["-n", &e.ns, "route", "add", "default", "via", &e.gateway_addr.addr().to_string()])?;
            ip(&["-n", &e.ns, "-6", "route", "add", "default", "via", &e.gateway_addr6.addr().to_string()])?;
            ip(&["-n", &e.gateway_ns, "addr", "add", &e.gateway_addr.to_string(), "dev", &e.gateway_if])?;
            ip(&["-n", &e.gateway_ns, "addr", "add", &e.gateway_addr6.to_string(), "dev", &e.gateway_if, "nodad"])?;
            ip(&["-n", &e.gateway_ns, "link", "set", &e.gateway_if, "up"])?;
            sysctl(&e.gateway_ns, "net.ipv4.ip_forward=1")?;
            sysctl(&e.gateway_ns, "net.ipv6.conf.all.forwarding=1")?;
            if let Some(n) = self.nodes.iter_mut().find(|n| n.kind == "chassis" && n.name == e.gateway) {
                n.addresses.push(format!("{} {}", e.gateway_if, e.gateway_addr));
                n.addresses.push(format!("{} {}", e.gateway_if, e.gateway_addr6));
            }
            // The other gateways reach this client through its gateway over
            // the underlay (as gateways sharing one upstream would): a host
            // served by another gateway answers through that one.
            for other in self.plan.chassis.iter().filter(|c| c.role == Role::Gateway && c.name != e.gateway) {
                let via = self.plan.chassis.iter().find(|c| c.name == e.gateway).map(|c| c.underlay_ip.to_string());
                if let Some(via) = via {
                    ip(&["-n", &other.ns, "route", "add", &e.addr.trunc().to_string(), "via", &via])?;
                }
            }
            let detail = format!("behind {} {}", e.gateway, e.gateway_if);
            let addresses = vec![format!("{VM_IF} {}", e.addr), format!("{VM_IF} {}", e.addr6)];
            self.node(&e.name, "external", &e.ns, addresses, detail);
            self.say(&format!(
                "external {}: namespace {}, {VM_IF} {} via {} on {} {}",
                e.name,
                e.ns,
                e.addr,
                e.gateway_addr.addr(),
                e.gateway,
                e.gateway_if
            ));
        }
        Ok(())
    }

    /// Starts `program args` in namespace `ns` with its output in
    /// `<state dir>/<log>`, in its own process group (so it outlives `lab
    /// up` and a Ctrl-C there is handled by the builder).
    fn spawn(&mut self, role: &str, node: &str, ns: &str, program: &Path, args: &[OsString], log: &str) -> Result<()> {
        self.spawn_env(role, node, ns, program, args, log, &[])
    }

    /// [`Builder::spawn`] with `env` added to the environment.
    #[allow(clippy::too_many_arguments)]
    fn spawn_env(
        &mut self,
        role: &str,
        node: &str,
        ns: &str,
        program: &Path,
        args: &[OsString],
        log: &str,
        env: &[(&str, PathBuf)],
    ) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args).process_group(0);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_os_str())));
        if role == "etcd" {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD") {
                    cmd.env_remove(key);
                }
            }
        }
        let log = self.state_dir.join(log);
        let child = Child::spawn(&mut cmd, &log)?;
        let command = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let state = ProcessState {
            role: role.to_string(),
            node: node.to_string(),
            namespace: ns.to_string(),
            pid: child.id(),
            program: program.to_string_lossy().into_owned(),
            command,
            log,
        };
        self.children.push(Started { state, child });
        Ok(())
    }

    /// An error for a started daemon that exited, with the end of its log.
    fn exited(started: &mut Started, hint: &str) -> Error {
        let status = started.child.exit_status().map(|s| s.to_string()).unwrap_or_else(|| "still running".into());
        let s = &started.state;
        Error::Lab(format!(
            "{} {} exited right after it started ({status}){hint}\ncommand: {}\nlog {}:\n{}",
            s.role,
            s.node,
            s.command,
            s.log.display(),
            indent(&log_tail(&s.log, 20))
        ))
    }

    /// Waits [`START_CHECK`], then fails if any daemon started since
    /// `first` (an index into the started list) has exited.
    fn check_started(&mut self, first: usize) -> Result<()> {
        self.sleep(START_CHECK)?;
        for s in self.children.iter_mut().skip(first) {
            if !s.child.is_running() {
                let hint =
                    if s.state.role == "agent" { "; does this vipcast have the `agent` subcommand yet?" } else { "" };
                return Err(Self::exited(s, hint));
            }
        }
        Ok(())
    }

    fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.check_cancel()?;
            std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
        }
        Ok(())
    }

    /// Waits until `ready` or the daemon `index` exits or [`READY_TIMEOUT`].
    fn wait_ready(&mut self, index: usize, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_cancel()?;
            if ready() {
                return Ok(());
            }
            let Some(s) = self.children.get_mut(index) else {
                return Err(Error::Lab(format!("{what}: no such process")));
            };
            if !s.child.is_running() {
                return Err(Self::exited(s, ""));
            }
            if Instant::now() >= end {
                return Err(Error::Lab(format!(
                    "{what} did not become ready within {} s; log {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    s.state.log.display(),
                    indent(&log_tail(&s.state.log, 20))
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the controller in `<lab>-net` on 0.0.0.0:7600 (and first an
    /// etcd on 10.255.0.254:2379 when the store is etcd: over TLS with
    /// client certificates when the lab is, its peer port on the namespace's
    /// loopback) and waits until it answers `/healthz` through the host link.
    pub fn controller(&mut self) -> Result<()> {
        self.check_cancel()?;
        let Some(url) = self.controller_url() else {
            return Err(Error::Lab("the controller needs the host link first".into()));
        };
        let ns = self.plan.net_ns.clone();
        // The controller's certificate first: with an etcd store over TLS it
        // is also the one presented to etcd.
        let controller_tls = if self.plan.tls {
            let host = self.host.as_ref().map(|h| h.peer_addr.addr().to_string()).unwrap_or_default();
            let sans = vec![host, UNDERLAY_GW.to_string(), "127.0.0.1".to_string()];
            let files = self.issue(vipcast_api::PeerRole::Controller, "controller", sans)?;
            Some((vipcast_tls::pki::Dir(self.tls.as_ref().map(|t| t.dir.clone()).unwrap_or_default()), files))
        } else {
            None
        };
        let mut args: Vec<OsString> =
            ["controller", "--listen", &format!("0.0.0.0:{CONTROLLER_PORT}"), "--store", &self.store]
                .iter()
                .map(OsString::from)
                .collect();
        if self.plan.store == StoreKind::Etcd {
            self.etcd(&ns)?;
            if let Some((d, _)) = &controller_tls {
                // etcd's own CA (see `etcd`): the controller is its only client.
                let e = vipcast_tls::pki::Dir(d.0.join("etcd"));
                args.extend([
                    "--etcd-ca".into(),
                    e.ca_cert().into_os_string(),
                    "--etcd-cert".into(),
                    e.cert("controller").into_os_string(),
                    "--etcd-key".into(),
                    e.key("controller").into_os_string(),
                ]);
            }
        }
        if let Some((d, files)) = &controller_tls {
            args.extend([
                "--tls-cert".into(),
                d.cert("controller").into_os_string(),
                "--tls-key".into(),
                d.key("controller").into_os_string(),
                "--client-ca".into(),
                files[1].clone(),
                "--heartbeat-secret".into(),
                d.secret().into_os_string(),
            ]);
        } else {
            args.push("--insecure-plaintext".into());
        }
        let exe = self.opts.exe.to_path_buf();
        self.spawn("controller", "net", &ns, &exe, &args, "controller.log")?;
        let index = self.children.len() - 1;
        let health = format!("{url}/healthz");
        let files = self.client_files();
        self.wait_ready(index, "the controller", || http_get(&health, files.as_ref(), Duration::from_secs(1)).is_ok())?;
        let how = if self.plan.tls { "mutual TLS" } else { "plain HTTP" };
        self.say(&format!("controller in {ns} (store {}) answers at {url} ({how})", self.store));
        Ok(())
    }

    /// Starts etcd in `ns` for the controller: clients on
    /// 10.255.0.254:2379 (with TLS, `--client-cert-auth` and a certificate
    /// of the lab's CA, so only the controller is served), `/health` on a
    /// plain metrics port 2381, the peer port on the namespace's loopback
    /// (one member: nothing else needs it).
    fn etcd(&mut self, ns: &str) -> Result<()> {
        let scheme = if self.plan.tls { "https" } else { "http" };
        let client = format!("{scheme}://{UNDERLAY_GW}:{ETCD_CLIENT_PORT}");
        let peer = "http://127.0.0.1:2380".to_string();
        let name = format!("vipcast-{}", self.plan.lab);
        let mut args: Vec<OsString> = [
            "--name",
            &name,
            "--data-dir",
            &self.state_dir.join("etcd").to_string_lossy(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--listen-metrics-urls",
            &format!("http://{UNDERLAY_GW}:{ETCD_METRICS_PORT}"),
            "--initial-cluster",
            &format!("{name}={peer}"),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &format!("{name}-{}", unique_id()),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if self.plan.tls {
            // A CA of etcd's own, in `pki/etcd`: etcd admits every
            // certificate its CA signed, so agents' certificates (the lab's
            // CA) must not be among them; only the controller's is.
            if self.tls.is_none() {
                self.pki()?;
            }
            let dir = self.tls.as_ref().map(|t| t.dir.join("etcd")).unwrap_or_default();
            vipcast_tls::pki::init(&dir).map_err(|e| Error::Lab(format!("creating etcd's CA: {e}")))?;
            // Server and client authentication: etcd's JSON gateway calls
            // etcd's gRPC with its own certificate.
            for (name, sans) in [("etcd", vec![UNDERLAY_GW.to_string()]), ("controller", vec!["127.0.0.1".to_string()])]
            {
                let req = vipcast_tls::pki::Request {
                    role: vipcast_api::PeerRole::Controller,
                    name: name.to_string(),
                    sans,
                    days: vipcast_tls::pki::DEFAULT_DAYS,
                };
                vipcast_tls::pki::issue(&dir, &req)
                    .map_err(|e| Error::Lab(format!("issuing etcd's certificate {name}: {e}")))?;
            }
            let d = vipcast_tls::pki::Dir(dir);
            args.extend([
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                d.ca_cert().into_os_string(),
                "--cert-file".into(),
                d.cert("etcd").into_os_string(),
                "--key-file".into(),
                d.key("etcd").into_os_string(),
            ]);
        }
        self.spawn("etcd", "net", ns, Path::new("etcd"), &args, "etcd.log")?;
        let index = self.children.len() - 1;
        self.wait_ready(index, "etcd", || etcd_healthy(ns))?;
        let how = if self.plan.tls { "TLS, client certificates required" } else { "plain HTTP" };
        self.say(&format!("etcd in {ns} at {client} ({how}), data in {}", self.state_dir.join("etcd").display()));
        Ok(())
    }

    /// Registers VPCs, subnets, chassis, ports and VIPs through the REST API.
    pub fn register(&mut self) -> Result<()> {
        self.check_cancel()?;
        let Some(url) = self.controller_url() else {
            return Err(Error::Lab("registration needs the controller first".into()));
        };
        let calls = crate::register::calls(&self.cfg, &self.plan);
        crate::register::register(&url, self.client_files().as_ref(), &calls)?;
        self.say(&format!(
            "registered {} VPCs, {} subnets, {} chassis, {} ports, {} VIPs",
            self.cfg.vpc.len(),
            self.cfg.subnet.len(),
            self.cfg.chassis.len(),
            self.cfg.vm.len(),
            self.cfg.vip.len()
        ));
        if self.plan.replicators.is_empty() && self.cfg.vpc.iter().any(|v| v.bum == Bum::Replicator) {
            self.say("note: a VPC has bum = \"replicator\" but the lab has no [[replicator]]: broadcast and multicast will not cross chassis");
        }
        Ok(())
    }

    /// Starts `vipcast replicator` in each replicator namespace, listening on
    /// its underlay address; it registers itself with the controller.
    pub fn start_replicators(&mut self) -> Result<()> {
        self.check_cancel()?;
        let first = self.children.len();
        let exe = self.opts.exe.to_path_buf();
        for r in self.plan.replicators.clone() {
            let mut args: Vec<OsString> = [
                "replicator",
                "--name",
                &r.name,
                "--listen",
                &format!("{}:4789", r.underlay_ip),
                "--controller",
                &plan::inner_controller_url(self.plan.tls),
                "--admin",
                &format!("{}:{REPLICATOR_ADMIN_PORT}", r.underlay_ip),
            ]
            .iter()
            .map(OsString::from)
            .collect();
            if self.plan.tls {
                args.extend(self.issue(vipcast_api::PeerRole::Replicator, &r.name, Vec::new())?);
            }
            self.spawn("replicator", &r.name, &r.ns, &exe, &args, &format!("replicator-{}.log", r.name))?;
        }
        if self.plan.replicators.is_empty() {
            return Ok(());
        }
        self.check_started(first)?;
        self.say(&format!(
            "replicators started: {}",
            self.plan.replicators.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    /// Starts an agent per chassis, in its namespace, and checks that each
    /// is still running [`START_CHECK`] later. The agent of an OVS chassis
    /// gets `--dataplane ovs --openflow-listen 127.0.0.1:6653` and is
    /// started before `br-int` exists ([`Builder::integration_bridges`]), so
    /// that the switch finds it listening at its first attempt (Open vSwitch
    /// backs off to 8 s between attempts until it has once connected).
    pub fn agents(&mut self) -> Result<()> {
        self.check_cancel()?;
        let first = self.children.len();
        let exe = self.opts.exe.to_path_buf();
        for ch in self.plan.chassis.clone() {
            let mut args = agent_args(&ch, self.plan.tls);
            if ch.dataplane == Dataplane::Ovs && ch.role == Role::Gateway {
                let db = self.ovs(&ch.name).dir().join("db.sock");
                args.extend([OsString::from("--ovsdb"), OsString::from(format!("unix:{}", db.display()))]);
            }
            if self.plan.tls {
                // The heartbeat key is NAME.hbkey beside the certificate.
                args.extend(self.issue(vipcast_api::PeerRole::Agent, &ch.name, Vec::new())?);
            }
            self.spawn("agent", &ch.name, &ch.ns, &exe, &args, &format!("agent-{}.log", ch.name))?;
        }
        if self.plan.chassis.is_empty() {
            return Ok(());
        }
        self.check_started(first)?;
        self.say(&format!(
            "agents started on {}",
            self.plan.chassis.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    /// On each OVS chassis: `br-int` with its controller (the agent), the
    /// tunnel ports and the chassis' VM ports, in one transaction (see
    /// [`Ovs::add_int_bridge`]); then the tunnel neighbour cache is seeded
    /// with every other chassis' and replicator's underlay MAC, so that the
    /// first packet to each is not lost to address resolution.
    pub fn integration_bridges(&mut self) -> Result<()> {
        self.check_cancel()?;
        let mut peers: Vec<(Ipv4Addr, String)> = Vec::new();
        if self.plan.has_ovs() {
            for ch in &self.plan.chassis {
                let mac = match &ch.br_phy_mac {
                    Some(mac) => mac.clone(),
                    None => link_mac(&ch.ns, UNDERLAY_IF)?,
                };
                peers.push((ch.underlay_ip, mac));
            }
            for r in &self.plan.replicators {
                peers.push((r.underlay_ip, link_mac(&r.ns, UNDERLAY_IF)?));
            }
        }
        for ch in self.plan.chassis.clone() {
            if ch.dataplane != Dataplane::Ovs {
                continue;
            }
            self.check_cancel()?;
            let ovs = self.ovs(&ch.name);
            let ports: Vec<(String, String)> = self
                .plan
                .vms
                .iter()
                .filter(|vm| vm.chassis == ch.name)
                .map(|vm| (vm.port.clone(), vm.name.clone()))
                .collect();
            ovs.add_int_bridge(ch.underlay_ip, u64::from(u32::from(ch.underlay_ip)), &ports)?;
            for (peer, mac) in peers.iter().filter(|(peer, _)| *peer != ch.underlay_ip) {
                ovs.set_tunnel_neighbour(*peer, mac)?;
            }
            self.say(&format!(
                "chassis {}: {OVS_INT_BRIDGE} (controller tcp:{OPENFLOW_LISTEN}) with vc-vxlan, vc-gre{}; {} tunnel \
                 neighbours seeded",
                ch.name,
                ports.iter().map(|(dev, _)| format!(", {dev}")).collect::<String>(),
                peers.len().saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// Waits until every VM's port is attached (so VRRP starts on a working
    /// overlay): on a kernel chassis, to a bridge by its agent; on an OVS
    /// chassis, `br-int` (which holds the port) connected to its agent. Fails
    /// if an agent exits or [`READY_TIMEOUT`] passes.
    pub fn wait_ports_attached(&mut self) -> Result<()> {
        if self.plan.vms.is_empty() {
            return Ok(());
        }
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_cancel()?;
            let waiting: Vec<_> = self
                .plan
                .vms
                .iter()
                .filter(|vm| match vm.dataplane {
                    Dataplane::Kernel => port_master(&vm.chassis_ns, &vm.attached_dev()).is_none(),
                    Dataplane::Ovs => !self.ovs(&vm.chassis).controller_connected(),
                })
                .collect();
            if waiting.is_empty() {
                self.say("every VM port is attached to its VPC bridge or to a connected br-int");
                return Ok(());
            }
            for s in self.children.iter_mut().filter(|s| s.state.role == "agent") {
                if !s.child.is_running() {
                    return Err(Self::exited(s, ""));
                }
            }
            if Instant::now() >= end {
                let list: Vec<String> = waiting
                    .iter()
                    .map(|vm| format!("{} ({} in {})", vm.name, vm.attached_dev(), vm.chassis_ns))
                    .collect();
                let logs: Vec<String> = waiting
                    .iter()
                    .map(|vm| self.state_dir.join(format!("agent-{}.log", vm.chassis)).display().to_string())
                    .collect();
                return Err(Error::Lab(format!(
                    "the agents did not attach these VM ports to a bridge (or connect to their br-int) within {} s: \
                     {}; see {}",
                    READY_TIMEOUT.as_secs(),
                    list.join(", "),
                    logs.join(", ")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts each VIP's workload in its member VMs (before VRRP, whose
    /// track files and notify script it provides): for `mariadb`, a
    /// template data directory once, then the first member as master, the
    /// second as its replica, and `dbctl watch` in each.
    pub fn workloads(&mut self) -> Result<()> {
        let pairs: Vec<_> = self
            .cfg
            .vip
            .iter()
            .filter(|v| v.workload == Some(crate::config::Workload::Mariadb))
            .map(|v| (v.name.clone(), v.members.clone()))
            .collect();
        let first = self.children.len();
        if !pairs.is_empty() {
            self.mariadb_pairs(pairs)?;
        }
        self.payment_services()?;
        if self.children.len() > first {
            self.check_started(first)?;
        }
        Ok(())
    }

    fn mariadb_pairs(&mut self, pairs: Vec<(String, Vec<String>)>) -> Result<()> {
        self.check_cancel()?;
        let password = format!("lab-{}", unique_id());
        let template = self.state_dir.join("mariadb-template");
        crate::workload::template(&template, &password)?;
        self.say("mariadb: template data directory made");
        for (vip, members) in pairs {
            let vms: Vec<_> =
                members.iter().filter_map(|m| self.plan.vms.iter().find(|v| &v.name == m).cloned()).collect();
            for (k, vm) in vms.iter().enumerate() {
                self.check_cancel()?;
                let peer = vms[1 - k].addr.addr();
                let dir = crate::workload::member_dir(&self.state_dir, &vip, &vm.name);
                let member =
                    crate::workload::Member { dir: &dir, server_id: vm.index as u32 + 1, peer, password: &password };
                crate::workload::prepare(&member, &template)?;
                crate::workload::start(&vm.ns, &dir, k == 0)?;
                let dbctl = dir.join("dbctl");
                self.spawn(
                    "db-watch",
                    &vm.name,
                    &vm.ns,
                    &dbctl,
                    &["watch".into()],
                    &format!("db-watch-{vip}-{}.log", vm.name),
                )?;
                self.say(&format!(
                    "mariadb for vip {vip} in {} ({}): {}",
                    vm.name,
                    if k == 0 { "master" } else { "replica" },
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// `workload = "http"`: in each member, `vipcast payment-backend` on
    /// loopback (writing through the database VIP), nginx in front of it and
    /// `webctl watch` (health file, nginx restarted after it died).
    fn payment_services(&mut self) -> Result<()> {
        let services: Vec<_> = self
            .cfg
            .vip
            .iter()
            .filter(|v| v.workload == Some(crate::config::Workload::Http))
            .map(|v| (v.name.clone(), v.members.clone(), v.database.clone().unwrap_or_default()))
            .collect();
        for (vip, members, database) in services {
            let Some(db) = self.cfg.vip.iter().find(|v| v.name == database).cloned() else {
                return Err(Error::Lab(format!("vip {vip}: no database vip {database}")));
            };
            let first_db = db.members.first().cloned().unwrap_or_default();
            let credentials = crate::workload::member_dir(&self.state_dir, &db.name, &first_db).join("db.env");
            for m in &members {
                self.check_cancel()?;
                let Some(vm) = self.plan.vms.iter().find(|v| &v.name == m).cloned() else { continue };
                let dir = crate::workload::web_dir(&self.state_dir, &vip, m);
                crate::workload::prepare_web(&dir)?;
                let exe = self.opts.exe.to_path_buf();
                let args: Vec<OsString> = vec![
                    "payment-backend".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", crate::workload::BACKEND_PORT).into(),
                    "--db".into(),
                    std::net::SocketAddr::new(db.ip, 3306).to_string().into(),
                    "--credentials".into(),
                    credentials.clone().into_os_string(),
                    "--name".into(),
                    m.into(),
                ];
                self.spawn("payment-backend", m, &vm.ns, &exe, &args, &format!("payment-backend-{vip}-{m}.log"))?;
                let webctl = dir.join("webctl");
                self.spawn("web-watch", m, &vm.ns, &webctl, &["watch".into()], &format!("web-watch-{vip}-{m}.log"))?;
                self.say(&format!(
                    "payment service for vip {vip} in {m}: nginx, backend, via {} ({})",
                    db.ip,
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// Starts keepalived for each VIP with `vrrp = "keepalived"` in each
    /// member VM (distinct pid files per instance), and `vipcast vrrpd` with
    /// the same configuration for `vrrp = "vipcast"`.
    pub fn vrrp(&mut self) -> Result<()> {
        self.check_cancel()?;
        for vip in &self.cfg.vip {
            if vip.vrrp == Vrrp::None {
                self.say(&format!("vip {}: vrrp = \"none\": nothing started", vip.name));
            }
        }
        let first = self.children.len();
        for k in self.plan.keepalived.clone() {
            let stem = k.stem();
            let conf = self.state_dir.join(format!("{stem}.conf"));
            let text = k.config.replace(STATE_DIR_TOKEN, &self.state_dir.to_string_lossy());
            std::fs::write(&conf, text).map_err(|e| Error::Lab(format!("cannot write {}: {e}", conf.display())))?;
            if k.daemon == Vrrp::Vipcast {
                let status = self.state_dir.join(format!("{stem}.status.json"));
                let args: Vec<OsString> = vec![
                    "vrrpd".into(),
                    "-f".into(),
                    conf.into_os_string(),
                    "--status".into(),
                    status.into_os_string(),
                ];
                let exe = self.opts.exe.to_path_buf();
                self.spawn("vrrpd", &k.vm, &k.ns, &exe, &args, &format!("{stem}.log"))?;
                self.say(&format!("vipcast vrrpd for vip {} in {} ({})", k.vip, k.vm, k.ns));
                continue;
            }
            let mut args: Vec<OsString> = ["-n", "-l", "-D", "-G", "-P", "-f"].iter().map(OsString::from).collect();
            args.push(conf.into_os_string());
            for (flag, what) in [("-p", "pid"), ("-r", "vrrp.pid"), ("-c", "check.pid"), ("-b", "bfd.pid")] {
                args.push(flag.into());
                args.push(self.state_dir.join(format!("{stem}.{what}")).into_os_string());
            }
            self.spawn("keepalived", &k.vm, &k.ns, Path::new("keepalived"), &args, &format!("{stem}.log"))?;
            self.say(&format!("keepalived for vip {} in {} ({})", k.vip, k.vm, k.ns));
        }
        if self.children.len() > first {
            self.check_started(first)?;
        }
        Ok(())
    }

    /// Writes the state file and lets everything built outlive the builder.
    pub fn commit(mut self) -> Result<LabState> {
        self.check_cancel()?;
        let Some(host) = self.host.as_ref() else {
            return Err(Error::Lab("nothing to commit without the host link".into()));
        };
        let state = LabState {
            name: self.plan.lab.clone(),
            file: self.opts.file.map(Path::to_path_buf),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            state_dir: self.state_dir.clone(),
            controller_url: self.controller_url().unwrap_or_default(),
            inner_controller_url: plan::inner_controller_url(self.plan.tls),
            store: self.store.clone(),
            tls: self.tls.clone(),
            host_link: HostLinkState {
                name: host.name.clone(),
                addr: host.addr.to_string(),
                peer: MGMT_IF.into(),
                peer_addr: host.peer_addr.to_string(),
            },
            namespaces: self.plan.namespaces(),
            nodes: self.nodes.clone(),
            processes: self.children.iter().map(|s| s.state.clone()).collect(),
        };
        self.opts.root.write(&state)?;
        self.committed = true;
        for s in self.children.drain(..) {
            s.child.release();
        }
        for ns in self.namespaces.drain(..) {
            ns.release();
        }
        if let Some(h) = self.host.as_mut() {
            h.keep = true;
        }
        Ok(state)
    }
}

impl Drop for Builder<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if !self.namespaces.is_empty() || !self.children.is_empty() {
            self.say("tearing down what was built");
        }
        // Open vSwitch first (exit --cleanup removes its tap devices), then
        // the other daemons (SIGKILL, reaped), then the host link, then the
        // namespaces (with every link inside), then the state.
        for ch in self.plan.chassis.iter().filter(|c| c.dataplane == Dataplane::Ovs) {
            self.ovs(&ch.name).stop();
        }
        self.children.clear();
        self.host = None;
        self.namespaces.clear();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.state_dir);
            let _ = std::fs::remove_file(self.opts.root.state_file(&self.plan.lab));
        }
    }
}

/// The arguments of chassis `ch`'s agent (without its certificate files).
/// The agents' admin endpoint port (the controller's default for `vip check`).
pub const AGENT_ADMIN_PORT: u16 = 7611;
/// The replicators' admin endpoint port (likewise).
pub const REPLICATOR_ADMIN_PORT: u16 = 7610;

pub fn agent_args(ch: &ChassisPlan, tls: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "agent",
        "--chassis",
        &ch.name,
        "--underlay-ip",
        &ch.underlay_ip.to_string(),
        "--controller",
        &plan::inner_controller_url(tls),
        "--role",
        ch.role.as_str(),
        // Metrics, and what `vipcast ctl vip check` asks through the controller.
        "--metrics-listen",
        &format!("{}:{AGENT_ADMIN_PORT}", ch.underlay_ip),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if ch.dataplane == Dataplane::Ovs {
        args.extend(["--dataplane", "ovs", "--openflow-listen", OPENFLOW_LISTEN].map(OsString::from));
    }
    args
}

/// A veth from `ul0` (MTU 1500, `addr` if given) in `ns` to the port `port`
/// of the underlay bridge in `net`.
fn underlay_port(net: &str, ns: &str, port: &str, addr: Option<&str>) -> Result<()> {
    let mtu = UNDERLAY_MTU.to_string();
    ip(&[
        "link",
        "add",
        UNDERLAY_IF,
        "netns",
        ns,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        net,
        "mtu",
        &mtu,
    ])?;
    if let Some(addr) = addr {
        ip(&["-n", ns, "addr", "add", addr, "dev", UNDERLAY_IF])?;
    }
    ip(&["-n", ns, "link", "set", UNDERLAY_IF, "up"])?;
    ip(&["-n", net, "link", "set", port, "master", UNDERLAY_IF, "up"])?;
    Ok(())
}

/// The MAC address of `dev` in namespace `ns`.
fn link_mac(ns: &str, dev: &str) -> Result<String> {
    let text = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Lab(format!("cannot parse ip -j output: {e}")))?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Lab(format!("{dev} in {ns} has no MAC address")))
}

/// The bridge that `port` in namespace `ns` is attached to, if any.
fn port_master(ns: &str, port: &str) -> Option<String> {
    let text = ip(&["-n", ns, "-j", "link", "show", "dev", port]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get(0)?.get("master")?.as_str().map(str::to_string)
}

/// `sysctl -qw SETTING` inside namespace `ns`.
fn sysctl(ns: &str, setting: &str) -> Result<()> {
    crate::run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting])).map(|_| ())
}

/// Whether etcd in `ns` answers `/health` on its metrics port (a bash
/// /dev/tcp request inside the namespace: the host has no route to the
/// underlay).
fn etcd_healthy(ns: &str) -> bool {
    let script = format!(
        "exec 3<>/dev/tcp/{UNDERLAY_GW}/{ETCD_METRICS_PORT} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 2 cat <&3"
    );
    crate::run(Command::new("ip").args(["netns", "exec", ns, "bash", "-c", &script]))
        .is_ok_and(|out| out.contains("\"health\":\"true\""))
}

/// Every IPv4 prefix the host has an address in or a route to (all tables;
/// the default route excluded).
fn host_prefixes() -> Result<Vec<Ipv4Net>> {
    let parse = |text: &str| -> Result<serde_json::Value> {
        serde_json::from_str(text).map_err(|e| Error::Lab(format!("cannot parse ip -j output: {e}")))
    };
    let mut v = Vec::new();
    let addrs = parse(&ip(&["-j", "-4", "addr", "show"])?)?;
    for link in addrs.as_array().into_iter().flatten() {
        for a in link.get("addr_info").and_then(|a| a.as_array()).into_iter().flatten() {
            let local = a.get("local").and_then(|l| l.as_str()).and_then(|l| l.parse::<Ipv4Addr>().ok());
            let len = a.get("prefixlen").and_then(|l| l.as_u64()).and_then(|l| u8::try_from(l).ok());
            if let (Some(local), Some(len)) = (local, len) {
                v.extend(Ipv4Net::new(local, len).ok().map(|n| n.trunc()));
                v.extend(Ipv4Net::new(local, 32).ok());
            }
        }
    }
    let routes = parse(&ip(&["-j", "-4", "route", "show", "table", "all"])?)?;
    for r in routes.as_array().into_iter().flatten() {
        let Some(dst) = r.get("dst").and_then(|d| d.as_str()) else { continue };
        if dst == "default" {
            continue;
        }
        let net = match dst.split_once('/') {
            Some(_) => dst.parse::<Ipv4Net>().ok(),
            None => dst.parse::<Ipv4Addr>().ok().and_then(|a| Ipv4Net::new(a, 32).ok()),
        };
        v.extend(net.map(|n| n.trunc()));
    }
    Ok(v)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

//! The Linux kernel data plane, over rtnetlink: reads what is there and
//! changes only what differs from the [`Plan`]. Running it twice in a row
//! changes nothing the second time; a restarted agent with the same plan
//! touches nothing (established flows lose no packet).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};
use vipcast_packet::MacAddr;

use crate::plan::{self, Fdb, PORT_ALIAS_PREFIX, Plan, VXLAN_PORT, VpcPlan};

/// A failed netlink operation, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct KernelError {
    what: String,
    #[source]
    source: rtnetlink::Error,
}

type Result<T> = std::result::Result<T, KernelError>;

fn ctx(what: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    move |source| KernelError { what: what(), source }
}

/// What a reconciliation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub links: usize,
    pub fdb: usize,
    pub neigh: usize,
    pub addrs: usize,
}

impl Changes {
    pub fn total(&self) -> usize {
        self.links + self.fdb + self.neigh + self.addrs
    }
}

/// One link as read from the kernel.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    name: String,
    kind: Option<InfoKind>,
    master: Option<u32>,
    alias: Option<String>,
    up: bool,
    mac: Option<MacAddr>,
    vxlan: Vec<InfoVxlan>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            master: None,
            alias: None,
            up: m.header.flags.contains(LinkFlags::Up),
            mac: None,
            vxlan: Vec::new(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Controller(i) => l.master = Some(*i),
                LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
                LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = v.clone(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// Whether this VXLAN device is configured as `v` needs.
    fn vxlan_matches(&self, v: &VpcPlan, local: Option<IpAddr>) -> bool {
        let mut id = None;
        let (mut loc, mut port, mut learning, mut proxy) = (None, None, None, None);
        for i in &self.vxlan {
            match i {
                InfoVxlan::Id(x) => id = Some(*x),
                InfoVxlan::Local(a) => loc = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) => loc = Some(IpAddr::V6(*a)),
                InfoVxlan::Port(p) => port = Some(*p),
                InfoVxlan::Learning(b) => learning = Some(*b),
                InfoVxlan::Proxy(b) => proxy = Some(*b),
                _ => {}
            }
        }
        self.kind == Some(InfoKind::Vxlan)
            && id == Some(v.vni)
            && loc == local
            && port == Some(VXLAN_PORT)
            && learning == Some(false)
            && proxy.unwrap_or(false) == v.proxy
    }
}

/// The kernel handle.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

impl Kernel {
    /// Opens an rtnetlink connection in the current network namespace.
    pub fn open() -> std::io::Result<Kernel> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(ctx(|| "listing links".into()))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    async fn link_by_name(&self, name: &str) -> Result<Link> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await.map_err(ctx(|| format!("reading link {name}")))? {
            Some(m) => Ok(Link::from_message(&m)),
            None => Err(KernelError { what: format!("link {name} vanished"), source: rtnetlink::Error::RequestFailed }),
        }
    }

    /// Brings the kernel in line with `plan`.
    pub async fn reconcile(&self, plan: &Plan) -> Result<Changes> {
        let mut ch = Changes::default();
        let links = self.links().await?;
        let by_name: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut wanted_ports: BTreeMap<String, u32> = BTreeMap::new(); // port name -> bridge index
        for v in plan.vpcs.values() {
            let br = self
                .ensure_bridge(
                    &plan::bridge_name(v.vni),
                    by_name.get(plan::bridge_name(v.vni).as_str()),
                    v.bridge_mac,
                    &mut ch,
                )
                .await?;
            let vx_name = plan::vxlan_name(v.vni);
            let vx = match by_name.get(vx_name.as_str()) {
                Some(l) if l.vxlan_matches(v, plan.local_ip) => (*l).clone(),
                existing => {
                    if let Some(l) = existing {
                        // The proxy flag (and the rest) cannot change on a live device.
                        self.handle
                            .link()
                            .del(l.index)
                            .execute()
                            .await
                            .map_err(ctx(|| format!("deleting {vx_name}")))?;
                        ch.links += 1;
                    }
                    let mut b = LinkVxlan::new(&vx_name, v.vni).port(VXLAN_PORT).learning(false).proxy(v.proxy);
                    match plan.local_ip {
                        Some(IpAddr::V4(a)) => b = b.local(a),
                        Some(IpAddr::V6(a)) => b = b.local6(a),
                        None => {}
                    }
                    self.handle.link().add(b.build()).execute().await.map_err(ctx(|| format!("creating {vx_name}")))?;
                    ch.links += 1;
                    self.link_by_name(&vx_name).await?
                }
            };
            self.ensure_port(&vx, br, &mut ch).await?;
            for p in &v.ports {
                wanted_ports.insert(p.clone(), br);
            }
            ch.fdb += self.sync_fdb(vx.index, &v.fdb).await?;
            ch.neigh += self.sync_neigh(vx.index, &v.neigh).await?;
            if plan.forwarding || !v.bridge_addrs.is_empty() {
                ch.addrs += self.sync_addrs(br, &v.bridge_addrs).await?;
                ch.neigh += self.sync_neigh(br, &v.bridge_neigh).await?;
            }
        }
        // VM ports: into their VPC's bridge; out of ours when no longer wanted.
        let our_bridges: BTreeSet<u32> = links
            .iter()
            .filter(|l| l.name.starts_with("vc-br-") && l.kind == Some(InfoKind::Bridge))
            .map(|l| l.index)
            .collect();
        for l in &links {
            let Some(port) = l.alias.as_deref().and_then(|a| a.strip_prefix(PORT_ALIAS_PREFIX)) else { continue };
            match wanted_ports.get(port) {
                Some(&br) => self.ensure_port(l, br, &mut ch).await?,
                None if l.master.is_some_and(|m| our_bridges.contains(&m)) => {
                    let msg = LinkUnspec::new_with_index(l.index).nocontroller().build();
                    self.handle.link().set(msg).execute().await.map_err(ctx(|| format!("detaching {}", l.name)))?;
                    ch.links += 1;
                }
                None => {}
            }
        }
        // Devices of VPCs this chassis no longer takes part in.
        for l in &links {
            if let Some(vni) = plan::our_vni(&l.name)
                && !plan.vpcs.contains_key(&vni)
            {
                self.handle.link().del(l.index).execute().await.map_err(ctx(|| format!("deleting {}", l.name)))?;
                ch.links += 1;
            }
        }
        if plan.forwarding {
            set_forwarding();
        }
        Ok(ch)
    }

    async fn ensure_bridge(
        &self,
        name: &str,
        existing: Option<&&Link>,
        mac: Option<MacAddr>,
        ch: &mut Changes,
    ) -> Result<u32> {
        if let Some(l) = existing {
            if l.kind == Some(InfoKind::Bridge) {
                let wrong_mac = mac.is_some_and(|m| l.mac != Some(m));
                if !l.up || wrong_mac {
                    let mut b = LinkUnspec::new_with_index(l.index).up();
                    if let Some(m) = mac.filter(|_| wrong_mac) {
                        b = b.address(m.0.to_vec());
                    }
                    self.handle.link().set(b.build()).execute().await.map_err(ctx(|| format!("setting up {name}")))?;
                    ch.links += 1;
                }
                return Ok(l.index);
            }
            self.handle.link().del(l.index).execute().await.map_err(ctx(|| format!("deleting {name}")))?;
            ch.links += 1;
        }
        let mut b = LinkBridge::new(name).up();
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        self.handle.link().add(b.build()).execute().await.map_err(ctx(|| format!("creating {name}")))?;
        ch.links += 1;
        let l = self.link_by_name(name).await?;
        // Switch off IPv6 on the bridge itself: it needs no address there, and
        // it would send its own router solicitations into the VPC.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        Ok(l.index)
    }

    /// `l` enslaved to bridge `br` and up. A VM port is brought up only
    /// when it is attached: once attached, its administrative state is the
    /// operator's (a port set down stays down — that is how a dead VM looks).
    async fn ensure_port(&self, l: &Link, br: u32, ch: &mut Changes) -> Result<()> {
        let is_vm_port = l.alias.as_deref().is_some_and(|a| a.starts_with(PORT_ALIAS_PREFIX));
        if l.master != Some(br) || (!l.up && !is_vm_port) {
            let msg = LinkUnspec::new_with_index(l.index).controller(br).up().build();
            self.handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(ctx(|| format!("attaching {} to its bridge", l.name)))?;
            ch.links += 1;
        }
        Ok(())
    }

    async fn sync_fdb(&self, vx: u32, want: &BTreeSet<Fdb>) -> Result<usize> {
        let mut req = self.handle.neighbours().get();
        req = req.set_address_family(AddressFamily::Bridge);
        let msgs: Vec<NeighbourMessage> = req.execute().try_collect().await.map_err(ctx(|| "listing fdb".into()))?;
        let mut have: BTreeMap<Fdb, NeighbourMessage> = BTreeMap::new();
        for m in msgs {
            if m.header.ifindex != vx || !m.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            if let Some(f) = fdb_of(&m) {
                have.insert(f, m);
            }
        }
        let mut n = 0;
        for (f, m) in &have {
            if !want.contains(f) {
                self.handle
                    .neighbours()
                    .del(m.clone())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("deleting fdb {f:?}")))?;
                n += 1;
            }
        }
        for f in want {
            if !have.contains_key(f) {
                self.add_fdb(vx, f).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// `bridge fdb append <mac> dev <vx> dst <ip> [port <p>] self permanent`
    async fn add_fdb(&self, vx: u32, f: &Fdb) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = vx;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
        m.attributes.push(NeighbourAttribute::Destination(addr(f.dst)));
        if let Some(p) = f.port {
            m.attributes.push(NeighbourAttribute::Port(p));
        }
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(m));
        // APPEND: the all-zeros MAC has one entry per flood destination.
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(ctx(|| format!("adding fdb {f:?}")))?;
        while let Some(msg) = futures::StreamExt::next(&mut resp).await {
            if let NetlinkPayload::Error(e) = msg.payload
                && e.code.is_some()
            {
                return Err(KernelError {
                    what: format!("adding fdb {f:?}"),
                    source: rtnetlink::Error::NetlinkError(e),
                });
            }
        }
        Ok(())
    }

    /// Permanent neighbour entries on `dev`: exactly `want`.
    async fn sync_neigh(&self, dev: u32, want: &BTreeMap<IpAddr, MacAddr>) -> Result<usize> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(ctx(|| "listing neighbours".into()))?;
        let mut have: BTreeMap<IpAddr, (MacAddr, NeighbourMessage)> = BTreeMap::new();
        for m in msgs {
            if m.header.ifindex != dev || m.header.state != NeighbourState::Permanent {
                continue;
            }
            let (mut ip, mut mac) = (None, None);
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr)
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                have.insert(ip, (mac, m));
            }
        }
        let mut n = 0;
        for (ip, (_, m)) in &have {
            if !want.contains_key(ip) {
                self.handle
                    .neighbours()
                    .del(m.clone())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("deleting neighbour {ip}")))?;
                n += 1;
            }
        }
        for (ip, mac) in want {
            if have.get(ip).map(|(m, _)| m) != Some(mac) {
                self.handle
                    .neighbours()
                    .add(dev, *ip)
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(ctx(|| format!("setting neighbour {ip} -> {mac}")))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Addresses on `dev`: exactly `want` (link-local IPv6 left alone).
    async fn sync_addrs(&self, dev: u32, want: &BTreeSet<IpNet>) -> Result<usize> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(dev)
            .execute()
            .try_collect()
            .await
            .map_err(ctx(|| "listing addresses".into()))?;
        let mut have = BTreeMap::new();
        for m in msgs {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = ip
                && let Ok(net) = IpNet::new(ip, m.header.prefix_len)
                && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
            {
                have.insert(net, m);
            }
        }
        let mut n = 0;
        for (net, m) in &have {
            if !want.contains(net) {
                self.handle
                    .address()
                    .del(m.clone())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("deleting address {net}")))?;
                n += 1;
            }
        }
        for net in want {
            if !have.contains_key(net) {
                self.handle
                    .address()
                    .add(dev, net.addr(), net.prefix_len())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("adding address {net}")))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The interface index of the VM port named `port`, if it is here.
    pub async fn port_ifindex(&self, port: &str) -> Result<Option<(u32, String)>> {
        let alias = format!("{PORT_ALIAS_PREFIX}{port}");
        Ok(self
            .links()
            .await?
            .into_iter()
            .find(|l| l.alias.as_deref() == Some(alias.as_str()))
            .map(|l| (l.index, l.name)))
    }

    /// Every VM port here: port name -> (ifindex, interface name).
    pub async fn ports(&self) -> Result<BTreeMap<String, (u32, String)>> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .filter_map(|l| {
                let p = l.alias.as_deref()?.strip_prefix(PORT_ALIAS_PREFIX)?.to_string();
                Some((p, (l.index, l.name)))
            })
            .collect())
    }
}

fn addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn fdb_of(m: &NeighbourMessage) -> Option<Fdb> {
    let (mut mac, mut dst, mut port) = (None, None, None);
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            // Bridge-family messages carry the VXLAN destination as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                dst = <[u8; 4]>::try_from(b.as_slice())
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(b.as_slice()).map(IpAddr::from))
                    .ok();
            }
            NeighbourAttribute::Port(p) => port = Some(*p),
            _ => {}
        }
    }
    Some(Fdb { mac: mac?, dst: dst?, port: port.filter(|p| *p != VXLAN_PORT) })
}

fn set_forwarding() {
    for f in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] {
        if std::fs::read_to_string(f).map(|s| s.trim() != "1").unwrap_or(true) {
            let _ = std::fs::write(f, "1");
        }
    }
}

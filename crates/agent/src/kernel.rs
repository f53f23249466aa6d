//! The Linux kernel data plane, over rtnetlink: reads what is there and
//! changes only what differs from the [`Plan`]. Running it twice in a row
//! changes nothing the second time; a restarted agent with the same plan
//! touches nothing (established flows lose no packet).
//!
//! A reconcile is three steps: [`Kernel::observe`] reads links, FDB,
//! neighbours (and for gateways addresses) in one dump each, for every VPC
//! at once, decoding only what it looks at; [`diff`] (pure: plain values
//! in, operations out) turns plan and observation into [`KernelOp`]s;
//! [`Kernel::apply`] carries them out in order, with rtnetlink.

mod diff;
mod dump;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVlan, LinkVxlan};
use vipcast_packet::MacAddr;

pub use self::diff::{Dev, KernelOp, Kind, Link, Observed, VpcDevs, VxlanConf, delta, diff, set_diff};
use crate::plan::{self, Fdb, PORT_ALIAS_PREFIX, Plan, VXLAN_PORT};

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

/// The messages an observation read (neighbour and FDB entries as the
/// kernel sent them), kept to delete exactly what was read.
#[derive(Debug, Default)]
struct Raw {
    fdb: HashMap<(u32, Fdb), Vec<u8>>,
    neigh: HashMap<(u32, IpAddr), Vec<u8>>,
    addrs: HashMap<(u32, IpNet), AddressMessage>,
}

/// An address other than link-local IPv6: (interface, address/prefix).
fn addr_of(m: &AddressMessage) -> Option<(u32, IpNet)> {
    let ip = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    (!matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())).then_some((m.header.index, net))
}

/// The kernel handle: rtnetlink for changes, a [`dump::Reader`] for dumps.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
    reader: dump::Reader,
}

impl Kernel {
    /// Opens rtnetlink connections in the current network namespace.
    pub fn open() -> std::io::Result<Kernel> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Kernel { handle, reader: dump::Reader::open()? })
    }

    /// Every link (read without statistics: nothing here looks at them).
    async fn links(&self) -> Result<Vec<Link>> {
        let mut s = self.reader.request(dump::RTM_GETLINK, dump::links_request(), true);
        let mut links = Vec::new();
        while let Some(m) = s.try_next().await.map_err(ctx(|| "listing links".into()))? {
            if m.kind == dump::RTM_NEWLINK
                && let Some(l) = dump::link(&m.body)
            {
                links.push(l);
            }
        }
        Ok(links)
    }

    async fn link_by_name(&self, name: &str) -> Result<Link> {
        let mut s = self.reader.request(dump::RTM_GETLINK, dump::link_request(name), false);
        match s.try_next().await.map_err(ctx(|| format!("reading link {name}")))? {
            Some(m)
                if m.kind == dump::RTM_NEWLINK
                    && let Some(l) = dump::link(&m.body) =>
            {
                Ok(l)
            }
            _ => Err(KernelError { what: format!("link {name} vanished"), source: rtnetlink::Error::RequestFailed }),
        }
    }

    /// Permanent neighbour entries (ARP, NDP) on the interfaces `keep`
    /// accepts: (interface, address, MAC, the message).
    async fn neighbours(&self, keep: impl Fn(u32) -> bool) -> Result<Vec<(u32, IpAddr, MacAddr, Vec<u8>)>> {
        let mut s = self.reader.request(dump::RTM_GETNEIGH, dump::neigh_request(false), true);
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(ctx(|| "listing neighbours".into()))? {
            let Some(h) = dump::neigh_header(&m.body).filter(|_| m.kind == dump::RTM_NEWNEIGH) else { continue };
            if !keep(h.ifindex) || !h.is_permanent() {
                continue;
            }
            if let Some((ip, mac)) = dump::neigh(&h, &m.body) {
                out.push((h.ifindex, ip, mac, m.body));
            }
        }
        Ok(out)
    }

    /// Reads what [`diff`] needs for `plan`: every link, then one dump each
    /// of the FDB, the neighbours and (gateways) the addresses, kept for the
    /// plan's devices only.
    pub async fn observe(&self, plan: &Plan) -> Result<Observed> {
        let mut obs = Observed { links: self.links().await?, ..Default::default() };
        if plan.vpcs.is_empty() {
            return Ok(obs);
        }
        let names: BTreeSet<String> =
            plan.vpcs.keys().flat_map(|vni| [plan::bridge_name(*vni), plan::vxlan_name(*vni)]).collect();
        let ours: BTreeSet<u32> = obs.links.iter().filter(|l| names.contains(&l.name)).map(|l| l.index).collect();

        let mut s = self.reader.request(dump::RTM_GETNEIGH, dump::neigh_request(true), true);
        while let Some(m) = s.try_next().await.map_err(ctx(|| "listing fdb".into()))? {
            let Some(h) = dump::neigh_header(&m.body).filter(|_| m.kind == dump::RTM_NEWNEIGH) else { continue };
            // The device's own entries (`self`), not the bridge's.
            if !ours.contains(&h.ifindex) || !h.is_own() {
                continue;
            }
            if let Some(f) = dump::fdb(&m.body) {
                obs.fdb.entry(h.ifindex).or_default().insert(f);
                obs.raw.fdb.insert((h.ifindex, f), m.body);
            }
        }

        for (dev, ip, mac, m) in self.neighbours(|i| ours.contains(&i)).await? {
            obs.neigh.entry(dev).or_default().insert(ip, mac);
            obs.raw.neigh.insert((dev, ip), m);
        }

        if plan.forwarding || plan.vpcs.values().any(|v| !v.bridge_addrs.is_empty()) {
            let mut s = self.handle.address().get().execute();
            while let Some(m) = s.try_next().await.map_err(ctx(|| "listing addresses".into()))? {
                if let Some((dev, net)) = addr_of(&m)
                    && ours.contains(&dev)
                {
                    obs.addrs.entry(dev).or_default().insert(net);
                    obs.raw.addrs.insert((dev, net), m);
                }
            }
        }
        Ok(obs)
    }

    /// Brings the kernel in line with `plan`: [`Kernel::observe`], [`diff`], [`Kernel::apply`].
    pub async fn reconcile(&self, plan: &Plan) -> Result<Changes> {
        Ok(self.reconcile_read(plan).await?.1)
    }

    /// [`Kernel::reconcile`], also returning the observation and the
    /// interface indexes of the links it created, by name.
    async fn reconcile_read(&self, plan: &Plan) -> Result<(Observed, Changes, BTreeMap<String, u32>)> {
        let obs = self.observe(plan).await?;
        let ops = diff(plan, &obs);
        let (ch, created) = self.apply_created(&obs, &ops).await?;
        if plan.forwarding {
            set_forwarding();
        }
        Ok((obs, ch, created))
    }

    /// Carries out `ops` (from [`diff`] of `obs`, or [`delta`] with an
    /// empty `obs`) in their order, stopping at the first that fails.
    pub async fn apply(&self, obs: &Observed, ops: &[KernelOp]) -> Result<Changes> {
        Ok(self.apply_created(obs, ops).await?.0)
    }

    /// [`Kernel::apply`], also returning the interface indexes of the
    /// links it created, by name.
    async fn apply_created(&self, obs: &Observed, ops: &[KernelOp]) -> Result<(Changes, BTreeMap<String, u32>)> {
        let mut ch = Changes::default();
        let mut created: BTreeMap<String, u32> = BTreeMap::new();
        for op in ops {
            self.apply_one(obs, op, &mut created, &mut ch).await?;
        }
        Ok((ch, created))
    }

    async fn apply_one(
        &self,
        obs: &Observed,
        op: &KernelOp,
        created: &mut BTreeMap<String, u32>,
        ch: &mut Changes,
    ) -> Result<()> {
        let resolve = |dev: &Dev| -> Result<u32> {
            match dev {
                Dev::Index(i) => Ok(*i),
                Dev::New(name) => created.get(name).copied().ok_or_else(|| KernelError {
                    what: format!("{name} was not created"),
                    source: rtnetlink::Error::RequestFailed,
                }),
            }
        };
        match op {
            KernelOp::DelLink { index, name } => {
                self.del_link(*index, name).await?;
                ch.links += 1;
            }
            KernelOp::CreateBridge { name, mac } => {
                let mut b = LinkBridge::new(name).up();
                if let Some(m) = mac {
                    b = b.address(m.0.to_vec());
                }
                self.handle.link().add(b.build()).execute().await.map_err(ctx(|| format!("creating {name}")))?;
                ch.links += 1;
                let l = self.link_by_name(name).await?;
                created.insert(name.clone(), l.index);
                // Switch off IPv6 on the bridge itself: it needs no address there, and
                // it would send its own router solicitations into the VPC.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            }
            KernelOp::SetBridge { index, name, mac } => {
                let mut b = LinkUnspec::new_with_index(*index).up();
                if let Some(m) = mac {
                    b = b.address(m.0.to_vec());
                }
                self.handle.link().set(b.build()).execute().await.map_err(ctx(|| format!("setting up {name}")))?;
                ch.links += 1;
            }
            KernelOp::CreateVxlan { name, vni, local, proxy } => {
                self.create_vxlan(name, *vni, *local, *proxy, created).await?;
                ch.links += 1;
            }
            KernelOp::RecreateVxlan { index, name, vni, local, proxy } => {
                self.del_link(*index, name).await?;
                ch.links += 1;
                self.create_vxlan(name, *vni, *local, *proxy, created).await?;
                ch.links += 1;
            }
            KernelOp::CreateVlan { name, interface, vid, alias } => {
                let parent = self.link_by_name(interface).await?;
                let msg = LinkVlan::new(name, parent.index, *vid).alias(alias.clone()).up().build();
                self.handle.link().add(msg).execute().await.map_err(ctx(|| format!("creating VLAN {name}")))?;
                ch.links += 1;
                let l = self.link_by_name(name).await?;
                created.insert(name.clone(), l.index);
            }
            KernelOp::SetAlias { index, name, alias } => {
                let msg = LinkUnspec::new_with_index(*index).alias(alias.clone()).build();
                self.handle.link().set(msg).execute().await.map_err(ctx(|| format!("labelling {name}")))?;
                ch.links += 1;
            }
            KernelOp::PinMac { dev, name, mac } => {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = resolve(dev)?;
                m.header.state = NeighbourState::Noarp;
                m.header.flags = NeighbourFlags::Controller;
                m.header.kind = RouteType::Unspec;
                m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(m));
                req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
                self.request(req, || format!("pinning {mac} to {name}")).await?;
                ch.fdb += 1;
            }
            KernelOp::SetMaster { dev, name, bridge } => {
                let msg = LinkUnspec::new_with_index(resolve(dev)?).controller(resolve(bridge)?).up().build();
                self.handle
                    .link()
                    .set(msg)
                    .execute()
                    .await
                    .map_err(ctx(|| format!("attaching {name} to its bridge")))?;
                ch.links += 1;
            }
            KernelOp::Detach { index, name } => {
                let msg = LinkUnspec::new_with_index(*index).nocontroller().build();
                self.handle.link().set(msg).execute().await.map_err(ctx(|| format!("detaching {name}")))?;
                ch.links += 1;
            }
            KernelOp::AddFdb { dev, fdb } => {
                self.add_fdb(resolve(dev)?, fdb).await?;
                ch.fdb += 1;
            }
            KernelOp::DelFdb { dev, fdb } => {
                // As read, to delete exactly that; else (a delta) as it was written.
                let m = match obs.raw.fdb.get(&(*dev, *fdb)) {
                    Some(raw) => decode(Some(raw), || format!("fdb {fdb:?}"))?,
                    None => fdb_message(*dev, fdb),
                };
                self.handle.neighbours().del(m).execute().await.map_err(ctx(|| format!("deleting fdb {fdb:?}")))?;
                ch.fdb += 1;
            }
            KernelOp::SetNeigh { dev, ip, mac } => {
                self.set_neigh(resolve(dev)?, *ip, *mac).await?;
                ch.neigh += 1;
            }
            KernelOp::DelNeigh { dev, ip } => {
                let m = match obs.raw.neigh.get(&(*dev, *ip)) {
                    Some(raw) => decode(Some(raw), || format!("neighbour {ip}"))?,
                    None => neigh_message(*dev, *ip),
                };
                self.del_neigh(m, *ip).await?;
                ch.neigh += 1;
            }
            KernelOp::AddAddr { dev, net } => {
                if net.addr().is_ipv6() {
                    // The bridge was made without IPv6 (see CreateBridge): a
                    // gateway of an IPv6 subnet turns it on, without duplicate
                    // address detection (every gateway holds the same
                    // anycast address) and without router solicitations
                    // (it forwards).
                    let name = vipcast_sys::ifname(resolve(dev)?).map_err(|e| KernelError {
                        what: format!("naming the device of {net}: {e}"),
                        source: rtnetlink::Error::RequestFailed,
                    })?;
                    for (key, value) in [("accept_dad", "0"), ("forwarding", "1"), ("disable_ipv6", "0")] {
                        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value);
                    }
                }
                self.handle
                    .address()
                    .add(resolve(dev)?, net.addr(), net.prefix_len())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("adding address {net}")))?;
                ch.addrs += 1;
            }
            KernelOp::DelAddr { dev, net } => {
                let m = read(obs.raw.addrs.get(&(*dev, *net)), || format!("address {net}"))?;
                self.handle
                    .address()
                    .del(m.clone())
                    .execute()
                    .await
                    .map_err(ctx(|| format!("deleting address {net}")))?;
                ch.addrs += 1;
            }
            KernelOp::SyncNeigh { dev, want } => {
                let dev = resolve(dev)?;
                let mut have = BTreeMap::new();
                let mut msgs = HashMap::new();
                for (_, ip, mac, m) in self.neighbours(|i| i == dev).await? {
                    have.insert(ip, mac);
                    msgs.insert(ip, m);
                }
                let (gone, set) = set_diff(&have, want);
                for ip in gone {
                    self.del_neigh(decode(msgs.get(ip), || format!("neighbour {ip}"))?, *ip).await?;
                    ch.neigh += 1;
                }
                for (ip, mac) in set {
                    self.set_neigh(dev, *ip, *mac).await?;
                    ch.neigh += 1;
                }
            }
        }
        Ok(())
    }

    async fn del_link(&self, index: u32, name: &str) -> Result<()> {
        self.handle.link().del(index).execute().await.map_err(ctx(|| format!("deleting {name}")))
    }

    async fn create_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Option<IpAddr>,
        proxy: bool,
        created: &mut BTreeMap<String, u32>,
    ) -> Result<()> {
        let mut b = LinkVxlan::new(name, vni).port(VXLAN_PORT).learning(false).proxy(proxy);
        match local {
            Some(IpAddr::V4(a)) => b = b.local(a),
            Some(IpAddr::V6(a)) => b = b.local6(a),
            None => {}
        }
        self.handle.link().add(b.build()).execute().await.map_err(ctx(|| format!("creating {name}")))?;
        let l = self.link_by_name(name).await?;
        created.insert(name.to_string(), l.index);
        Ok(())
    }

    /// `bridge fdb append <mac> dev <vx> dst <ip> [port <p>] self permanent`
    async fn add_fdb(&self, vx: u32, f: &Fdb) -> Result<()> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(fdb_message(vx, f)));
        // APPEND: the all-zeros MAC has one entry per flood destination.
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        self.request(req, || format!("adding fdb {f:?}")).await
    }

    /// Sends `req` and waits for its acknowledgement.
    async fn request(&self, req: NetlinkMessage<RouteNetlinkMessage>, what: impl Fn() -> String) -> Result<()> {
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(ctx(&what))?;
        while let Some(msg) = futures::StreamExt::next(&mut resp).await {
            if let NetlinkPayload::Error(e) = msg.payload
                && e.code.is_some()
            {
                return Err(KernelError { what: what(), source: rtnetlink::Error::NetlinkError(e) });
            }
        }
        Ok(())
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent`
    async fn set_neigh(&self, dev: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(dev, ip)
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(ctx(|| format!("setting neighbour {ip} -> {mac}")))
    }

    /// An Open vSwitch gateway's router port `name` (an internal port the
    /// switch made): up with `mac`, holding exactly the addresses `addrs`
    /// (link-local aside; IPv6 on it without duplicate address detection)
    /// and the permanent neighbours `neigh`. Returns how many changes it
    /// made; `Ok(None)` while the port does not exist yet.
    pub async fn program_router_port(
        &self,
        name: &str,
        mac: MacAddr,
        addrs: &BTreeSet<IpNet>,
        neigh: &BTreeMap<IpAddr, MacAddr>,
    ) -> Result<Option<usize>> {
        let Some(link) = self.links().await?.into_iter().find(|l| l.name == name) else { return Ok(None) };
        let mut changes = 0;
        if link.mac != Some(mac) || !link.up {
            let msg = LinkUnspec::new_with_index(link.index).address(mac.0.to_vec()).up().build();
            self.handle.link().set(msg).execute().await.map_err(ctx(|| format!("setting up {name}")))?;
            changes += 1;
        }
        if addrs.iter().any(|a| a.addr().is_ipv6()) {
            for (key, value) in [("accept_dad", "0"), ("forwarding", "1"), ("disable_ipv6", "0")] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value);
            }
        }
        let mut have = BTreeMap::new();
        let mut s = self.handle.address().get().set_link_index_filter(link.index).execute();
        while let Some(m) = s.try_next().await.map_err(ctx(|| format!("listing addresses of {name}")))? {
            if let Some((dev, net)) = addr_of(&m)
                && dev == link.index
            {
                have.insert(net, m);
            }
        }
        for (net, m) in &have {
            if !addrs.contains(net) {
                self.handle.address().del(m.clone()).execute().await.map_err(ctx(|| format!("deleting {net}")))?;
                changes += 1;
            }
        }
        for net in addrs.iter().filter(|n| !have.contains_key(n)) {
            self.handle
                .address()
                .add(link.index, net.addr(), net.prefix_len())
                .execute()
                .await
                .map_err(ctx(|| format!("adding address {net} to {name}")))?;
            changes += 1;
        }
        let present: BTreeMap<IpAddr, (MacAddr, Vec<u8>)> = self
            .neighbours(|i| i == link.index)
            .await?
            .into_iter()
            .map(|(_, ip, mac, body)| (ip, (mac, body)))
            .collect();
        for (ip, (_, body)) in present.iter().filter(|(ip, _)| !neigh.contains_key(ip)) {
            self.del_neigh(decode(Some(body), || format!("neighbour {ip}"))?, *ip).await?;
            changes += 1;
        }
        for (ip, m) in neigh.iter().filter(|(ip, m)| present.get(ip).map(|(p, _)| p) != Some(m)) {
            self.set_neigh(link.index, *ip, *m).await?;
            changes += 1;
        }
        set_forwarding();
        Ok(Some(changes))
    }

    async fn del_neigh(&self, m: NeighbourMessage, ip: IpAddr) -> Result<()> {
        self.handle.neighbours().del(m).execute().await.map_err(ctx(|| format!("deleting neighbour {ip}")))
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
                let p = l.port()?.to_string();
                Some((p, (l.index, l.name)))
            })
            .collect())
    }
}

/// What the last complete reconcile left the kernel holding.
#[derive(Debug)]
struct Programmed {
    plan: Plan,
    devs: BTreeMap<u32, VpcDevs>,
}

/// How a [`Reconciler::reconcile`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changes: Changes,
    /// The kernel was read (a full reconcile), not only written.
    pub read: bool,
    /// What a full reconcile had to put right although the kernel should
    /// already have held the plan: someone else changed it (drift).
    pub drift: Changes,
}

/// The kernel data plane of an agent: remembers what it last programmed,
/// so that a change of the view's tables only (a VIP moving, a port
/// appearing on another chassis) is written without reading the kernel
/// back; everything else, and every `read`, reads it all and diffs.
#[derive(Debug)]
pub struct Reconciler {
    kernel: Kernel,
    last: Option<Programmed>,
}

impl Reconciler {
    pub fn new(kernel: Kernel) -> Reconciler {
        Reconciler { kernel, last: None }
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Brings the kernel in line with `plan`. Without `read`, and when only
    /// tables changed since the last successful reconcile, as a [`delta`]
    /// (no dump); otherwise [`Kernel::observe`], [`diff`], [`Kernel::apply`].
    /// A failure forgets what was programmed: the next call reads.
    pub async fn reconcile(&mut self, plan: Plan, read: bool) -> Result<Outcome> {
        let last = self.last.take();
        if !read
            && let Some(last) = &last
            && let Some(ops) = delta(&last.plan, &plan, &last.devs)
        {
            let changes = self.kernel.apply(&Observed::default(), &ops).await?;
            let devs = last.devs.clone();
            self.last = Some(Programmed { plan, devs });
            return Ok(Outcome { changes, read: false, drift: Changes::default() });
        }
        let should_hold = last.is_some_and(|l| l.plan == plan);
        let (obs, changes, created) = self.kernel.reconcile_read(&plan).await?;
        let index = |name: String| {
            created.get(&name).copied().or_else(|| obs.links.iter().find(|l| l.name == name).map(|l| l.index))
        };
        let devs: Option<BTreeMap<u32, VpcDevs>> = plan
            .vpcs
            .keys()
            .map(|&vni| {
                let bridge = index(plan::bridge_name(vni))?;
                let vxlan = index(plan::vxlan_name(vni))?;
                Some((vni, VpcDevs { bridge, vxlan }))
            })
            .collect();
        self.last = devs.map(|devs| Programmed { plan, devs });
        let drift = if should_hold { changes.clone() } else { Changes::default() };
        Ok(Outcome { changes, read: true, drift })
    }
}

/// The message an observation read for what is to be deleted.
fn read<T>(m: Option<&T>, what: impl FnOnce() -> String) -> Result<&T> {
    m.ok_or_else(|| KernelError { what: format!("{} was not read", what()), source: rtnetlink::Error::RequestFailed })
}

/// A neighbour or FDB entry as read, decoded as rtnetlink decodes it.
fn decode(body: Option<&Vec<u8>>, what: impl Fn() -> String) -> Result<NeighbourMessage> {
    NeighbourMessage::parse(&read(body, &what)?[..])
        .map_err(|_| KernelError { what: format!("decoding {}", what()), source: rtnetlink::Error::RequestFailed })
}

/// A VXLAN device's own permanent FDB entry `f` (MAC, destination, port):
/// what adding it writes, and what identifies it for deleting.
fn fdb_message(vx: u32, f: &Fdb) -> NeighbourMessage {
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
    m
}

/// The permanent neighbour entry for `ip` on `dev`, to delete it.
fn neigh_message(dev: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = dev;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(addr(ip)));
    m
}

fn addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn set_forwarding() {
    for f in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] {
        if std::fs::read_to_string(f).map(|s| s.trim() != "1").unwrap_or(true) {
            let _ = std::fs::write(f, "1");
        }
    }
}

//! The Open vSwitch data plane: the agent is the OpenFlow 1.3 controller of
//! the chassis' `br-int` (`fail_mode=secure`, controller `tcp:<listen>`,
//! out of band) and programs it with what [`crate::ovs_flows`] computes.
//!
//! ```text
//!  ovs-vswitchd ──TCP──► listener (a new connection replaces the old one)
//!        │  HELLO, FEATURES, SET_CONFIG (miss_send_len 0xffff), PORT_DESC,
//!        │  flow dump (what the switch already holds), then a resync
//!        ├─► reader: ECHO answered, PORT_STATUS tracked (a port added or
//!        │           removed re-applies), PACKET_IN from a VM port parsed
//!        │           -> ports::Seen (announcement or VRRP advert)
//!        └─◄ writer: apply (diff -> group adds/modifies, flow adds, strict
//!                    deletes, group deletes, BARRIER), packet_out
//! ```
//!
//! * No gap on (re)connect: flows are never deleted wholesale. What the
//!   switch holds is read back (flow statistics); every desired flow it
//!   lacks, or holds with other instructions, is added (an add replaces the
//!   flow with the same table, priority and match in place), then what is
//!   not desired is deleted one by one (strict, by match, priority and
//!   cookie). Groups are read back too (group descriptions): a desired
//!   group the switch holds with other buckets is modified in place, one it
//!   lacks is added, and one not desired is deleted after the flows that
//!   used it.
//! * Flows survive a disconnection from the agent (`fail_mode=secure`), so
//!   an agent restart does not interrupt forwarding; they do not survive a
//!   restart of `ovs-vswitchd`, which the resync covers.
//! * Every connection starts from what the switch reports; [`Ovs::apply`]
//!   keeps the last inputs, so a reconnection is re-synchronised without
//!   waiting for the agent's next call.
//! * VRRP adverts arriving from the tunnel reach the controller too and are
//!   reported as [`Frame::Delivered`], once per local port of the VPC the
//!   switch delivers them to (every one for the multicast group, the port
//!   with the destination address for unicast): what the kernel data plane's
//!   sniffers see leave towards the VMs, for the dead-chassis assist.
//! * The tunnel ports must be named [`VXLAN_PORT_NAME`] and
//!   [`GRE_PORT_NAME`] (`options:key=flow options:remote_ip=flow`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use vipcast_model::view::ChassisView;
use vipcast_openflow::error_msg::OFPET_GROUP_MOD_FAILED;
use vipcast_openflow::multipart::OFPMPF_MORE;
use vipcast_openflow::oxm::{OFPXMC_NXM_0, OFPXMC_NXM_1};
use vipcast_openflow::port::{OFPPR_DELETE, OFPPR_MODIFY};
use vipcast_openflow::{
    Action, Body, Bucket, ErrorMsg, FlowMod, FlowModCommand, FlowStatsRequest, Framer, GroupMod, GroupModCommand,
    GroupType, Hello, Instruction, Match, Message, MultipartReplyBody, MultipartRequest, MultipartRequestBody,
    OFP_NO_BUFFER, OFPP_CONTROLLER, OxmHeader, PacketOut, Port, SwitchConfig,
};
use vipcast_packet::announce;
use vipcast_packet::vrrp::{self, ChecksumPolicy};

use crate::ovs_flows::{self, COOKIE_TAG, Desired, GRE_PORT_NAME, VXLAN_PORT_NAME};
use crate::ports::{Frame, Seen};

/// How long the switch may take to answer a request (handshake, barrier).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// `OFPGMFC_GROUP_EXISTS`.
const OFPGMFC_GROUP_EXISTS: u16 = 0;

/// What one [`Ovs::apply`] sent (and the switch accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub flows_added: usize,
    pub flows_deleted: usize,
    pub groups_added: usize,
    pub groups_modified: usize,
    pub groups_deleted: usize,
}

impl Changes {
    pub fn total(&self) -> usize {
        self.flows_added + self.flows_deleted + self.groups_added + self.groups_modified + self.groups_deleted
    }
}

/// The controller of one `br-int`. Dropping it closes the listener and the
/// switch connection; the switch keeps its flows.
#[derive(Debug)]
pub struct Ovs {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Ovs {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What [`Ovs::apply`] was last given, for resynchronising a new connection.
#[derive(Debug, Clone)]
struct Inputs {
    view: ChassisView,
    vm_ports: BTreeMap<String, String>,
    /// Gateways: VNI -> router port interface.
    routers: BTreeMap<u32, String>,
    replicators: BTreeMap<u32, Option<IpAddr>>,
}

#[derive(Debug)]
struct Shared {
    seen: mpsc::Sender<Seen>,
    /// The connection whose handshake completed.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Serialises programming; holds what the current connection's switch holds.
    session: tokio::sync::Mutex<Session>,
    /// Interface name -> port, as the switch reports them.
    ports: Mutex<BTreeMap<String, Port>>,
    /// OpenFlow port -> vipcast port name (for PACKET_IN).
    names: Mutex<BTreeMap<u32, String>>,
    inputs: Mutex<Option<Inputs>>,
    /// A port was added or removed: re-apply.
    kick: Notify,
    connected: watch::Sender<bool>,
    next_conn: AtomicU64,
}

/// One switch connection: the writer's queue and the xid counter.
#[derive(Debug)]
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    xid: AtomicU32,
}

impl Conn {
    fn send(&self, body: Body) -> anyhow::Result<u32> {
        let xid = self.xid.fetch_add(1, Ordering::Relaxed);
        let bytes = Message::new(xid, body).to_bytes().context("encoding an OpenFlow message")?;
        self.tx.send(bytes).map_err(|_| anyhow!("the switch connection is closed"))?;
        Ok(xid)
    }
}

/// A flow as the switch holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    table: u8,
    priority: u16,
    match_: Match,
    instructions: Vec<Instruction>,
    cookie: u64,
}

#[derive(Debug, Default)]
struct Session {
    conn: Option<Arc<Conn>>,
    responses: Option<mpsc::UnboundedReceiver<Message>>,
    /// Our flows (tagged cookies), by cookie.
    flows: BTreeMap<u64, Installed>,
    /// Flows found on the switch that are not ours (or duplicate a cookie).
    foreign: Vec<Installed>,
    /// Groups we know the switch holds, with their buckets (`None`: a group
    /// a stale flow refers to, content unknown).
    groups: BTreeMap<u32, Option<Vec<Bucket>>>,
    /// Whether `groups` is all the switch holds (false until the first apply
    /// of a connection).
    groups_known: bool,
}

/// A request of an apply, for error reports and bookkeeping.
#[derive(Debug, Clone)]
enum Op {
    AddFlow(Installed),
    DeleteFlow(Installed),
    /// Add of a group the switch may already hold (modified then).
    AddGroup(u32, Vec<Bucket>, bool),
    ModifyGroup(u32, Vec<Bucket>),
    DeleteGroup(u32),
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::AddFlow(f) => format!("add flow table={} priority={} cookie={:#x}", f.table, f.priority, f.cookie),
            Op::DeleteFlow(f) => {
                format!("delete flow table={} priority={} cookie={:#x}", f.table, f.priority, f.cookie)
            }
            Op::AddGroup(id, ..) => format!("add group {id}"),
            Op::ModifyGroup(id, _) => format!("modify group {id}"),
            Op::DeleteGroup(id) => format!("delete group {id}"),
        }
    }

    fn body(&self) -> Body {
        match self {
            Op::AddFlow(f) => Body::FlowMod(FlowMod {
                cookie: f.cookie,
                ..FlowMod::add(f.table, f.priority, f.match_.clone(), f.instructions.clone())
            }),
            Op::DeleteFlow(f) => Body::FlowMod(FlowMod {
                command: FlowModCommand::DeleteStrict,
                cookie: f.cookie,
                cookie_mask: u64::MAX,
                ..FlowMod::add(f.table, f.priority, f.match_.clone(), Vec::new())
            }),
            Op::AddGroup(id, buckets, _) => group_mod(GroupModCommand::Add, *id, buckets.clone()),
            Op::ModifyGroup(id, buckets) => group_mod(GroupModCommand::Modify, *id, buckets.clone()),
            Op::DeleteGroup(id) => group_mod(GroupModCommand::Delete, *id, Vec::new()),
        }
    }
}

fn group_mod(command: GroupModCommand, group_id: u32, buckets: Vec<Bucket>) -> Body {
    Body::GroupMod(GroupMod { command, group_type: GroupType::All, group_id, buckets })
}

impl Ovs {
    /// Listens on `listen` for the switch. Must be called within a Tokio runtime.
    pub fn start(listen: SocketAddr, seen: mpsc::Sender<Seen>) -> anyhow::Result<Ovs> {
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        Ovs::with_listener(listener, seen)
    }

    /// Like [`Ovs::start`] with a bound listener (for one bound in another
    /// network namespace).
    pub fn with_listener(listener: std::net::TcpListener, seen: mpsc::Sender<Seen>) -> anyhow::Result<Ovs> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let shared = Arc::new(Shared {
            seen,
            conn: Mutex::new(None),
            session: tokio::sync::Mutex::new(Session::default()),
            ports: Mutex::new(BTreeMap::new()),
            names: Mutex::new(BTreeMap::new()),
            inputs: Mutex::new(None),
            kick: Notify::new(),
            connected: watch::channel(false).0,
            next_conn: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Ovs { shared, local_addr, accept })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether a switch is connected and its handshake done.
    pub fn connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Follows [`Ovs::connected`] (true again after each reconnection).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// The OpenFlow port number of interface `ifname` on the bridge.
    pub fn port_number(&self, ifname: &str) -> Option<u32> {
        lock(&self.shared.ports).get(ifname).map(|p| p.port_no)
    }

    /// Programs the switch for `view`: `vm_ports` maps vipcast port names to
    /// their interfaces on the bridge, `replicator(vni)` is the replicator a
    /// VPC in replicator mode floods to. Sends only what differs from what
    /// the switch holds, then waits for a barrier. When no switch is
    /// connected the inputs are kept for the next connection and an error
    /// is returned.
    pub async fn apply(
        &self,
        view: &ChassisView,
        vm_ports: &BTreeMap<String, String>,
        routers: &BTreeMap<u32, String>,
        replicator: &(dyn Fn(u32) -> Option<IpAddr> + Sync),
    ) -> anyhow::Result<Changes> {
        let replicators = view.vpcs.values().map(|v| (v.vni, replicator(v.vni))).collect();
        let inputs = Inputs { view: view.clone(), vm_ports: vm_ports.clone(), routers: routers.clone(), replicators };
        *lock(&self.shared.inputs) = Some(inputs.clone());
        let mut session = self.shared.session.lock().await;
        apply_locked(&self.shared, &mut session, &inputs).await
    }

    /// Sends `frame` out of interface `ifname` (towards its VM).
    pub fn packet_out(&self, ifname: &str, frame: &[u8]) -> anyhow::Result<()> {
        self.send_packet(ifname, frame, |port| (OFPP_CONTROLLER, Action::output(port)))
    }

    /// Sends `frame` through the pipeline as if it had come in on interface
    /// `ifname` (a VM port): forwarded and flooded like that VM's own
    /// frames, to local ports and over the tunnels.
    pub fn packet_out_from(&self, ifname: &str, frame: &[u8]) -> anyhow::Result<()> {
        self.send_packet(ifname, frame, |port| (port, Action::output(vipcast_openflow::OFPP_TABLE)))
    }

    /// A PACKET_OUT of `frame`; `how` gives (in_port, action) from the port
    /// number of `ifname`.
    fn send_packet(&self, ifname: &str, frame: &[u8], how: impl FnOnce(u32) -> (u32, Action)) -> anyhow::Result<()> {
        let conn = lock(&self.shared.conn).clone().ok_or_else(|| anyhow!("no switch connected"))?;
        let port = self.port_number(ifname).ok_or_else(|| anyhow!("{ifname} is not a port of the bridge"))?;
        let (in_port, action) = how(port);
        conn.send(Body::PacketOut(PacketOut {
            buffer_id: OFP_NO_BUFFER,
            in_port,
            actions: vec![action],
            data: frame.to_vec(),
        }))?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut current: Option<AbortOnDrop> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting the switch connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::info!(%peer, "switch connected");
        // The new connection replaces the old one.
        drop(current.take());
        let task = tokio::spawn(connection(stream, shared.clone()));
        current = Some(AbortOnDrop(task.abort_handle()));
    }
}

/// Runs one switch connection until it closes.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let conn = Arc::new(Conn { id, tx, xid: AtomicU32::new(1) });
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = wr.write_all(&bytes).await {
                tracing::warn!(error = %e, "writing to the switch");
                return;
            }
        }
    });
    let _writer = AbortOnDrop(writer.abort_handle());
    let (resp_tx, mut responses) = mpsc::unbounded_channel();
    lock(&shared.ports).clear();
    let reader = tokio::spawn(read_loop(shared.clone(), conn.clone(), resp_tx, rd));
    let _reader = AbortOnDrop(reader.abort_handle());

    let (installed, groups) = match handshake(&conn, &mut responses).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "switch handshake failed");
            return;
        }
    };
    {
        let mut session = shared.session.lock().await;
        *session = Session {
            conn: Some(conn.clone()),
            responses: Some(responses),
            // Every group the switch holds is ours: stale ones are deleted.
            groups: groups.into_iter().map(|(id, buckets)| (id, Some(buckets))).collect(),
            groups_known: true,
            ..Session::default()
        };
        for f in installed {
            if f.cookie & (0xff << 56) == COOKIE_TAG && !session.flows.contains_key(&f.cookie) {
                session.flows.insert(f.cookie, f);
            } else {
                session.foreign.push(f);
            }
        }
        *lock(&shared.conn) = Some(conn.clone());
        shared.connected.send_replace(true);
        tracing::info!(flows = session.flows.len() + session.foreign.len(), "switch ready");
        let inputs = lock(&shared.inputs).clone();
        if let Some(inputs) = inputs {
            match apply_locked(&shared, &mut session, &inputs).await {
                Ok(c) => tracing::info!(?c, "switch re-synchronised"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "re-synchronising the switch"),
            }
        }
    }
    let mut reader = reader;
    loop {
        tokio::select! {
            _ = &mut reader => break,
            () = shared.kick.notified() => {
                let inputs = lock(&shared.inputs).clone();
                let Some(inputs) = inputs else { continue };
                let mut session = shared.session.lock().await;
                if let Err(e) = apply_locked(&shared, &mut session, &inputs).await {
                    tracing::warn!(error = %format!("{e:#}"), "re-applying after a port change");
                }
            }
        }
    }
    tracing::warn!("switch disconnected");
    let mut current = lock(&shared.conn);
    if current.as_ref().is_some_and(|c| c.id == id) {
        *current = None;
        shared.connected.send_replace(false);
    }
}

/// Reads the connection: answers echoes, tracks ports, turns packet-ins into
/// [`Seen`]s and passes everything else on to `responses`.
async fn read_loop(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    responses: mpsc::UnboundedSender<Message>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
) {
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return,
            Ok(len) => framer.push(buf.get(..len).unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "reading from the switch");
                return;
            }
        }
        loop {
            match framer.next_message() {
                Ok(Some(m)) => handle(&shared, &conn, &responses, m),
                Ok(None) => break,
                Err(e) if framer.buffered() == 0 => {
                    tracing::warn!(error = %e, "the switch stream cannot be framed");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "undecodable message from the switch"),
            }
        }
    }
}

fn handle(shared: &Shared, conn: &Conn, responses: &mpsc::UnboundedSender<Message>, m: Message) {
    match m.body {
        Body::EchoRequest(data) => {
            let bytes = Message::new(m.xid, Body::EchoReply(data)).to_bytes();
            if let Ok(bytes) = bytes {
                let _ = conn.tx.send(bytes);
            }
        }
        Body::PortStatus(ps) => {
            let name = ps.port.name();
            let mut ports = lock(&shared.ports);
            let changed = if ps.reason == OFPPR_DELETE {
                ports.remove(&name).is_some()
            } else {
                let before = ports.insert(name, ps.port.clone()).map(|p| p.port_no);
                ps.reason != OFPPR_MODIFY || before != Some(ps.port.port_no)
            };
            drop(ports);
            if changed {
                shared.kick.notify_one();
            }
        }
        Body::PacketIn(pin) => packet_in(shared, &pin),
        Body::MultipartReply(ref r) => {
            if let MultipartReplyBody::PortDesc(list) = &r.body {
                let mut ports = lock(&shared.ports);
                for p in list {
                    ports.insert(p.name(), p.clone());
                }
            }
            let _ = responses.send(m);
        }
        _ => {
            let _ = responses.send(m);
        }
    }
}

fn packet_in(shared: &Shared, pin: &vipcast_openflow::PacketIn) {
    let Some(in_port) = pin.in_port() else { return };
    let Some(port) = lock(&shared.names).get(&in_port).cloned() else {
        delivered_from_tunnel(shared, pin);
        return;
    };
    let frame = &pin.data;
    let parsed =
        match announce::classify(frame) {
            Ok(Some(a)) => Some(Frame::Announcement(a)),
            _ => vrrp::parse_frame(frame, ChecksumPolicy::AllowLegacyUnicast)
                .ok()
                .map(|(eth, ip, advert)| Frame::Advert { eth_src: eth.src, src: ip.src(), dst: ip.dst(), advert }),
        };
    let Some(frame) = parsed else { return };
    let seen = Seen { port, frame, at_ms: vipcast_api::now_ms() };
    if let Err(e) = shared.seen.try_send(seen) {
        tracing::warn!(error = %e, "dropping a frame from the switch: the agent is not keeping up");
    }
}

/// A VRRP advert from the tunnel: one `Delivered` per local port of its VPC
/// (by the VNI the classifier wrote into the metadata) that receives it.
fn delivered_from_tunnel(shared: &Shared, pin: &vipcast_openflow::PacketIn) {
    let vni = pin.match_.fields.iter().find_map(|f| match f {
        vipcast_openflow::OxmField::Metadata { value, .. } => Some((value & ovs_flows::VNI_MASK) as u32),
        _ => None,
    });
    let Some(vni) = vni else { return };
    let Ok((eth, ip, advert)) = vrrp::parse_frame(&pin.data, ChecksumPolicy::AllowLegacyUnicast) else { return };
    let receivers: Vec<String> = {
        let inputs = lock(&shared.inputs);
        let Some(vpc) = inputs.as_ref().and_then(|i| i.view.vpcs.values().find(|v| v.vni == vni)) else { return };
        vpc.local_ports.iter().filter(|p| ip.dst().is_multicast() || p.ip == ip.dst()).map(|p| p.name.clone()).collect()
    };
    for port in receivers {
        let frame = Frame::Delivered {
            eth_src: eth.src,
            eth_dst: eth.dst,
            src: ip.src(),
            dst: ip.dst(),
            advert: advert.clone(),
        };
        let seen = Seen { port, frame, at_ms: vipcast_api::now_ms() };
        if let Err(e) = shared.seen.try_send(seen) {
            tracing::warn!(error = %e, "dropping a frame from the switch: the agent is not keeping up");
        }
    }
}

/// Waits for the reply to `xid` (multipart: all of its parts); ERRORs for it fail.
async fn reply(responses: &mut mpsc::UnboundedReceiver<Message>, xid: u32, what: &str) -> anyhow::Result<Vec<Body>> {
    let mut parts = Vec::new();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let m = tokio::time::timeout_at(deadline, responses.recv())
            .await
            .map_err(|_| anyhow!("no reply to {what} within {REPLY_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("the switch connection closed before the reply to {what}"))?;
        if m.xid != xid {
            continue;
        }
        match m.body {
            Body::Error(e) => bail!("switch ERROR {e} for {what}"),
            Body::MultipartReply(r) => {
                let more = r.flags & OFPMPF_MORE != 0;
                parts.push(Body::MultipartReply(r));
                if !more {
                    return Ok(parts);
                }
            }
            body => return Ok(vec![body]),
        }
    }
}

/// HELLO, FEATURES, SET_CONFIG, PORT_DESC and a dump of the flows the switch holds.
/// What the switch holds when it connects: its flows, and its groups' buckets.
type Held = (Vec<Installed>, BTreeMap<u32, Vec<Bucket>>);

async fn handshake(conn: &Conn, responses: &mut mpsc::UnboundedReceiver<Message>) -> anyhow::Result<Held> {
    conn.send(Body::Hello(Hello::default()))?;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let m = tokio::time::timeout_at(deadline, responses.recv())
            .await
            .map_err(|_| anyhow!("no HELLO from the switch"))?
            .ok_or_else(|| anyhow!("the switch closed the connection"))?;
        match m.body {
            Body::Hello(h) if h.supports_1_3() => break,
            Body::Hello(h) => bail!("the switch does not speak OpenFlow 1.3 ({h:?})"),
            _ => {}
        }
    }
    let xid = conn.send(Body::FeaturesRequest)?;
    let features = reply(responses, xid, "features request").await?;
    if let Some(Body::FeaturesReply(f)) = features.first() {
        tracing::info!(dpid = format!("{:016x}", f.datapath_id), tables = f.n_tables, "switch features");
    }
    conn.send(Body::SetConfig(SwitchConfig { flags: 0, miss_send_len: 0xffff }))?;
    let xid = conn.send(Body::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::PortDesc }))?;
    reply(responses, xid, "port description request").await?;
    let xid = conn.send(Body::MultipartRequest(MultipartRequest {
        flags: 0,
        body: MultipartRequestBody::Flow(FlowStatsRequest::all()),
    }))?;
    let mut flows = Vec::new();
    for part in reply(responses, xid, "flow statistics request").await? {
        if let Body::MultipartReply(r) = part
            && let MultipartReplyBody::Flow(list) = r.body
        {
            flows.extend(list.into_iter().map(|f| Installed {
                table: f.table_id,
                priority: f.priority,
                match_: f.match_,
                instructions: f.instructions,
                cookie: f.cookie,
            }));
        }
    }
    let xid =
        conn.send(Body::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::GroupDesc }))?;
    let mut groups = BTreeMap::new();
    for part in reply(responses, xid, "group description request").await? {
        if let Body::MultipartReply(r) = part
            && let MultipartReplyBody::GroupDesc(list) = r.body
        {
            groups.extend(list.into_iter().map(|g| (g.group_id, g.buckets)));
        }
    }
    Ok((flows, groups))
}

async fn apply_locked(shared: &Shared, session: &mut Session, inputs: &Inputs) -> anyhow::Result<Changes> {
    let conn = session.conn.clone().ok_or_else(|| anyhow!("no switch connected; will program it when it connects"))?;
    if lock(&shared.conn).as_ref().is_none_or(|c| c.id != conn.id) {
        bail!("the switch connection was lost; will program it when it reconnects");
    }
    let ports = {
        let by_name = lock(&shared.ports);
        let number = |ifname: &str| by_name.get(ifname).map(|p| p.port_no);
        ovs_flows::Ports {
            vm: inputs.vm_ports.iter().filter_map(|(port, ifname)| number(ifname).map(|n| (port.clone(), n))).collect(),
            vxlan: number(VXLAN_PORT_NAME),
            gre: number(GRE_PORT_NAME),
            routers: inputs.routers.iter().filter_map(|(vni, ifname)| number(ifname).map(|n| (*vni, n))).collect(),
        }
    };
    *lock(&shared.names) = ports.vm.iter().map(|(name, n)| (*n, name.clone())).collect();
    let desired = ovs_flows::desired(&inputs.view, &ports, &|vni| inputs.replicators.get(&vni).copied().flatten());
    let ops = plan_ops(session, &desired);
    let mut changes = Changes::default();
    if ops.is_empty() {
        return Ok(changes);
    }
    let Some(responses) = session.responses.as_mut() else { bail!("no switch connected") };
    // Whatever arrived since the last apply (errors of packet-outs, late replies).
    while let Ok(m) = responses.try_recv() {
        if let Body::Error(e) = m.body {
            tracing::warn!(error = %e, xid = m.xid, "switch ERROR for an earlier request");
        }
    }
    let mut failures = Vec::new();
    let mut retry = Vec::new();
    for (op, error) in exchange(&conn, responses, &ops).await? {
        match (op, error) {
            (op, None) => record(session, &mut changes, op),
            (Op::AddGroup(id, buckets, true), Some(e))
                if e.err_type == OFPET_GROUP_MOD_FAILED && e.code == OFPGMFC_GROUP_EXISTS =>
            {
                retry.push(Op::ModifyGroup(*id, buckets.clone()));
            }
            (op, Some(e)) => failures.push(format!("{}: {e}", op.describe())),
        }
    }
    if !retry.is_empty() {
        let Some(responses) = session.responses.as_mut() else { bail!("no switch connected") };
        for (op, error) in exchange(&conn, responses, &retry).await? {
            match error {
                None => record(session, &mut changes, op),
                Some(e) => failures.push(format!("{}: {e}", op.describe())),
            }
        }
    }
    if failures.is_empty() {
        session.groups_known = true;
        Ok(changes)
    } else {
        bail!("the switch refused {} of {} requests: {}", failures.len(), ops.len(), failures.join("; "))
    }
}

/// Sends `ops` and a barrier; returns each op with the ERROR that named it.
async fn exchange<'o>(
    conn: &Conn,
    responses: &mut mpsc::UnboundedReceiver<Message>,
    ops: &'o [Op],
) -> anyhow::Result<Vec<(&'o Op, Option<ErrorMsg>)>> {
    let mut sent = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        sent.insert(conn.send(op.body())?, i);
    }
    let barrier = conn.send(Body::BarrierRequest)?;
    let mut errors: Vec<Option<ErrorMsg>> = vec![None; ops.len()];
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let m = tokio::time::timeout_at(deadline, responses.recv())
            .await
            .map_err(|_| anyhow!("no barrier reply within {REPLY_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("the switch connection closed before the barrier reply"))?;
        match m.body {
            Body::BarrierReply if m.xid == barrier => break,
            Body::Error(e) => match e.request_xid().and_then(|x| sent.get(&x)).and_then(|i| errors.get_mut(*i)) {
                Some(slot) => *slot = Some(e),
                None => tracing::warn!(error = %e, "switch ERROR for an unknown request"),
            },
            _ => {}
        }
    }
    Ok(ops.iter().zip(errors).collect())
}

/// Book-keeps a request the switch accepted.
fn record(session: &mut Session, changes: &mut Changes, op: &Op) {
    match op {
        Op::AddFlow(f) => {
            changes.flows_added += 1;
            session.flows.insert(f.cookie, f.clone());
        }
        Op::DeleteFlow(f) => {
            changes.flows_deleted += 1;
            if session.flows.get(&f.cookie) == Some(f) {
                session.flows.remove(&f.cookie);
            }
            session.foreign.retain(|x| x != f);
        }
        Op::AddGroup(id, buckets, _) => {
            changes.groups_added += 1;
            session.groups.insert(*id, Some(buckets.clone()));
        }
        Op::ModifyGroup(id, buckets) => {
            changes.groups_modified += 1;
            session.groups.insert(*id, Some(buckets.clone()));
        }
        Op::DeleteGroup(id) => {
            changes.groups_deleted += 1;
            session.groups.remove(id);
        }
    }
}

/// What to send, in order: groups (before the flows that use them), flow
/// adds, flow deletes, group deletes (after the flows that used them).
fn plan_ops(session: &Session, desired: &Desired) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, g) in &desired.groups {
        match session.groups.get(id) {
            Some(Some(buckets)) if *buckets == g.buckets => {}
            Some(_) => ops.push(Op::ModifyGroup(*id, g.buckets.clone())),
            None => ops.push(Op::AddGroup(*id, g.buckets.clone(), !session.groups_known)),
        }
    }
    for (cookie, f) in &desired.flows {
        let want = Installed {
            table: f.table,
            priority: f.priority,
            match_: f.match_.clone(),
            instructions: f.instructions.clone(),
            cookie: *cookie,
        };
        match session.flows.get(cookie) {
            Some(have) if have.table == want.table && have.priority == want.priority && same(have, &want) => {}
            _ => ops.push(Op::AddFlow(want)),
        }
    }
    let mut stale_groups = Vec::new();
    let stale = session.flows.values().filter(|f| !desired.flows.contains_key(&f.cookie)).chain(&session.foreign);
    for f in stale {
        for i in &f.instructions {
            if let Instruction::ApplyActions(a) | Instruction::WriteActions(a) = i {
                stale_groups.extend(a.iter().filter_map(|a| match a {
                    Action::Group(g) => Some(*g),
                    _ => None,
                }));
            }
        }
        ops.push(Op::DeleteFlow(f.clone()));
    }
    for id in session.groups.keys().chain(&stale_groups) {
        if !desired.groups.contains_key(id) && !ops.iter().any(|o| matches!(o, Op::DeleteGroup(x) if x == id)) {
            ops.push(Op::DeleteGroup(*id));
        }
    }
    ops
}

/// Whether the switch's copy of a flow is the desired one: same
/// instructions (the match is the cookie's). Open vSwitch reports the fields
/// of a `reg_move` by their NXM names; they are compared as OXM fields.
fn same(have: &Installed, want: &Installed) -> bool {
    canonical(&have.instructions) == canonical(&want.instructions)
}

fn canonical(instructions: &[Instruction]) -> Vec<Instruction> {
    let field = |h: OxmHeader| match (h.class(), h.field()) {
        (OFPXMC_NXM_0, 1) => OxmHeader::ETH_DST,
        (OFPXMC_NXM_0, 2) => OxmHeader::ETH_SRC,
        (OFPXMC_NXM_0, 16) => OxmHeader::ARP_SPA,
        (OFPXMC_NXM_0, 17) => OxmHeader::ARP_TPA,
        (OFPXMC_NXM_1, 17) => OxmHeader::ARP_SHA,
        (OFPXMC_NXM_1, 18) => OxmHeader::ARP_THA,
        _ => h,
    };
    let action = |a: &Action| match a {
        Action::RegMove { n_bits, src_ofs, dst_ofs, src, dst } => Action::RegMove {
            n_bits: *n_bits,
            src_ofs: *src_ofs,
            dst_ofs: *dst_ofs,
            src: field(*src),
            dst: field(*dst),
        },
        other => other.clone(),
    };
    instructions
        .iter()
        .map(|i| match i {
            Instruction::ApplyActions(a) => Instruction::ApplyActions(a.iter().map(action).collect()),
            Instruction::WriteActions(a) => Instruction::WriteActions(a.iter().map(action).collect()),
            other => other.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovs_flows::Group;

    fn installed(cookie: u64, group: Option<u32>) -> Installed {
        let instructions = group.map(|g| vec![Instruction::ApplyActions(vec![Action::Group(g)])]).unwrap_or_default();
        Installed { table: 2, priority: 10, match_: Match::new(), instructions, cookie }
    }

    #[test]
    fn ops_are_ordered_and_minimal() {
        let mut session = Session::default();
        let mut desired = Desired::default();
        desired.groups.insert(7, Group { id: 7, buckets: vec![Bucket::new(vec![Action::output(1)])] });
        let keep = ovs_flows::Flow {
            table: 2,
            priority: 10,
            match_: Match::new(),
            instructions: vec![Instruction::ApplyActions(vec![Action::Group(7)])],
            cookie: COOKIE_TAG | 1,
        };
        desired.flows.insert(keep.cookie, keep.clone());
        // A fresh connection: a stale flow of ours using group 9, a foreign flow, one desired already there.
        session.flows.insert(COOKIE_TAG | 2, installed(COOKIE_TAG | 2, Some(9)));
        session.flows.insert(COOKIE_TAG | 1, installed(COOKIE_TAG | 1, Some(7)));
        session.foreign.push(installed(0, None));
        let ops: Vec<String> = plan_ops(&session, &desired).iter().map(Op::describe).collect();
        assert_eq!(
            ops,
            [
                "add group 7",
                "delete flow table=2 priority=10 cookie=0x7600000000000002",
                "delete flow table=2 priority=10 cookie=0x0",
                "delete group 9",
            ]
        );
        assert!(matches!(plan_ops(&session, &desired)[0], Op::AddGroup(7, _, true)));
        // Once in sync, nothing is sent.
        session.flows.retain(|c, _| *c == COOKIE_TAG | 1);
        session.foreign.clear();
        session.groups.insert(7, Some(desired.groups[&7].buckets.clone()));
        session.groups_known = true;
        assert!(plan_ops(&session, &desired).is_empty());
    }

    #[test]
    fn nxm_named_moves_equal_oxm_ones() {
        let ip = "10.0.0.1".parse().unwrap();
        let mac = vipcast_packet::MacAddr([2, 0, 0, 0, 0, 1]);
        let want = installed_with(vipcast_openflow::arp_responder(mac, ip));
        // As Open vSwitch reports it: NXM_OF_ETH_SRC, NXM_OF_ETH_DST, NXM_NX_ARP_SHA/THA, NXM_OF_ARP_SPA/TPA.
        let mut reported = vipcast_openflow::arp_responder(mac, ip);
        for (a, (src, dst)) in reported.iter_mut().filter(|a| matches!(a, Action::RegMove { .. })).zip([
            (0x0406, 0x0206),
            (0x0001_2206, 0x0001_2406),
            (0x2004, 0x2204),
        ]) {
            let Action::RegMove { n_bits, .. } = *a else { unreachable!() };
            *a = Action::RegMove { n_bits, src_ofs: 0, dst_ofs: 0, src: OxmHeader(src), dst: OxmHeader(dst) };
        }
        assert!(same(&installed_with(reported.clone()), &want));
        reported.pop();
        assert!(!same(&installed_with(reported), &want));
    }

    fn installed_with(actions: Vec<Action>) -> Installed {
        Installed {
            table: 1,
            priority: 100,
            match_: Match::new(),
            instructions: vec![Instruction::ApplyActions(actions)],
            cookie: 1,
        }
    }
}

//! Messages: the 8-byte header, the typed bodies, and stream framing.
//!
//! ```text
//! +---------+---------+-------------------+
//! | version |  type   |      length       |   length covers header and body
//! +---------+---------+-------------------+
//! |                 xid                   |
//! +---------------------------------------+
//! ```

use crate::action::{Action, actions_len, encode_actions, read_actions};
use crate::error_msg::ErrorMsg;
use crate::instruction::{Instruction, encode_instructions, read_instructions};
use crate::multipart::{MultipartReply, MultipartRequest};
use crate::oxm::Match;
use crate::port::PortStatus;
use crate::wire::{Reader, patch_len, patch_u16, put_u16, put_u32, put_u64, reserve_u16};
use crate::{Error, OFP_NO_BUFFER, OFPG_ANY, OFPP_ANY, Result};

/// The protocol version this crate speaks: OpenFlow 1.3.
pub const OFP_VERSION: u8 = 0x04;
/// Length of the message header.
pub const OFP_HEADER_LEN: usize = 8;

pub const OFPT_HELLO: u8 = 0;
pub const OFPT_ERROR: u8 = 1;
pub const OFPT_ECHO_REQUEST: u8 = 2;
pub const OFPT_ECHO_REPLY: u8 = 3;
pub const OFPT_EXPERIMENTER: u8 = 4;
pub const OFPT_FEATURES_REQUEST: u8 = 5;
pub const OFPT_FEATURES_REPLY: u8 = 6;
pub const OFPT_GET_CONFIG_REQUEST: u8 = 7;
pub const OFPT_GET_CONFIG_REPLY: u8 = 8;
pub const OFPT_SET_CONFIG: u8 = 9;
pub const OFPT_PACKET_IN: u8 = 10;
pub const OFPT_FLOW_REMOVED: u8 = 11;
pub const OFPT_PORT_STATUS: u8 = 12;
pub const OFPT_PACKET_OUT: u8 = 13;
pub const OFPT_FLOW_MOD: u8 = 14;
pub const OFPT_GROUP_MOD: u8 = 15;
pub const OFPT_MULTIPART_REQUEST: u8 = 18;
pub const OFPT_MULTIPART_REPLY: u8 = 19;
pub const OFPT_BARRIER_REQUEST: u8 = 20;
pub const OFPT_BARRIER_REPLY: u8 = 21;

/// HELLO element type carrying a bitmap of supported versions.
pub const OFPHET_VERSIONBITMAP: u16 = 1;

/// Flow-mod flag: send a flow-removed message when the flow expires or is deleted.
pub const OFPFF_SEND_FLOW_REM: u16 = 1 << 0;
/// Flow-mod flag: refuse to add a flow that overlaps an existing one.
pub const OFPFF_CHECK_OVERLAP: u16 = 1 << 1;
/// Flow-mod flag: reset the counters of a modified flow.
pub const OFPFF_RESET_COUNTS: u16 = 1 << 2;
/// Flow-mod flag: do not count packets.
pub const OFPFF_NO_PKT_COUNTS: u16 = 1 << 3;
/// Flow-mod flag: do not count bytes.
pub const OFPFF_NO_BYT_COUNTS: u16 = 1 << 4;

/// Capability: flow statistics.
pub const OFPC_FLOW_STATS: u32 = 1 << 0;
/// Capability: table statistics.
pub const OFPC_TABLE_STATS: u32 = 1 << 1;
/// Capability: port statistics.
pub const OFPC_PORT_STATS: u32 = 1 << 2;
/// Capability: group statistics.
pub const OFPC_GROUP_STATS: u32 = 1 << 3;
/// Capability: can reassemble IP fragments.
pub const OFPC_IP_REASM: u32 = 1 << 5;
/// Capability: queue statistics.
pub const OFPC_QUEUE_STATS: u32 = 1 << 6;
/// Capability: blocks looping ports.
pub const OFPC_PORT_BLOCKED: u32 = 1 << 8;

/// Switch config flag value: no special handling of IP fragments.
pub const OFPC_FRAG_NORMAL: u16 = 0;
/// Switch config flag value: drop IP fragments.
pub const OFPC_FRAG_DROP: u16 = 1;
/// Switch config flag value: reassemble IP fragments.
pub const OFPC_FRAG_REASM: u16 = 2;

/// Packet-in reason: no flow matched (table-miss).
pub const OFPR_NO_MATCH: u8 = 0;
/// Packet-in reason: an output-to-controller action.
pub const OFPR_ACTION: u8 = 1;
/// Packet-in reason: invalid TTL.
pub const OFPR_INVALID_TTL: u8 = 2;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: u8,
    pub msg_type: u8,
    /// Length of the whole message, header included.
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Reads a header from the first 8 bytes of `bytes` and checks the
    /// length (at least 8) and the version (0x04, any for HELLO).
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        let mut r = Reader::new(bytes, "header");
        let h = Header { version: r.u8()?, msg_type: r.u8()?, length: r.u16()?, xid: r.u32()? };
        if usize::from(h.length) < OFP_HEADER_LEN {
            return Err(Error::BadLength { what: "header", length: usize::from(h.length) });
        }
        if h.version != OFP_VERSION && h.msg_type != OFPT_HELLO {
            return Err(Error::BadVersion(h.version));
        }
        Ok(h)
    }
}

/// A message: its transaction id and its body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    pub xid: u32,
    pub body: Body,
}

/// The body of a message, by type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Body {
    Hello(Hello),
    Error(ErrorMsg),
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply(FeaturesReply),
    SetConfig(SwitchConfig),
    PacketIn(PacketIn),
    PortStatus(PortStatus),
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    GroupMod(GroupMod),
    MultipartRequest(MultipartRequest),
    MultipartReply(MultipartReply),
    BarrierRequest,
    BarrierReply,
    /// A message type this crate does not parse (flow removed,
    /// get-config reply, role, ...): the bytes after the header. `msg_type`
    /// should not be one of the types above: it would decode as that type.
    Other {
        msg_type: u8,
        body: Vec<u8>,
    },
}

impl Body {
    /// The header's type field for this body.
    pub fn msg_type(&self) -> u8 {
        match self {
            Body::Hello(_) => OFPT_HELLO,
            Body::Error(_) => OFPT_ERROR,
            Body::EchoRequest(_) => OFPT_ECHO_REQUEST,
            Body::EchoReply(_) => OFPT_ECHO_REPLY,
            Body::FeaturesRequest => OFPT_FEATURES_REQUEST,
            Body::FeaturesReply(_) => OFPT_FEATURES_REPLY,
            Body::SetConfig(_) => OFPT_SET_CONFIG,
            Body::PacketIn(_) => OFPT_PACKET_IN,
            Body::PortStatus(_) => OFPT_PORT_STATUS,
            Body::PacketOut(_) => OFPT_PACKET_OUT,
            Body::FlowMod(_) => OFPT_FLOW_MOD,
            Body::GroupMod(_) => OFPT_GROUP_MOD,
            Body::MultipartRequest(_) => OFPT_MULTIPART_REQUEST,
            Body::MultipartReply(_) => OFPT_MULTIPART_REPLY,
            Body::BarrierRequest => OFPT_BARRIER_REQUEST,
            Body::BarrierReply => OFPT_BARRIER_REPLY,
            Body::Other { msg_type, .. } => *msg_type,
        }
    }
}

/// HELLO. OpenFlow 1.3 negotiates with the header version and, optionally,
/// a version bitmap element; other elements are skipped on decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The header version: the highest version the sender speaks.
    pub version: u8,
    /// The first 32 bits of the sender's version bitmap (bit n: wire version
    /// n supported), if it sent one.
    pub bitmap: Option<u32>,
}

impl Default for Hello {
    /// Version 0x04 with a bitmap naming only 0x04.
    fn default() -> Self {
        Hello { version: OFP_VERSION, bitmap: Some(1 << OFP_VERSION) }
    }
}

impl Hello {
    /// Whether the peer's HELLO lets both sides settle on OpenFlow 1.3.
    pub fn supports_1_3(&self) -> bool {
        match self.bitmap {
            Some(bitmap) => bitmap & (1 << OFP_VERSION) != 0,
            None => self.version >= OFP_VERSION,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        if let Some(bitmap) = self.bitmap {
            put_u16(out, OFPHET_VERSIONBITMAP);
            put_u16(out, 8);
            put_u32(out, bitmap);
        }
    }

    /// Lenient: a malformed element ends the element list without an error.
    fn read(version: u8, r: &mut Reader<'_>) -> Hello {
        let mut bitmap = None;
        while let (Ok(element_type), Ok(len)) = (r.u16(), r.u16()) {
            let len = usize::from(len);
            if len < 4 {
                break;
            }
            let body = r.take(crate::wire::pad8(len) - 4).unwrap_or_else(|_| r.rest());
            let mut e = Reader::new(body.get(..len - 4).unwrap_or(body), "hello element");
            if element_type == OFPHET_VERSIONBITMAP && bitmap.is_none() {
                bitmap = e.u32().ok();
            }
        }
        r.rest();
        Hello { version, bitmap }
    }
}

/// FEATURES_REPLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeaturesReply {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    /// 0 on the main connection.
    pub auxiliary_id: u8,
    /// `OFPC_*` bits.
    pub capabilities: u32,
}

/// SET_CONFIG (and GET_CONFIG_REPLY's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwitchConfig {
    /// `OFPC_FRAG_*`.
    pub flags: u16,
    /// Bytes of a packet sent to the controller on table-miss or
    /// invalid TTL (`OFPCML_NO_BUFFER`: all of it).
    pub miss_send_len: u16,
}

/// FLOW_MOD command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
}

impl FlowModCommand {
    fn to_wire(self) -> u8 {
        match self {
            FlowModCommand::Add => 0,
            FlowModCommand::Modify => 1,
            FlowModCommand::ModifyStrict => 2,
            FlowModCommand::Delete => 3,
            FlowModCommand::DeleteStrict => 4,
        }
    }

    fn from_wire(v: u8) -> Result<Self> {
        Ok(match v {
            0 => FlowModCommand::Add,
            1 => FlowModCommand::Modify,
            2 => FlowModCommand::ModifyStrict,
            3 => FlowModCommand::Delete,
            4 => FlowModCommand::DeleteStrict,
            _ => return Err(Error::invalid("flow_mod", "command", v)),
        })
    }
}

/// FLOW_MOD: add, change or delete flow entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    pub cookie: u64,
    /// For modify and delete: which cookie bits must match.
    pub cookie_mask: u64,
    /// For delete, `OFPTT_ALL` means every table.
    pub table_id: u8,
    pub command: FlowModCommand,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    /// For delete: only flows that output to this port (`OFPP_ANY`: any).
    pub out_port: u32,
    /// For delete: only flows that output to this group (`OFPG_ANY`: any).
    pub out_group: u32,
    /// `OFPFF_*`.
    pub flags: u16,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    /// An add with no timeouts, no cookie, no buffer.
    pub fn add(table_id: u8, priority: u16, match_: Match, instructions: Vec<Instruction>) -> Self {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id,
            command: FlowModCommand::Add,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: OFP_NO_BUFFER,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            flags: 0,
            match_,
            instructions,
        }
    }

    /// A (non-strict) delete of the flows of `table_id` that `match_` covers.
    pub fn delete(table_id: u8, match_: Match) -> Self {
        FlowMod { command: FlowModCommand::Delete, priority: 0, ..FlowMod::add(table_id, 0, match_, Vec::new()) }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u64(out, self.cookie);
        put_u64(out, self.cookie_mask);
        out.push(self.table_id);
        out.push(self.command.to_wire());
        put_u16(out, self.idle_timeout);
        put_u16(out, self.hard_timeout);
        put_u16(out, self.priority);
        put_u32(out, self.buffer_id);
        put_u32(out, self.out_port);
        put_u32(out, self.out_group);
        put_u16(out, self.flags);
        out.extend_from_slice(&[0, 0]);
        self.match_.encode(out)?;
        encode_instructions(&self.instructions, out)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = FlowModCommand::from_wire(r.u8()?)?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        r.skip(2)?;
        let match_ = Match::read(r)?;
        let instructions = read_instructions(r)?;
        Ok(FlowMod {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            match_,
            instructions,
        })
    }
}

/// GROUP_MOD command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupModCommand {
    Add,
    Modify,
    Delete,
}

/// Group type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// Every bucket gets a copy (flooding, multicast).
    All,
    /// One bucket, chosen by the switch (weights).
    Select,
    /// Exactly one bucket.
    Indirect,
    /// The first live bucket (fast failover by watch port or group).
    FastFailover,
}

/// A bucket of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Relative weight (select groups; 0 elsewhere).
    pub weight: u16,
    /// Port whose liveness decides the bucket's (fast-failover; `OFPP_ANY` elsewhere).
    pub watch_port: u32,
    /// Group whose liveness decides the bucket's (fast-failover; `OFPG_ANY` elsewhere).
    pub watch_group: u32,
    pub actions: Vec<Action>,
}

impl Bucket {
    /// A bucket of an `all` or `indirect` group: no weight, nothing watched.
    pub fn new(actions: Vec<Action>) -> Self {
        Bucket { weight: 0, watch_port: OFPP_ANY, watch_group: OFPG_ANY, actions }
    }
}

/// GROUP_MOD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMod {
    pub command: GroupModCommand,
    pub group_type: GroupType,
    pub group_id: u32,
    pub buckets: Vec<Bucket>,
}

impl GroupType {
    pub(crate) fn code(self) -> u8 {
        match self {
            GroupType::All => 0,
            GroupType::Select => 1,
            GroupType::Indirect => 2,
            GroupType::FastFailover => 3,
        }
    }

    pub(crate) fn from_code(what: &'static str, code: u8) -> Result<GroupType> {
        Ok(match code {
            0 => GroupType::All,
            1 => GroupType::Select,
            2 => GroupType::Indirect,
            3 => GroupType::FastFailover,
            other => return Err(Error::invalid(what, "type", other)),
        })
    }
}

/// Writes buckets (each with its length, 8-byte aligned).
pub(crate) fn write_buckets(buckets: &[Bucket], out: &mut Vec<u8>) -> Result<()> {
    for bucket in buckets {
        let start = out.len();
        let len_at = reserve_u16(out);
        put_u16(out, bucket.weight);
        put_u32(out, bucket.watch_port);
        put_u32(out, bucket.watch_group);
        out.extend_from_slice(&[0; 4]);
        encode_actions(&bucket.actions, out)?;
        patch_len(out, len_at, start, "bucket")?;
    }
    Ok(())
}

/// Reads buckets to the end of `r`.
pub(crate) fn read_buckets(r: &mut Reader<'_>) -> Result<Vec<Bucket>> {
    let mut buckets = Vec::new();
    while !r.is_empty() {
        let len = usize::from({ *r }.u16()?);
        if len < 16 || len % 8 != 0 {
            return Err(Error::BadLength { what: "bucket", length: len });
        }
        let mut b = r.sub(len, "bucket")?;
        b.skip(2)?;
        let weight = b.u16()?;
        let watch_port = b.u32()?;
        let watch_group = b.u32()?;
        b.skip(4)?;
        buckets.push(Bucket { weight, watch_port, watch_group, actions: read_actions(&mut b)? });
    }
    Ok(buckets)
}

impl GroupMod {
    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u16(
            out,
            match self.command {
                GroupModCommand::Add => 0,
                GroupModCommand::Modify => 1,
                GroupModCommand::Delete => 2,
            },
        );
        out.push(self.group_type.code());
        out.push(0);
        put_u32(out, self.group_id);
        write_buckets(&self.buckets, out)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let command = match r.u16()? {
            0 => GroupModCommand::Add,
            1 => GroupModCommand::Modify,
            2 => GroupModCommand::Delete,
            other => return Err(Error::invalid("group_mod", "command", other)),
        };
        let group_type = GroupType::from_code("group_mod", r.u8()?)?;
        r.skip(1)?;
        let group_id = r.u32()?;
        let buckets = read_buckets(r)?;
        Ok(GroupMod { command, group_type, group_id, buckets })
    }
}

/// PACKET_IN: a packet the switch sends to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketIn {
    /// `OFP_NO_BUFFER` when `data` is the whole packet.
    pub buffer_id: u32,
    /// Length of the packet in the switch (`data` may be shorter).
    pub total_len: u16,
    /// `OFPR_*`.
    pub reason: u8,
    pub table_id: u8,
    /// Cookie of the flow that sent the packet.
    pub cookie: u64,
    /// Pipeline fields of the packet (in_port at least; tunnel metadata, registers).
    pub match_: Match,
    pub data: Vec<u8>,
}

impl PacketIn {
    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u32(out, self.buffer_id);
        put_u16(out, self.total_len);
        out.push(self.reason);
        out.push(self.table_id);
        put_u64(out, self.cookie);
        self.match_.encode(out)?;
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.data);
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let buffer_id = r.u32()?;
        let total_len = r.u16()?;
        let reason = r.u8()?;
        let table_id = r.u8()?;
        let cookie = r.u64()?;
        let match_ = Match::read(r)?;
        r.skip(2)?;
        Ok(PacketIn { buffer_id, total_len, reason, table_id, cookie, match_, data: r.rest().to_vec() })
    }

    /// The packet's ingress port, from its match.
    pub fn in_port(&self) -> Option<u32> {
        self.match_.fields.iter().find_map(|f| match f {
            crate::OxmField::InPort(p) => Some(*p),
            _ => None,
        })
    }
}

/// PACKET_OUT: the controller sends a packet through the switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketOut {
    /// `OFP_NO_BUFFER` when `data` carries the packet.
    pub buffer_id: u32,
    /// Ingress port the actions see (`OFPP_CONTROLLER` if none).
    pub in_port: u32,
    pub actions: Vec<Action>,
    pub data: Vec<u8>,
}

impl PacketOut {
    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u32(out, self.buffer_id);
        put_u32(out, self.in_port);
        let len_at = reserve_u16(out);
        out.extend_from_slice(&[0; 6]);
        encode_actions(&self.actions, out)?;
        patch_u16(out, len_at, actions_len(&self.actions), "packet_out actions")?;
        out.extend_from_slice(&self.data);
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let buffer_id = r.u32()?;
        let in_port = r.u32()?;
        let actions_len = usize::from(r.u16()?);
        r.skip(6)?;
        let actions = read_actions(&mut r.sub(actions_len, "packet_out actions")?)?;
        Ok(PacketOut { buffer_id, in_port, actions, data: r.rest().to_vec() })
    }
}

impl Message {
    /// A message with this xid and body.
    pub fn new(xid: u32, body: Body) -> Self {
        Message { xid, body }
    }

    /// Appends the whole message, header included, to `out`. On error
    /// (a length that does not fit its field, an out-of-range value) `out` is
    /// left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let result = self.encode_at(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_at(&self, out: &mut Vec<u8>, start: usize) -> Result<()> {
        let version = match &self.body {
            Body::Hello(h) => h.version,
            _ => OFP_VERSION,
        };
        out.push(version);
        out.push(self.body.msg_type());
        let len_at = reserve_u16(out);
        put_u32(out, self.xid);
        match &self.body {
            Body::Hello(h) => h.write(out),
            Body::Error(e) => {
                put_u16(out, e.err_type);
                put_u16(out, e.code);
                out.extend_from_slice(&e.data);
            }
            Body::EchoRequest(data) | Body::EchoReply(data) => out.extend_from_slice(data),
            Body::FeaturesRequest | Body::BarrierRequest | Body::BarrierReply => {}
            Body::FeaturesReply(f) => {
                put_u64(out, f.datapath_id);
                put_u32(out, f.n_buffers);
                out.extend_from_slice(&[f.n_tables, f.auxiliary_id, 0, 0]);
                put_u32(out, f.capabilities);
                put_u32(out, 0);
            }
            Body::SetConfig(c) => {
                put_u16(out, c.flags);
                put_u16(out, c.miss_send_len);
            }
            Body::PacketIn(p) => p.write(out)?,
            Body::PortStatus(p) => p.write(out),
            Body::PacketOut(p) => p.write(out)?,
            Body::FlowMod(f) => f.write(out)?,
            Body::GroupMod(g) => g.write(out)?,
            Body::MultipartRequest(m) => m.write(out)?,
            Body::MultipartReply(m) => m.write(out)?,
            Body::Other { body, .. } => out.extend_from_slice(body),
        }
        patch_len(out, len_at, start, "message")
    }

    /// The whole message as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one message filling all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        match decode_message(bytes)? {
            Some((m, used)) if used == bytes.len() => Ok(m),
            Some((_, used)) => Err(Error::BadLength { what: "message", length: used }),
            None => {
                let needed = Header::decode(bytes).map_or(OFP_HEADER_LEN, |h| usize::from(h.length));
                Err(Error::Truncated { what: "message", needed, available: bytes.len() })
            }
        }
    }
}

/// Decodes the message at the front of a byte stream.
///
/// Returns `Ok(None)` until the whole message is buffered, and otherwise the
/// message and the number of bytes it took. A bad header (length below 8, a
/// version other than 0x04 outside HELLO) is reported as soon as the header is
/// in. A header length cannot exceed 65535, so nothing larger is ever awaited.
///
/// A switch that does not speak 1.3 answers our HELLO with its own (see
/// [`Hello::supports_1_3`]) and then an OFPET_HELLO_FAILED error in its own
/// version, which decodes here as [`Error::BadVersion`].
pub fn decode_message(bytes: &[u8]) -> Result<Option<(Message, usize)>> {
    let Some(head) = bytes.get(..OFP_HEADER_LEN) else { return Ok(None) };
    let header = Header::decode(head)?;
    let len = usize::from(header.length);
    let Some(whole) = bytes.get(..len) else { return Ok(None) };
    let mut r = Reader::new(whole, "message");
    r.skip(OFP_HEADER_LEN)?;
    let body = decode_body(&header, &mut r)?;
    Ok(Some((Message { xid: header.xid, body }, len)))
}

fn body_name(msg_type: u8) -> &'static str {
    match msg_type {
        OFPT_HELLO => "hello",
        OFPT_ERROR => "error",
        OFPT_FEATURES_REPLY => "features_reply",
        OFPT_SET_CONFIG => "set_config",
        OFPT_PACKET_IN => "packet_in",
        OFPT_PORT_STATUS => "port_status",
        OFPT_PACKET_OUT => "packet_out",
        OFPT_FLOW_MOD => "flow_mod",
        OFPT_GROUP_MOD => "group_mod",
        OFPT_MULTIPART_REQUEST => "multipart_request",
        OFPT_MULTIPART_REPLY => "multipart_reply",
        OFPT_FEATURES_REQUEST => "features_request",
        OFPT_BARRIER_REQUEST => "barrier_request",
        OFPT_BARRIER_REPLY => "barrier_reply",
        _ => "message",
    }
}

fn decode_body(header: &Header, r: &mut Reader<'_>) -> Result<Body> {
    let what = body_name(header.msg_type);
    let mut body = Reader::new(r.rest(), what);
    let r = &mut body;
    let parsed = match header.msg_type {
        OFPT_HELLO => Body::Hello(Hello::read(header.version, r)),
        OFPT_ERROR => Body::Error(ErrorMsg { err_type: r.u16()?, code: r.u16()?, data: r.rest().to_vec() }),
        OFPT_ECHO_REQUEST => Body::EchoRequest(r.rest().to_vec()),
        OFPT_ECHO_REPLY => Body::EchoReply(r.rest().to_vec()),
        OFPT_FEATURES_REQUEST => Body::FeaturesRequest,
        OFPT_FEATURES_REPLY => {
            let datapath_id = r.u64()?;
            let n_buffers = r.u32()?;
            let n_tables = r.u8()?;
            let auxiliary_id = r.u8()?;
            r.skip(2)?;
            let capabilities = r.u32()?;
            r.skip(4)?;
            Body::FeaturesReply(FeaturesReply { datapath_id, n_buffers, n_tables, auxiliary_id, capabilities })
        }
        OFPT_SET_CONFIG => Body::SetConfig(SwitchConfig { flags: r.u16()?, miss_send_len: r.u16()? }),
        OFPT_PACKET_IN => Body::PacketIn(PacketIn::read(r)?),
        OFPT_PORT_STATUS => Body::PortStatus(PortStatus::read(r)?),
        OFPT_PACKET_OUT => Body::PacketOut(PacketOut::read(r)?),
        OFPT_FLOW_MOD => Body::FlowMod(FlowMod::read(r)?),
        OFPT_GROUP_MOD => Body::GroupMod(GroupMod::read(r)?),
        OFPT_MULTIPART_REQUEST => Body::MultipartRequest(MultipartRequest::read(r)?),
        OFPT_MULTIPART_REPLY => Body::MultipartReply(MultipartReply::read(r)?),
        OFPT_BARRIER_REQUEST => Body::BarrierRequest,
        OFPT_BARRIER_REPLY => Body::BarrierReply,
        msg_type => Body::Other { msg_type, body: r.rest().to_vec() },
    };
    if !r.is_empty() {
        return Err(Error::BadLength { what, length: usize::from(header.length) });
    }
    Ok(parsed)
}

/// Splits a byte stream (the switch connection) into messages.
///
/// Feed it whatever the socket returned with [`Framer::push`], then call
/// [`Framer::next_message`] until it returns `Ok(None)`. A message whose body
/// does not decode is dropped and its error returned; the next call goes on
/// with the message after it. An error in a header (length below 8, wrong
/// version) means the stream can no longer be framed: the framer drops
/// everything buffered, and the connection should be closed.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn new() -> Self {
        Framer::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        let Some(head) = self.buf.get(..OFP_HEADER_LEN) else { return Ok(None) };
        let len = match Header::decode(head) {
            Ok(h) => usize::from(h.length),
            Err(e) => {
                self.buf.clear();
                return Err(e);
            }
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        let result = decode_message(&self.buf);
        self.buf.drain(..len.min(self.buf.len()));
        result.map(|decoded| decoded.map(|(m, _)| m))
    }
}

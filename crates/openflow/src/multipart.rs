//! MULTIPART_REQUEST / MULTIPART_REPLY (spec §7.3.5). Flow statistics and
//! port descriptions are parsed; every other kind is carried as bytes.
//!
//! ```text
//! header | type (16) | flags (16) | pad (4) | body
//! ```

use crate::instruction::{Instruction, encode_instructions, read_instructions};
use crate::message::{Bucket, GroupType, read_buckets, write_buckets};
use crate::oxm::Match;
use crate::port::Port;
use crate::wire::{Reader, patch_len, put_u16, put_u32, put_u64, reserve_u16};
use crate::{Error, OFPG_ANY, OFPP_ANY, Result};

/// Multipart type: individual flow statistics.
pub const OFPMP_FLOW: u16 = 1;
/// Multipart type: description of every port (empty request body).
pub const OFPMP_PORT_DESC: u16 = 13;
/// Multipart type: every group's description.
pub const OFPMP_GROUP_DESC: u16 = 7;
/// Multipart flag: more parts follow (request or reply).
pub const OFPMPF_MORE: u16 = 1;
/// `table_id` that means every table.
pub const OFPTT_ALL: u8 = 0xff;

/// The flows a flow-statistics request asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    /// `OFPTT_ALL` for every table.
    pub table_id: u8,
    /// Only flows that output to this port (`OFPP_ANY`: any).
    pub out_port: u32,
    /// Only flows that output to this group (`OFPG_ANY`: any).
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub match_: Match,
}

impl FlowStatsRequest {
    /// Every flow of every table.
    pub fn all() -> Self {
        FlowStatsRequest {
            table_id: OFPTT_ALL,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        }
    }
}

/// One flow entry in a flow-statistics reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStats {
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub cookie: u64,
    pub packet_count: u64,
    pub byte_count: u64,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

/// One group as the switch holds it (`ofp_group_desc`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupDesc {
    pub group_type: GroupType,
    pub group_id: u32,
    pub buckets: Vec<Bucket>,
}

/// The body of a multipart request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartRequestBody {
    Flow(FlowStatsRequest),
    /// Every port's description.
    PortDesc,
    /// Every group's description.
    GroupDesc,
    /// Any other multipart type: the bytes after the multipart header.
    Other {
        mp_type: u16,
        body: Vec<u8>,
    },
}

/// MULTIPART_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartRequest {
    /// `OFPMPF_MORE` when more parts follow.
    pub flags: u16,
    pub body: MultipartRequestBody,
}

/// The body of a multipart reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartReplyBody {
    Flow(Vec<FlowStats>),
    /// Ports (one part of the list when `OFPMPF_MORE` is set).
    PortDesc(Vec<Port>),
    /// Groups (one part of the list when `OFPMPF_MORE` is set).
    GroupDesc(Vec<GroupDesc>),
    /// Any other multipart type: the bytes after the multipart header.
    Other {
        mp_type: u16,
        body: Vec<u8>,
    },
}

/// MULTIPART_REPLY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartReply {
    /// `OFPMPF_MORE` when more parts follow.
    pub flags: u16,
    pub body: MultipartReplyBody,
}

fn write_head(out: &mut Vec<u8>, mp_type: u16, flags: u16) {
    put_u16(out, mp_type);
    put_u16(out, flags);
    out.extend_from_slice(&[0; 4]);
}

impl MultipartRequest {
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.body {
            MultipartRequestBody::Flow(req) => {
                write_head(out, OFPMP_FLOW, self.flags);
                out.extend_from_slice(&[req.table_id, 0, 0, 0]);
                put_u32(out, req.out_port);
                put_u32(out, req.out_group);
                out.extend_from_slice(&[0; 4]);
                put_u64(out, req.cookie);
                put_u64(out, req.cookie_mask);
                req.match_.encode(out)
            }
            MultipartRequestBody::PortDesc => {
                write_head(out, OFPMP_PORT_DESC, self.flags);
                Ok(())
            }
            MultipartRequestBody::GroupDesc => {
                write_head(out, OFPMP_GROUP_DESC, self.flags);
                Ok(())
            }
            MultipartRequestBody::Other { mp_type, body } => {
                write_head(out, *mp_type, self.flags);
                out.extend_from_slice(body);
                Ok(())
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mp_type = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = match mp_type {
            OFPMP_FLOW => {
                let table_id = r.u8()?;
                r.skip(3)?;
                let out_port = r.u32()?;
                let out_group = r.u32()?;
                r.skip(4)?;
                let cookie = r.u64()?;
                let cookie_mask = r.u64()?;
                let match_ = Match::read(r)?;
                MultipartRequestBody::Flow(FlowStatsRequest {
                    table_id,
                    out_port,
                    out_group,
                    cookie,
                    cookie_mask,
                    match_,
                })
            }
            OFPMP_PORT_DESC => MultipartRequestBody::PortDesc,
            OFPMP_GROUP_DESC => MultipartRequestBody::GroupDesc,
            _ => MultipartRequestBody::Other { mp_type, body: r.rest().to_vec() },
        };
        Ok(MultipartRequest { flags, body })
    }
}

impl MultipartReply {
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.body {
            MultipartReplyBody::Flow(flows) => {
                write_head(out, OFPMP_FLOW, self.flags);
                for f in flows {
                    let start = out.len();
                    let len_at = reserve_u16(out);
                    out.extend_from_slice(&[f.table_id, 0]);
                    put_u32(out, f.duration_sec);
                    put_u32(out, f.duration_nsec);
                    put_u16(out, f.priority);
                    put_u16(out, f.idle_timeout);
                    put_u16(out, f.hard_timeout);
                    put_u16(out, f.flags);
                    out.extend_from_slice(&[0; 4]);
                    put_u64(out, f.cookie);
                    put_u64(out, f.packet_count);
                    put_u64(out, f.byte_count);
                    f.match_.encode(out)?;
                    encode_instructions(&f.instructions, out)?;
                    patch_len(out, len_at, start, "flow_stats")?;
                }
                Ok(())
            }
            MultipartReplyBody::PortDesc(ports) => {
                write_head(out, OFPMP_PORT_DESC, self.flags);
                ports.iter().for_each(|p| p.write(out));
                Ok(())
            }
            MultipartReplyBody::GroupDesc(groups) => {
                write_head(out, OFPMP_GROUP_DESC, self.flags);
                for g in groups {
                    let start = out.len();
                    let len_at = reserve_u16(out);
                    out.push(g.group_type.code());
                    out.push(0);
                    put_u32(out, g.group_id);
                    write_buckets(&g.buckets, out)?;
                    patch_len(out, len_at, start, "group_desc")?;
                }
                Ok(())
            }
            MultipartReplyBody::Other { mp_type, body } => {
                write_head(out, *mp_type, self.flags);
                out.extend_from_slice(body);
                Ok(())
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mp_type = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        let body = match mp_type {
            OFPMP_FLOW => {
                let mut flows = Vec::new();
                while !r.is_empty() {
                    let len = usize::from({ *r }.u16()?);
                    if len < 56 || len % 8 != 0 {
                        return Err(Error::BadLength { what: "flow_stats", length: len });
                    }
                    let mut f = r.sub(len, "flow_stats")?;
                    f.skip(2)?;
                    let table_id = f.u8()?;
                    f.skip(1)?;
                    let duration_sec = f.u32()?;
                    let duration_nsec = f.u32()?;
                    let priority = f.u16()?;
                    let idle_timeout = f.u16()?;
                    let hard_timeout = f.u16()?;
                    let flags = f.u16()?;
                    f.skip(4)?;
                    let cookie = f.u64()?;
                    let packet_count = f.u64()?;
                    let byte_count = f.u64()?;
                    let match_ = Match::read(&mut f)?;
                    let instructions = read_instructions(&mut f)?;
                    flows.push(FlowStats {
                        table_id,
                        duration_sec,
                        duration_nsec,
                        priority,
                        idle_timeout,
                        hard_timeout,
                        flags,
                        cookie,
                        packet_count,
                        byte_count,
                        match_,
                        instructions,
                    });
                }
                MultipartReplyBody::Flow(flows)
            }
            OFPMP_PORT_DESC => {
                let mut ports = Vec::new();
                while !r.is_empty() {
                    ports.push(Port::read(r)?);
                }
                MultipartReplyBody::PortDesc(ports)
            }
            OFPMP_GROUP_DESC => {
                let mut groups = Vec::new();
                while !r.is_empty() {
                    let len = usize::from({ *r }.u16()?);
                    if len < 8 {
                        return Err(Error::BadLength { what: "group_desc", length: len });
                    }
                    let mut g = r.sub(len, "group_desc")?;
                    g.skip(2)?;
                    let group_type = GroupType::from_code("group_desc", g.u8()?)?;
                    g.skip(1)?;
                    let group_id = g.u32()?;
                    let buckets = read_buckets(&mut g)?;
                    groups.push(GroupDesc { group_type, group_id, buckets });
                }
                MultipartReplyBody::GroupDesc(groups)
            }
            _ => MultipartReplyBody::Other { mp_type, body: r.rest().to_vec() },
        };
        Ok(MultipartReply { flags, body })
    }
}

//! Actions (spec §7.2.5) and the Nicira experimenter actions vipcast uses.
//!
//! Every action starts with a 16-bit type and a 16-bit length that covers the
//! whole action and is a multiple of 8. Nicira actions are experimenter
//! actions (type 0xffff) with experimenter id 0x00002320 and a 16-bit subtype:
//!
//! ```text
//! NXAST_REG_MOVE (24 bytes)                NXAST_REG_LOAD (24 bytes)
//! type=0xffff len=24                        type=0xffff len=24
//! experimenter=0x00002320                   experimenter=0x00002320
//! subtype=6  n_bits                         subtype=7  ofs_nbits (ofs<<6 | n_bits-1)
//! src_ofs    dst_ofs                        dst (32-bit OXM/NXM header)
//! src (32-bit OXM/NXM header)               value (64 bits)
//! dst (32-bit OXM/NXM header)
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

use vipcast_packet::MacAddr;

use crate::oxm::{Match, OxmField, OxmHeader};
use crate::wire::{Reader, pad_to_8, pad8, patch_len, put_u16, put_u32, put_u64, reserve_u16};
use crate::{Error, OFPP_IN_PORT, Result};

/// Action type: output to a port.
pub const OFPAT_OUTPUT: u16 = 0;
/// Action type: push a VLAN tag.
pub const OFPAT_PUSH_VLAN: u16 = 17;
/// Action type: pop the outer VLAN tag.
pub const OFPAT_POP_VLAN: u16 = 18;
/// Action type: apply a group.
pub const OFPAT_GROUP: u16 = 22;
/// Action type: set a header field from an OXM TLV.
pub const OFPAT_SET_FIELD: u16 = 25;
/// Action type: experimenter action.
pub const OFPAT_EXPERIMENTER: u16 = 0xffff;
/// Nicira's experimenter id.
pub const NX_EXPERIMENTER_ID: u32 = 0x0000_2320;
/// Nicira action subtype: copy bits from one field to another.
pub const NXAST_REG_MOVE: u16 = 6;
/// Nicira action subtype: load an immediate value into bits of a field.
pub const NXAST_REG_LOAD: u16 = 7;
/// Nicira action subtype: resubmit to a table.
pub const NXAST_RESUBMIT_TABLE: u16 = 14;
/// `max_len` of an output to the controller: send the whole packet, unbuffered.
pub const OFPCML_NO_BUFFER: u16 = 0xffff;
/// `table` of a resubmit that means "the current table".
pub const NX_RESUBMIT_CURRENT_TABLE: u8 = 0xff;
/// `in_port` of a resubmit that keeps the packet's ingress port (16-bit OFPP_IN_PORT).
pub const NX_RESUBMIT_IN_PORT: u16 = 0xfff8;

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send the packet out of `port`; `max_len` bytes go to the controller
    /// when `port` is `OFPP_CONTROLLER`.
    Output { port: u32, max_len: u16 },
    /// Process the packet through a group.
    Group(u32),
    /// Write one field (no mask in OpenFlow 1.3).
    SetField(OxmField),
    /// Push a VLAN tag with this TPID (0x8100 or 0x88a8).
    PushVlan(u16),
    /// Pop the outer VLAN tag.
    PopVlan,
    /// `NXAST_REG_MOVE`: copy `n_bits` bits from `src[src_ofs..]` to `dst[dst_ofs..]`.
    RegMove { n_bits: u16, src_ofs: u16, dst_ofs: u16, src: OxmHeader, dst: OxmHeader },
    /// `NXAST_REG_LOAD`: write the low `n_bits` (1..=64) of `value` to `dst[ofs..]`
    /// (`ofs` below 1024).
    RegLoad { ofs: u16, n_bits: u8, dst: OxmHeader, value: u64 },
    /// `NXAST_RESUBMIT_TABLE`: run the packet through `table` as if it came in
    /// on `in_port` (16-bit port numbers; see [`NX_RESUBMIT_IN_PORT`] and
    /// [`NX_RESUBMIT_CURRENT_TABLE`]).
    ResubmitTable { in_port: u16, table: u8 },
    /// Any other action: `body` is everything after the type and length
    /// (for an experimenter action it starts with the experimenter id);
    /// `4 + body.len()` must be a multiple of 8.
    Unknown { action_type: u16, body: Vec<u8> },
}

impl Action {
    /// Output to `port` (`max_len` 0: no bytes to the controller).
    pub const fn output(port: u32) -> Self {
        Action::Output { port, max_len: 0 }
    }

    /// Copies the whole of `src` into `dst` (widths must agree; the switch checks).
    pub const fn move_field(src: OxmHeader, dst: OxmHeader) -> Self {
        Action::RegMove { n_bits: src.bits(), src_ofs: 0, dst_ofs: 0, src, dst }
    }

    /// Length on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Action::Output { .. } | Action::ResubmitTable { .. } => 16,
            Action::Group(_) | Action::PushVlan(_) | Action::PopVlan => 8,
            Action::SetField(f) => pad8(4 + f.wire_len()),
            Action::RegMove { .. } | Action::RegLoad { .. } => 24,
            Action::Unknown { body, .. } => 4 + body.len(),
        }
    }

    /// Appends the action to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let len_at;
        match self {
            Action::Output { port, max_len } => {
                put_u16(out, OFPAT_OUTPUT);
                len_at = reserve_u16(out);
                put_u32(out, *port);
                put_u16(out, *max_len);
                out.extend_from_slice(&[0; 6]);
            }
            Action::Group(id) => {
                put_u16(out, OFPAT_GROUP);
                len_at = reserve_u16(out);
                put_u32(out, *id);
            }
            Action::SetField(field) => {
                put_u16(out, OFPAT_SET_FIELD);
                len_at = reserve_u16(out);
                field.encode(out)?;
            }
            Action::PushVlan(tpid) => {
                put_u16(out, OFPAT_PUSH_VLAN);
                len_at = reserve_u16(out);
                put_u16(out, *tpid);
            }
            Action::PopVlan => {
                put_u16(out, OFPAT_POP_VLAN);
                len_at = reserve_u16(out);
            }
            Action::RegMove { n_bits, src_ofs, dst_ofs, src, dst } => {
                len_at = nx_header(out, NXAST_REG_MOVE);
                put_u16(out, *n_bits);
                put_u16(out, *src_ofs);
                put_u16(out, *dst_ofs);
                put_u32(out, src.0);
                put_u32(out, dst.0);
            }
            Action::RegLoad { ofs, n_bits, dst, value } => {
                if *ofs > 0x3ff {
                    return Err(Error::invalid("action nxast_reg_load", "ofs", *ofs));
                }
                if !(1..=64).contains(n_bits) {
                    return Err(Error::invalid("action nxast_reg_load", "n_bits", *n_bits));
                }
                len_at = nx_header(out, NXAST_REG_LOAD);
                put_u16(out, (*ofs << 6) | u16::from(*n_bits - 1));
                put_u32(out, dst.0);
                put_u64(out, *value);
            }
            Action::ResubmitTable { in_port, table } => {
                len_at = nx_header(out, NXAST_RESUBMIT_TABLE);
                put_u16(out, *in_port);
                out.push(*table);
            }
            Action::Unknown { action_type, body } => {
                let len = 4 + body.len();
                if len % 8 != 0 {
                    return Err(Error::BadLength { what: "action", length: len });
                }
                put_u16(out, *action_type);
                len_at = reserve_u16(out);
                out.extend_from_slice(body);
            }
        }
        pad_to_8(out, start);
        patch_len(out, len_at, start, "action")
    }

    /// Decodes one action from the front of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Action, usize)> {
        let mut r = Reader::new(bytes, "action");
        let action = Self::read(&mut r)?;
        Ok((action, bytes.len() - r.remaining()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Action> {
        let mut head = *r;
        let action_type = head.u16()?;
        let len = usize::from(head.u16()?);
        if len < 8 || len % 8 != 0 {
            return Err(Error::BadLength { what: "action", length: len });
        }
        let mut a = r.sub(len, "action")?;
        a.skip(4)?;
        let expect = |want: usize, what: &'static str| {
            if len == want { Ok(()) } else { Err(Error::BadLength { what, length: len }) }
        };
        let action = match action_type {
            OFPAT_OUTPUT => {
                expect(16, "action output")?;
                Action::Output { port: a.u32()?, max_len: a.u16()? }
            }
            OFPAT_GROUP => {
                expect(8, "action group")?;
                Action::Group(a.u32()?)
            }
            OFPAT_PUSH_VLAN => {
                expect(8, "action push_vlan")?;
                Action::PushVlan(a.u16()?)
            }
            OFPAT_POP_VLAN => {
                expect(8, "action pop_vlan")?;
                Action::PopVlan
            }
            OFPAT_SET_FIELD => {
                let field = OxmField::read(&mut a)?;
                expect(pad8(4 + field.wire_len()), "action set_field")?;
                Action::SetField(field)
            }
            OFPAT_EXPERIMENTER => {
                let mut peek = a;
                // An experimenter action may be as short as its id.
                let experimenter = peek.u32()?;
                let subtype = if experimenter == NX_EXPERIMENTER_ID { peek.u16().ok() } else { None };
                match subtype {
                    Some(NXAST_REG_MOVE) => {
                        expect(24, "action nxast_reg_move")?;
                        Action::RegMove {
                            n_bits: peek.u16()?,
                            src_ofs: peek.u16()?,
                            dst_ofs: peek.u16()?,
                            src: OxmHeader(peek.u32()?),
                            dst: OxmHeader(peek.u32()?),
                        }
                    }
                    Some(NXAST_REG_LOAD) => {
                        expect(24, "action nxast_reg_load")?;
                        let ofs_nbits = peek.u16()?;
                        let dst = OxmHeader(peek.u32()?);
                        let value = peek.u64()?;
                        // The mask keeps `n_bits` within 1..=64.
                        let n_bits = (ofs_nbits & 0x3f) as u8 + 1;
                        Action::RegLoad { ofs: ofs_nbits >> 6, n_bits, dst, value }
                    }
                    Some(NXAST_RESUBMIT_TABLE) => {
                        expect(16, "action nxast_resubmit_table")?;
                        Action::ResubmitTable { in_port: peek.u16()?, table: peek.u8()? }
                    }
                    _ => Action::Unknown { action_type, body: a.rest().to_vec() },
                }
            }
            _ => Action::Unknown { action_type, body: a.rest().to_vec() },
        };
        Ok(action)
    }
}

/// Writes a Nicira action header (type, length placeholder, experimenter id,
/// subtype); returns where the length goes.
fn nx_header(out: &mut Vec<u8>, subtype: u16) -> usize {
    put_u16(out, OFPAT_EXPERIMENTER);
    let len_at = reserve_u16(out);
    put_u32(out, NX_EXPERIMENTER_ID);
    put_u16(out, subtype);
    len_at
}

/// Appends a list of actions.
pub fn encode_actions(actions: &[Action], out: &mut Vec<u8>) -> Result<()> {
    actions.iter().try_for_each(|a| a.encode(out))
}

/// Decodes a list of actions filling all of `bytes`.
pub fn decode_actions(bytes: &[u8]) -> Result<Vec<Action>> {
    read_actions(&mut Reader::new(bytes, "actions"))
}

pub(crate) fn read_actions(r: &mut Reader<'_>) -> Result<Vec<Action>> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Action::read(r)?);
    }
    Ok(out)
}

/// Length on the wire of a list of actions.
pub fn actions_len(actions: &[Action]) -> usize {
    actions.iter().map(Action::wire_len).sum()
}

/// ARP opcode of a request.
pub const ARP_OP_REQUEST: u16 = 1;
/// ARP opcode of a reply.
pub const ARP_OP_REPLY: u16 = 2;
const ETH_TYPE_ARP: u16 = 0x0806;

/// Turns an ARP request for `ip` into the reply "`ip` is at `mac`" and sends
/// it back out of the port it came in on:
///
/// ```text
/// move:eth_src->eth_dst, set_field:mac->eth_src, set_field:2->arp_op,
/// move:arp_sha->arp_tha, set_field:mac->arp_sha,
/// move:arp_spa->arp_tpa, set_field:ip->arp_spa, output:IN_PORT
/// ```
/// Use it in the apply-actions of a flow matching [`arp_request_match`].
pub fn arp_responder(mac: MacAddr, ip: Ipv4Addr) -> Vec<Action> {
    vec![
        Action::move_field(OxmHeader::ETH_SRC, OxmHeader::ETH_DST),
        Action::SetField(OxmField::eth_src(mac)),
        Action::SetField(OxmField::ArpOp(ARP_OP_REPLY)),
        Action::move_field(OxmHeader::ARP_SHA, OxmHeader::ARP_THA),
        Action::SetField(OxmField::arp_sha(mac)),
        Action::move_field(OxmHeader::ARP_SPA, OxmHeader::ARP_TPA),
        Action::SetField(OxmField::arp_spa(ip)),
        Action::output(OFPP_IN_PORT),
    ]
}

/// NA flags in `nd_reserved`: Router, Solicited, Override (RFC 4861 §4.4).
pub const ND_FLAG_ROUTER: u32 = 1 << 31;
pub const ND_FLAG_SOLICITED: u32 = 1 << 30;
pub const ND_FLAG_OVERRIDE: u32 = 1 << 29;

/// The first half of an ND responder (RFC 4861 §7.2.4), applied to a
/// neighbour solicitation for `ip` that carries a source link-layer option
/// first: it becomes a solicited NA (S and O set, R as `router`) from
/// `ip` at `mac` back to the solicitor, its option retyped to target
/// link-layer. Open vSwitch checks a set_field's prerequisites against the
/// flow's match, so the option's address (`nd_tll`) can only be written in
/// a later table that matches the NA: [`nd_responder_finish`].
pub fn nd_responder_start(mac: MacAddr, ip: Ipv6Addr, router: bool) -> Vec<Action> {
    let flags = ND_FLAG_SOLICITED | ND_FLAG_OVERRIDE | if router { ND_FLAG_ROUTER } else { 0 };
    vec![
        Action::SetField(OxmField::Icmpv6Type(ICMPV6_NA)),
        Action::SetField(OxmField::NdOptionsType(ND_OPT_TARGET_LLADDR)),
        Action::SetField(OxmField::NdReserved(flags)),
        Action::move_field(OxmHeader::ETH_SRC, OxmHeader::ETH_DST),
        Action::SetField(OxmField::eth_src(mac)),
        Action::move_field(OxmHeader::IPV6_SRC, OxmHeader::IPV6_DST),
        Action::SetField(OxmField::Ipv6Src { value: ip, mask: None }),
    ]
}

/// The second half of an ND responder, in a table matching the NA that
/// [`nd_responder_start`] made: the target link-layer option from the
/// Ethernet source it set, and out where the solicitation came in.
pub fn nd_responder_finish() -> Vec<Action> {
    vec![Action::move_field(OxmHeader::ETH_SRC, OxmHeader::IPV6_ND_TLL), Action::output(OFPP_IN_PORT)]
}

/// ICMPv6 neighbour solicitation and advertisement types.
pub const ICMPV6_NS: u8 = 135;
pub const ICMPV6_NA: u8 = 136;
/// ND option types: source and target link-layer address.
pub const ND_OPT_SOURCE_LLADDR: u8 = 1;
pub const ND_OPT_TARGET_LLADDR: u8 = 2;

/// The match of ARP requests for `ip`: eth_type ARP, arp_op 1, arp_tpa `ip`.
pub fn arp_request_match(ip: Ipv4Addr) -> Match {
    Match::new().with(OxmField::EthType(ETH_TYPE_ARP)).with(OxmField::ArpOp(ARP_OP_REQUEST)).with(OxmField::arp_tpa(ip))
}

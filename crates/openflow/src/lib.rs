//! OpenFlow 1.3 wire codec for vipcast's chassis agent, which is the local
//! controller of an Open vSwitch bridge. No I/O: bytes in, typed messages out,
//! and back.
//!
//! Written from the OpenFlow Switch Specification 1.3.5 and Open vSwitch's
//! documented Nicira extensions (NXM_NX registers and tunnel fields in OXM
//! class 0x0001; the `NXAST_REG_MOVE`, `NXAST_REG_LOAD` and
//! `NXAST_RESUBMIT_TABLE` actions).
//!
//! * [`decode_message`] and [`Framer`] split a byte stream into [`Message`]s;
//!   [`Message::encode`] writes one.
//! * Typed bodies: HELLO, ERROR, ECHO, FEATURES, SET_CONFIG, PACKET_IN,
//!   PORT_STATUS, PACKET_OUT, FLOW_MOD, GROUP_MOD, BARRIER, flow statistics
//!   and port descriptions; any other message type is kept as bytes
//!   ([`Body::Other`]).
//! * [`Match`] of [`OxmField`]s, [`Instruction`]s, [`Action`]s; unknown OXM
//!   fields, actions and instructions decode to `Unknown` variants that
//!   re-encode to the same bytes.
//! * [`arp_responder`] builds the actions that answer an ARP request in the
//!   switch.
//!
//! ## The no-panic contract
//!
//! No function of this crate panics on any input; decoding returns an
//! [`Error`] naming the structure and the field that was wrong. The
//! `openflow` fuzz target holds the crate to this, and to re-encoding what it
//! decoded.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod action;
mod error;
pub mod error_msg;
pub mod instruction;
pub mod message;
pub mod multipart;
pub mod oxm;
pub mod port;
mod wire;

pub use action::{
    Action, arp_request_match, arp_responder, decode_actions, encode_actions, nd_responder_finish, nd_responder_start,
};
pub use error::{Error, Result};
pub use error_msg::ErrorMsg;
pub use instruction::{Instruction, decode_instructions, encode_instructions};
pub use message::{
    Body, Bucket, FeaturesReply, FlowMod, FlowModCommand, Framer, GroupMod, GroupModCommand, GroupType, Header, Hello,
    Message, OFP_VERSION, PacketIn, PacketOut, SwitchConfig, decode_message,
};
pub use multipart::{
    FlowStats, FlowStatsRequest, GroupDesc, MultipartReply, MultipartReplyBody, MultipartRequest, MultipartRequestBody,
};
pub use oxm::{Match, OxmField, OxmHeader};
pub use port::{Port, PortStatus, port_name};

/// Highest number of a physical or logical port.
pub const OFPP_MAX: u32 = 0xffff_ff00;
/// Send the packet out of the port it came in on.
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
/// Submit the packet to the first flow table (packet-out only).
pub const OFPP_TABLE: u32 = 0xffff_fff9;
/// The switch's non-OpenFlow forwarding.
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
/// Every port but the ingress port and blocked ports.
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
/// Every port but the ingress port.
pub const OFPP_ALL: u32 = 0xffff_fffc;
/// The controller.
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
/// The switch's local port (the bridge's own interface).
pub const OFPP_LOCAL: u32 = 0xffff_fffe;
/// No port: a wildcard in requests.
pub const OFPP_ANY: u32 = 0xffff_ffff;
/// The packet is not buffered in the switch.
pub const OFP_NO_BUFFER: u32 = 0xffff_ffff;
/// Highest group number.
pub const OFPG_MAX: u32 = 0xffff_ff00;
/// Every group (group delete).
pub const OFPG_ALL: u32 = 0xffff_fffc;
/// No group: a wildcard in requests.
pub const OFPG_ANY: u32 = 0xffff_ffff;

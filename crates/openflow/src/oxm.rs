//! OXM: the type-length-value match fields of OpenFlow 1.3 (spec §7.2.3), and
//! the Nicira NXM_NX fields that Open vSwitch carries in OXM class 0x0001.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          oxm_class            |  oxm_field  |M|  oxm_length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     value (oxm_length bytes; value then mask when M is set)   |
//! ```
//! A [`Match`] (`ofp_match`, type OFPMT_OXM) is a type and a length followed by
//! OXM TLVs, padded with zeros to a multiple of 8; the length field excludes
//! the padding.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use vipcast_packet::MacAddr;

use crate::wire::{Reader, pad_to_8, pad8, patch_len, put_u16, put_u32, reserve_u16};
use crate::{Error, Result};

/// OXM class of the OpenFlow basic fields.
pub const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
/// OXM class of Open vSwitch's original NXM fields (`NXM_OF_*`).
pub const OFPXMC_NXM_0: u16 = 0x0000;
/// OXM class of the Nicira extension fields (`NXM_NX_*`): registers, tunnel
/// metadata and more.
pub const OFPXMC_NXM_1: u16 = 0x0001;
/// OXM class of experimenter fields: the payload starts with a 32-bit experimenter id.
pub const OFPXMC_EXPERIMENTER: u16 = 0xffff;
/// `ofp_match` type for OXM matches.
pub const OFPMT_OXM: u16 = 1;
/// Bit of `vlan_vid` that says a VLAN tag is present.
pub const OFPVID_PRESENT: u16 = 0x1000;
/// `vlan_vid` value for "no VLAN tag".
pub const OFPVID_NONE: u16 = 0x0000;

// Field numbers of the OpenFlow basic class (spec §7.2.3.7).
const IN_PORT: u8 = 0;
const METADATA: u8 = 2;
const ETH_DST: u8 = 3;
const ETH_SRC: u8 = 4;
const ETH_TYPE: u8 = 5;
const VLAN_VID: u8 = 6;
const IP_PROTO: u8 = 10;
const IPV4_SRC: u8 = 11;
const IPV4_DST: u8 = 12;
const ARP_OP: u8 = 21;
const ARP_SPA: u8 = 22;
const ARP_TPA: u8 = 23;
const ARP_SHA: u8 = 24;
const ARP_THA: u8 = 25;
const IPV6_SRC: u8 = 26;
const IPV6_DST: u8 = 27;
const ICMPV6_TYPE: u8 = 29;
const ICMPV6_CODE: u8 = 30;
const IPV6_ND_TARGET: u8 = 31;
const IPV6_ND_SLL: u8 = 32;
const IPV6_ND_TLL: u8 = 33;
const TUNNEL_ID: u8 = 38;
// Field numbers of the NXM_NX class.
const NX_REG_LAST: u8 = 7;
const NX_TUN_IPV4_SRC: u8 = 31;
const NX_TUN_IPV4_DST: u8 = 32;
/// The OXM class Open vSwitch gives its ND extension fields (first used by
/// Ericsson, hence OVS's `ERICOXM_OF_*`): a plain 4-byte header, no
/// experimenter id (OVS `meta-flow.h`; since Open vSwitch 2.12).
pub const OFPXMC_ERICOXM: u16 = 0x1000;
const ERICOXM_ND_RESERVED: u8 = 1;
const ERICOXM_ND_OPTIONS_TYPE: u8 = 2;

/// A 32-bit OXM (or NXM) header: class, field, has-mask bit, payload length.
///
/// Nicira's move and load actions name their fields by such a header, with
/// the has-mask bit clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OxmHeader(pub u32);

impl OxmHeader {
    /// `in_port` (4 bytes).
    pub const IN_PORT: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IN_PORT, false, 4);
    /// `metadata` (8 bytes).
    pub const METADATA: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, METADATA, false, 8);
    /// `eth_dst` (6 bytes).
    pub const ETH_DST: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ETH_DST, false, 6);
    /// `eth_src` (6 bytes).
    pub const ETH_SRC: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ETH_SRC, false, 6);
    /// `eth_type` (2 bytes).
    pub const ETH_TYPE: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ETH_TYPE, false, 2);
    /// `ipv4_src` (4 bytes).
    pub const IPV4_SRC: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IPV4_SRC, false, 4);
    /// `ipv4_dst` (4 bytes).
    pub const IPV4_DST: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IPV4_DST, false, 4);
    /// `arp_op` (2 bytes).
    pub const ARP_OP: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ARP_OP, false, 2);
    /// `arp_spa` (4 bytes).
    pub const ARP_SPA: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ARP_SPA, false, 4);
    /// `arp_tpa` (4 bytes).
    pub const ARP_TPA: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ARP_TPA, false, 4);
    /// `arp_sha` (6 bytes).
    pub const ARP_SHA: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ARP_SHA, false, 6);
    /// `arp_tha` (6 bytes).
    pub const ARP_THA: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, ARP_THA, false, 6);
    /// `tunnel_id` (8 bytes).
    pub const TUNNEL_ID: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, TUNNEL_ID, false, 8);
    /// `ipv6_src`
    pub const IPV6_SRC: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IPV6_SRC, false, 16);
    /// `ipv6_dst`
    pub const IPV6_DST: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IPV6_DST, false, 16);
    /// `nd_tll`, the target link-layer option of an NA.
    pub const IPV6_ND_TLL: OxmHeader = OxmHeader::new(OFPXMC_OPENFLOW_BASIC, IPV6_ND_TLL, false, 6);
    /// `NXM_NX_TUN_IPV4_SRC` (4 bytes).
    pub const NX_TUN_IPV4_SRC: OxmHeader = OxmHeader::new(OFPXMC_NXM_1, NX_TUN_IPV4_SRC, false, 4);
    /// `NXM_NX_TUN_IPV4_DST` (4 bytes).
    pub const NX_TUN_IPV4_DST: OxmHeader = OxmHeader::new(OFPXMC_NXM_1, NX_TUN_IPV4_DST, false, 4);

    /// Builds a header; `field` keeps its low 7 bits.
    pub const fn new(class: u16, field: u8, hasmask: bool, length: u8) -> Self {
        OxmHeader(((class as u32) << 16) | (((field & 0x7f) as u32) << 9) | ((hasmask as u32) << 8) | length as u32)
    }

    /// `NXM_NX_REG<n>` (4 bytes); `n` is taken modulo 8.
    pub const fn nx_reg(n: u8) -> Self {
        OxmHeader::new(OFPXMC_NXM_1, n & NX_REG_LAST, false, 4)
    }

    /// The class (upper 16 bits).
    pub const fn class(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The field number (7 bits).
    pub const fn field(self) -> u8 {
        ((self.0 >> 9) & 0x7f) as u8
    }

    /// The has-mask bit.
    pub const fn hasmask(self) -> bool {
        self.0 & 0x100 != 0
    }

    /// The payload length in bytes (value, plus mask when masked).
    pub const fn length(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// The width of the field in bits (payload length, halved if masked).
    pub const fn bits(self) -> u16 {
        let len = self.length() as u16;
        if self.hasmask() { len / 2 * 8 } else { len * 8 }
    }
}

impl fmt::Display for OxmHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// One OXM match field (or, in a set-field action, the value to write).
///
/// `mask: None` is an exact match; `Some(mask)` sets the has-mask bit and
/// writes the mask after the value. Fields the spec does not allow masking
/// have no mask here. Anything this codec does not name decodes to
/// [`OxmField::Unknown`], byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OxmField {
    /// Ingress port (`OFPXMT_OFB_IN_PORT`).
    InPort(u32),
    /// Pipeline metadata.
    Metadata { value: u64, mask: Option<u64> },
    /// Ethernet destination.
    EthDst { value: MacAddr, mask: Option<MacAddr> },
    /// Ethernet source.
    EthSrc { value: MacAddr, mask: Option<MacAddr> },
    /// Ethertype.
    EthType(u16),
    /// VLAN id with the [`OFPVID_PRESENT`] bit.
    VlanVid { value: u16, mask: Option<u16> },
    /// IP protocol number.
    IpProto(u8),
    /// IPv4 source.
    Ipv4Src { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// IPv4 destination.
    Ipv4Dst { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// IPv6 source.
    Ipv6Src { value: Ipv6Addr, mask: Option<Ipv6Addr> },
    /// IPv6 destination.
    Ipv6Dst { value: Ipv6Addr, mask: Option<Ipv6Addr> },
    /// ICMPv6 type.
    Icmpv6Type(u8),
    /// ICMPv6 code.
    Icmpv6Code(u8),
    /// ARP opcode.
    ArpOp(u16),
    /// ARP sender protocol address.
    ArpSpa { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// ARP target protocol address.
    ArpTpa { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// ARP sender hardware address.
    ArpSha { value: MacAddr, mask: Option<MacAddr> },
    /// ARP target hardware address.
    ArpTha { value: MacAddr, mask: Option<MacAddr> },
    /// Target address of an IPv6 neighbour solicitation or advertisement.
    Ipv6NdTarget(Ipv6Addr),
    /// Source link-layer option of a neighbour solicitation.
    Ipv6NdSll(MacAddr),
    /// Target link-layer option of a neighbour advertisement.
    Ipv6NdTll(MacAddr),
    /// Open vSwitch's `nd_reserved`: the 32 bits after an ND message's
    /// checksum (an NA's R, S and O flags are its top three).
    NdReserved(u32),
    /// Open vSwitch's `nd_options_type`: the type of an ND message's first
    /// option (1 source, 2 target link-layer address).
    NdOptionsType(u8),
    /// Tunnel id (the VNI of a VXLAN packet, the key of a GRE packet).
    TunnelId { value: u64, mask: Option<u64> },
    /// Outer IPv4 source of a tunnelled packet (`NXM_NX_TUN_IPV4_SRC`).
    TunIpv4Src { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// Outer IPv4 destination of a tunnelled packet (`NXM_NX_TUN_IPV4_DST`).
    TunIpv4Dst { value: Ipv4Addr, mask: Option<Ipv4Addr> },
    /// Nicira register `NXM_NX_REG<index>`, index 0..=7.
    Reg { index: u8, value: u32, mask: Option<u32> },
    /// A field this codec does not name. `value` is the whole payload (value
    /// and mask when `hasmask`; for the experimenter class it starts with the
    /// experimenter id). `field` has 7 bits.
    Unknown { class: u16, field: u8, hasmask: bool, value: Vec<u8> },
}

impl OxmField {
    /// Exact `eth_dst`.
    pub const fn eth_dst(mac: MacAddr) -> Self {
        OxmField::EthDst { value: mac, mask: None }
    }

    /// Exact `eth_src`.
    pub const fn eth_src(mac: MacAddr) -> Self {
        OxmField::EthSrc { value: mac, mask: None }
    }

    /// Exact `ipv4_dst`.
    pub const fn ipv4_dst(ip: Ipv4Addr) -> Self {
        OxmField::Ipv4Dst { value: ip, mask: None }
    }

    /// Exact `arp_tpa`.
    pub const fn arp_tpa(ip: Ipv4Addr) -> Self {
        OxmField::ArpTpa { value: ip, mask: None }
    }

    /// Exact `arp_spa`.
    pub const fn arp_spa(ip: Ipv4Addr) -> Self {
        OxmField::ArpSpa { value: ip, mask: None }
    }

    /// Exact `arp_sha`.
    pub const fn arp_sha(mac: MacAddr) -> Self {
        OxmField::ArpSha { value: mac, mask: None }
    }

    /// Exact `tunnel_id`.
    pub const fn tunnel_id(id: u64) -> Self {
        OxmField::TunnelId { value: id, mask: None }
    }

    /// Exact `NXM_NX_REG<index>`.
    pub const fn reg(index: u8, value: u32) -> Self {
        OxmField::Reg { index, value, mask: None }
    }

    /// The field's class and field number.
    pub fn class_field(&self) -> (u16, u8) {
        let basic = |f| (OFPXMC_OPENFLOW_BASIC, f);
        match self {
            OxmField::InPort(_) => basic(IN_PORT),
            OxmField::Metadata { .. } => basic(METADATA),
            OxmField::EthDst { .. } => basic(ETH_DST),
            OxmField::EthSrc { .. } => basic(ETH_SRC),
            OxmField::EthType(_) => basic(ETH_TYPE),
            OxmField::VlanVid { .. } => basic(VLAN_VID),
            OxmField::IpProto(_) => basic(IP_PROTO),
            OxmField::Ipv4Src { .. } => basic(IPV4_SRC),
            OxmField::Ipv4Dst { .. } => basic(IPV4_DST),
            OxmField::Ipv6Src { .. } => basic(IPV6_SRC),
            OxmField::Ipv6Dst { .. } => basic(IPV6_DST),
            OxmField::Icmpv6Type(_) => basic(ICMPV6_TYPE),
            OxmField::Icmpv6Code(_) => basic(ICMPV6_CODE),
            OxmField::ArpOp(_) => basic(ARP_OP),
            OxmField::ArpSpa { .. } => basic(ARP_SPA),
            OxmField::ArpTpa { .. } => basic(ARP_TPA),
            OxmField::ArpSha { .. } => basic(ARP_SHA),
            OxmField::ArpTha { .. } => basic(ARP_THA),
            OxmField::Ipv6NdTarget(_) => basic(IPV6_ND_TARGET),
            OxmField::Ipv6NdSll(_) => basic(IPV6_ND_SLL),
            OxmField::Ipv6NdTll(_) => basic(IPV6_ND_TLL),
            OxmField::NdReserved(_) => (OFPXMC_ERICOXM, ERICOXM_ND_RESERVED),
            OxmField::NdOptionsType(_) => (OFPXMC_ERICOXM, ERICOXM_ND_OPTIONS_TYPE),
            OxmField::TunnelId { .. } => basic(TUNNEL_ID),
            OxmField::TunIpv4Src { .. } => (OFPXMC_NXM_1, NX_TUN_IPV4_SRC),
            OxmField::TunIpv4Dst { .. } => (OFPXMC_NXM_1, NX_TUN_IPV4_DST),
            OxmField::Reg { index, .. } => (OFPXMC_NXM_1, *index),
            OxmField::Unknown { class, field, .. } => (*class, *field),
        }
    }

    /// The value bytes, then the mask bytes if there is a mask.
    fn payload(&self) -> (Vec<u8>, bool) {
        fn with<const N: usize>(value: [u8; N], mask: Option<[u8; N]>) -> (Vec<u8>, bool) {
            let mut v = value.to_vec();
            if let Some(m) = mask {
                v.extend_from_slice(&m);
            }
            (v, mask.is_some())
        }
        let mac = |m: &MacAddr| m.octets();
        match self {
            OxmField::InPort(p) => with(p.to_be_bytes(), None),
            OxmField::Metadata { value, mask } => with(value.to_be_bytes(), mask.map(u64::to_be_bytes)),
            OxmField::EthDst { value, mask }
            | OxmField::EthSrc { value, mask }
            | OxmField::ArpSha { value, mask }
            | OxmField::ArpTha { value, mask } => with(value.octets(), mask.as_ref().map(mac)),
            OxmField::EthType(t) => with(t.to_be_bytes(), None),
            OxmField::VlanVid { value, mask } => with(value.to_be_bytes(), mask.map(u16::to_be_bytes)),
            OxmField::IpProto(p) => with([*p], None),
            OxmField::Ipv4Src { value, mask }
            | OxmField::Ipv4Dst { value, mask }
            | OxmField::ArpSpa { value, mask }
            | OxmField::ArpTpa { value, mask }
            | OxmField::TunIpv4Src { value, mask }
            | OxmField::TunIpv4Dst { value, mask } => with(value.octets(), mask.map(|m| m.octets())),
            OxmField::Ipv6Src { value, mask } | OxmField::Ipv6Dst { value, mask } => {
                with(value.octets(), mask.map(|m| m.octets()))
            }
            OxmField::Icmpv6Type(t) => with([*t], None),
            OxmField::Icmpv6Code(c) => with([*c], None),
            OxmField::ArpOp(op) => with(op.to_be_bytes(), None),
            OxmField::Ipv6NdTarget(t) => with(t.octets(), None),
            OxmField::Ipv6NdSll(m) | OxmField::Ipv6NdTll(m) => with(m.octets(), None),
            OxmField::NdReserved(r) => with(r.to_be_bytes(), None),
            OxmField::NdOptionsType(t) => with([*t], None),
            OxmField::TunnelId { value, mask } => with(value.to_be_bytes(), mask.map(u64::to_be_bytes)),
            OxmField::Reg { value, mask, .. } => with(value.to_be_bytes(), mask.map(u32::to_be_bytes)),
            OxmField::Unknown { hasmask, value, .. } => (value.clone(), *hasmask),
        }
    }

    /// The header this field is written with.
    pub fn header(&self) -> Result<OxmHeader> {
        let (class, field) = self.class_field();
        let (payload, hasmask) = self.payload();
        self.check()?;
        let len = u8::try_from(payload.len()).map_err(|_| Error::TooLong {
            what: "oxm",
            length: payload.len(),
            max: usize::from(u8::MAX),
        })?;
        Ok(OxmHeader::new(class, field, hasmask, len))
    }

    fn check(&self) -> Result<()> {
        match self {
            OxmField::Reg { index, .. } if *index > NX_REG_LAST => {
                Err(Error::invalid("oxm nxm_nx_reg", "register index", *index))
            }
            OxmField::Unknown { field, .. } if *field > 0x7f => Err(Error::invalid("oxm", "field", *field)),
            _ => Ok(()),
        }
    }

    /// Length of the TLV on the wire (header included).
    pub fn wire_len(&self) -> usize {
        4 + self.payload().0.len()
    }

    /// Appends the TLV to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let header = self.header()?;
        put_u32(out, header.0);
        out.extend_from_slice(&self.payload().0);
        Ok(())
    }

    /// Decodes one TLV from the front of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(OxmField, usize)> {
        let mut r = Reader::new(bytes, "oxm");
        let field = Self::read(&mut r)?;
        Ok((field, bytes.len() - r.remaining()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<OxmField> {
        let header = OxmHeader(r.u32()?);
        let payload = r.take(usize::from(header.length()))?;
        let hasmask = header.hasmask();
        let p = Payload { bytes: payload, hasmask };
        let mac = MacAddr::from;
        let v4 = Ipv4Addr::from;
        let v6 = Ipv6Addr::from;
        let field = match (header.class(), header.field()) {
            (OFPXMC_OPENFLOW_BASIC, IN_PORT) => OxmField::InPort(u32::from_be_bytes(p.exact("oxm in_port")?)),
            (OFPXMC_OPENFLOW_BASIC, METADATA) => {
                let (v, m) = p.maskable("oxm metadata")?;
                OxmField::Metadata { value: u64::from_be_bytes(v), mask: m.map(u64::from_be_bytes) }
            }
            (OFPXMC_OPENFLOW_BASIC, ETH_DST) => {
                let (v, m) = p.maskable("oxm eth_dst")?;
                OxmField::EthDst { value: mac(v), mask: m.map(mac) }
            }
            (OFPXMC_OPENFLOW_BASIC, ETH_SRC) => {
                let (v, m) = p.maskable("oxm eth_src")?;
                OxmField::EthSrc { value: mac(v), mask: m.map(mac) }
            }
            (OFPXMC_OPENFLOW_BASIC, ETH_TYPE) => OxmField::EthType(u16::from_be_bytes(p.exact("oxm eth_type")?)),
            (OFPXMC_OPENFLOW_BASIC, VLAN_VID) => {
                let (v, m) = p.maskable("oxm vlan_vid")?;
                OxmField::VlanVid { value: u16::from_be_bytes(v), mask: m.map(u16::from_be_bytes) }
            }
            (OFPXMC_OPENFLOW_BASIC, IP_PROTO) => OxmField::IpProto(byte(p.exact("oxm ip_proto")?)),
            (OFPXMC_OPENFLOW_BASIC, IPV4_SRC) => {
                let (v, m) = p.maskable("oxm ipv4_src")?;
                OxmField::Ipv4Src { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_OPENFLOW_BASIC, IPV4_DST) => {
                let (v, m) = p.maskable("oxm ipv4_dst")?;
                OxmField::Ipv4Dst { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_OPENFLOW_BASIC, IPV6_SRC) => {
                let (v, m) = p.maskable("oxm ipv6_src")?;
                OxmField::Ipv6Src { value: v6(v), mask: m.map(v6) }
            }
            (OFPXMC_OPENFLOW_BASIC, IPV6_DST) => {
                let (v, m) = p.maskable("oxm ipv6_dst")?;
                OxmField::Ipv6Dst { value: v6(v), mask: m.map(v6) }
            }
            (OFPXMC_OPENFLOW_BASIC, ICMPV6_TYPE) => OxmField::Icmpv6Type(byte(p.exact("oxm icmpv6_type")?)),
            (OFPXMC_OPENFLOW_BASIC, ICMPV6_CODE) => OxmField::Icmpv6Code(byte(p.exact("oxm icmpv6_code")?)),
            (OFPXMC_OPENFLOW_BASIC, ARP_OP) => OxmField::ArpOp(u16::from_be_bytes(p.exact("oxm arp_op")?)),
            (OFPXMC_OPENFLOW_BASIC, ARP_SPA) => {
                let (v, m) = p.maskable("oxm arp_spa")?;
                OxmField::ArpSpa { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_OPENFLOW_BASIC, ARP_TPA) => {
                let (v, m) = p.maskable("oxm arp_tpa")?;
                OxmField::ArpTpa { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_OPENFLOW_BASIC, ARP_SHA) => {
                let (v, m) = p.maskable("oxm arp_sha")?;
                OxmField::ArpSha { value: mac(v), mask: m.map(mac) }
            }
            (OFPXMC_OPENFLOW_BASIC, ARP_THA) => {
                let (v, m) = p.maskable("oxm arp_tha")?;
                OxmField::ArpTha { value: mac(v), mask: m.map(mac) }
            }
            (OFPXMC_OPENFLOW_BASIC, IPV6_ND_TARGET) => OxmField::Ipv6NdTarget(v6(p.exact("oxm ipv6_nd_target")?)),
            (OFPXMC_OPENFLOW_BASIC, IPV6_ND_SLL) => OxmField::Ipv6NdSll(mac(p.exact("oxm ipv6_nd_sll")?)),
            (OFPXMC_OPENFLOW_BASIC, IPV6_ND_TLL) => OxmField::Ipv6NdTll(mac(p.exact("oxm ipv6_nd_tll")?)),
            (OFPXMC_ERICOXM, ERICOXM_ND_RESERVED) => {
                OxmField::NdReserved(u32::from_be_bytes(p.exact("oxm nd_reserved")?))
            }
            (OFPXMC_ERICOXM, ERICOXM_ND_OPTIONS_TYPE) => OxmField::NdOptionsType(byte(p.exact("oxm nd_options_type")?)),
            (OFPXMC_OPENFLOW_BASIC, TUNNEL_ID) => {
                let (v, m) = p.maskable("oxm tunnel_id")?;
                OxmField::TunnelId { value: u64::from_be_bytes(v), mask: m.map(u64::from_be_bytes) }
            }
            (OFPXMC_NXM_1, NX_TUN_IPV4_SRC) => {
                let (v, m) = p.maskable("oxm nxm_nx_tun_ipv4_src")?;
                OxmField::TunIpv4Src { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_NXM_1, NX_TUN_IPV4_DST) => {
                let (v, m) = p.maskable("oxm nxm_nx_tun_ipv4_dst")?;
                OxmField::TunIpv4Dst { value: v4(v), mask: m.map(v4) }
            }
            (OFPXMC_NXM_1, index @ 0..=NX_REG_LAST) => {
                let (v, m) = p.maskable("oxm nxm_nx_reg")?;
                OxmField::Reg { index, value: u32::from_be_bytes(v), mask: m.map(u32::from_be_bytes) }
            }
            (class, field) => OxmField::Unknown { class, field, hasmask, value: payload.to_vec() },
        };
        Ok(field)
    }
}

fn byte([b]: [u8; 1]) -> u8 {
    b
}

/// The payload of a known field, checked against the field's width.
struct Payload<'a> {
    bytes: &'a [u8],
    hasmask: bool,
}

impl Payload<'_> {
    /// A field that cannot be masked: exactly `N` bytes, no mask bit.
    fn exact<const N: usize>(&self, what: &'static str) -> Result<[u8; N]> {
        if self.hasmask {
            return Err(Error::invalid(what, "has-mask bit on a field that cannot be masked", 1u8));
        }
        self.bytes.try_into().map_err(|_| Error::BadLength { what, length: self.bytes.len() })
    }

    /// A maskable field: `N` bytes, or `2N` bytes when the mask bit is set.
    fn maskable<const N: usize>(&self, what: &'static str) -> Result<([u8; N], Option<[u8; N]>)> {
        let bad = || Error::BadLength { what, length: self.bytes.len() };
        if !self.hasmask {
            return Ok((self.bytes.try_into().map_err(|_| bad())?, None));
        }
        let (v, m) = self.bytes.split_at_checked(N).ok_or_else(bad)?;
        Ok((v.try_into().map_err(|_| bad())?, Some(m.try_into().map_err(|_| bad())?)))
    }
}

/// An OXM match (`ofp_match` with type OFPMT_OXM). An empty match matches
/// every packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    pub fields: Vec<OxmField>,
}

impl Match {
    /// The empty match.
    pub fn new() -> Self {
        Match::default()
    }

    /// Adds a field.
    pub fn with(mut self, field: OxmField) -> Self {
        self.fields.push(field);
        self
    }

    /// Length on the wire, padding included.
    pub fn wire_len(&self) -> usize {
        pad8(4 + self.fields.iter().map(OxmField::wire_len).sum::<usize>())
    }

    /// Appends the match, padded to a multiple of 8, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        put_u16(out, OFPMT_OXM);
        let len_at = reserve_u16(out);
        for field in &self.fields {
            field.encode(out)?;
        }
        patch_len(out, len_at, start, "match")?;
        pad_to_8(out, start);
        Ok(())
    }

    /// Decodes a match from the front of `bytes`; returns it and the bytes it
    /// took, padding included.
    pub fn decode(bytes: &[u8]) -> Result<(Match, usize)> {
        let mut r = Reader::new(bytes, "match");
        let m = Self::read(&mut r)?;
        Ok((m, bytes.len() - r.remaining()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Match> {
        let mut head = *r;
        let match_type = head.u16()?;
        let len = usize::from(head.u16()?);
        if match_type != OFPMT_OXM {
            return Err(Error::invalid("match", "type (only OFPMT_OXM)", match_type));
        }
        if len < 4 {
            return Err(Error::BadLength { what: "match", length: len });
        }
        let mut body = r.sub(pad8(len), "match")?;
        body.skip(4)?;
        let mut fields = body.sub(len - 4, "match fields")?;
        let mut out = Vec::new();
        while !fields.is_empty() {
            out.push(OxmField::read(&mut fields)?);
        }
        Ok(Match { fields: out })
    }
}

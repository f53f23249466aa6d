//! Ports: `ofp_port` (spec §7.2.1), as listed by the port-description
//! multipart reply and carried by PORT_STATUS (spec §7.4.3).
//!
//! ```text
//! ofp_port (64 bytes)
//! +-----------------------+-----------------------+
//! |        port_no        |          pad          |
//! +-----------------------+-----------+-----------+
//! |               hw_addr             |    pad    |
//! +-----------------------------------+-----------+
//! |               name (16 bytes, NUL-padded)     |
//! +-----------------------+-----------------------+
//! |        config         |         state         |
//! |         curr          |       advertised      |
//! |       supported       |          peer         |
//! |      curr_speed       |       max_speed       |
//! +-----------------------+-----------------------+
//!
//! PORT_STATUS body: reason (8) | pad (56) | ofp_port
//! ```

use vipcast_packet::MacAddr;

use crate::Result;
use crate::wire::{Reader, put_u32};

/// Length of `ofp_port` on the wire.
pub const OFP_PORT_LEN: usize = 64;
/// Bytes of a port name, NUL padding included.
pub const OFP_MAX_PORT_NAME_LEN: usize = 16;

/// Port config bit: administratively down.
pub const OFPPC_PORT_DOWN: u32 = 1 << 0;
/// Port config bit: drop everything received.
pub const OFPPC_NO_RECV: u32 = 1 << 2;
/// Port config bit: drop everything forwarded to it.
pub const OFPPC_NO_FWD: u32 = 1 << 5;
/// Port config bit: no packet-in for it.
pub const OFPPC_NO_PACKET_IN: u32 = 1 << 6;
/// Port state bit: no physical link.
pub const OFPPS_LINK_DOWN: u32 = 1 << 0;
/// Port state bit: blocked (spanning tree and the like).
pub const OFPPS_BLOCKED: u32 = 1 << 1;
/// Port state bit: live for fast-failover groups.
pub const OFPPS_LIVE: u32 = 1 << 2;

/// PORT_STATUS reason: the port was added.
pub const OFPPR_ADD: u8 = 0;
/// PORT_STATUS reason: the port was removed.
pub const OFPPR_DELETE: u8 = 1;
/// PORT_STATUS reason: an attribute of the port changed.
pub const OFPPR_MODIFY: u8 = 2;

/// One port of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    pub port_no: u32,
    pub hw_addr: MacAddr,
    /// The name as sent: NUL-padded (see [`Port::name`]).
    pub name: [u8; OFP_MAX_PORT_NAME_LEN],
    /// `OFPPC_*` bits.
    pub config: u32,
    /// `OFPPS_*` bits.
    pub state: u32,
    /// `OFPPF_*` feature bits: current, advertised, supported, advertised by the peer.
    pub curr: u32,
    pub advertised: u32,
    pub supported: u32,
    pub peer: u32,
    /// Current and maximum bit rate, kbit/s.
    pub curr_speed: u32,
    pub max_speed: u32,
}

/// A port name as the 16 NUL-padded bytes of `ofp_port`; a longer name is
/// cut to 15 bytes so that a NUL always ends it.
pub fn port_name(name: &str) -> [u8; OFP_MAX_PORT_NAME_LEN] {
    let mut out = [0u8; OFP_MAX_PORT_NAME_LEN];
    for (o, b) in out.iter_mut().zip(name.bytes().take(OFP_MAX_PORT_NAME_LEN - 1)) {
        *o = b;
    }
    out
}

impl Port {
    /// A port with this number, MAC and name; every bit field zero.
    pub fn new(port_no: u32, hw_addr: MacAddr, name: &str) -> Self {
        Port {
            port_no,
            hw_addr,
            name: port_name(name),
            config: 0,
            state: 0,
            curr: 0,
            advertised: 0,
            supported: 0,
            peer: 0,
            curr_speed: 0,
            max_speed: 0,
        }
    }

    /// The name up to its first NUL (bytes that are not UTF-8 are replaced).
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(self.name.len());
        String::from_utf8_lossy(self.name.get(..end).unwrap_or(&[])).into_owned()
    }

    /// Administratively down or without link.
    pub fn is_down(&self) -> bool {
        self.config & OFPPC_PORT_DOWN != 0 || self.state & OFPPS_LINK_DOWN != 0
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.port_no);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.hw_addr.octets());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&self.name);
        for v in [
            self.config,
            self.state,
            self.curr,
            self.advertised,
            self.supported,
            self.peer,
            self.curr_speed,
            self.max_speed,
        ] {
            put_u32(out, v);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut p = r.sub(OFP_PORT_LEN, "ofp_port")?;
        let port_no = p.u32()?;
        p.skip(4)?;
        let hw_addr = MacAddr(p.array()?);
        p.skip(2)?;
        let name = p.array()?;
        Ok(Port {
            port_no,
            hw_addr,
            name,
            config: p.u32()?,
            state: p.u32()?,
            curr: p.u32()?,
            advertised: p.u32()?,
            supported: p.u32()?,
            peer: p.u32()?,
            curr_speed: p.u32()?,
            max_speed: p.u32()?,
        })
    }
}

/// PORT_STATUS: a port was added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortStatus {
    /// `OFPPR_*` (kept as sent).
    pub reason: u8,
    pub port: Port,
}

impl PortStatus {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.reason);
        out.extend_from_slice(&[0; 7]);
        self.port.write(out);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let reason = r.u8()?;
        r.skip(7)?;
        Ok(PortStatus { reason, port: Port::read(r)? })
    }
}

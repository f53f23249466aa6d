//! VXLAN (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The I flag must be set; reserved bits are ignored on receipt and sent as
//! zero (RFC 7348 §5). The payload is an Ethernet frame.

use crate::{Error, Layer, Result};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
const FLAG_I: u8 = 0x08;

/// A typed view of a VXLAN header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        Error::check_len(Layer::Vxlan, HEADER_LEN, len)?;
        Ok(VxlanPacket { buffer })
    }

    fn byte(&self, i: usize) -> u8 {
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.byte(0)
    }

    /// The I flag: the VNI is valid.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VNI.
    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.byte(4), self.byte(5), self.byte(6)])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Writes a header with the I flag and `vni`; reserved fields are zeroed.
    pub fn set_header(&mut self, vni: u32) -> Result<()> {
        if vni > MAX_VNI {
            return Err(Error::invalid(Layer::Vxlan, "vni", vni));
        }
        let v = vni.to_be_bytes();
        if let Some(h) = self.buffer.as_mut().get_mut(..HEADER_LEN) {
            h.copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
        }
        Ok(())
    }
}

/// A parsed VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses a header; the I flag must be set.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr> {
        if !packet.vni_valid() {
            return Err(Error::invalid(Layer::Vxlan, "flags (I bit clear)", packet.flags()));
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Parses a UDP payload; returns the header and the inner frame.
    pub fn parse_bytes(buf: &[u8]) -> Result<(VxlanRepr, &[u8])> {
        let p = VxlanPacket::new_checked(buf)?;
        let repr = VxlanRepr::parse(&p)?;
        Ok((repr, buf.get(HEADER_LEN..).unwrap_or_default()))
    }

    /// Appends the header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        let mut p = VxlanPacket::new_checked(out.get_mut(start..).unwrap_or_default())?;
        p.set_header(self.vni).inspect_err(|_| out.truncate(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = Vec::new();
        VxlanRepr { vni: 0xabcdef }.emit(&mut b).unwrap();
        assert_eq!(b, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        b.extend_from_slice(b"frame");
        let (r, inner) = VxlanRepr::parse_bytes(&b).unwrap();
        assert_eq!((r.vni, inner), (0xabcdef, &b"frame"[..]));
    }

    #[test]
    fn reserved_bits_ignored_i_flag_required() {
        let mut b = [0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xff];
        assert_eq!(VxlanRepr::parse_bytes(&b).unwrap().0.vni, 1);
        b[0] = 0xf7;
        assert!(VxlanRepr::parse_bytes(&b).is_err());
        assert!(VxlanRepr::parse_bytes(&b[..7]).is_err());
        assert!(VxlanRepr { vni: MAX_VNI + 1 }.emit(&mut Vec::new()).is_err());
    }
}

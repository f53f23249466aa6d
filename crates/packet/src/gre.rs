//! GRE (RFC 2784) with the key and sequence number extensions (RFC 2890), and
//! GRE-in-UDP (RFC 8086: the same header as the payload of UDP port 4754).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (Optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! RFC 2784 §2.5.1: a receiver discards a packet with non-zero bits in
//! Reserved0 bits 1 or 4..12 (bits 2 and 3 are K and S, RFC 2890), and §2.3.1
//! a version other than 0. The checksum, when present, covers the GRE header
//! and payload.

use crate::{Error, Layer, Result, checksum};

/// Length of the base header.
pub const BASE_LEN: usize = 4;

/// Protocol type of transparent Ethernet bridging (an Ethernet frame inside).
pub const PROTO_ETHERNET: u16 = 0x6558;
const FLAG_C: u16 = 0x8000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
/// Reserved0 bits a receiver must find zero (bit 1, bits 4..12), and the version.
const MUST_BE_ZERO: u16 = 0x4000 | 0x0ff8;
const VERSION_MASK: u16 = 0x0007;

/// A typed view of a GRE header and payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer after checking it holds the header its flags announce.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = GrePacket { buffer };
        let len = p.buffer.as_ref().len();
        Error::check_len(Layer::Gre, BASE_LEN, len)?;
        Error::check_len(Layer::Gre, p.header_len(), len)?;
        Ok(p)
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        match (b.get(at), b.get(at + 1)) {
            (Some(&h), Some(&l)) => u16::from_be_bytes([h, l]),
            _ => 0,
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        (u32::from(self.u16_at(at)) << 16) | u32::from(self.u16_at(at + 2))
    }

    /// The first 16 bits: flags, reserved0 and version.
    pub fn flags_word(&self) -> u16 {
        self.u16_at(0)
    }

    /// Checksum present.
    pub fn has_checksum(&self) -> bool {
        self.flags_word() & FLAG_C != 0
    }

    /// Key present.
    pub fn has_key(&self) -> bool {
        self.flags_word() & FLAG_K != 0
    }

    /// Sequence number present.
    pub fn has_sequence(&self) -> bool {
        self.flags_word() & FLAG_S != 0
    }

    /// The version (must be 0).
    pub fn version(&self) -> u16 {
        self.flags_word() & VERSION_MASK
    }

    /// The protocol type (an EtherType) of the payload.
    pub fn protocol(&self) -> u16 {
        self.u16_at(2)
    }

    /// Length of the header with its optional fields.
    pub fn header_len(&self) -> usize {
        BASE_LEN
            + 4 * (usize::from(self.has_checksum()) + usize::from(self.has_key()) + usize::from(self.has_sequence()))
    }

    /// The checksum field, if present.
    pub fn checksum(&self) -> Option<u16> {
        self.has_checksum().then(|| self.u16_at(BASE_LEN))
    }

    /// The key, if present.
    pub fn key(&self) -> Option<u32> {
        let at = BASE_LEN + 4 * usize::from(self.has_checksum());
        self.has_key().then(|| self.u32_at(at))
    }

    /// The sequence number, if present.
    pub fn sequence(&self) -> Option<u32> {
        let at = BASE_LEN + 4 * (usize::from(self.has_checksum()) + usize::from(self.has_key()));
        self.has_sequence().then(|| self.u32_at(at))
    }

    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or_default()
    }
}

/// A parsed GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GreRepr {
    /// Protocol type of the payload (0x6558 for Ethernet, 0x0800 IPv4, ...).
    pub protocol: u16,
    /// Whether a checksum is (to be) present.
    pub checksum: bool,
    pub key: Option<u32>,
    pub sequence: Option<u32>,
}

impl GreRepr {
    /// Parses and validates a header (reserved bits, version, checksum).
    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>) -> Result<GreRepr> {
        let w = p.flags_word();
        if p.version() != 0 {
            return Err(Error::unsupported(Layer::Gre, "version", p.version()));
        }
        if w & MUST_BE_ZERO != 0 {
            return Err(Error::invalid(Layer::Gre, "reserved0", w & MUST_BE_ZERO));
        }
        if let Some(received) = p.checksum() {
            let computed = checksum::compute(None, p.buffer.as_ref(), BASE_LEN);
            if computed != received {
                return Err(Error::Checksum { layer: Layer::Gre, received, computed });
            }
        }
        Ok(GreRepr { protocol: p.protocol(), checksum: p.has_checksum(), key: p.key(), sequence: p.sequence() })
    }

    /// Parses a buffer; returns the header and the payload.
    pub fn parse_bytes(buf: &[u8]) -> Result<(GreRepr, &[u8])> {
        let p = GrePacket::new_checked(buf)?;
        let r = GreRepr::parse(&p)?;
        Ok((r, buf.get(r.header_len()..).unwrap_or_default()))
    }

    /// Length of the header.
    pub fn header_len(&self) -> usize {
        BASE_LEN
            + 4 * (usize::from(self.checksum) + usize::from(self.key.is_some()) + usize::from(self.sequence.is_some()))
    }

    /// Appends header and payload to `out` (the checksum covers both).
    pub fn emit(&self, out: &mut Vec<u8>, payload: &[u8]) {
        let start = out.len();
        let mut w = 0u16;
        if self.checksum {
            w |= FLAG_C;
        }
        if self.key.is_some() {
            w |= FLAG_K;
        }
        if self.sequence.is_some() {
            w |= FLAG_S;
        }
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&self.protocol.to_be_bytes());
        if self.checksum {
            out.extend_from_slice(&[0; 4]);
        }
        if let Some(k) = self.key {
            out.extend_from_slice(&k.to_be_bytes());
        }
        if let Some(s) = self.sequence {
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(payload);
        if self.checksum {
            let sum = checksum::compute(None, out.get(start..).unwrap_or_default(), BASE_LEN);
            if let Some(f) = out.get_mut(start + BASE_LEN..start + BASE_LEN + 2) {
                f.copy_from_slice(&sum.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_optional_fields() {
        let r = GreRepr { protocol: 0x6558, checksum: true, key: Some(100), sequence: Some(7) };
        let mut b = Vec::new();
        r.emit(&mut b, b"inner frame");
        assert_eq!(b.len(), r.header_len() + 11);
        let (back, payload) = GreRepr::parse_bytes(&b).unwrap();
        assert_eq!((back, payload), (r, &b"inner frame"[..]));
        b[20] ^= 0xff;
        assert!(matches!(GreRepr::parse_bytes(&b), Err(Error::Checksum { .. })));
    }

    #[test]
    fn key_only_layout() {
        let r = GreRepr { protocol: 0x6558, checksum: false, key: Some(0x01020304), sequence: None };
        let mut b = Vec::new();
        r.emit(&mut b, &[]);
        assert_eq!(b, [0x20, 0, 0x65, 0x58, 1, 2, 3, 4]);
    }

    #[test]
    fn refuses_reserved_version_and_short() {
        assert!(matches!(GreRepr::parse_bytes(&[0x00, 0x01, 0x08, 0x00]), Err(Error::Unsupported { .. })));
        assert!(matches!(GreRepr::parse_bytes(&[0x40, 0x00, 0x08, 0x00]), Err(Error::Invalid { .. })));
        assert!(GreRepr::parse_bytes(&[0x20, 0x00, 0x65, 0x58, 0, 0]).is_err());
        assert!(GreRepr::parse_bytes(&[0x00, 0x00, 0x08]).is_err());
    }
}

//! The classic libpcap file format (what `tcpdump -w` writes and tshark reads),
//! to bytes and from bytes. Microsecond and nanosecond variants, either byte
//! order, on reading; microseconds, little-endian, on writing.
//!
//! ```text
//! global header (24): magic | major 2 | minor 4 | thiszone | sigfigs | snaplen | linktype
//! record header (16): ts_sec | ts_frac | incl_len | orig_len, then incl_len bytes
//! ```

use crate::{Error, Layer, Result};

/// Link type of Ethernet captures.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Link type of Linux "cooked" captures (`tcpdump -i any`).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const GLOBAL_LEN: usize = 24;
const RECORD_LEN: usize = 16;
/// Largest record this reader accepts (a sane bound against corrupt lengths).
pub const MAX_RECORD: usize = 262_144;

/// Builds a capture file in memory.
#[derive(Debug, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new(LINKTYPE_ETHERNET)
    }
}

impl Writer {
    /// A new file with the given link type.
    pub fn new(linktype: u32) -> Writer {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&MAGIC_US.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(MAX_RECORD as u32).to_le_bytes());
        bytes.extend_from_slice(&linktype.to_le_bytes());
        Writer { bytes }
    }

    /// Appends a packet captured at `micros` microseconds since the epoch.
    pub fn push(&mut self, micros: u64, data: &[u8]) -> Result<()> {
        if data.len() > MAX_RECORD {
            return Err(Error::invalid(Layer::Pcap, "record length", data.len() as u64));
        }
        let secs = u32::try_from(micros / 1_000_000).map_err(|_| Error::invalid(Layer::Pcap, "timestamp", micros))?;
        let len = data.len() as u32;
        self.bytes.extend_from_slice(&secs.to_le_bytes());
        self.bytes.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The file's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// One packet of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture time, nanoseconds since the epoch.
    pub nanos: u64,
    /// Length on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// A parsed capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture<'a> {
    pub linktype: u32,
    pub records: Vec<Record<'a>>,
}

/// Parses a capture file.
pub fn read(buf: &[u8]) -> Result<Capture<'_>> {
    let head = buf.get(..GLOBAL_LEN).ok_or(Error::truncated(Layer::Pcap, GLOBAL_LEN, buf.len()))?;
    let word = |b: &[u8], at: usize, le: bool| -> u32 {
        let mut w = [0u8; 4];
        if let Some(s) = b.get(at..at + 4) {
            w.copy_from_slice(s);
        }
        if le { u32::from_le_bytes(w) } else { u32::from_be_bytes(w) }
    };
    let (le, nanos) = match (word(head, 0, true), word(head, 0, false)) {
        (MAGIC_US, _) => (true, false),
        (MAGIC_NS, _) => (true, true),
        (_, MAGIC_US) => (false, false),
        (_, MAGIC_NS) => (false, true),
        (m, _) => return Err(Error::unsupported(Layer::Pcap, "magic", m)),
    };
    let linktype = word(head, 20, le);
    let mut records = Vec::new();
    let mut at = GLOBAL_LEN;
    while at < buf.len() {
        let rec = buf.get(at..at + RECORD_LEN).ok_or(Error::truncated(Layer::Pcap, at + RECORD_LEN, buf.len()))?;
        let secs = u64::from(word(rec, 0, le));
        let frac = u64::from(word(rec, 4, le));
        let incl = word(rec, 8, le) as usize;
        if incl > MAX_RECORD {
            return Err(Error::invalid(Layer::Pcap, "record length", incl as u64));
        }
        let start = at + RECORD_LEN;
        let data = buf.get(start..start + incl).ok_or(Error::truncated(Layer::Pcap, start + incl, buf.len()))?;
        records.push(Record {
            nanos: secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 },
            orig_len: word(rec, 12, le),
            data,
        });
        at = start + incl;
    }
    Ok(Capture { linktype, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::default();
        w.push(1_700_000_000_123_456, b"abc").unwrap();
        w.push(1_700_000_001_000_000, &[]).unwrap();
        let bytes = w.into_bytes();
        let cap = read(&bytes).unwrap();
        assert_eq!(cap.linktype, LINKTYPE_ETHERNET);
        assert_eq!(cap.records.len(), 2);
        assert_eq!(cap.records[0].data, b"abc");
        assert_eq!(cap.records[0].nanos, 1_700_000_000_123_456_000);
        assert!(read(&bytes[..bytes.len() - 1]).is_err());
        assert!(read(&[0; 24]).is_err());
    }
}

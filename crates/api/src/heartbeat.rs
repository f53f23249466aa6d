//! The liveness heartbeat: one small UDP datagram an agent sends to the
//! controller's UDP port (the number of its HTTP port) every interval.
//!
//! ```text
//!  "VCHB" | version 1 | sequence (u64, big endian) | name length (u8) | name (UTF-8)
//!  "VCHB" | version 2 | sequence (u64, big endian) | name length (u8) | name (UTF-8) | tag (32 bytes)
//! ```
//! Version 2 is authenticated: the tag is HMAC-SHA256 under the chassis'
//! heartbeat key (see `vipcast_tls::heartbeat`) of every byte before it, and
//! the sequence starts at the sender's clock in microseconds, so it keeps
//! growing across agent restarts and a controller can refuse any sequence
//! it has seen (a replay).

/// First bytes of a heartbeat.
pub const MAGIC: &[u8; 4] = b"VCHB";
/// Heartbeat format version (unauthenticated).
pub const VERSION: u8 = 1;
/// Version of the authenticated format.
pub const SIGNED_VERSION: u8 = 2;
/// Bytes of the tag of a signed heartbeat.
pub const TAG_LEN: usize = 32;

/// Why a datagram is not a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("datagram of {0} bytes is too short for a heartbeat")]
    TooShort(usize),
    #[error("not a heartbeat (bad magic)")]
    Magic,
    #[error("heartbeat version {0} is not supported (want {VERSION})")]
    Version(u8),
    #[error("heartbeat names a chassis of {0} bytes but carries fewer")]
    Truncated(usize),
    #[error("heartbeat chassis name is not UTF-8")]
    Name,
    #[error("signed heartbeat of {0} bytes: the tag is missing or the datagram too long")]
    Tag(usize),
}

/// A heartbeat as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat<'a> {
    pub chassis: &'a str,
    pub seq: u64,
    /// For version 2: the bytes the tag covers, and the tag.
    pub signed: Option<(&'a [u8], &'a [u8])>,
}

/// A version-2 heartbeat; `sign` computes the tag of the bytes before it.
pub fn encode_signed(chassis: &str, seq: u64, sign: impl FnOnce(&[u8]) -> [u8; TAG_LEN]) -> Vec<u8> {
    let mut out = encode_heartbeat(chassis, seq);
    out[4] = SIGNED_VERSION;
    let tag = sign(&out);
    out.extend_from_slice(&tag);
    out
}

/// Parses a heartbeat of either version (the tag is not checked here).
pub fn parse(b: &[u8]) -> Result<Heartbeat<'_>, HeartbeatError> {
    match b.get(4) {
        Some(&SIGNED_VERSION) if b.get(..4) == Some(MAGIC) => {
            let len = usize::from(*b.get(13).ok_or(HeartbeatError::TooShort(b.len()))?);
            let end = 14 + len;
            if b.len() != end + TAG_LEN {
                return Err(HeartbeatError::Tag(b.len()));
            }
            let (message, tag) = b.split_at(end);
            let mut v1 = [0u8; 14 + 255];
            let head = v1.get_mut(..end).ok_or(HeartbeatError::Truncated(len))?;
            head.copy_from_slice(message);
            head[4] = VERSION;
            let (_, seq) = decode_heartbeat(head)?;
            let name = std::str::from_utf8(message.get(14..).unwrap_or_default()).map_err(|_| HeartbeatError::Name)?;
            Ok(Heartbeat { chassis: name, seq, signed: Some((message, tag)) })
        }
        _ => decode_heartbeat(b).map(|(chassis, seq)| Heartbeat { chassis, seq, signed: None }),
    }
}

/// A heartbeat: magic, version, sequence (u64 BE), name length (u8), name.
pub fn encode_heartbeat(chassis: &str, seq: u64) -> Vec<u8> {
    let name = chassis.as_bytes();
    let len = name.len().min(255);
    let mut out = Vec::with_capacity(14 + len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(len as u8);
    out.extend_from_slice(name.get(..len).unwrap_or_default());
    out
}

/// Decodes a heartbeat into (chassis, sequence).
pub fn decode_heartbeat(b: &[u8]) -> Result<(&str, u64), HeartbeatError> {
    let (Some(magic), Some(&version), Some(seq), Some(&len)) = (b.get(..4), b.get(4), b.get(5..13), b.get(13)) else {
        return Err(HeartbeatError::TooShort(b.len()));
    };
    if magic != MAGIC {
        return Err(HeartbeatError::Magic);
    }
    if version != VERSION {
        return Err(HeartbeatError::Version(version));
    }
    let name = b.get(14..14 + usize::from(len)).ok_or(HeartbeatError::Truncated(usize::from(len)))?;
    let name = std::str::from_utf8(name).map_err(|_| HeartbeatError::Name)?;
    let mut s = [0u8; 8];
    s.copy_from_slice(seq);
    Ok((name, u64::from_be_bytes(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_round_trip_and_bad_ones_are_named() {
        let b = encode_heartbeat("hv-1", 42);
        assert_eq!(decode_heartbeat(&b), Ok(("hv-1", 42)));
        assert_eq!(decode_heartbeat(&b[..10]), Err(HeartbeatError::TooShort(10)));
        assert_eq!(decode_heartbeat(&b[..15]), Err(HeartbeatError::Truncated(4)));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(decode_heartbeat(&bad), Err(HeartbeatError::Magic));
        let mut bad = b.clone();
        bad[4] = 9;
        assert_eq!(decode_heartbeat(&bad), Err(HeartbeatError::Version(9)));
        let mut bad = b;
        bad[14] = 0xff;
        assert_eq!(decode_heartbeat(&bad), Err(HeartbeatError::Name));
    }

    #[test]
    fn signed_heartbeats_carry_their_tag() {
        let b = encode_signed("hv-1", 7, |m| {
            assert_eq!(m.len(), 18);
            [0xab; TAG_LEN]
        });
        let h = parse(&b).unwrap();
        assert_eq!((h.chassis, h.seq), ("hv-1", 7));
        let (message, tag) = h.signed.unwrap();
        assert_eq!((message.len(), tag), (18, &[0xab; TAG_LEN][..]));
        assert_eq!(message[4], SIGNED_VERSION);
        assert_eq!(parse(&b[..b.len() - 1]), Err(HeartbeatError::Tag(49)));
        assert_eq!(parse(&encode_heartbeat("hv-1", 7)).unwrap().signed, None);
    }
}

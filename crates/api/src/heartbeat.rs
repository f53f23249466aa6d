//! The liveness heartbeat: one small UDP datagram an agent sends to the
//! controller's UDP port (the number of its HTTP port) every interval.
//!
//! ```text
//!  "VCHB" | version (1) | sequence (u64, big endian) | name length (u8) | name (UTF-8)
//! ```

/// First bytes of a heartbeat.
pub const MAGIC: &[u8; 4] = b"VCHB";
/// Heartbeat format version.
pub const VERSION: u8 = 1;

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
}

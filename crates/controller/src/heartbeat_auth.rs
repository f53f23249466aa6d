//! Authenticated heartbeats: which datagrams may speak for a chassis.
//!
//! With a heartbeat secret (`vipcast controller --heartbeat-secret FILE`,
//! the `heartbeat.secret` of `vipcast pki init`) only signed heartbeats
//! (version 2) count: the tag must be the chassis' key's (derived from the
//! secret, `vipcast_tls::heartbeat::chassis_key`) and the sequence higher
//! than any accepted before for that chassis, so a recorded heartbeat
//! replayed later changes nothing. Agents start their sequence at their
//! clock in microseconds, so a restarted agent is not taken for a replay.
//! Without a secret every well-formed heartbeat counts (plain-HTTP labs).
//!
//! Pure: the caller hands in parsed heartbeats of chassis that exist, and
//! the state kept is one sequence number and one derived key per chassis.

use std::collections::HashMap;

use vipcast_api::heartbeat::Heartbeat;
use vipcast_tls::heartbeat::{LEN, chassis_key, verify};

/// Why a heartbeat does not count (the metric's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not signed, and signatures are required.
    Unsigned,
    /// The tag is not the chassis' key's (forged, or another chassis').
    BadTag,
    /// A sequence number already accepted, or older (a replay).
    Replayed,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::BadTag => "bad_tag",
            Refused::Replayed => "replayed",
        }
    }
}

/// The verifier.
#[derive(Debug, Default)]
pub struct HeartbeatAuth {
    secret: Option<[u8; LEN]>,
    /// Chassis -> (its key, the highest sequence accepted).
    known: HashMap<String, ([u8; LEN], u64)>,
}

impl HeartbeatAuth {
    /// `secret`: require signed heartbeats under it; `None`: take any.
    pub fn new(secret: Option<[u8; LEN]>) -> HeartbeatAuth {
        HeartbeatAuth { secret, known: HashMap::new() }
    }

    /// Whether heartbeats must be signed.
    pub fn required(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether `hb` may count as a sign of life of its chassis; if so, its
    /// sequence is remembered.
    pub fn check(&mut self, hb: &Heartbeat<'_>) -> Result<(), Refused> {
        let Some(secret) = &self.secret else { return Ok(()) };
        let Some((message, tag)) = hb.signed else { return Err(Refused::Unsigned) };
        let entry = self.known.entry(hb.chassis.to_string()).or_insert_with(|| (chassis_key(secret, hb.chassis), 0));
        if !verify(&entry.0, message, tag) {
            return Err(Refused::BadTag);
        }
        if hb.seq <= entry.1 {
            return Err(Refused::Replayed);
        }
        entry.1 = hb.seq;
        Ok(())
    }

    /// Forgets chassis that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.known.retain(|name, _| exists(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipcast_api::heartbeat::{encode_heartbeat, encode_signed, parse};

    #[test]
    fn only_fresh_heartbeats_signed_with_the_chassis_key_count() {
        let secret = [7u8; LEN];
        let mut auth = HeartbeatAuth::new(Some(secret));
        let key = chassis_key(&secret, "hv1");
        let beat = |seq| encode_signed("hv1", seq, |m| vipcast_tls::heartbeat::sign(&key, m));
        let first = beat(1000);
        assert_eq!(auth.check(&parse(&first).unwrap()), Ok(()));
        // The same datagram again, or an older one: a replay.
        assert_eq!(auth.check(&parse(&first).unwrap()), Err(Refused::Replayed));
        assert_eq!(auth.check(&parse(&beat(999)).unwrap()), Err(Refused::Replayed));
        assert_eq!(auth.check(&parse(&beat(1001)).unwrap()), Ok(()));
        // Unsigned, or signed with another chassis' key or a made-up one.
        assert_eq!(auth.check(&parse(&encode_heartbeat("hv1", 5000)).unwrap()), Err(Refused::Unsigned));
        let hv2_key = chassis_key(&secret, "hv2");
        let forged = encode_signed("hv1", 5000, |m| vipcast_tls::heartbeat::sign(&hv2_key, m));
        assert_eq!(auth.check(&parse(&forged).unwrap()), Err(Refused::BadTag));
        let mut tampered = beat(6000);
        tampered[6] ^= 1; // the sequence
        assert_eq!(auth.check(&parse(&tampered).unwrap()), Err(Refused::BadTag));
        // A forged heartbeat did not move the sequence: the next real one counts.
        assert_eq!(auth.check(&parse(&beat(1002)).unwrap()), Ok(()));
        // Without a secret, anything well-formed counts.
        let mut open = HeartbeatAuth::new(None);
        assert_eq!(open.check(&parse(&encode_heartbeat("hv1", 1)).unwrap()), Ok(()));
        assert!(!open.required());
        auth.retain(|_| false);
        assert_eq!(auth.check(&parse(&beat(1)).unwrap()), Ok(()), "forgotten with its chassis");
    }
}

//! Authenticated heartbeats: which datagrams may speak for a chassis.
//!
//! With a heartbeat secret (`vipcast controller --heartbeat-secret FILE`,
//! the `heartbeat.secret` of `vipcast pki init`) only signed heartbeats
//! (version 2) count: the tag must be the chassis' key's (derived from the
//! secret, `vipcast_tls::heartbeat::chassis_key`) and the sequence higher
//! than any accepted before for that chassis, so a recorded heartbeat
//! replayed later changes nothing. The sequence is the agent's clock in
//! microseconds (or one more than the last, if the clock went back), so a
//! restarted agent is not taken for a replay, and one more than
//! [`FRESH_US`] away from the controller's clock is refused as stale: a
//! heartbeat recorded earlier cannot be replayed to a restarted controller
//! (which remembers no sequence) or to another one.
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
    /// Its sequence (the agent's clock) is more than [`FRESH_US`] from the
    /// controller's clock.
    Stale,
}

/// How far a signed heartbeat's sequence (µs) may be from the controller's
/// clock: clocks a few seconds apart still work; a recording is useless
/// after this long.
pub const FRESH_US: u64 = 10_000_000;

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::BadTag => "bad_tag",
            Refused::Replayed => "replayed",
            Refused::Stale => "stale",
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

    /// Whether `hb` may count as a sign of life of its chassis at `now_us`
    /// (the controller's clock, µs since the Unix epoch); if so, its
    /// sequence is remembered.
    pub fn check(&mut self, hb: &Heartbeat<'_>, now_us: u64) -> Result<(), Refused> {
        let Some(secret) = &self.secret else { return Ok(()) };
        let Some((message, tag)) = hb.signed else { return Err(Refused::Unsigned) };
        let entry = self.known.entry(hb.chassis.to_string()).or_insert_with(|| (chassis_key(secret, hb.chassis), 0));
        if !verify(&entry.0, message, tag) {
            return Err(Refused::BadTag);
        }
        if hb.seq <= entry.1 {
            return Err(Refused::Replayed);
        }
        if hb.seq.abs_diff(now_us) > FRESH_US {
            return Err(Refused::Stale);
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

    const NOW: u64 = 1_000_000_000;

    #[test]
    fn only_fresh_heartbeats_signed_with_the_chassis_key_count() {
        let secret = [7u8; LEN];
        let mut auth = HeartbeatAuth::new(Some(secret));
        let key = chassis_key(&secret, "hv1");
        let beat = |seq| encode_signed("hv1", seq, |m| vipcast_tls::heartbeat::sign(&key, m));
        let first = beat(NOW);
        assert_eq!(auth.check(&parse(&first).unwrap(), NOW), Ok(()));
        // The same datagram again, or an older one: a replay.
        assert_eq!(auth.check(&parse(&first).unwrap(), NOW), Err(Refused::Replayed));
        assert_eq!(auth.check(&parse(&beat(NOW - 1)).unwrap(), NOW), Err(Refused::Replayed));
        assert_eq!(auth.check(&parse(&beat(NOW + 1)).unwrap(), NOW), Ok(()));
        // Unsigned, or signed with another chassis' key or a made-up one.
        assert_eq!(auth.check(&parse(&encode_heartbeat("hv1", 5000)).unwrap(), NOW), Err(Refused::Unsigned));
        let hv2_key = chassis_key(&secret, "hv2");
        let forged = encode_signed("hv1", NOW + 5, |m| vipcast_tls::heartbeat::sign(&hv2_key, m));
        assert_eq!(auth.check(&parse(&forged).unwrap(), NOW), Err(Refused::BadTag));
        let mut tampered = beat(NOW + 6);
        tampered[6] ^= 1; // the sequence
        assert_eq!(auth.check(&parse(&tampered).unwrap(), NOW), Err(Refused::BadTag));
        // A forged heartbeat did not move the sequence: the next real one counts.
        assert_eq!(auth.check(&parse(&beat(NOW + 2)).unwrap(), NOW), Ok(()));
        // Without a secret, anything well-formed counts.
        let mut open = HeartbeatAuth::new(None);
        assert_eq!(open.check(&parse(&encode_heartbeat("hv1", 1)).unwrap(), NOW), Ok(()));
        assert!(!open.required());
        auth.retain(|_| false);
        assert_eq!(auth.check(&parse(&beat(NOW - 5)).unwrap(), NOW), Ok(()), "forgotten with its chassis");
        // Signed and never seen, but from a recording more than FRESH_US old
        // (or a clock that far ahead): stale, whoever replays it.
        let mut restarted = HeartbeatAuth::new(Some(secret));
        let old = NOW - FRESH_US - 1;
        assert_eq!(restarted.check(&parse(&beat(old)).unwrap(), NOW), Err(Refused::Stale));
        assert_eq!(restarted.check(&parse(&beat(NOW + FRESH_US + 1)).unwrap(), NOW), Err(Refused::Stale));
        assert_eq!(restarted.check(&parse(&beat(NOW - FRESH_US)).unwrap(), NOW), Ok(()));
    }
}

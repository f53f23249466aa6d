//! Failover while the controller is away: provisional owners.
//!
//! A VIP's owner is the controller's to decide, but a failover must not
//! wait for a controller that is down. When an agent sees a member announce
//! a VIP (gratuitous ARP / unsolicited NA on a local port) and cannot reach
//! the controller, it decides the claim itself with the controller's own
//! rules ([`vipcast_model::claim::arbitrate`]: membership, clock, repeats,
//! staleness, damping), programs the result in its own data plane at once,
//! and tells the agents of the VIP's other chassis directly, in a
//! [`Notice`] signed with its certificate ([`vipcast_tls::sign`]). Each of
//! them checks the signature (the signer must be the claiming chassis),
//! decides the same claim by the same rules on its own copy of the state,
//! programs it and re-announces the VIP into its local ports (under ARP
//! suppression the member's announcement never crossed the overlay).
//!
//! The controller's verdict wins: a provisional owner holds only while the
//! controller's generation of the VIP is still the one it was decided
//! against (any newer revision of the VIP drops it). The claiming agent
//! keeps claiming (and re-sending its notice) every [`RETRY`] until the
//! controller answers; the others drop a provisional owner not refreshed
//! for [`TTL`], so one the controller refused, or whose claimant died,
//! reverts to the controller's.
//!
//! ```text
//!  0      4   5    6     8         16        24     32            40    46
//!  "VCPN" ver kind 0 0  seq u64  sent_ms   base   observed_at    mac   len vip
//!  len chassis | cert_len u16, cert (DER) | sig_len u16, sig (ECDSA P-256)
//! ```
//! The signature covers everything before `cert_len`; without certificates
//! (a controller on plain HTTP) both lengths are 0.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vipcast_model::claim::{self, Claim, Damping, Outcome};
use vipcast_model::{ClaimSource, State, Vip};
use vipcast_packet::MacAddr;

/// How often an unanswered provisional claim is claimed (and told) again.
pub const RETRY: Duration = Duration::from_millis(500);

/// A provisional owner told by another chassis lasts this long without a
/// refresh.
pub const TTL: Duration = Duration::from_secs(3);

/// The magic of a notice (echo datagrams start with `VCPL`).
pub const MAGIC: &[u8; 4] = b"VCPN";
const VERSION: u8 = 1;
const KIND_CLAIM: u8 = 1;
const FIXED: usize = 46;
/// Longest datagram accepted.
pub const MAX_LEN: usize = 4096;

/// A claim decided without the controller, as one chassis tells another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Increases with every notice of the sender (replays are refused).
    pub seq: u64,
    /// The sender's clock (ms since the Unix epoch).
    pub sent_ms: u64,
    pub vip: String,
    /// The controller's generation of the VIP the claim was decided against.
    pub base: u64,
    pub claim: Claim,
}

/// The parts of a received notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The signed bytes.
    pub body: &'a [u8],
    pub cert: &'a [u8],
    pub sig: &'a [u8],
}

impl Notice {
    /// The bytes the signature covers.
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + 2 + self.vip.len() + self.claim.chassis.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&[VERSION, KIND_CLAIM, 0, 0]);
        for v in [self.seq, self.sent_ms, self.base, self.claim.observed_at] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.claim.mac.0);
        for s in [&self.vip, &self.claim.chassis] {
            b.push(s.len().min(255) as u8);
            b.extend_from_slice(s.as_bytes().get(..s.len().min(255)).unwrap_or_default());
        }
        b
    }

    /// The datagram: the body, the certificate and the signature.
    pub fn encode(&self, cert: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut b = self.body();
        for part in [cert, sig] {
            b.extend_from_slice(&(part.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
            b.extend_from_slice(part);
        }
        b
    }

    /// Parses a datagram; never panics.
    pub fn decode(b: &[u8]) -> Result<(Notice, Signed<'_>), String> {
        if b.len() > MAX_LEN {
            return Err(format!("{} bytes, over {MAX_LEN}", b.len()));
        }
        let fixed = b.get(..FIXED).ok_or("truncated header")?;
        if fixed.get(..4) != Some(MAGIC.as_slice()) {
            return Err("not a notice".into());
        }
        if fixed.get(4..6) != Some([VERSION, KIND_CLAIM].as_slice()) {
            return Err("unknown version or kind".into());
        }
        let u64_at = |i: usize| -> u64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(fixed.get(i..i + 8).unwrap_or(&[0; 8]));
            u64::from_be_bytes(a)
        };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(fixed.get(40..46).unwrap_or(&[0; 6]));
        let mut at = FIXED;
        let mut text = |what: &str| -> Result<String, String> {
            let n = usize::from(*b.get(at).ok_or_else(|| format!("truncated {what}"))?);
            let s = b.get(at + 1..at + 1 + n).ok_or_else(|| format!("truncated {what}"))?;
            at += 1 + n;
            let s = std::str::from_utf8(s).map_err(|_| format!("{what} is not UTF-8"))?;
            if !vipcast_api::identity::valid_name(s) {
                return Err(format!("{what} {s:?} is not a valid name"));
            }
            Ok(s.to_string())
        };
        let vip = text("VIP name")?;
        let chassis = text("chassis name")?;
        let body_end = at;
        let mut part = |what: &str| -> Result<&[u8], String> {
            let len = b.get(at..at + 2).ok_or_else(|| format!("truncated {what} length"))?;
            let n =
                usize::from(u16::from_be_bytes([len.first().copied().unwrap_or(0), len.get(1).copied().unwrap_or(0)]));
            let p = b.get(at + 2..at + 2 + n).ok_or_else(|| format!("truncated {what}"))?;
            at += 2 + n;
            Ok(p)
        };
        let cert = part("certificate")?;
        let sig = part("signature")?;
        if at != b.len() {
            return Err("trailing bytes".into());
        }
        let notice = Notice {
            seq: u64_at(8),
            sent_ms: u64_at(16),
            vip,
            base: u64_at(24),
            claim: Claim { mac: MacAddr(mac), chassis, source: ClaimSource::Agent, observed_at: u64_at(32) },
        };
        Ok((notice, Signed { body: b.get(..body_end).unwrap_or_default(), cert, sig }))
    }
}

/// One provisional owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The VIP as the claim made it (owner, generation `base + 1`).
    pub vip: Vip,
    /// The controller's generation it was decided against.
    pub base: u64,
    pub claim: Claim,
    /// Claimed by this chassis (and not yet answered): claimed and told
    /// again at `next`.
    pub own: bool,
    pub next: Instant,
    /// Dropped then, unless refreshed (told by another chassis, or answered).
    pub until: Option<Instant>,
}

/// What a proposal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposed {
    /// A new provisional owner (or another one than before).
    Moved,
    /// The same one again: only its lease was renewed.
    Refreshed,
    /// Nothing: the rules refused it, or it is the owner already.
    Refused,
}

/// The provisional owners, by VIP.
#[derive(Debug, Default)]
pub struct Table {
    by_vip: HashMap<String, Entry>,
    /// Highest notice sequence accepted per sending chassis.
    seq: HashMap<String, u64>,
}

/// The controller's generation of `vip` in `state` (0: no owner).
fn generation(state: &State, vip: &str) -> Option<u64> {
    state.vips.get(vip).map(|v| v.owner.as_ref().map_or(0, |o| o.generation))
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.by_vip.is_empty()
    }

    pub fn get(&self, vip: &str) -> Option<&Entry> {
        self.by_vip.get(vip)
    }

    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.by_vip.values()
    }

    /// Decides `claim` on `vip` against `state` (the controller's, as last
    /// received) by the controller's rules at `now_ms`; a claim that moves
    /// the VIP becomes its provisional owner. `own`: claimed by this
    /// chassis (kept until answered), else told (kept for [`TTL`]).
    pub fn propose(
        &mut self,
        state: &State,
        vip: &str,
        claim: &Claim,
        now_ms: u64,
        own: bool,
        now: Instant,
    ) -> Proposed {
        let Some(base) = generation(state, vip) else { return Proposed::Refused };
        let Ok(Outcome::Moved { vip: moved, .. }) = claim::arbitrate(state, vip, claim, now_ms, &Damping::default())
        else {
            return Proposed::Refused;
        };
        let until = (!own).then_some(now + TTL);
        match self.by_vip.get_mut(vip) {
            // A later announcement is already the provisional owner (rule 4,
            // staleness, against the provisional owner too).
            Some(e) if e.base == base && e.claim.observed_at > claim.observed_at && !owner_eq(&e.vip, &moved) => {
                Proposed::Refused
            }
            Some(e) if e.base == base && owner_eq(&e.vip, &moved) => {
                if !e.own {
                    e.until = until.max(e.until);
                }
                Proposed::Refreshed
            }
            _ => {
                let e = Entry { vip: *moved, base, claim: claim.clone(), own, next: now + RETRY, until };
                self.by_vip.insert(vip.to_string(), e);
                Proposed::Moved
            }
        }
    }

    /// Accepts notice sequence `seq` from `chassis` if it is newer than
    /// the last accepted (replays and reordering refused).
    pub fn fresh(&mut self, chassis: &str, seq: u64) -> bool {
        let last = self.seq.get(chassis).copied().unwrap_or(0);
        if seq <= last {
            return false;
        }
        self.seq.insert(chassis.to_string(), seq);
        true
    }

    /// Forgets the sequences of chassis `known` no longer names.
    pub fn retain_senders(&mut self, known: &dyn Fn(&str) -> bool) {
        self.seq.retain(|c, _| known(c));
    }

    /// The controller's state changed: provisional owners whose VIP it has
    /// moved on from (or deleted) are dropped. Returns whether any was.
    pub fn on_state(&mut self, state: &State) -> bool {
        let before = self.by_vip.len();
        self.by_vip.retain(|name, e| generation(state, name) == Some(e.base));
        self.by_vip.len() != before
    }

    /// The controller answered the claim of `vip` at `mac`: `confirmed`
    /// when it now owns it so (the revision saying it follows; kept until
    /// then, [`TTL`] at most), else dropped. Returns whether one was.
    pub fn answered(&mut self, vip: &str, mac: MacAddr, confirmed: bool, now: Instant) -> bool {
        let Some(e) = self.by_vip.get_mut(vip) else { return false };
        if !e.own || e.claim.mac != mac {
            return false;
        }
        if confirmed {
            e.own = false;
            e.until = Some(now + TTL);
            false
        } else {
            self.by_vip.remove(vip);
            true
        }
    }

    /// Drops what has expired by `now`; returns whether any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.by_vip.len();
        self.by_vip.retain(|_, e| e.until.is_none_or(|u| u > now));
        self.by_vip.len() != before
    }

    /// Own claims due to be claimed and told again at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<(String, Claim, u64)> {
        let mut out = Vec::new();
        for (name, e) in &mut self.by_vip {
            if e.own && e.next <= now {
                e.next = now + RETRY;
                out.push((name.clone(), e.claim.clone(), e.base));
            }
        }
        out
    }

    /// `state` with the provisional owners in place of the controller's,
    /// or `None` if there are none.
    pub fn apply(&self, state: &State) -> Option<State> {
        if self.by_vip.is_empty() {
            return None;
        }
        let mut s = state.clone();
        for (name, e) in &self.by_vip {
            if generation(state, name) == Some(e.base) {
                s.put(vipcast_model::Object::Vip(e.vip.clone()));
            }
        }
        Some(s)
    }
}

fn owner_eq(a: &Vip, b: &Vip) -> bool {
    match (&a.owner, &b.owner) {
        (Some(x), Some(y)) => x.mac == y.mac && x.chassis == y.chassis && x.port == y.port,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            seq: 7,
            sent_ms: 1_000,
            vip: "pay-vip".into(),
            base: 3,
            claim: Claim {
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                chassis: "hv2".into(),
                source: ClaimSource::Agent,
                observed_at: 990,
            },
        }
    }

    #[test]
    fn notices_round_trip_and_damaged_ones_are_refused() {
        let n = notice();
        let b = n.encode(b"CERT", b"SIG");
        let (back, signed) = Notice::decode(&b).unwrap();
        assert_eq!(back, n);
        assert_eq!(
            (signed.body, signed.cert, signed.sig),
            (n.body().as_slice(), b"CERT".as_slice(), b"SIG".as_slice())
        );
        for cut in 0..b.len() {
            assert!(Notice::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Notice::decode(&longer).is_err());
        let mut bad_name = b.clone();
        bad_name[FIXED + 1] = b'/';
        assert!(Notice::decode(&bad_name).unwrap_err().contains("not a valid name"));
        let mut echo = b.clone();
        echo[3] = b'L';
        assert!(Notice::decode(&echo).is_err());
    }

    #[test]
    fn sequences_only_go_up_per_sender() {
        let mut t = Table::default();
        assert!(t.fresh("hv2", 5));
        assert!(!t.fresh("hv2", 5));
        assert!(!t.fresh("hv2", 4));
        assert!(t.fresh("hv3", 1));
        assert!(t.fresh("hv2", 6));
        t.retain_senders(&|c| c == "hv3");
        assert!(t.fresh("hv2", 1), "a chassis forgotten starts over");
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Notice::decode(&b);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&[VERSION, KIND_CLAIM]);
            with_magic.extend_from_slice(&b);
            let _ = Notice::decode(&with_magic);
        }
    }
}

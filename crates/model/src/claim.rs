//! VIP ownership arbitration: deciding what a sniffed GARP / NA means.
//!
//! Rules:
//! * only a member port's MAC, on the chassis hosting that port, may claim —
//!   or the VRRP virtual MAC (`00:00:5e:00:01:xx`, `00:00:5e:00:02:xx`) from a
//!   chassis hosting a member; anything else is refused (ARP spoofing);
//! * a claim naming the current owner changes nothing (keepalived sends
//!   bursts of five, and several sniffers see each one);
//! * otherwise the last valid claim wins, as on a real layer-2 segment, and
//!   the owner's generation goes up by one;
//! * `Damping::moves` changes of owner within `Damping::window_ms` flag the
//!   VIP as split-brain, and the flag holds until `Damping::hold_ms` after
//!   the last such change, so flapping does not make the flag flap too.

use vipcast_packet::MacAddr;

use crate::objects::{ClaimSource, Owner, OwnershipChange, Vip};
use crate::state::{Invalid, State};

/// A report that a GARP / unsolicited NA for a VIP was seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The MAC the VIP was announced at.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "mac", example = "02:00:00:00:00:01"))]
    pub mac: MacAddr,
    /// The chassis whose port (or whose BUM stream) carried the announcement.
    pub chassis: String,
    pub source: ClaimSource,
    /// When it was seen (ms since the Unix epoch, the sniffer's clock).
    pub observed_at: u64,
}

/// Split-brain detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damping {
    /// Window over which changes of owner are counted, ms.
    pub window_ms: u64,
    /// Changes within the window that mean split-brain (3: A→B→A→B).
    pub moves: usize,
    /// How long the flag stays up after the last change, ms.
    pub hold_ms: u64,
}

impl Default for Damping {
    fn default() -> Self {
        Damping { window_ms: 5_000, moves: 3, hold_ms: 10_000 }
    }
}

/// What a claim does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The claimant already owns the VIP; nothing to write.
    Unchanged,
    /// The VIP has a new owner: store `vip` and `change` in one transaction.
    Moved { vip: Box<Vip>, change: Box<OwnershipChange> },
}

/// Decides a claim on VIP `name` at time `now_ms`.
pub fn arbitrate(state: &State, name: &str, claim: &Claim, now_ms: u64, damping: &Damping) -> Result<Outcome, Invalid> {
    let vip = state.vips.get(name).ok_or_else(|| Invalid::not_found("VIP", name))?;
    let on_chassis = |port: &&String| state.ports.get(*port).is_some_and(|p| p.chassis == claim.chassis);
    let by_mac =
        vip.spec.members.iter().filter(on_chassis).find(|m| state.ports.get(*m).is_some_and(|p| p.mac == claim.mac));
    let port = match by_mac {
        Some(p) => p,
        None if claim.mac.vrrp_vrid().is_some() => vip.spec.members.iter().find(on_chassis).ok_or_else(|| {
            Invalid::forbidden(
                "not_member",
                format!(
                    "chassis {:?} hosts no member of VIP {name:?} (claim from virtual MAC {})",
                    claim.chassis, claim.mac
                ),
            )
        })?,
        None => {
            return Err(Invalid::forbidden(
                "not_member",
                format!("MAC {} on chassis {:?} is not a member port of VIP {name:?}", claim.mac, claim.chassis),
            ));
        }
    };
    if let Some(o) = &vip.owner
        && &o.port == port
        && o.mac == claim.mac
        && o.chassis == claim.chassis
    {
        return Ok(Outcome::Unchanged);
    }
    let generation = vip.owner.as_ref().map_or(0, |o| o.generation) + 1;
    let owner = Owner { port: port.clone(), mac: claim.mac, chassis: claim.chassis.clone(), generation, since: now_ms };
    let mut next = vip.clone();
    if vip.owner.is_some() {
        next.recent_moves.retain(|&t| now_ms.saturating_sub(t) < damping.window_ms);
        next.recent_moves.push(now_ms);
        if next.recent_moves.len() >= damping.moves {
            next.split_brain_until = now_ms + damping.hold_ms;
        }
    }
    next.owner = Some(owner.clone());
    let change = OwnershipChange {
        vip: name.to_string(),
        generation,
        owner,
        previous_port: vip.owner.as_ref().map(|o| o.port.clone()),
        source: claim.source,
        observed_at: claim.observed_at,
        accepted_at: now_ms,
    };
    Ok(Outcome::Moved { vip: Box::new(next), change: Box::new(change) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InvalidKind;
    use crate::{Object, Port};

    fn state() -> State {
        crate::state::tests::sample()
    }

    fn claim(mac: &str, chassis: &str) -> Claim {
        Claim { mac: mac.parse().unwrap(), chassis: chassis.into(), source: ClaimSource::Agent, observed_at: 1 }
    }

    fn apply(s: &mut State, name: &str, c: &Claim, now: u64, d: &Damping) -> Option<OwnershipChange> {
        match arbitrate(s, name, c, now, d).unwrap() {
            Outcome::Unchanged => None,
            Outcome::Moved { vip, change } => {
                s.put(Object::Vip(*vip));
                Some(*change)
            }
        }
    }

    #[test]
    fn member_claims_move_the_vip_and_repeat_is_idempotent() {
        let mut s = state();
        let d = Damping::default();
        let c = apply(&mut s, "pay-vip", &claim("02:00:00:00:00:01", "hv1"), 1000, &d).unwrap();
        assert_eq!((c.generation, c.owner.port.as_str(), c.previous_port), (1, "pay1", None));
        assert_eq!(arbitrate(&s, "pay-vip", &claim("02:00:00:00:00:01", "hv1"), 1001, &d).unwrap(), Outcome::Unchanged);
        let c = apply(&mut s, "pay-vip", &claim("02:00:00:00:00:02", "hv2"), 2000, &d).unwrap();
        assert_eq!((c.generation, c.owner.port.as_str(), c.previous_port.as_deref()), (2, "pay2", Some("pay1")));
        assert!(!s.vips["pay-vip"].split_brain(2000));
    }

    #[test]
    fn spoofing_is_refused() {
        let s = state();
        let d = Damping::default();
        for c in [
            claim("02:00:00:00:00:03", "hv3"), // a port, but not a member
            claim("02:00:00:00:00:01", "hv2"), // a member's MAC from the wrong chassis
            claim("02:99:00:00:00:01", "hv1"), // unknown MAC
            claim("00:00:5e:00:01:33", "hv3"), // virtual MAC from a chassis without members
        ] {
            let e = arbitrate(&s, "pay-vip", &c, 5, &d).unwrap_err();
            assert_eq!((e.kind, e.code), (InvalidKind::Forbidden, "not_member"), "{c:?}");
        }
        assert_eq!(
            arbitrate(&s, "nope", &claim("02:00:00:00:00:01", "hv1"), 5, &d).unwrap_err().kind,
            InvalidKind::NotFound
        );
    }

    #[test]
    fn virtual_mac_from_a_member_chassis() {
        let mut s = state();
        let c = apply(&mut s, "pay-vip", &claim("00:00:5e:00:01:33", "hv2"), 7, &Damping::default()).unwrap();
        assert_eq!((c.owner.port.as_str(), c.owner.mac.to_string().as_str()), ("pay2", "00:00:5e:00:01:33"));
    }

    #[test]
    fn alternation_flags_split_brain_with_hold() {
        let mut s = state();
        let d = Damping { window_ms: 5000, moves: 3, hold_ms: 10_000 };
        let a = claim("02:00:00:00:00:01", "hv1");
        let b = claim("02:00:00:00:00:02", "hv2");
        let mut t = 0;
        for c in [&a, &b, &a, &b] {
            t += 100;
            apply(&mut s, "pay-vip", c, t, &d);
        }
        let v = &s.vips["pay-vip"];
        assert_eq!(v.owner.as_ref().unwrap().generation, 4);
        assert!(v.split_brain(t) && v.split_brain(t + 9_999) && !v.split_brain(t + 10_000));
    }

    #[test]
    fn slow_alternation_is_not_split_brain() {
        let mut s = state();
        let d = Damping::default();
        let mut t = 0;
        for c in
            [claim("02:00:00:00:00:01", "hv1"), claim("02:00:00:00:00:02", "hv2"), claim("02:00:00:00:00:01", "hv1")]
        {
            t += 4_000;
            apply(&mut s, "pay-vip", &c, t, &d);
        }
        assert!(!s.vips["pay-vip"].split_brain(t));
        // A port that is a member and moved chassis: its new chassis is what counts.
        let mut p: Port = s.ports["pay1"].clone();
        p.chassis = "hv3".into();
        s.put(Object::Port(p));
        assert!(arbitrate(&s, "pay-vip", &claim("02:00:00:00:00:01", "hv3"), t + 1, &d).is_ok());
    }
}

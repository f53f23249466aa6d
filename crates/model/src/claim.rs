//! VIP ownership arbitration: deciding what a sniffed GARP / NA means.
//!
//! [`decide`] applies these rules in order:
//! 1. **Membership**: only a member port's MAC, on the chassis hosting that
//!    port, may claim — or the VRRP virtual MAC (`00:00:5e:00:01:xx`,
//!    `00:00:5e:00:02:xx`) from a chassis hosting a member; anything else is
//!    refused (`not_member`: ARP spoofing).
//! 2. **Clock skew**: a claim's `observed_at` (the sniffer's clock) must be
//!    within [`CLOCK_SKEW_MS`] (±30 s) of the controller's; otherwise it is
//!    refused (`clock_skew`). Sniffers' clocks are assumed synchronised
//!    (NTP); one that is off by more than the window has its claims refused
//!    until it is fixed.
//! 3. **Repeats**: a claim naming the current owner changes nothing
//!    (keepalived sends bursts of five, and several sniffers see each one).
//! 4. **Staleness**: a claim observed before the claim that made the
//!    current owner is refused (`stale_claim`): on a layer-2 segment the
//!    later announcement is the one caches hold, whatever order the claims
//!    arrive in (a retried or queued claim must not undo a newer failover).
//! 5. **Flap damping** ([`Hold`]): a VIP on hold keeps its owner; a claim
//!    that would move it is answered [`Decision::Damped`] and writes
//!    nothing — unless the owner has a certain fault ([`Fault`]), which
//!    ends the hold and lets the claim through.
//! 6. Otherwise the claim wins, as on a real layer-2 segment: the owner's
//!    generation goes up by one and a history record is written; history
//!    beyond the [`HISTORY_KEEP`] latest records is deleted in the same
//!    transaction.
//!
//! A change of owner is a *move*; the first claim of a VIP without owner is
//! not. Split brain: [`Damping::moves`] moves within [`Damping::window_ms`]
//! flag the VIP (`split_brain` in the API, the
//! `vipcast_controller_vip_split_brain` gauge), and the flag holds until
//! [`Damping::hold_ms`] after the last such move, so flapping does not make
//! the flag flap too. The VIP keeps the times of its last `moves` moves.
//!
//! Flap damping, with [`Hold::DEFAULT`]: moves are counted in windows of
//! 10 s (a window opens with the first move after the previous one closed,
//! or after a hold). The 30th move in a window puts the VIP on hold for
//! 30 s on the owner that move gave it; each further hold is twice as long
//! as the one before (at most 10 min) until the VIP has gone as long as its
//! last hold without being put on hold again. So a VIP flapping without end
//! moves at most 30 times per hold: 30 moves then 30 s held, 30 then 60 s,
//! … then 30 per 10 min. Normal failovers are far below it: the fastest
//! drill (fail over, undo the fault, the preferred master preempts back)
//! moves a VIP about twice a second, some 20 moves per window.
//!
//! The certain faults the controller sees ([`certain_fault`]): the owner's
//! chassis declared dead from its heartbeats (`liveness.alive = false`),
//! and an assisted handover recorded (`POST /v1/vrrp/{vpc}/{id}/assists`:
//! the agent saw the master's port lose carrier, or its chassis die) for a
//! VRRP router that advertises the VIP, whose master is the owner's port,
//! at or after the owner took the VIP. A frozen VM, a VRRP split brain or a
//! partition are not certain: a VIP on hold waits for the hold to end.
//!
//! What is kept between claims has a fixed size whatever the flapping: the
//! VIP (owner, the last `moves` move times, the split-brain flag) and its
//! [`Arbitration`] record (counters, the accepted claim's `observed_at`,
//! which history generations exist), which is never sent to agents.

use vipcast_packet::MacAddr;

use crate::objects::{Arbitration, AssistFault, ClaimSource, HistorySpan, Owner, OwnershipChange, Vip};
use crate::state::{Invalid, InvalidKind, ObjectKey, State};

/// How far a claim's `observed_at` may be from the controller's clock, either way (ms).
pub const CLOCK_SKEW_MS: u64 = 30_000;

/// History records kept per VIP (the latest ones). A VIP's deletion removes
/// them in its transaction, which etcd limits to 128 operations by default.
pub const HISTORY_KEEP: u64 = 100;

/// History records older than this (ms, 30 days) are deleted after the
/// VIP's next move (see [`crate::command::Command::ExpireHistory`]); the
/// latest record is always kept.
pub const HISTORY_MAX_AGE_MS: u64 = 30 * 24 * 3_600_000;

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
    /// When it was seen (ms since the Unix epoch, the sniffer's clock):
    /// within 30 s of the controller's clock, and not before the claim that
    /// made the current owner.
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

/// The flap damping policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Length of a counting window, ms.
    pub window_ms: u64,
    /// The move of a window that puts the VIP on hold.
    pub after_moves: u32,
    /// The first hold of a streak, ms; each next one is twice as long.
    pub first_ms: u64,
    /// The longest hold, ms.
    pub max_ms: u64,
}

impl Hold {
    /// 30 moves in a 10 s window; holds of 30 s, doubling up to 10 min.
    pub const DEFAULT: Hold = Hold { window_ms: 10_000, after_moves: 30, first_ms: 30_000, max_ms: 600_000 };

    /// How long hold number `n` of a streak lasts (0: the first), ms.
    pub fn length(&self, n: u32) -> u64 {
        let factor = 1u64.checked_shl(n).unwrap_or(u64::MAX);
        self.first_ms.saturating_mul(factor).min(self.max_ms)
    }
}

impl Default for Hold {
    fn default() -> Self {
        Hold::DEFAULT
    }
}

/// A fault of a VIP's owner the controller is certain of: it ends a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The owner's chassis was declared dead (it missed its heartbeats).
    ChassisDead,
    /// An assisted handover was recorded for VRRP router `router`, whose
    /// master was the owner's port.
    Assisted { router: String, fault: AssistFault },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::ChassisDead => f.write_str("the owner's chassis was declared dead"),
            Fault::Assisted { router, fault } => {
                write!(f, "assisted handover ({}) recorded for VRRP router {router}", fault.as_str())
            }
        }
    }
}

/// What a claim does, in full (see [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The claimant already owns the VIP; nothing to write.
    Unchanged,
    /// The VIP is on hold: it stays with `owner`; nothing to write.
    Damped { owner: Owner, held_until: u64 },
    /// The VIP has a new owner.
    Moved(Box<Move>),
}

/// A change of owner: what to write, and what it did to damping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The VIP with its new owner.
    pub vip: Vip,
    /// Its history record.
    pub change: OwnershipChange,
    /// Its arbitration record; `None` for the first owner of a VIP stored
    /// before these records existed (it gets one at its first move).
    pub arbitration: Option<Arbitration>,
    /// History records the retention drops with this move.
    pub expired: Vec<ObjectKey>,
    /// This move raised the split-brain flag.
    pub split_brain: bool,
    /// This move put the VIP on hold, until then (ms).
    pub held_until: Option<u64>,
    /// The hold this move ended, and why.
    pub released: Option<Fault>,
}

/// What a claim does, as far as the VIP and its history go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to write: the claimant already owns the VIP, or it is on hold.
    Unchanged,
    /// The VIP has a new owner: store `vip` and `change` in one transaction
    /// ([`decide`] says what else goes with them).
    Moved { vip: Box<Vip>, change: Box<OwnershipChange> },
}

/// Decides a claim on VIP `name` at time `now_ms` with the default hold
/// policy, as far as the VIP and its history go ([`decide`] says all).
pub fn arbitrate(state: &State, name: &str, claim: &Claim, now_ms: u64, damping: &Damping) -> Result<Outcome, Invalid> {
    Ok(match decide(state, name, claim, now_ms, damping, &Hold::DEFAULT)? {
        Decision::Unchanged | Decision::Damped { .. } => Outcome::Unchanged,
        Decision::Moved(m) => Outcome::Moved { vip: Box::new(m.vip), change: Box::new(m.change) },
    })
}

/// The port of VIP `vip` that `claim` speaks for, if it may claim at all.
fn member<'a>(state: &State, vip: &'a Vip, claim: &Claim) -> Result<&'a String, Invalid> {
    let name = &vip.spec.name;
    let on_chassis = |port: &&String| state.ports.get(*port).is_some_and(|p| p.chassis == claim.chassis);
    let by_mac =
        vip.spec.members.iter().filter(on_chassis).find(|m| state.ports.get(*m).is_some_and(|p| p.mac == claim.mac));
    match by_mac {
        Some(p) => Ok(p),
        None if claim.mac.vrrp_vrid().is_some() => vip.spec.members.iter().find(on_chassis).ok_or_else(|| {
            Invalid::forbidden(
                "not_member",
                format!(
                    "chassis {:?} hosts no member of VIP {name:?} (claim from virtual MAC {})",
                    claim.chassis, claim.mac
                ),
            )
        }),
        None => Err(Invalid::forbidden(
            "not_member",
            format!("MAC {} on chassis {:?} is not a member port of VIP {name:?}", claim.mac, claim.chassis),
        )),
    }
}

/// Refuses an `observed_at` more than [`CLOCK_SKEW_MS`] from `now_ms`.
fn check_clock(observed_at: u64, now_ms: u64) -> Result<(), Invalid> {
    let (off, way) =
        if observed_at <= now_ms { (now_ms - observed_at, "before") } else { (observed_at - now_ms, "after") };
    if off > CLOCK_SKEW_MS {
        return Err(Invalid::bad(
            "clock_skew",
            "observed_at",
            format!(
                "observed_at {observed_at} is {off} ms {way} the controller's clock ({now_ms}); at most {CLOCK_SKEW_MS} ms either way is accepted"
            ),
        ));
    }
    Ok(())
}

/// A certain fault of `owner` of `vip` (see the module docs), if any.
pub fn certain_fault(state: &State, vip: &Vip, owner: &Owner) -> Option<Fault> {
    if state.chassis.get(&owner.chassis).is_some_and(|c| c.is_dead()) {
        return Some(Fault::ChassisDead);
    }
    state.routers.values().find_map(|r| {
        let a = r.last_assist.as_ref()?;
        let concerns = r.vpc == vip.spec.vpc && r.master.port == owner.port && r.addresses.contains(&vip.spec.ip);
        (concerns && a.at_ms >= owner.since).then(|| Fault::Assisted { router: r.id.clone(), fault: a.fault })
    })
}

/// Decides a claim on VIP `name` at time `now_ms` (see the module docs for
/// the rules): refused, nothing to do, damped, or a move and all it writes.
pub fn decide(
    state: &State,
    name: &str,
    claim: &Claim,
    now_ms: u64,
    damping: &Damping,
    hold: &Hold,
) -> Result<Decision, Invalid> {
    let vip = state.vips.get(name).ok_or_else(|| Invalid::not_found("VIP", name))?;
    let port = member(state, vip, claim)?;
    if !vip.eligible(port) {
        return Err(Invalid::forbidden(
            "not_eligible",
            format!("port {port:?} is marked not eligible to take VIP {name:?}"),
        ));
    }
    check_clock(claim.observed_at, now_ms)?;
    if let Some(o) = &vip.owner
        && &o.port == port
        && o.mac == claim.mac
        && o.chassis == claim.chassis
    {
        return Ok(Decision::Unchanged);
    }
    let stored = state.arbitration.get(name);
    let mut arb = stored.cloned().unwrap_or_else(|| Arbitration::new(vip));
    let mut released = None;
    if let Some(o) = &vip.owner {
        if claim.observed_at < arb.owner_observed_at {
            return Err(Invalid {
                kind: InvalidKind::Conflict,
                code: "stale_claim",
                field: Some("observed_at"),
                message: format!(
                    "observed_at {} is before the claim that made port {:?} the owner (observed at {})",
                    claim.observed_at, o.port, arb.owner_observed_at
                ),
            });
        }
        if now_ms < arb.damping.held_until {
            match certain_fault(state, vip, o) {
                Some(f) => released = Some(f),
                None => return Ok(Decision::Damped { owner: o.clone(), held_until: arb.damping.held_until }),
            }
        }
    }

    let generation = vip.owner.as_ref().map_or(0, |o| o.generation).max(arb.history.last) + 1;
    let owner = Owner { port: port.clone(), mac: claim.mac, chassis: claim.chassis.clone(), generation, since: now_ms };
    let mut next = vip.clone();
    let mut held_until = None;
    if vip.owner.is_some() {
        // Split brain: the last `moves` moves within the window.
        next.recent_moves.push(now_ms);
        let excess = next.recent_moves.len().saturating_sub(damping.moves.max(1));
        next.recent_moves.drain(..excess);
        if next.recent_moves.len() >= damping.moves
            && next.recent_moves.first().is_some_and(|&t| now_ms.saturating_sub(t) < damping.window_ms)
        {
            next.split_brain_until = now_ms + damping.hold_ms;
        }
        held_until = count_move(&mut arb, now_ms, hold, released.is_some());
    }
    next.owner = Some(owner.clone());
    arb.owner_observed_at = claim.observed_at;

    let h = &mut arb.history;
    if h.last == 0 {
        *h = HistorySpan { first: generation, last: generation, first_at: now_ms };
    } else {
        h.last = generation;
    }
    // At most two a move: a record stored before retention existed goes
    // over time rather than in one huge transaction.
    let mut expired = Vec::new();
    while h.last - h.first + 1 > HISTORY_KEEP && expired.len() < 2 {
        expired.push(ObjectKey::History(name.to_string(), h.first));
        h.first += 1;
    }

    let change = OwnershipChange {
        vip: name.to_string(),
        generation,
        owner,
        previous_port: vip.owner.as_ref().map(|o| o.port.clone()),
        source: claim.source,
        observed_at: claim.observed_at,
        accepted_at: now_ms,
        actor: None,
    };
    let split_brain = !vip.split_brain(now_ms) && next.split_brain(now_ms);
    // A VIP stored before arbitration records existed gets one at its first move.
    let arbitration = (stored.is_some() || vip.owner.is_some()).then_some(arb);
    Ok(Decision::Moved(Box::new(Move { vip: next, change, arbitration, expired, split_brain, held_until, released })))
}

/// Counts a move at `now_ms` in the damping counters (`released`: it ends
/// a hold); returns the end of the hold it begins, if it does.
fn count_move(arb: &mut Arbitration, now_ms: u64, hold: &Hold, released: bool) -> Option<u64> {
    let d = &mut arb.damping;
    if released {
        // The hold ends now; this move opens a new window.
        d.held_until = now_ms;
        d.moves_in_window = 0;
    }
    let hold_in_window = d.held_until > d.window_start;
    let closed = now_ms >= d.window_start.saturating_add(hold.window_ms);
    if d.moves_in_window == 0 || closed || hold_in_window {
        // Calm for as long as the last hold lasted: the streak is over.
        if d.holds > 0 && now_ms >= d.held_until.saturating_add(hold.length(d.holds - 1)) {
            d.holds = 0;
        }
        d.window_start = now_ms;
        d.moves_in_window = 0;
    }
    d.moves_in_window += 1;
    if d.moves_in_window < hold.after_moves {
        return None;
    }
    d.held_until = now_ms.saturating_add(hold.length(d.holds));
    d.holds += 1;
    Some(d.held_until)
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

    // ---- time, staleness, damping and retention ----

    /// The sample state as the controller makes it: the VIP with its arbitration record.
    fn fresh() -> State {
        let mut s = state();
        let a = Arbitration::new(&s.vips["pay-vip"]);
        s.put(Object::Arbitration(a));
        s
    }

    fn member(m: u8) -> Claim {
        claim(&format!("02:00:00:00:00:0{m}"), &format!("hv{m}"))
    }

    fn at(mut c: Claim, observed_at: u64) -> Claim {
        c.observed_at = observed_at;
        c
    }

    /// Decides and applies what it writes, as the store would.
    fn step(s: &mut State, c: &Claim, now: u64, hold: &Hold) -> Result<Decision, Invalid> {
        let d = decide(s, "pay-vip", c, now, &Damping::default(), hold)?;
        let a = d.applied();
        for obj in a.puts {
            s.put(obj);
        }
        for k in &a.deletes {
            s.delete(k);
        }
        Ok(d)
    }

    /// Alternating claims observed as they are decided, `gap_ms` apart from
    /// `t0`; returns (moves, damped), counting the first owner as no move.
    fn alternate(s: &mut State, t0: u64, n: u64, gap_ms: u64, hold: &Hold) -> (u64, u64) {
        let (mut moves, mut damped) = (0, 0);
        for i in 0..n {
            let now = t0 + i * gap_ms;
            match step(s, &at(member((i % 2 + 1) as u8), now), now, hold).unwrap() {
                Decision::Moved(m) if m.change.previous_port.is_some() => moves += 1,
                Decision::Damped { .. } => damped += 1,
                _ => {}
            }
        }
        (moves, damped)
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn claims_outside_the_clock_window_are_refused() {
        let s = fresh();
        let d = Damping::default();
        let hour = 3_600_000;
        for observed in [0, 1, NOW - hour, NOW - CLOCK_SKEW_MS - 1, NOW + CLOCK_SKEW_MS + 1, NOW + 10 * 365 * 24 * hour]
        {
            let e = decide(&s, "pay-vip", &at(member(1), observed), NOW, &d, &Hold::DEFAULT).unwrap_err();
            assert_eq!(
                (e.kind, e.code, e.field),
                (InvalidKind::BadRequest, "clock_skew", Some("observed_at")),
                "{observed}"
            );
        }
        for observed in [NOW - CLOCK_SKEW_MS, NOW, NOW + CLOCK_SKEW_MS] {
            assert!(decide(&s, "pay-vip", &at(member(1), observed), NOW, &d, &Hold::DEFAULT).is_ok(), "{observed}");
        }
        // Spoofing is refused first, whatever the time.
        let e = decide(&s, "pay-vip", &at(claim("02:00:00:00:00:03", "hv3"), 0), NOW, &d, &Hold::DEFAULT).unwrap_err();
        assert_eq!(e.code, "not_member");
    }

    #[test]
    fn a_claim_observed_before_the_owners_is_stale() {
        let mut s = fresh();
        let h = Hold::DEFAULT;
        step(&mut s, &at(member(1), NOW - 20), NOW, &h).unwrap();
        // hv2 saw the VIP at NOW - 10 (after hv1's announcement): it moves.
        assert!(matches!(step(&mut s, &at(member(2), NOW - 10), NOW + 1, &h).unwrap(), Decision::Moved(_)));
        // hv1's claim observed in between, arriving late (a retry, a queue): stale.
        let before = s.clone();
        let e = step(&mut s, &at(member(1), NOW - 15), NOW + 2, &h).unwrap_err();
        assert_eq!((e.kind, e.code, e.field), (InvalidKind::Conflict, "stale_claim", Some("observed_at")));
        assert_eq!(s, before);
        // The same instant is not before; neither is the owner's own repeat.
        assert_eq!(step(&mut s, &at(member(2), NOW - 30), NOW + 3, &h).unwrap(), Decision::Unchanged);
        assert!(matches!(step(&mut s, &at(member(1), NOW - 10), NOW + 4, &h).unwrap(), Decision::Moved(_)));
        assert_eq!(s.arbitration["pay-vip"].owner_observed_at, NOW - 10);
    }

    #[test]
    fn flapping_is_held_for_growing_holds_then_forgiven() {
        let mut s = fresh();
        let h = Hold::DEFAULT;
        let k = u64::from(h.after_moves);
        // 1,000 flaps in 1 s: the first claim gives an owner, then k moves, then the hold.
        let (moves, damped) = alternate(&mut s, NOW, 1_000, 1, &h);
        assert_eq!(moves, k);
        assert_eq!(damped, (1_000 - 1 - k) / 2 + 1, "every claim but the owner's is damped");
        let a = s.arbitration["pay-vip"].clone();
        let began = NOW + k; // the k-th move, at claim k
        assert_eq!((a.damping.held_until, a.damping.holds, a.damping.moves_in_window), (began + h.first_ms, 1, 30));
        assert!(s.vips["pay-vip"].split_brain(NOW + 999));
        // Damped: the owner stays the one the k-th move gave it.
        let owner = s.vips["pay-vip"].owner.clone().unwrap();
        assert_eq!(owner.generation, k + 1);
        let d = decide(&s, "pay-vip", &at(member(1), began + 5), began + 5, &Damping::default(), &h);
        let d2 = decide(&s, "pay-vip", &at(member(2), began + 5), began + 5, &Damping::default(), &h);
        assert!(
            [&d, &d2]
                .iter()
                .any(|d| matches!(d, Ok(Decision::Damped { held_until, .. }) if *held_until == began + h.first_ms))
        );
        // It goes on flapping after the hold: k more moves, then twice as long.
        let t1 = began + h.first_ms;
        assert_eq!(alternate(&mut s, t1, 200, 1, &h).0, k);
        let a = s.arbitration["pay-vip"].damping;
        assert_eq!((a.held_until - (t1 + k), a.holds), (2 * h.first_ms, 2), "{a:?}");
        // Holds double up to the longest.
        let mut t = a.held_until;
        for _ in 0..8 {
            alternate(&mut s, t, 100, 1, &h);
            t = s.arbitration["pay-vip"].damping.held_until;
        }
        let a = s.arbitration["pay-vip"].damping;
        assert_eq!(h.length(a.holds - 1), h.max_ms);
        // Calm as long as the last hold: forgiven, the next hold is the first again.
        let calm = a.held_until + h.max_ms;
        alternate(&mut s, calm, 100, 1, &h);
        let a = s.arbitration["pay-vip"].damping;
        assert_eq!((a.holds, a.held_until - a.window_start), (1, h.first_ms + (k - 1)), "{a:?}");
    }

    #[test]
    fn normal_failovers_are_not_damped() {
        // A drill, faster than any: fail over, then back, every 0.9 s, for 10 minutes.
        let mut s = fresh();
        let h = Hold::DEFAULT;
        let (moves, damped) = alternate(&mut s, NOW, 2 * 667, 450, &h);
        assert_eq!((moves, damped), (2 * 667 - 1, 0));
        // A few moves a minute are not even split brain.
        let mut s = fresh();
        alternate(&mut s, NOW, 5, 15_000, &h);
        assert!(!s.vips["pay-vip"].split_brain(NOW + 60_000));
    }

    #[test]
    fn a_certain_fault_of_the_owner_ends_the_hold() {
        let h = Hold::DEFAULT;
        let held = || {
            let mut s = fresh();
            alternate(&mut s, NOW, 100, 1, &h);
            let owner = s.vips["pay-vip"].owner.clone().unwrap();
            let other = if owner.port == "pay1" { 2 } else { 1 };
            (s, owner, other)
        };
        let t = NOW + 1_000;
        // Held: the other member's claim is damped.
        let (s, owner, other) = held();
        assert!(matches!(
            decide(&s, "pay-vip", &at(member(other), t), t, &Damping::default(), &h),
            Ok(Decision::Damped { .. })
        ));

        // The owner's chassis declared dead.
        let (mut s, owner2, other) = held();
        let mut ch = s.chassis[&owner2.chassis].clone();
        ch.liveness = Some(crate::Liveness { alive: false, since_ms: t - 1, last_heard_ms: t - 200 });
        s.put(Object::Chassis(ch));
        let Decision::Moved(m) = step(&mut s, &at(member(other), t), t, &h).unwrap() else { panic!() };
        assert_eq!(m.released, Some(Fault::ChassisDead));
        assert_eq!(s.arbitration["pay-vip"].damping.held_until, t, "the hold ended");

        // An assisted handover recorded for the owner's VRRP router, after it took the VIP.
        let router = |at_ms| crate::VrrpRouter {
            vpc: "prod".into(),
            id: "51-ipv4".into(),
            vrid: 51,
            version: 3,
            master: crate::VrrpMaster {
                ip: "192.168.10.11".parse().unwrap(),
                mac: owner.mac,
                port: owner.port.clone(),
                chassis: owner.chassis.clone(),
            },
            priority: 150,
            interval_cs: 10,
            addresses: vec!["192.168.10.100".parse().unwrap()],
            destinations: vec!["224.0.0.18".parse().unwrap()],
            auth_type: 0,
            observed_at: 0,
            assists: 1,
            last_assist: Some(crate::AssistRecord {
                fault: AssistFault::PortDown,
                by: owner.chassis.clone(),
                master: "192.168.10.11".parse().unwrap(),
                at_ms,
            }),
        };
        let (mut s, _, other) = held();
        // One from before the owner took the VIP is not about this owner.
        s.put(Object::Router(router(owner.since - 1)));
        assert!(matches!(step(&mut s, &at(member(other), t), t, &h).unwrap(), Decision::Damped { .. }));
        s.put(Object::Router(router(t - 5)));
        let Decision::Moved(m) = step(&mut s, &at(member(other), t), t, &h).unwrap() else { panic!() };
        assert_eq!(m.released, Some(Fault::Assisted { router: "51-ipv4".into(), fault: AssistFault::PortDown }));
        // Flapping on after the release is counted from there, and held longer.
        alternate(&mut s, t + 1, 100, 1, &h);
        assert_eq!(s.arbitration["pay-vip"].damping.holds, 2);
    }

    #[test]
    fn records_keep_their_size_however_long_the_flapping() {
        let mut s = fresh();
        let size = |s: &State| {
            (
                Object::Vip(s.vips["pay-vip"].clone()).to_value().len(),
                Object::Arbitration(s.arbitration["pay-vip"].clone()).to_value().len(),
            )
        };
        // No hold at all (the worst case for growth): 5,000 alternating moves in 5 s.
        let never = Hold { after_moves: u32::MAX, ..Hold::DEFAULT };
        alternate(&mut s, NOW, 10, 1, &never);
        let (vip, arb) = size(&s);
        let (moves, _) = alternate(&mut s, NOW + 10, 5_000, 1, &never);
        assert_eq!(moves, 5_000);
        let (vip2, arb2) = size(&s);
        assert!(vip2 <= vip + 4 && arb2 <= arb + 8, "{vip} -> {vip2}, {arb} -> {arb2}");
        assert_eq!(s.vips["pay-vip"].recent_moves.len(), Damping::default().moves);
        // History: the latest HISTORY_KEEP generations.
        let span = s.arbitration["pay-vip"].history;
        assert_eq!((span.last, span.last - span.first + 1), (5_010, HISTORY_KEEP));
    }

    #[test]
    fn retention_deletes_the_oldest_record_with_each_move() {
        let mut s = fresh();
        let never = Hold { after_moves: u32::MAX, ..Hold::DEFAULT };
        alternate(&mut s, NOW, HISTORY_KEEP, 10, &never);
        assert_eq!(s.arbitration["pay-vip"].history, HistorySpan { first: 1, last: HISTORY_KEEP, first_at: NOW });
        let t = NOW + HISTORY_KEEP * 10;
        let c = at(member((HISTORY_KEEP % 2 + 1) as u8), t);
        let Decision::Moved(m) = step(&mut s, &c, t, &never).unwrap() else { panic!() };
        assert_eq!(m.expired, [ObjectKey::History("pay-vip".into(), 1)]);
        assert_eq!(m.change.generation, HISTORY_KEEP + 1);
        // A record stored before retention: trimmed two a move.
        let mut a = s.arbitration["pay-vip"].clone();
        a.history.first = 1;
        s.put(Object::Arbitration(a));
        let c = at(member(((HISTORY_KEEP + 1) % 2 + 1) as u8), t + 1);
        let Decision::Moved(m) = step(&mut s, &c, t + 1, &never).unwrap() else { panic!() };
        let gens: Vec<_> = m.expired.iter().map(|k| matches!(k, ObjectKey::History(_, g) if *g <= 2)).collect();
        assert_eq!(gens, [true, true]);
    }

    #[test]
    fn a_vip_stored_before_arbitration_records_gets_one_at_its_first_move() {
        let mut s = state();
        let h = Hold::DEFAULT;
        let Decision::Moved(m) = step(&mut s, &member(1), 10, &h).unwrap() else { panic!() };
        assert_eq!(m.arbitration, None, "the first owner: only the VIP and its history");
        let Decision::Moved(m) = step(&mut s, &member(2), 20, &h).unwrap() else { panic!() };
        let a = m.arbitration.expect("written with the first move");
        assert_eq!((a.history.first, a.history.last, a.damping.moves_in_window), (1, 2, 1));
    }
}

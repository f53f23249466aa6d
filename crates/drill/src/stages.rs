//! Where the time of a failover went, from the components' own records
//! (pure: the drill reads the files and the API, this module interprets).
//!
//! - the agents' logs (`agent-<chassis>.log`, tracing's default format:
//!   an RFC 3339 UTC timestamp, the level, the target, the message, then
//!   `key=value` fields; ANSI colours are stripped if present):
//!   the events of `vipcast_api::EventKind` — `Sniffed` (the new master's
//!   GARP reached its chassis), `Repointed` (one agent programmed the new
//!   owner, with its `generation`), the assisted handovers — found by their
//!   messages, with their `key=value` fields;
//! - the controller's VIP history: each change's `observed_at` (the
//!   sniffer's clock) and `accepted_at`, in ms.
//!
//! Everything runs on one machine, so all clocks are the same clock.

use serde::Deserialize;
use vipcast_api::EventKind;

/// A line of an agent's log that a drill cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    /// µs since the Unix epoch.
    pub at_us: u64,
    /// Which agent's log it came from.
    pub chassis: String,
    pub kind: AgentEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEventKind {
    /// [`EventKind::Sniffed`]
    Sniffed { vip: String, mac: String },
    /// [`EventKind::Repointed`]
    Repointed { vip: String, mac: String, generation: u64 },
    /// [`EventKind::AssistPortDown`] or [`EventKind::AssistChassisDead`];
    /// `port` is the master's.
    Assisted { port: String },
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses an RFC 3339 timestamp (`2026-11-24T23:53:46.152015Z`, or with a
/// `+hh:mm` / `-hh:mm` offset) into µs since the Unix epoch.
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = s.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        let mut frac = digits.get(..digits.len().min(6))?.to_string();
        while frac.len() < 6 {
            frac.push('0');
        }
        micros = frac.parse().ok()?;
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `key=value` fields of a tracing line (values may be `"quoted"`; quotes
/// are removed).
fn fields(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest.get(..eq).unwrap_or_default().rsplit(' ').next().unwrap_or_default();
        let after = rest.get(eq + 1..).unwrap_or_default();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q.get(..end).unwrap_or_default(), q.get(end + 1..).unwrap_or_default()),
                None => (q, ""),
            }
        } else {
            match after.find(' ') {
                Some(end) => (after.get(..end).unwrap_or_default(), after.get(end..).unwrap_or_default()),
                None => (after, ""),
            }
        };
        out.push((key, value));
        rest = next;
    }
    out
}

/// The event on one line of chassis `chassis`' agent log, if it is one.
pub fn parse_agent_line(chassis: &str, line: &str) -> Option<AgentEvent> {
    let line = if line.contains('\u{1b}') { strip_ansi(line) } else { line.to_string() };
    let (ts, rest) = line.trim_start().split_once(' ')?;
    let at_us = parse_rfc3339_us(ts)?;
    let get = |f: &[(&str, &str)], k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
    let (event, tail) = EventKind::find(rest)?;
    let f = fields(tail);
    let kind = match event {
        EventKind::Sniffed => AgentEventKind::Sniffed { vip: get(&f, "vip")?, mac: get(&f, "mac")? },
        EventKind::Repointed => AgentEventKind::Repointed {
            vip: get(&f, "vip")?,
            mac: get(&f, "mac")?,
            generation: get(&f, "generation")?.parse().ok()?,
        },
        // Port down (the master's own chassis) or its chassis dead (a
        // backup's chassis); `port` is the master's either way.
        EventKind::AssistPortDown | EventKind::AssistChassisDead => AgentEventKind::Assisted { port: get(&f, "port")? },
        EventKind::ClaimAnswered | EventKind::BumPath => return None,
    };
    Some(AgentEvent { at_us, chassis: chassis.to_string(), kind })
}

/// Every event in an agent's log text.
pub fn parse_agent_log(chassis: &str, text: &str) -> Vec<AgentEvent> {
    text.lines().filter_map(|l| parse_agent_line(chassis, l)).collect()
}

/// One entry of `GET /v1/vips/{name}/history` (the fields a drill uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    pub generation: u64,
    pub owner: HistoryOwner,
    /// ms since the Unix epoch, the sniffer's clock.
    pub observed_at: u64,
    /// ms since the Unix epoch, the controller's clock.
    pub accepted_at: u64,
}

/// The new owner in a [`HistoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryOwner {
    pub port: String,
    pub mac: String,
    pub chassis: String,
}

/// The control-plane stages of one failover (µs since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlStages {
    /// The first GARP of the new master sniffed by an agent.
    pub garp_sniffed_us: Option<u64>,
    /// The claim the controller accepted: its generation, when the sniffer
    /// saw the GARP, when the controller accepted it.
    pub generation: Option<u64>,
    pub new_owner: Option<String>,
    pub claim_observed_us: Option<u64>,
    pub claim_accepted_us: Option<u64>,
    /// The last agent that re-programmed that generation within the run.
    pub last_reprogrammed_us: Option<u64>,
    pub last_reprogrammed_by: Option<String>,
    /// How many agents re-programmed it within the run, of how many logs.
    pub agents_reprogrammed: usize,
    pub agents: usize,
    /// Ownership changes accepted during the run besides the first
    /// (flapping).
    pub extra_changes: usize,
    /// When the master's chassis sent the priority-0 advert on its behalf
    /// (platform-assisted handover), if it did.
    pub assisted_us: Option<u64>,
}

/// What a run was: the VIP `vip`, owned by port `old_port` at generation
/// `gen_before` before the fault at `fault_us`; the run over at `end_us`.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    pub vip: &'a str,
    pub old_port: &'a str,
    pub gen_before: u64,
    pub fault_us: u64,
    pub end_us: u64,
}

/// Interprets the agents' events (from `agents` logs) and the VIP's history
/// for one run.
pub fn control_stages(
    events: &[AgentEvent],
    agents: usize,
    history: &[HistoryEntry],
    run: &RunContext<'_>,
) -> ControlStages {
    let &RunContext { vip, old_port, gen_before, fault_us, end_us } = run;
    let mut s = ControlStages { agents, ..ControlStages::default() };
    s.assisted_us = events
        .iter()
        .filter(|e| e.at_us >= fault_us && e.at_us <= end_us)
        .filter_map(|e| match &e.kind {
            AgentEventKind::Assisted { port } if port == old_port => Some(e.at_us),
            _ => None,
        })
        .min();
    let changes: Vec<&HistoryEntry> =
        history.iter().filter(|h| h.generation > gen_before && h.accepted_at * 1000 <= end_us + 1000).collect();
    let claim = changes.iter().find(|h| h.owner.port != old_port).copied();
    s.extra_changes = changes.len().saturating_sub(1);
    let Some(claim) = claim else {
        s.garp_sniffed_us = first_sniff(events, vip, None, fault_us, end_us);
        return s;
    };
    s.generation = Some(claim.generation);
    s.new_owner = Some(claim.owner.port.clone());
    s.claim_observed_us = Some(claim.observed_at * 1000);
    s.claim_accepted_us = Some(claim.accepted_at * 1000);
    s.garp_sniffed_us = first_sniff(events, vip, Some(&claim.owner.mac), fault_us, end_us);
    let mut by_agent: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for e in events {
        if let AgentEventKind::Repointed { vip: v, generation, .. } = &e.kind
            && v == vip
            && *generation == claim.generation
            && e.at_us >= fault_us
            && e.at_us <= end_us
        {
            let t = by_agent.entry(e.chassis.as_str()).or_insert(e.at_us);
            *t = (*t).min(e.at_us);
        }
    }
    s.agents_reprogrammed = by_agent.len();
    if let Some((who, at)) = by_agent.iter().max_by_key(|(_, at)| **at) {
        s.last_reprogrammed_us = Some(*at);
        s.last_reprogrammed_by = Some(who.to_string());
    }
    s
}

fn first_sniff(events: &[AgentEvent], vip: &str, mac: Option<&str>, from: u64, to: u64) -> Option<u64> {
    events
        .iter()
        .filter(|e| e.at_us >= from && e.at_us <= to)
        .filter_map(|e| match &e.kind {
            AgentEventKind::Sniffed { vip: v, mac: m } if v == vip && mac.is_none_or(|x| x == m) => Some(e.at_us),
            _ => None,
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLOURED: &str = "\u{1b}[2m2026-11-24T23:53:46.151772Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mvipcast_agent\u{1b}[0m\u{1b}[2m:\u{1b}[0m VIP re-pointed and re-announced \u{1b}[3mvip\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"pay-vip\" \u{1b}[3mip\u{1b}[0m\u{1b}[2m=\u{1b}[0m192.168.10.100 \u{1b}[3mmac\u{1b}[0m\u{1b}[2m=\u{1b}[0m02:3e:1e:20:00:00 \u{1b}[3mowner_chassis\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"hv1\" \u{1b}[3mgeneration\u{1b}[0m\u{1b}[2m=\u{1b}[0m1 \u{1b}[3mports\u{1b}[0m\u{1b}[2m=\u{1b}[0m1 \u{1b}[3melapsed_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m8484";

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_rfc3339_us("2000-03-01T00:00:00Z"), Some(951_868_800_000_000));
        assert_eq!(parse_rfc3339_us("2026-11-24T23:53:46.152015Z"), Some(1_795_564_426_152_015));
        assert_eq!(parse_rfc3339_us("2026-11-25T00:53:46.152015+01:00"), Some(1_795_564_426_152_015));
        assert_eq!(parse_rfc3339_us("2026-11-24T23:53:46.123456789Z"), Some(1_795_564_426_123_456));
        for bad in ["", "2026-11-24", "2026-13-24T00:00:00Z", "2026-11-24T23:53:46.Z", "2026-11-24T23:53:46", "x"] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn coloured_and_plain_lines_parse_alike() {
        let plain = strip_ansi(COLOURED);
        assert!(plain.starts_with("2026-11-24T23:53:46.151772Z  INFO vipcast_agent: VIP re-pointed"));
        let want = AgentEvent {
            at_us: 1_795_564_426_151_772,
            chassis: "hv2".into(),
            kind: AgentEventKind::Repointed { vip: "pay-vip".into(), mac: "02:3e:1e:20:00:00".into(), generation: 1 },
        };
        assert_eq!(parse_agent_line("hv2", COLOURED), Some(want.clone()));
        assert_eq!(parse_agent_line("hv2", &plain), Some(want));
        let sniff = "2026-11-24T23:53:46.138205Z  INFO vipcast_agent: announcement sniffed; claiming vip=\"pay-vip\" \
                     mac=02:3e:1e:20:00:00 port=\"pay1\" kind=GratuitousRequest";
        assert_eq!(
            parse_agent_line("hv1", sniff).map(|e| e.kind),
            Some(AgentEventKind::Sniffed { vip: "pay-vip".into(), mac: "02:3e:1e:20:00:00".into() })
        );
        assert_eq!(parse_agent_line("hv1", "2026-11-24T23:53:45.476202Z  INFO vipcast_agent: registered"), None);
        let assisted = "2026-11-24T23:53:46.000001Z  INFO vipcast_agent: port down: assisted handover, priority-0 \
                        advert sent for the master port=\"pay1\" vpc=\"prod\" vrid=1 master=192.168.10.11 frames=3";
        assert_eq!(
            parse_agent_line("hv1", assisted).map(|e| (e.at_us, e.kind)),
            Some((1_795_564_426_000_001, AgentEventKind::Assisted { port: "pay1".into() }))
        );
        let remote = "2026-11-24T23:53:46.000002Z  INFO vipcast_agent: master's chassis dead: assisted handover, \
                      priority-0 advert sent for the master port=\"pay1\" vpc=\"prod\" vrid=1 master=192.168.10.11 \
                      silent_ms=136 receivers=1 frames=3";
        assert_eq!(
            parse_agent_line("hv2", remote).map(|e| (e.at_us, e.kind)),
            Some((1_795_564_426_000_002, AgentEventKind::Assisted { port: "pay1".into() }))
        );
    }

    fn entry(generation: u64, port: &str, mac: &str, observed: u64, accepted: u64) -> HistoryEntry {
        HistoryEntry {
            generation,
            owner: HistoryOwner { port: port.into(), mac: mac.into(), chassis: "hv".into() },
            observed_at: observed,
            accepted_at: accepted,
        }
    }

    #[test]
    fn stages_of_a_failover() {
        let ev = |at_us, chassis: &str, kind| AgentEvent { at_us, chassis: chassis.into(), kind };
        let rep = |g| AgentEventKind::Repointed { vip: "v".into(), mac: "m2".into(), generation: g };
        let events = vec![
            ev(900, "hv1", rep(1)),
            ev(1_350_000, "hv2", AgentEventKind::Sniffed { vip: "v".into(), mac: "m2".into() }),
            ev(1_360_000, "hv1", rep(2)),
            ev(1_362_000, "hv3", rep(2)),
            ev(1_361_000, "hv2", rep(2)),
            ev(1_361_500, "hv2", rep(2)),
            ev(9_000_000, "gw1", rep(2)), // after the run
        ];
        let history = vec![entry(1, "p1", "m1", 0, 0), entry(2, "p2", "m2", 1_350, 1_358)];
        let run = RunContext { vip: "v", old_port: "p1", gen_before: 1, fault_us: 1_000_000, end_us: 2_000_000 };
        let s = control_stages(&events, 4, &history, &run);
        assert_eq!(s.garp_sniffed_us, Some(1_350_000));
        assert_eq!(s.generation, Some(2));
        assert_eq!(s.claim_observed_us, Some(1_350_000));
        assert_eq!(s.claim_accepted_us, Some(1_358_000));
        assert_eq!(s.last_reprogrammed_us, Some(1_362_000));
        assert_eq!(s.last_reprogrammed_by.as_deref(), Some("hv3"));
        assert_eq!((s.agents_reprogrammed, s.agents), (3, 4));
        assert_eq!(s.extra_changes, 0);
    }
}

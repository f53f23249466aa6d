//! The typed event catalog: what agents and replicators log at the steps of
//! a failover that drills time (announcement sniffed, claim answered, VIP
//! re-pointed, assisted handover, BUM path chosen).
//!
//! Each event is a value ([`Event`]) logged by one function ([`Event::log`])
//! under its kind's fixed message ([`EventKind::message`]), with its fields
//! as `key=value` pairs. A reader of the logs (the drill) finds the kind of a
//! line with [`EventKind::find`] and reads the fields after the message:
//! both sides name the same values, none matches on a copied literal.

use std::net::{IpAddr, SocketAddr};

use vipcast_packet::MacAddr;

use crate::ClaimResult;

/// The kinds of events, each with its log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A VIP's announcement (or a master's advert) was sniffed and is claimed.
    Sniffed,
    /// The controller answered a claim.
    ClaimAnswered,
    /// An agent programmed a VIP's new owner and re-announced it locally.
    Repointed,
    /// A master's port lost carrier; its chassis' agent sent the
    /// priority-0 advert for it.
    AssistPortDown,
    /// A master's chassis was declared dead and its adverts stopped; a
    /// backup's chassis sent the priority-0 advert for it.
    AssistChassisDead,
    /// An agent chose the replicator a VNI's BUM traffic goes to.
    BumPath,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 6] = [
        EventKind::Sniffed,
        EventKind::ClaimAnswered,
        EventKind::Repointed,
        EventKind::AssistPortDown,
        EventKind::AssistChassisDead,
        EventKind::BumPath,
    ];

    /// The message the event is logged with.
    pub const fn message(self) -> &'static str {
        match self {
            EventKind::Sniffed => "announcement sniffed; claiming",
            EventKind::ClaimAnswered => "claim answered",
            EventKind::Repointed => "VIP re-pointed and re-announced",
            EventKind::AssistPortDown => "port down: assisted handover, priority-0 advert sent for the master",
            EventKind::AssistChassisDead => {
                "master's chassis dead: assisted handover, priority-0 advert sent for the master"
            }
            EventKind::BumPath => "BUM via replicator",
        }
    }

    /// Whether it is an assisted handover (of either fault).
    pub const fn is_assist(self) -> bool {
        matches!(self, EventKind::AssistPortDown | EventKind::AssistChassisDead)
    }

    /// The kind of event a log line records, and the rest of the line after
    /// its message (where its fields are).
    pub fn find(line: &str) -> Option<(EventKind, &str)> {
        EventKind::ALL.into_iter().find_map(|k| line.split_once(k.message()).map(|(_, tail)| (k, tail)))
    }
}

/// An event, with the fields it is logged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Sniffed {
        vip: &'a str,
        mac: MacAddr,
        /// The local port (agent) or the sending chassis (replicator).
        at: SniffedAt<'a>,
        why: &'static str,
    },
    ClaimAnswered {
        vip: &'a str,
        result: ClaimResult,
        generation: Option<u64>,
    },
    Repointed {
        vip: &'a str,
        ip: IpAddr,
        mac: MacAddr,
        owner_chassis: &'a str,
        generation: u64,
        /// Local ports that got the re-announcement.
        ports: usize,
        /// From the revision's arrival to the re-announcement, µs.
        elapsed_us: u64,
    },
    AssistPortDown {
        /// The master's port.
        port: &'a str,
        vpc: &'a str,
        vrid: u8,
        master: IpAddr,
        frames: usize,
        /// From the carrier event to the advert sent, µs.
        elapsed_us: u64,
    },
    AssistChassisDead {
        /// The master's port.
        port: &'a str,
        vpc: &'a str,
        vrid: u8,
        master: IpAddr,
        /// Since the master's last advert, ms.
        silent_ms: u64,
        /// Local ports that received its adverts.
        receivers: usize,
        frames: usize,
    },
    BumPath {
        vni: u32,
        replicator: &'a str,
        addr: SocketAddr,
    },
}

/// Where an announcement was sniffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniffedAt<'a> {
    /// On this local port (an agent).
    Port(&'a str),
    /// In the BUM stream from this chassis (a replicator).
    Chassis(&'a str),
}

impl Event<'_> {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Sniffed { .. } => EventKind::Sniffed,
            Event::ClaimAnswered { .. } => EventKind::ClaimAnswered,
            Event::Repointed { .. } => EventKind::Repointed,
            Event::AssistPortDown { .. } => EventKind::AssistPortDown,
            Event::AssistChassisDead { .. } => EventKind::AssistChassisDead,
            Event::BumPath { .. } => EventKind::BumPath,
        }
    }

    /// Logs it (level info) under its kind's message.
    pub fn log(&self) {
        let message = self.kind().message();
        match *self {
            Event::Sniffed { vip, mac, at: SniffedAt::Port(port), why } => {
                tracing::info!(vip, %mac, port, why, "{message}")
            }
            Event::Sniffed { vip, mac, at: SniffedAt::Chassis(chassis), why } => {
                tracing::info!(vip, %mac, chassis, why, "{message}")
            }
            Event::ClaimAnswered { vip, result, generation } => match generation {
                Some(generation) => tracing::info!(vip, result = result.as_str(), generation, "{message}"),
                None => tracing::info!(vip, result = result.as_str(), "{message}"),
            },
            Event::Repointed { vip, ip, mac, owner_chassis, generation, ports, elapsed_us } => {
                tracing::info!(vip, %ip, %mac, owner_chassis, generation, ports, elapsed_us, "{message}")
            }
            Event::AssistPortDown { port, vpc, vrid, master, frames, elapsed_us } => {
                tracing::info!(port, vpc, vrid, %master, frames, elapsed_us, "{message}")
            }
            Event::AssistChassisDead { port, vpc, vrid, master, silent_ms, receivers, frames } => {
                tracing::info!(port, vpc, vrid, %master, silent_ms, receivers, frames, "{message}")
            }
            Event::BumPath { vni, replicator, addr } => tracing::info!(vni, replicator, %addr, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_message_and_no_message_contains_another() {
        for k in EventKind::ALL {
            let line = format!("2026-12-04T03:00:00.000001Z  INFO vipcast: {} vip=pay-vip", k.message());
            assert_eq!(EventKind::find(&line), Some((k, " vip=pay-vip")));
            for other in EventKind::ALL {
                assert!(k == other || !k.message().contains(other.message()), "{k:?} contains {other:?}");
            }
        }
        assert_eq!(EventKind::find("data plane updated"), None);
    }
}

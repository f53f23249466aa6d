//! A sans-IO VRRP engine: RFC 5798 (VRRPv3, IPv4 and IPv6) and RFC 3768
//! (VRRPv2), with keepalived's extensions where the vipcast daemon needs its
//! meanings (preempt delay, FAULT and tracking weights, GARP bursts).
//!
//! The crate contains no networking code and reads no clock, in the style of
//! quinn-proto: every input carries `now`, every output is an [`Action`] the
//! driver carries out, and the driver keeps one timer re-armed to
//! [`Instance::poll_timeout`]. The daemon (`vipcast vrrpd`, raw protocol-112
//! sockets, netlink, notify scripts, keepalived.conf) is built on top; tests
//! drive several instances on a simulated segment in virtual time.
//!
//! # Driving an instance
//!
//! ```text
//!   Instance::new(config, now)            State::Initialize
//!   [set_tracked_state(now, what, up)]    report trackers before starting
//!   handle_startup(now)
//!   loop {
//!       one of:  handle_advert(now, src, &repr)    a received advert
//!                handle_timeout(now)               poll_timeout() reached
//!                set_tracked_state(now, what, up)  interface / script change
//!                reconfigure(now, config)          SIGHUP
//!                handle_shutdown(now)              SIGTERM (then stop)
//!       while let Some(action) = poll_action() { carry it out, in order }
//!       re-arm the one timer to poll_timeout()
//!   }
//! ```
//!
//! # The state machine (RFC 5798 §6.4; FAULT is keepalived's)
//!
//! ```text
//!                            +--------------+
//!         +----------------->|  Initialize  |<------------------+
//!         | Shutdown         +--------------+   Shutdown         |
//!         | (§6.4.2)          |            |    (§6.4.3: sends   |
//!         |   Startup,        |            |     priority 0)     |
//!         |   priority < 255  |            |   Startup,          |
//!         |   (§6.4.1)        v            v   priority 255      |
//!   +--------------------------+      +--------------------------+
//!   |          Backup          |----->|          Master          |
//!   | Master_Down_Timer =      |  (a) | Adver_Timer: an advert   |
//!   |  3 x Master_Adver_Int    |      |  every interval;         |
//!   |  + Skew_Time; Skew_Time  |<-----|  GARP / NA bursts        |
//!   |  after a priority-0 one  |  (b) |                          |
//!   +--------------------------+      +--------------------------+
//!          |         ^                        |
//!      (c) |         | (d)                    | (c)
//!          v         |                        |
//!   +--------------------------+              |
//!   |          Fault           |<-------------+
//!   +--------------------------+
//!
//!   (a) Master_Down_Timer fired (§6.4.2): send an advert, add the addresses,
//!       announce them (gratuitous ARP / unsolicited NA), arm Adver_Timer.
//!   (b) an advert with a higher priority, or an equal priority from a larger
//!       primary address (§6.4.3): remove the addresses.
//!   (c) a weight-0 tracker went down: no adverts, addresses removed (a
//!       master sends priority 0 first, as keepalived does).
//!   (d) every weight-0 tracker is up: back to Backup (an owner to Master).
//!   Shutdown from Fault also leads to Initialize.
//! ```
//!
//! # Timing (centisecond intervals)
//!
//! * Advertisement_Interval: [`Config::advert_interval_cs`].
//! * Master_Adver_Interval: version 3 learns it from each accepted advert
//!   (RFC 5798 §6.4.2); version 2 uses the configured interval, and an advert
//!   with another interval is discarded (RFC 3768 §7.1).
//! * Skew_Time: v3 `(256 - priority) * Master_Adver_Interval / 256`;
//!   v2 `(256 - priority) / 256` s; exact to the nanosecond.
//! * Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
//! * A backup that receives priority 0 sets its Master_Down_Timer to
//!   Skew_Time: a clean handover takes Skew_Time, not Master_Down_Interval.
//! * Preemption (default on): a backup discards adverts of a lower priority,
//!   so its Master_Down_Timer fires and it takes over. With `preempt_delay`,
//!   it accepts them until `preempt_delay` after the first one (keepalived).
//!   Equal priorities never preempt; between two masters the larger primary
//!   address wins.
//! * Priority 255, the address owner, is master at startup and discards every
//!   received advert (RFC 5798 §7.1).
//!
//! # Announcements (keepalived's `vrrp_garp_*`)
//!
//! On becoming master: an [`Action::Announce`] of `garp.master_repeat` per
//! address, another `garp.master_delay` later, and one of
//! `garp.master_refresh_repeat` every `garp.master_refresh` if set. A master
//! that hears a lower-priority advert (another router thought it was master,
//! e.g. after a partition healed) answers with an advert and announces again
//! (`garp.lower_prio_repeat`, `garp.lower_prio_delay`), as keepalived does —
//! in vipcast this re-points the VIP in the control plane after a split.
//!
//! # What the engine leaves to the daemon
//!
//! Raw sockets (protocol 112, TTL / hop limit 255 on send and receive,
//! multicast membership), parsing and checksum checks
//! ([`vipcast_packet::vrrp::parse_ip`]), demultiplexing adverts by VRID and
//! family to instances, sending each [`Advert`] to each of its destinations,
//! netlink address changes, the accept-mode firewall, building gratuitous
//! ARPs and unsolicited NAs ([`vipcast_packet::build`]) with spacing between
//! repeats, running tracker scripts and watching interfaces, notify scripts,
//! sync groups, and the keepalived.conf parser.
//!
//! # Panics
//!
//! None on any input: the crate denies `unwrap`, `expect`, `panic` and
//! indexing outside tests, and a property test feeds arbitrary adverts,
//! configurations and times.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

mod config;
mod instance;
mod timer;
pub mod timing;

pub use config::{Config, ConfigError, GarpConfig, MAX_V2_INTERVAL_CS, MAX_WEIGHT, StartAs, Track, Tracked};
pub use instance::{
    Action, Advert, AnnounceReason, Discard, DiscardCounts, Instance, MasterInfo, Reason, State, StateChange, Stats,
    UnknownTrack, group,
};
pub use timer::Timer;
pub use vipcast_packet::vrrp::{Family, Version, VrrpRepr};

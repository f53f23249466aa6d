//! The state machine of one VRRP instance.

use core::net::IpAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use vipcast_packet::MacAddr;
use vipcast_packet::vrrp::{self, AUTH_DATA_LEN, Family, Version, VrrpRepr};

use crate::config::{Config, ConfigError, StartAs, Tracked, centis};
use crate::timer::{Timer, TimerTable};

/// The protocol state (RFC 5798 §6.4, plus keepalived's FAULT).
///
/// [`Instance`] documents the order in which a driver calls the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not running: before [`Instance::handle_startup`], after
    /// [`Instance::handle_shutdown`] (RFC 5798 §6.4.1).
    Initialize,
    /// Watching the master (RFC 5798 §6.4.2).
    Backup,
    /// Owning the addresses and advertising (RFC 5798 §6.4.3).
    Master,
    /// A weight-0 tracked interface or script is down: no adverts, no
    /// addresses, received adverts ignored (keepalived's FAULT; not in the RFC).
    Fault,
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`Instance::handle_startup`]: Initialize -> Backup.
    Startup,
    /// Priority 255 (at startup, on leaving FAULT, or reconfigured to it):
    /// straight to Master (RFC 5798 §6.4.1).
    AddressOwner,
    /// Master_Down_Timer fired: no advert for Master_Down_Interval.
    MasterDown,
    /// Master_Down_Timer fired Skew_Time after a priority-0 advert: the
    /// master stopped cleanly.
    MasterStopped,
    /// Master_Down_Timer fired while a lower-priority master was advertising
    /// and we discarded its adverts (preemption, RFC 5798 §6.4.2).
    Preempting,
    /// Master received a higher-priority advert, or an equal-priority one
    /// from a larger primary address (RFC 5798 §6.4.3): Master -> Backup.
    HigherPriority,
    /// [`Instance::handle_shutdown`]: -> Initialize.
    Shutdown,
    /// A weight-0 tracker went down: -> Fault.
    TrackFailed,
    /// Every weight-0 tracker is up again: Fault -> Backup (an address owner
    /// goes Fault -> Master with [`Reason::AddressOwner`]).
    TrackRecovered,
}

/// A state transition, for the daemon's notify scripts, logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// The effective priority at the time of the change.
    pub priority: u8,
}

/// Why addresses are announced (gratuitous ARP for IPv4, unsolicited
/// neighbour advertisement for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceReason {
    /// The burst on becoming master (`garp_master_repeat`).
    BecameMaster,
    /// The second burst, `garp_master_delay` (or `garp_lower_prio_delay`) later.
    Delayed,
    /// Periodic refresh while master (`garp_master_refresh`).
    Refresh,
    /// A lower-priority advert arrived while master: another router thought
    /// it was master and may have announced the addresses
    /// (`garp_lower_prio_repeat`).
    LowerPriorityAdvert,
    /// A reconfiguration added addresses while master.
    AddressesAdded,
}

/// An advertisement to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The message, ready for [`VrrpRepr::emit`] (its `priority` is what we
    /// advertise: the effective priority, or 0 when stopping).
    pub repr: VrrpRepr,
    /// Source address: [`Config::primary_ip`].
    pub src: IpAddr,
    /// Send one copy to each: the VRRP multicast group (224.0.0.18 or
    /// ff02::12) or, with unicast peers configured, each peer. TTL / hop
    /// limit 255.
    pub destinations: Vec<IpAddr>,
}

impl Advert {
    /// The advertised priority.
    pub fn priority(&self) -> u8 {
        self.repr.priority
    }
}

/// What the driver must do. Drain with [`Instance::poll_action`] after every
/// `handle_*` call and execute in order.
#[must_use = "an action the daemon must carry out"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement.
    SendAdvert(Advert),
    /// Configure these virtual addresses on the interface. `accept` is the
    /// accept mode for all of the instance's addresses (RFC 5798 §6.1
    /// Accept_Mode; always true for an address owner); an action with no
    /// addresses only changes it.
    AddAddresses { addresses: Vec<IpAddr>, accept: bool },
    /// Remove these virtual addresses from the interface.
    RemoveAddresses { addresses: Vec<IpAddr> },
    /// Send `repeat` gratuitous ARPs (IPv4) or unsolicited neighbour
    /// advertisements (IPv6) for each address.
    Announce { addresses: Vec<IpAddr>, repeat: u32, reason: AnnounceReason },
    /// The state changed: log, run notify scripts, update status.
    Notify(StateChange),
}

/// Why [`Instance::handle_advert`] refused an advertisement (the receive
/// checks of RFC 5798 §7.1 / RFC 3768 §7.1 that need the configuration).
/// Each is counted in [`Stats::discarded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Discard {
    #[error("instance is in {0:?}, not processing adverts")]
    Inactive(State),
    #[error("version {0} does not match the instance's")]
    Version(u8),
    #[error("virtual router id {0} does not match the instance's")]
    Vrid(u8),
    #[error("source address family does not match the instance's")]
    Family,
    #[error("we are the address owner (priority 255): adverts are discarded (RFC 5798 §7.1)")]
    AddressOwner,
    #[error("advert from our own primary address")]
    OwnAddress,
    #[error("version 2 authentication type {0} does not match ours (none)")]
    AuthType(u8),
    #[error("advert interval {0} cs does not match ours (v2) or is zero (v3)")]
    Interval(u16),
    #[error("virtual addresses differ from ours and the sender is not the address owner")]
    AddressList,
}

/// Counters the daemon can export and tests can assert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    pub became_master: u64,
    pub left_master: u64,
    /// Backup: lower-priority adverts discarded because we preempt.
    pub lower_priority_discarded: u64,
    /// Master: lower-priority adverts received (another master was heard).
    pub lower_priority_as_master: u64,
    pub discarded: DiscardCounts,
}

/// Refused adverts, by [`Discard`] reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscardCounts {
    pub inactive: u64,
    pub version: u64,
    pub vrid: u64,
    pub family: u64,
    pub address_owner: u64,
    pub own_address: u64,
    pub auth_type: u64,
    pub interval: u64,
    pub address_list: u64,
}

impl DiscardCounts {
    fn count(&mut self, d: Discard) {
        let c = match d {
            Discard::Inactive(_) => &mut self.inactive,
            Discard::Version(_) => &mut self.version,
            Discard::Vrid(_) => &mut self.vrid,
            Discard::Family => &mut self.family,
            Discard::AddressOwner => &mut self.address_owner,
            Discard::OwnAddress => &mut self.own_address,
            Discard::AuthType(_) => &mut self.auth_type,
            Discard::Interval(_) => &mut self.interval,
            Discard::AddressList => &mut self.address_list,
        };
        *c = c.saturating_add(1);
    }
}

/// The master a backup is listening to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MasterInfo {
    /// Its primary address (the advert's IP source).
    pub addr: IpAddr,
    /// The priority it advertised.
    pub priority: u8,
    /// The interval it advertised, centiseconds.
    pub interval_cs: u16,
}

/// An unknown tracker was reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not tracked by this instance")]
pub struct UnknownTrack(pub Tracked);

/// What the Master_Down_Timer was last armed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownKind {
    /// Master_Down_Interval.
    Full,
    /// Skew_Time, after a priority-0 advert.
    Skew,
    /// keepalived's `state MASTER`: Master_Adver_Interval + the smallest skew.
    StartAsMaster,
}

/// The last advert that mattered to a backup, for [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Nothing,
    Accepted,
    PriorityZero,
    LowerDiscarded,
}

/// One VRRP instance: a sans-IO state machine. It never reads a clock, opens
/// a socket or touches an interface; time comes in as `now` and everything
/// to do comes out as [`Action`]s.
///
/// # Call order
///
/// 1. [`Instance::new`] with a validated [`Config`]; the instance is in
///    [`State::Initialize`]. Optionally report tracker states with
///    [`Instance::set_tracked_state`].
/// 2. [`Instance::handle_startup`] when the interface and sockets are ready.
/// 3. Then, for every event, the matching input:
///    * a received, parsed and checksum-verified advert (see
///      [`vipcast_packet::vrrp::parse_ip`], which already checks TTL 255,
///      version, type and checksum): [`Instance::handle_advert`];
///    * the driver's timer reached [`Instance::poll_timeout`]:
///      [`Instance::handle_timeout`];
///    * a tracked interface or script changed: [`Instance::set_tracked_state`];
///    * a configuration reload: [`Instance::reconfigure`];
///    * stopping (SIGTERM): [`Instance::handle_shutdown`].
/// 4. After **each** input, call [`Instance::poll_action`] until it returns
///    `None` and carry the actions out in order, then re-arm one timer to
///    [`Instance::poll_timeout`] (`None`: no timer).
///
/// `now` should not go backwards; if it does nothing panics, timers simply
/// fire late.
#[derive(Debug, Clone)]
pub struct Instance {
    config: Config,
    state: State,
    /// When the state last changed (or the instance was created).
    since: Instant,
    timers: TimerTable,
    /// Master_Adver_Interval (RFC 5798 §6.1), centiseconds: learned from the
    /// master's adverts in version 3, the configured interval in version 2.
    master_adver_interval_cs: u16,
    /// When and how the Master_Down_Timer was last (re)set, so a priority
    /// change can move the deadline by the change of Skew_Time.
    down_base: Instant,
    down_kind: DownKind,
    master: Option<MasterInfo>,
    heard: Heard,
    /// keepalived's preempt_time: lower-priority adverts are accepted until then.
    preempt_after: Option<Instant>,
    /// Parallel to `config.tracks`.
    track_up: Vec<bool>,
    effective_priority: u8,
    /// Announcements in the pending delayed burst.
    delayed_repeat: u32,
    actions: VecDeque<Action>,
    stats: Stats,
}

/// `now + d`, saturating at `now` if the clock would overflow.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// The priority after tracking, and whether a weight-0 tracker is down.
fn compute_priority(config: &Config, track_up: &[bool]) -> (u8, bool) {
    let mut total = i32::from(config.priority);
    let mut fault = false;
    for (t, up) in config.tracks.iter().zip(track_up.iter().copied()) {
        let w = i32::from(t.weight);
        match (w, up) {
            (0, false) => fault = true,
            (w, true) if w > 0 => total = total.saturating_add(w),
            (w, false) if w < 0 => total = total.saturating_add(w),
            _ => {}
        }
    }
    if config.priority == 255 {
        return (255, fault);
    }
    let clamped = total.clamp(1, 254);
    (u8::try_from(clamped).unwrap_or(1), fault)
}

impl Instance {
    /// A new instance in [`State::Initialize`]. Nothing happens until
    /// [`Instance::handle_startup`].
    pub fn new(config: Config, now: Instant) -> Result<Instance, ConfigError> {
        config.validate()?;
        let track_up = vec![true; config.tracks.len()];
        let (effective_priority, _) = compute_priority(&config, &track_up);
        Ok(Instance {
            master_adver_interval_cs: config.advert_interval_cs,
            config,
            state: State::Initialize,
            since: now,
            timers: TimerTable::default(),
            down_base: now,
            down_kind: DownKind::Full,
            master: None,
            heard: Heard::Nothing,
            preempt_after: None,
            track_up,
            effective_priority,
            delayed_repeat: 0,
            actions: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    // ----- outputs -------------------------------------------------------

    /// The next thing to do, in order. Call until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Instance::handle_timeout`] must next be called; `None` while in
    /// Initialize or Fault.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    // ----- accessors -----------------------------------------------------

    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered.
    pub fn state_since(&self) -> Instant {
        self.since
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The priority after tracking weights (what we advertise as master).
    pub fn effective_priority(&self) -> u8 {
        self.effective_priority
    }

    /// Whether a weight-0 tracker is down.
    pub fn is_faulted(&self) -> bool {
        compute_priority(&self.config, &self.track_up).1
    }

    /// Backup: the master whose adverts we last accepted.
    pub fn master(&self) -> Option<MasterInfo> {
        self.master
    }

    /// The deadline of one timer.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    /// Master_Adver_Interval (RFC 5798 §6.1).
    pub fn master_adver_interval(&self) -> Duration {
        centis(self.master_adver_interval_cs)
    }

    /// Skew_Time with the effective priority: version 3,
    /// `(256 - priority) * Master_Adver_Interval / 256` (RFC 5798 §6.1);
    /// version 2, `(256 - priority) / 256` seconds (RFC 3768 §6.1).
    pub fn skew_time(&self) -> Duration {
        self.skew_for(256 - u64::from(self.effective_priority))
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`
    /// (RFC 5798 §6.1; RFC 3768 §6.1 with the configured interval).
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval().saturating_mul(3).saturating_add(self.skew_time())
    }

    /// The virtual router MAC, 00:00:5e:00:01:{vrid} or 00:00:5e:00:02:{vrid}
    /// (RFC 5798 §7.3), for a daemon that uses it.
    pub fn virtual_mac(&self) -> MacAddr {
        match self.config.family() {
            Family::V4 => MacAddr::vrrp_v4(self.config.vrid),
            Family::V6 => MacAddr::vrrp_v6(self.config.vrid),
        }
    }

    /// Whether the daemon should accept packets addressed to the virtual
    /// addresses now: master, and accept mode or address owner (RFC 5798 §6.4.3).
    pub fn accepts_packets(&self) -> bool {
        self.state == State::Master && self.accept_mode()
    }

    fn accept_mode(&self) -> bool {
        self.config.accept || self.config.priority == 255
    }

    /// `(256 - p) / 256` of the interval the version uses (see [`crate::timing`]).
    fn skew_for(&self, p: u64) -> Duration {
        crate::timing::skew_for_gap(self.config.version, self.master_adver_interval_cs, p)
    }

    fn down_duration(&self, kind: DownKind) -> Duration {
        match kind {
            DownKind::Full => self.master_down_interval(),
            DownKind::Skew => self.skew_time(),
            DownKind::StartAsMaster => self.master_adver_interval().saturating_add(self.skew_for(1)),
        }
    }

    // ----- inputs --------------------------------------------------------

    /// The Startup event (RFC 5798 §6.4.1). Ignored unless in Initialize.
    pub fn handle_startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.is_faulted() {
            self.enter_fault(now);
        } else {
            self.start_running(now, Reason::Startup);
        }
    }

    /// The Shutdown event (RFC 5798 §6.4.2, §6.4.3): a master sends a
    /// priority-0 advert and removes its addresses. Ignored in Initialize.
    pub fn handle_shutdown(&mut self, now: Instant) {
        match self.state {
            State::Initialize => return,
            // RFC 5798 §6.4.3: "If a Shutdown event is received, then: Cancel
            // the Adver_Timer; Send an ADVERTISEMENT with Priority = 0;
            // Transition to the {Initialize} state."
            State::Master => {
                self.send_advert(0);
                self.remove_addresses();
            }
            // RFC 5798 §6.4.2: "Cancel the Master_Down_Timer; Transition to
            // the {Initialize} state."
            State::Backup | State::Fault => {}
        }
        self.timers.stop_all();
        self.master = None;
        self.transition(now, State::Initialize, Reason::Shutdown);
    }

    /// An advertisement received from `src` (the IP source address). The
    /// caller has already parsed it and checked TTL, version, type and
    /// checksum; this makes the checks of RFC 5798 §7.1 that need the
    /// configuration, then runs the state machine. An `Err` is counted and
    /// changes nothing else.
    pub fn handle_advert(&mut self, now: Instant, src: IpAddr, advert: &VrrpRepr) -> Result<(), Discard> {
        if let Err(d) = self.check(src, advert) {
            self.stats.discarded.count(d);
            return Err(d);
        }
        self.stats.adverts_received = self.stats.adverts_received.saturating_add(1);
        if advert.priority == 0 {
            self.stats.priority_zero_received = self.stats.priority_zero_received.saturating_add(1);
        }
        match self.state {
            State::Backup => self.backup_received(now, src, advert),
            State::Master => self.master_received(now, src, advert),
            State::Initialize | State::Fault => {}
        }
        Ok(())
    }

    /// Expired timers fire (each at most once per call). Call when
    /// [`Instance::poll_timeout`] is reached; calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in Timer::ALL {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            self.timers.stop(timer);
            match (timer, self.state) {
                // RFC 5798 §6.4.2: "If the Master_Down_Timer fires, then: Send
                // an ADVERTISEMENT; ... broadcast a gratuitous ARP / send an
                // unsolicited ND Neighbor Advertisement; Set the Adver_Timer to
                // Advertisement_Interval; Transition to the {Master} state."
                (Timer::MasterDown, State::Backup) => {
                    let reason = match (self.down_kind, self.heard) {
                        (DownKind::Skew, _) => Reason::MasterStopped,
                        (_, Heard::LowerDiscarded) => Reason::Preempting,
                        _ => Reason::MasterDown,
                    };
                    self.become_master(now, reason);
                }
                // RFC 5798 §6.4.3: "If the Adver_Timer fires, then: Send an
                // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval."
                (Timer::Advert, State::Master) => {
                    self.send_advert(self.effective_priority);
                    self.timers.set(Timer::Advert, later(now, self.config.advert_interval()));
                }
                (Timer::GarpDelay, State::Master) => {
                    self.announce(self.config.addresses.clone(), self.delayed_repeat, AnnounceReason::Delayed);
                }
                (Timer::GarpRefresh, State::Master) => {
                    let g = &self.config.garp;
                    self.announce(self.config.addresses.clone(), g.master_refresh_repeat, AnnounceReason::Refresh);
                    self.arm_refresh(now);
                }
                // A timer left over from another state: nothing to do.
                _ => {}
            }
        }
    }

    /// A tracked interface or script went up or down. May change the
    /// effective priority (weights) or enter / leave FAULT (weight 0). Before
    /// startup it only records the state.
    pub fn set_tracked_state(&mut self, now: Instant, what: &Tracked, up: bool) -> Result<(), UnknownTrack> {
        let Some(i) = self.config.tracks.iter().position(|t| &t.what == what) else {
            return Err(UnknownTrack(what.clone()));
        };
        if let Some(slot) = self.track_up.get_mut(i) {
            if *slot == up {
                return Ok(());
            }
            *slot = up;
        }
        self.apply_tracking(now);
        Ok(())
    }

    /// A new configuration for the same virtual router (version, VRID and
    /// family unchanged; otherwise [`ConfigError::DifferentRouter`]: replace
    /// the instance). The state changes only if it must: a master stays
    /// master (adding / removing only the addresses that changed), a backup
    /// stays backup with its Master_Down_Timer moved by the change of
    /// Skew_Time; only a tracker now failing (FAULT), one recovering, or
    /// becoming the address owner changes the state. Tracker states carry
    /// over by key; new trackers start up. On `Err` nothing changed.
    pub fn reconfigure(&mut self, now: Instant, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        if !self.config.same_router(&config) {
            return Err(ConfigError::DifferentRouter);
        }
        let track_up: Vec<bool> = config
            .tracks
            .iter()
            .map(|t| {
                let old = self.config.tracks.iter().position(|o| o.what == t.what);
                old.and_then(|i| self.track_up.get(i).copied()).unwrap_or(true)
            })
            .collect();
        let old_accept = self.accept_mode();
        let old = core::mem::replace(&mut self.config, config);
        self.track_up = track_up;
        if self.config.preempt_delay.is_zero() {
            self.preempt_after = None;
        }
        match self.state {
            State::Master => {
                let removed: Vec<IpAddr> =
                    old.addresses.iter().filter(|a| !self.config.addresses.contains(a)).copied().collect();
                let added: Vec<IpAddr> =
                    self.config.addresses.iter().filter(|a| !old.addresses.contains(a)).copied().collect();
                if !removed.is_empty() {
                    self.actions.push_back(Action::RemoveAddresses { addresses: removed });
                }
                let accept = self.accept_mode();
                if !added.is_empty() || accept != old_accept {
                    self.actions.push_back(Action::AddAddresses { addresses: added.clone(), accept });
                }
                if !added.is_empty() {
                    self.announce(added, self.config.garp.master_repeat, AnnounceReason::AddressesAdded);
                }
                // A shorter interval takes effect at once, a longer one after
                // the advert already due.
                let next = later(now, self.config.advert_interval());
                if self.timers.get(Timer::Advert).is_none_or(|t| t > next) {
                    self.timers.set(Timer::Advert, next);
                }
                if self.config.garp.master_refresh != old.garp.master_refresh {
                    self.arm_refresh(now);
                }
            }
            State::Backup => {
                if self.config.version == Version::V2 || self.master.is_none() {
                    self.master_adver_interval_cs = self.config.advert_interval_cs;
                }
            }
            State::Initialize | State::Fault => {
                self.master_adver_interval_cs = self.config.advert_interval_cs;
            }
        }
        self.apply_tracking(now);
        if self.state == State::Backup {
            if self.config.priority == 255 {
                // Now the address owner: as at startup (RFC 5798 §6.4.1).
                self.become_master(now, Reason::AddressOwner);
            } else {
                self.rearm_master_down();
            }
        }
        Ok(())
    }

    // ----- the state machine ----------------------------------------------

    /// RFC 5798 §7.1 / RFC 3768 §7.1, the checks that need the configuration.
    fn check(&self, src: IpAddr, a: &VrrpRepr) -> Result<(), Discard> {
        if matches!(self.state, State::Initialize | State::Fault) {
            return Err(Discard::Inactive(self.state));
        }
        if a.version != self.config.version {
            return Err(Discard::Version(a.version.number()));
        }
        // "MUST verify that the VRID is configured on the receiving interface"
        if a.vrid != self.config.vrid {
            return Err(Discard::Vrid(a.vrid));
        }
        let family = self.config.family();
        if Family::of(src) != family || a.addresses.iter().any(|x| Family::of(*x) != family) {
            return Err(Discard::Family);
        }
        // "... and the local router is not the IPvX address owner"
        if self.config.priority == 255 {
            return Err(Discard::AddressOwner);
        }
        if src == self.config.primary_ip {
            return Err(Discard::OwnAddress);
        }
        if a.version == Version::V2 {
            // RFC 3768 §7.1: "MUST verify that the Auth Type matches the
            // locally configured authentication method" (we configure none).
            if a.auth_type != 0 {
                return Err(Discard::AuthType(a.auth_type));
            }
            // RFC 3768 §7.1: "MUST verify that the Adver Interval in the packet
            // is the same as the locally configured for this virtual router".
            if a.interval_cs != self.config.advert_interval_cs {
                return Err(Discard::Interval(a.interval_cs));
            }
        } else if a.interval_cs == 0 {
            // A zero Max Adver Int would make Master_Down_Interval a bare skew.
            return Err(Discard::Interval(0));
        }
        // "MAY verify that "Count IPvX Addrs" and the list of IPvX Address(es)
        // match ... If the packet was not generated by the address owner
        // (Priority does not equal 255), the receiver MUST drop the packet".
        if a.priority != 255 && !self.same_addresses(&a.addresses) {
            return Err(Discard::AddressList);
        }
        Ok(())
    }

    /// The same set of addresses (order does not matter; ours has no duplicates).
    fn same_addresses(&self, theirs: &[IpAddr]) -> bool {
        let ours = &self.config.addresses;
        theirs.len() == ours.len() && ours.iter().all(|a| theirs.contains(a)) && theirs.iter().all(|a| ours.contains(a))
    }

    /// RFC 5798 §6.4.2 (and RFC 3768 §6.4.2): an advert received in Backup.
    fn backup_received(&mut self, now: Instant, src: IpAddr, a: &VrrpRepr) {
        if a.priority == 0 {
            // "If the Priority in the ADVERTISEMENT is zero, then: Set the
            // Master_Down_Timer to Skew_Time."
            self.heard = Heard::PriorityZero;
            self.master = None;
            self.arm_master_down(now, DownKind::Skew);
            return;
        }
        let lower = a.priority < self.effective_priority;
        let delay_holds = !self.config.preempt_delay.is_zero() && self.preempt_after.is_none_or(|t| t > now);
        if !self.config.preempt || !lower || delay_holds {
            // "If Preempt_Mode is False, or if the Priority in the
            // ADVERTISEMENT is greater than or equal to the local Priority,
            // then: Set Master_Adver_Interval to Adver Interval contained in
            // the ADVERTISEMENT; Recompute the Master_Down_Interval; Reset the
            // Master_Down_Timer to Master_Down_Interval."
            // (keepalived: also while a preempt_delay runs.)
            if self.config.version == Version::V3 {
                self.master_adver_interval_cs = a.interval_cs;
            }
            self.master = Some(MasterInfo { addr: src, priority: a.priority, interval_cs: a.interval_cs });
            self.heard = Heard::Accepted;
            if !self.config.preempt_delay.is_zero() {
                if !lower {
                    self.preempt_after = None;
                } else if self.preempt_after.is_none() {
                    self.preempt_after = Some(later(now, self.config.preempt_delay));
                }
            }
            self.arm_master_down(now, DownKind::Full);
        } else {
            // "Else (Priority is less than local and Preempt_Mode is True):
            // Discard the ADVERTISEMENT." The Master_Down_Timer keeps running
            // and preemption happens when it fires.
            self.heard = Heard::LowerDiscarded;
            self.stats.lower_priority_discarded = self.stats.lower_priority_discarded.saturating_add(1);
        }
    }

    /// RFC 5798 §6.4.3 (and RFC 3768 §6.4.3): an advert received in Master.
    fn master_received(&mut self, now: Instant, src: IpAddr, a: &VrrpRepr) {
        let ours = self.effective_priority;
        if a.priority == 0 {
            // "If the Priority in the ADVERTISEMENT is zero, then: Send an
            // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval."
            self.send_advert(ours);
            self.timers.set(Timer::Advert, later(now, self.config.advert_interval()));
        } else if a.priority > ours || (a.priority == ours && src > self.config.primary_ip) {
            // "If the Priority in the ADVERTISEMENT is greater than the local
            // Priority or the Priority in the ADVERTISEMENT is equal to the
            // local Priority and the primary IPvX Address of the sender is
            // greater than the local primary IPvX Address (based on an
            // unsigned integer comparison of the IPvX addresses in network
            // byte order), then: Cancel Adver_Timer; Set Master_Adver_Interval
            // to Adver Interval contained in the ADVERTISEMENT; Recompute the
            // Skew_Time; Recompute the Master_Down_Interval; Set
            // Master_Down_Timer to Master_Down_Interval; Transition to the
            // {Backup} state."
            if self.config.version == Version::V3 {
                self.master_adver_interval_cs = a.interval_cs;
            }
            self.remove_addresses();
            self.timers.stop_all();
            self.master = Some(MasterInfo { addr: src, priority: a.priority, interval_cs: a.interval_cs });
            self.heard = Heard::Accepted;
            self.preempt_after = None;
            self.stats.left_master = self.stats.left_master.saturating_add(1);
            self.transition(now, State::Backup, Reason::HigherPriority);
            self.arm_master_down(now, DownKind::Full);
        } else {
            // "Else: Discard the ADVERTISEMENT." keepalived additionally
            // answers with an advert (unless vrrp_lower_prio_no_advert), so
            // the other master steps down at once, and re-announces the
            // addresses, which that master may have announced.
            self.stats.lower_priority_as_master = self.stats.lower_priority_as_master.saturating_add(1);
            if !self.config.lower_prio_no_advert {
                self.send_advert(ours);
            }
            let g = &self.config.garp;
            let repeat = g.lower_prio_repeat.unwrap_or(g.master_repeat);
            let delay = g.lower_prio_delay.unwrap_or(g.master_delay);
            if repeat > 0 {
                self.announce(self.config.addresses.clone(), repeat, AnnounceReason::LowerPriorityAdvert);
                if !delay.is_zero() {
                    self.delayed_repeat = repeat;
                    self.timers.set(Timer::GarpDelay, later(now, delay));
                }
            }
        }
    }

    /// Leave Initialize or Fault: RFC 5798 §6.4.1.
    fn start_running(&mut self, now: Instant, reason: Reason) {
        self.master_adver_interval_cs = self.config.advert_interval_cs;
        self.master = None;
        self.heard = Heard::Nothing;
        self.preempt_after = None;
        if self.config.priority == 255 {
            // "If the Priority = 255 (i.e., the router owns the IPvX address(es)
            // associated with the virtual router), then: Send an ADVERTISEMENT;
            // ... Transition to the {Master} state."
            self.become_master(now, Reason::AddressOwner);
        } else {
            // "else: Set Master_Adver_Interval to Advertisement_Interval; Set
            // the Master_Down_Timer to Master_Down_Interval; Transition to the
            // {Backup} state."
            self.transition(now, State::Backup, reason);
            let kind = if reason == Reason::Startup && self.config.start_as == StartAs::Master {
                DownKind::StartAsMaster
            } else {
                DownKind::Full
            };
            self.arm_master_down(now, kind);
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        self.timers.stop_all();
        // The advert goes first, so the old master (if any) releases the
        // addresses before our announcements arrive.
        self.send_advert(self.effective_priority);
        self.actions
            .push_back(Action::AddAddresses { addresses: self.config.addresses.clone(), accept: self.accept_mode() });
        let g = &self.config.garp;
        let (repeat, delay) = (g.master_repeat, g.master_delay);
        self.announce(self.config.addresses.clone(), repeat, AnnounceReason::BecameMaster);
        self.timers.set(Timer::Advert, later(now, self.config.advert_interval()));
        if repeat > 0 && !delay.is_zero() {
            self.delayed_repeat = repeat;
            self.timers.set(Timer::GarpDelay, later(now, delay));
        }
        self.arm_refresh(now);
        self.master = None;
        self.heard = Heard::Nothing;
        self.preempt_after = None;
        self.stats.became_master = self.stats.became_master.saturating_add(1);
        self.transition(now, State::Master, reason);
    }

    fn enter_fault(&mut self, now: Instant) {
        if self.state == State::Master {
            // keepalived sends priority 0 on entering FAULT, so a backup takes
            // over after Skew_Time rather than Master_Down_Interval.
            self.send_advert(0);
            self.remove_addresses();
            self.stats.left_master = self.stats.left_master.saturating_add(1);
        }
        self.timers.stop_all();
        self.master = None;
        self.transition(now, State::Fault, Reason::TrackFailed);
    }

    /// Recompute the effective priority and FAULT after a tracker or
    /// configuration change, and act on it.
    fn apply_tracking(&mut self, now: Instant) {
        let (priority, fault) = compute_priority(&self.config, &self.track_up);
        let changed = priority != self.effective_priority;
        self.effective_priority = priority;
        match self.state {
            State::Initialize => {}
            State::Fault if !fault => self.start_running(now, Reason::TrackRecovered),
            State::Backup | State::Master if fault => self.enter_fault(now),
            // keepalived moves a running Master_Down_Timer by the change of
            // Skew_Time; a master simply advertises the new priority next time.
            State::Backup if changed => self.rearm_master_down(),
            _ => {}
        }
    }

    fn arm_master_down(&mut self, now: Instant, kind: DownKind) {
        self.down_base = now;
        self.down_kind = kind;
        self.rearm_master_down();
    }

    fn rearm_master_down(&mut self) {
        let at = later(self.down_base, self.down_duration(self.down_kind));
        self.timers.set(Timer::MasterDown, at);
    }

    fn arm_refresh(&mut self, now: Instant) {
        match self.config.garp.master_refresh {
            Some(every) => self.timers.set(Timer::GarpRefresh, later(now, every)),
            None => self.timers.stop(Timer::GarpRefresh),
        }
    }

    fn transition(&mut self, now: Instant, to: State, reason: Reason) {
        let from = self.state;
        self.state = to;
        self.since = now;
        let change = StateChange { from, to, reason, priority: self.effective_priority };
        self.actions.push_back(Action::Notify(change));
    }

    fn send_advert(&mut self, priority: u8) {
        let destinations = if self.config.unicast_peers.is_empty() {
            vec![group(self.config.family())]
        } else {
            self.config.unicast_peers.clone()
        };
        let repr = VrrpRepr {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_interval_cs,
            auth_type: 0,
            auth_data: [0; AUTH_DATA_LEN],
            addresses: self.config.addresses.clone(),
        };
        self.stats.adverts_sent = self.stats.adverts_sent.saturating_add(1);
        if priority == 0 {
            self.stats.priority_zero_sent = self.stats.priority_zero_sent.saturating_add(1);
        }
        self.actions.push_back(Action::SendAdvert(Advert { repr, src: self.config.primary_ip, destinations }));
    }

    fn remove_addresses(&mut self) {
        self.actions.push_back(Action::RemoveAddresses { addresses: self.config.addresses.clone() });
    }

    fn announce(&mut self, addresses: Vec<IpAddr>, repeat: u32, reason: AnnounceReason) {
        if repeat > 0 && !addresses.is_empty() {
            self.actions.push_back(Action::Announce { addresses, repeat, reason });
        }
    }
}

/// The multicast destination of adverts of `family` (RFC 5798 §5.1.1.2, §5.1.2.2).
pub fn group(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(vrrp::IPV4_GROUP),
        Family::V6 => IpAddr::V6(vrrp::IPV6_GROUP),
    }
}

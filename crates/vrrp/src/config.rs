//! Configuration of one VRRP instance, with keepalived's meanings and defaults
//! where keepalived has them.

use core::net::IpAddr;
use core::time::Duration;

use vipcast_packet::vrrp::{Family, MAX_V3_INTERVAL_CS, Version};

/// Largest VRRPv2 interval: 255 whole seconds, in centiseconds.
pub const MAX_V2_INTERVAL_CS: u16 = 25_500;
/// Largest weight of a tracked interface or script (keepalived's bound).
pub const MAX_WEIGHT: i16 = 254;

/// How an instance starts: keepalived's `state MASTER|BACKUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartAs {
    /// Start in Backup and wait a full Master_Down_Interval for a master.
    #[default]
    Backup,
    /// Start in Backup but wait only one advertisement interval plus the
    /// smallest skew (keepalived's `state MASTER` on a non-owner): if no
    /// master speaks within one interval, become master. An address owner
    /// (priority 255) becomes master at once whatever this says.
    Master,
}

/// Gratuitous ARP / unsolicited NA settings: keepalived's `vrrp_garp_*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GarpConfig {
    /// `vrrp_garp_master_repeat`: announcements per address in the burst sent
    /// on becoming master (and in the delayed second burst). Default 5;
    /// 0 sends none.
    pub master_repeat: u32,
    /// `vrrp_garp_master_delay`: delay of the second burst after becoming
    /// master. Default 5 s; zero disables the second burst.
    pub master_delay: Duration,
    /// `vrrp_garp_master_refresh`: while master, re-announce every this
    /// long. Default `None` (keepalived's 0: no refresh); must not be zero.
    pub master_refresh: Option<Duration>,
    /// `vrrp_garp_master_refresh_repeat`: announcements per refresh. Default 1.
    pub master_refresh_repeat: u32,
    /// `vrrp_garp_lower_prio_repeat`: burst sent by a master that receives a
    /// lower-priority advertisement (another router believed it was master
    /// and may have announced the addresses). Default `None`: as
    /// `master_repeat`; `Some(0)` disables it.
    pub lower_prio_repeat: Option<u32>,
    /// `vrrp_garp_lower_prio_delay`: delay of the second burst after a
    /// lower-priority advertisement. Default `None`: as `master_delay`.
    pub lower_prio_delay: Option<Duration>,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            master_repeat: 5,
            master_delay: Duration::from_secs(5),
            master_refresh: None,
            master_refresh_repeat: 1,
            lower_prio_repeat: None,
            lower_prio_delay: None,
        }
    }
}

/// What a tracker watches. The name is the daemon's (an interface name, a
/// `vrrp_script` name); the engine only matches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tracked {
    /// keepalived `track_interface` (also the instance's own interface, which
    /// keepalived tracks with weight 0).
    Interface(String),
    /// keepalived `track_script`.
    Script(String),
}

/// One tracked interface or script and its weight (keepalived's meaning).
///
/// * `weight > 0`: added to the priority while the tracked thing is up;
/// * `weight < 0`: added (so subtracted) while it is down;
/// * `weight == 0`: while it is down the instance is in FAULT (no adverts,
///   addresses removed).
///
/// The effective priority is clamped to 1..=254. An address owner (priority
/// 255) ignores weights, as keepalived does; weight-0 trackers still fault it.
/// Trackers start up; the daemon reports real states with
/// [`Instance::set_tracked_state`](crate::Instance::set_tracked_state), also
/// before [`Instance::handle_startup`](crate::Instance::handle_startup).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Track {
    pub what: Tracked,
    /// -254..=254.
    pub weight: i16,
}

/// Configuration of one VRRP instance (one virtual router on one interface,
/// one address family).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// Protocol version. RFC 5798 is 3; keepalived's `vrrp_version` default
    /// is 2, so a keepalived.conf parser must set this explicitly.
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority, 1..=255. 255 means address owner (RFC 5798 §5.2.4):
    /// master at startup, discards all received adverts. Default 100.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds. Default 100 (1 s). Version 3:
    /// 1..=4095; version 2: whole seconds, 100..=25500 in steps of 100.
    pub advert_interval_cs: u16,
    /// Preempt_Mode (RFC 5798 §6.1). Default true; keepalived's `nopreempt`
    /// sets it false.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: a backup that starts hearing a
    /// lower-priority master keeps accepting its adverts for this long before
    /// it preempts. Default zero (preempt at once).
    pub preempt_delay: Duration,
    /// Accept_Mode (RFC 5798 §6.1): whether the master should accept packets
    /// addressed to the virtual addresses. The engine only reports it (in
    /// [`Action::AddAddresses`](crate::Action::AddAddresses)); an address
    /// owner always accepts. Default false.
    pub accept: bool,
    /// Our primary address: the source of our adverts and the tie-breaker
    /// between equal priorities (RFC 5798 §6.4.3). For IPv6 it should be the
    /// interface's link-local address (RFC 5798 §5.1.2.1). keepalived's
    /// `unicast_src_ip`, or the interface's first address.
    pub primary_ip: IpAddr,
    /// The virtual addresses (keepalived's `virtual_ipaddress`): 1..=255, no
    /// duplicates, all of the family of `primary_ip`.
    pub addresses: Vec<IpAddr>,
    /// keepalived's `unicast_peer`: if not empty, adverts go to each of these
    /// instead of the multicast group. Same family as `primary_ip`.
    pub unicast_peers: Vec<IpAddr>,
    /// keepalived's `state`. Default [`StartAs::Backup`].
    pub start_as: StartAs,
    /// Gratuitous ARP / unsolicited NA bursts.
    pub garp: GarpConfig,
    /// Tracked interfaces and scripts; keys must be unique.
    pub tracks: Vec<Track>,
    /// keepalived's `vrrp_lower_prio_no_advert`: when false (the default), a
    /// master that receives a lower-priority advert answers at once with an
    /// advert of its own, so the other master steps down without waiting
    /// for our next periodic advert. RFC 5798 §6.4.3 only discards it.
    pub lower_prio_no_advert: bool,
}

impl Config {
    /// A configuration with keepalived's defaults for everything else:
    /// priority 100, 1 s interval, preemption on, no preempt delay, accept
    /// off, multicast, start as backup, default GARP settings, no trackers.
    pub fn new(version: Version, vrid: u8, primary_ip: IpAddr, addresses: Vec<IpAddr>) -> Config {
        Config {
            version,
            vrid,
            priority: 100,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: false,
            primary_ip,
            addresses,
            unicast_peers: Vec::new(),
            start_as: StartAs::Backup,
            garp: GarpConfig::default(),
            tracks: Vec::new(),
            lower_prio_no_advert: false,
        }
    }

    /// The address family of the instance (that of `primary_ip`).
    pub fn family(&self) -> Family {
        Family::of(self.primary_ip)
    }

    /// The Advertisement_Interval.
    pub fn advert_interval(&self) -> Duration {
        centis(self.advert_interval_cs)
    }

    /// Checks every field; [`Instance::new`](crate::Instance::new) and
    /// [`Instance::reconfigure`](crate::Instance::reconfigure) call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        let family = self.family();
        match self.version {
            Version::V2 => {
                if family == Family::V6 {
                    return Err(ConfigError::V2OverIpv6);
                }
                let cs = self.advert_interval_cs;
                if cs == 0 || cs > MAX_V2_INTERVAL_CS || !cs.is_multiple_of(100) {
                    return Err(ConfigError::Interval { version: 2, cs });
                }
            }
            Version::V3 => {
                let cs = self.advert_interval_cs;
                if cs == 0 || cs > MAX_V3_INTERVAL_CS {
                    return Err(ConfigError::Interval { version: 3, cs });
                }
            }
        }
        if self.primary_ip.is_unspecified() || self.primary_ip.is_multicast() {
            return Err(ConfigError::PrimaryIp(self.primary_ip));
        }
        if self.addresses.is_empty() || self.addresses.len() > 255 {
            return Err(ConfigError::AddressCount(self.addresses.len()));
        }
        for (i, a) in self.addresses.iter().enumerate() {
            if Family::of(*a) != family {
                return Err(ConfigError::Family(*a));
            }
            if self.addresses.iter().take(i).any(|b| b == a) {
                return Err(ConfigError::Duplicate(*a));
            }
        }
        if let Some(p) = self.unicast_peers.iter().find(|p| Family::of(**p) != family) {
            return Err(ConfigError::Family(*p));
        }
        if self.garp.master_refresh == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroRefresh);
        }
        for (i, t) in self.tracks.iter().enumerate() {
            if !(-MAX_WEIGHT..=MAX_WEIGHT).contains(&t.weight) {
                return Err(ConfigError::Weight(t.weight));
            }
            if self.tracks.iter().take(i).any(|u| u.what == t.what) {
                return Err(ConfigError::DuplicateTrack(t.what.clone()));
            }
        }
        Ok(())
    }

    /// Whether `other` describes the same virtual router (version, VRID,
    /// family); only then can an instance be reconfigured to it.
    pub fn same_router(&self, other: &Config) -> bool {
        self.version == other.version && self.vrid == other.vrid && self.family() == other.family()
    }
}

/// A configuration the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("virtual router id must be 1..=255")]
    Vrid,
    #[error("priority must be 1..=255 (0 is reserved for a stopping master)")]
    Priority,
    #[error("VRRP version 2 is IPv4 only")]
    V2OverIpv6,
    #[error("advert interval {cs} cs is invalid for version {version} (v2: 1..=255 whole seconds; v3: 1..=4095 cs)")]
    Interval { version: u8, cs: u16 },
    #[error("primary address {0} must be a unicast address")]
    PrimaryIp(IpAddr),
    #[error("{0} virtual addresses: need 1..=255")]
    AddressCount(usize),
    #[error("address {0} is not of the instance's family")]
    Family(IpAddr),
    #[error("virtual address {0} is listed twice")]
    Duplicate(IpAddr),
    #[error("garp master refresh must be positive (use None to disable)")]
    ZeroRefresh,
    #[error("tracking weight {0} outside -254..=254")]
    Weight(i16),
    #[error("{0:?} is tracked twice")]
    DuplicateTrack(Tracked),
    #[error("reconfigure cannot change version, virtual router id or family: replace the instance")]
    DifferentRouter,
}

pub(crate) use crate::timing::centis;

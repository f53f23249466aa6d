//! VRRP's derived timers, in one place for everyone who needs them: the
//! engine, and the agent that decides whether a silent master may still be
//! spoken for.
//!
//! Exact in nanoseconds: `(256 - priority) * interval / 256` is computed as
//! `(256 - priority) * cs * 10^7 / 256` (v3) or `(256 - priority) * 10^9 / 256`
//! (v2, whose skew is in whole seconds whatever the interval).

use std::time::Duration;

use vipcast_packet::vrrp::Version;

/// An advertisement interval in centiseconds, as a duration.
pub fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// `(256 - priority)` as the skew formula uses it, for any `priority_gap`
/// (the engine also uses a gap of 1).
pub(crate) fn skew_for_gap(version: Version, interval_cs: u16, priority_gap: u64) -> Duration {
    let nanos = match version {
        Version::V3 => priority_gap * u64::from(interval_cs) * 10_000_000 / 256,
        Version::V2 => priority_gap * 1_000_000_000 / 256,
    };
    Duration::from_nanos(nanos)
}

/// Skew_Time of a router of `priority`: version 3,
/// `(256 - priority) * Master_Adver_Interval / 256` (RFC 5798 §6.1);
/// version 2, `(256 - priority) / 256` seconds (RFC 3768 §6.1).
pub fn skew_time(version: Version, priority: u8, interval_cs: u16) -> Duration {
    skew_for_gap(version, interval_cs, 256 - u64::from(priority))
}

/// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`
/// (RFC 5798 §6.1; RFC 3768 §6.1 with the advertised interval).
pub fn master_down_interval(version: Version, priority: u8, interval_cs: u16) -> Duration {
    centis(interval_cs).saturating_mul(3).saturating_add(skew_time(version, priority, interval_cs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_values() {
        // v3 at 0.1 s, priority 150: 0.3 s + 106/256 * 0.1 s.
        assert_eq!(master_down_interval(Version::V3, 150, 10), Duration::from_nanos(341_406_250));
        assert_eq!(skew_time(Version::V3, 100, 100), Duration::from_nanos(609_375_000));
        // v2: the skew is in seconds whatever the interval.
        assert_eq!(skew_time(Version::V2, 100, 10), Duration::from_nanos(609_375_000));
        assert_eq!(master_down_interval(Version::V2, 255, 100), Duration::from_nanos(3_003_906_250));
    }
}

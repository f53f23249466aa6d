//! Which sniffed announcements become claims.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vipcast_packet::MacAddr;

/// How many VIPs' last claims are remembered before old ones are dropped.
const MAX_VIPS: usize = 65_536;

/// Suppresses repeats of the last claim made for each VIP: keepalived sends
/// its gratuitous ARPs in bursts of five, the first makes the claim and the
/// other four are absorbed. A claim for another MAC or chassis always
/// passes (the last claim differs), so a VIP moving back at once is claimed
/// back at once. No clock inside: `now` is an argument.
#[derive(Debug)]
pub struct ClaimDedup {
    window: Duration,
    /// VIP -> (MAC, chassis) of the last claim made, and when.
    last: HashMap<String, (MacAddr, String, Instant)>,
}

impl ClaimDedup {
    /// Repeats within `window` of the last claim for a VIP are suppressed.
    pub fn new(window: Duration) -> ClaimDedup {
        ClaimDedup { window, last: HashMap::new() }
    }

    /// Whether to claim `vip` for (`mac`, `chassis`) at `now`; if so it is
    /// remembered as the VIP's last claim.
    pub fn should_claim(&mut self, now: Instant, vip: &str, mac: MacAddr, chassis: &str) -> bool {
        if let Some((m, c, t)) = self.last.get(vip)
            && *m == mac
            && c == chassis
            && now.saturating_duration_since(*t) < self.window
        {
            return false;
        }
        if self.last.len() >= MAX_VIPS {
            let window = self.window;
            self.last.retain(|_, (_, _, t)| now.saturating_duration_since(*t) < window);
        }
        self.last.insert(vip.to_string(), (mac, chassis.to_string(), now));
        true
    }

    /// Forgets the last claim of `vip` if it is (`mac`, `chassis`) (it
    /// failed: the next announcement tries again).
    pub fn forget(&mut self, vip: &str, mac: MacAddr, chassis: &str) {
        if self.last.get(vip).is_some_and(|(m, c, _)| *m == mac && c == chassis) {
            self.last.remove(vip);
        }
    }
}

//! splitmix64: the drills' random choices (what to kill and when, the
//! phase of a fault), reproducible from a seed.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock.
    pub fn from_clock() -> Rng {
        Rng(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (ms).
    pub fn ms(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo).max(1))
    }

    /// Uniform in `[0, d)`, to the microsecond.
    pub fn below(&mut self, d: Duration) -> Duration {
        let us = d.as_micros() as u64;
        Duration::from_micros(if us == 0 { 0 } else { self.next_u64() % us })
    }
}

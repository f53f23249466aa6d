//! The instance's timers: a fixed table of deadlines, in the quinn-proto style.

use std::time::Instant;

/// The timers of an instance. At most one deadline per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Backup: Master_Down_Timer (RFC 5798 §6.2). Fires when no acceptable
    /// advert arrived for Master_Down_Interval (or Skew_Time after a
    /// priority-0 advert).
    MasterDown,
    /// Master: Adver_Timer (RFC 5798 §6.2). Fires every Advertisement_Interval.
    Advert,
    /// Master: the delayed second announcement burst (`garp_master_delay`,
    /// `garp_lower_prio_delay`).
    GarpDelay,
    /// Master: periodic announcements (`garp_master_refresh`).
    GarpRefresh,
}

impl Timer {
    /// Every timer, in the order [`Instance::handle_timeout`](crate::Instance::handle_timeout)
    /// processes expired ones.
    pub const ALL: [Timer; 4] = [Timer::MasterDown, Timer::Advert, Timer::GarpDelay, Timer::GarpRefresh];

    const fn index(self) -> usize {
        match self {
            Timer::MasterDown => 0,
            Timer::Advert => 1,
            Timer::GarpDelay => 2,
            Timer::GarpRefresh => 3,
        }
    }
}

/// Deadlines indexed by [`Timer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(slot) = self.data.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.data.get(timer.index()).copied().flatten()
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        if let Some(slot) = self.data.get_mut(timer.index()) {
            *slot = None;
        }
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = Default::default();
    }

    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
}

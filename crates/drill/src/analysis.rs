//! The outage of one run, computed from the probe log alone (pure: times
//! are arguments).
//!
//! **Definition.** Probes go out every 1 ms. Take the replies *received* in
//! the run's window — from [`PRE_FAULT`] before the fault to the end of the
//! run (the new master answered every probe for a while, or the run timed
//! out) — in order of arrival. The **outage** is the longest interval
//! between two consecutive replies in that window, whoever sent them;
//! normally the last reply of the old master before the fault and the
//! first reply of the new master after it. Its resolution is the probe
//! interval (a 1 ms outage means nothing was lost). Alongside it:
//! - *lost*: probes sent in the window that got no reply by its end;
//! - *first reply by the new master*: the first reply received after the
//!   fault from a responder other than the old master;
//! - *max send gap*: the prober's own longest pause between two sends in
//!   the window — if the machine starved the prober, the outage is only
//!   known to that resolution.

use crate::record::ProbeLog;

/// How far before the fault a run's window starts (µs).
pub const PRE_FAULT: u64 = 200_000;

/// The window of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the fault was injected (µs since the Unix epoch).
    pub fault_us: u64,
    /// The end of the run: replies received later are not counted.
    pub end_us: u64,
}

impl Window {
    /// Where the window starts.
    pub fn start_us(&self) -> u64 {
        self.fault_us.saturating_sub(PRE_FAULT)
    }
}

/// What the probes say about one run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outage {
    /// The longest interval without a reply (µs).
    pub outage_us: u64,
    /// When it began: the last reply before it (µs since the epoch).
    pub gap_start_us: u64,
    /// When it ended: the first reply after it.
    pub gap_end_us: u64,
    /// Who answered just before and just after the gap.
    pub before: Option<String>,
    pub after: Option<String>,
    /// Probes sent in the window, and those without a reply by its end.
    pub sent: u64,
    pub lost: u64,
    /// The first reply after the fault from another responder than the old
    /// master: when, and who.
    pub first_new_us: Option<u64>,
    pub new_master: Option<String>,
    /// The old master's last reply (received before `first_new_us`, or
    /// before the window's end).
    pub last_old_us: Option<u64>,
    /// The prober's longest pause between two sends in the window (µs).
    pub max_send_gap_us: u64,
}

/// The outage of the run in `w`, whose master before the fault was `old_master`.
pub fn analyse(log: &ProbeLog, w: Window, old_master: &str) -> Outage {
    let start = w.start_us();
    let probes = log.sent_between(start, w.end_us);
    let mut replies: Vec<(u64, u16)> =
        probes.iter().filter_map(|p| p.reply).filter(|(at, _)| *at >= start && *at <= w.end_us).collect();
    replies.sort_unstable();
    let mut o = Outage { sent: probes.len() as u64, ..Outage::default() };
    o.lost = probes.iter().filter(|p| p.reply.is_none_or(|(at, _)| at > w.end_us)).count() as u64;
    o.max_send_gap_us = probes.windows(2).map(|p| p[1].sent_us.saturating_sub(p[0].sent_us)).max().unwrap_or(0);
    // Gaps between consecutive replies; the window's edges count as
    // replies only if nothing was received at all (then the whole window
    // is the outage).
    match (replies.first(), replies.last()) {
        (Some(_), Some(_)) => {
            for pair in replies.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let gap = b.0 - a.0;
                if gap > o.outage_us {
                    o.outage_us = gap;
                    o.gap_start_us = a.0;
                    o.gap_end_us = b.0;
                    o.before = Some(log.responder(a.1).to_string());
                    o.after = Some(log.responder(b.1).to_string());
                }
            }
            // Nothing since the last reply until the end: that is a gap too
            // (a run that timed out without a new master).
            if let Some(&(last, r)) = replies.last() {
                let tail = w.end_us.saturating_sub(last);
                if tail > o.outage_us {
                    o.outage_us = tail;
                    o.gap_start_us = last;
                    o.gap_end_us = w.end_us;
                    o.before = Some(log.responder(r).to_string());
                    o.after = None;
                }
            }
        }
        _ => {
            o.outage_us = w.end_us.saturating_sub(start);
            o.gap_start_us = start;
            o.gap_end_us = w.end_us;
        }
    }
    if let Some(&(at, r)) = replies.iter().find(|(at, r)| *at >= w.fault_us && log.responder(*r) != old_master) {
        o.first_new_us = Some(at);
        o.new_master = Some(log.responder(r).to_string());
    }
    let old_until = o.first_new_us.unwrap_or(w.end_us);
    o.last_old_us =
        replies.iter().rev().find(|(at, r)| *at <= old_until && log.responder(*r) == old_master).map(|r| r.0);
    o
}

/// The `p`th percentile (nearest rank) of `values`; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes every ms from t=0; `answer(i)` says who answers probe i
    /// (and after how many µs).
    fn log(n: u64, answer: impl Fn(u64) -> Option<(&'static str, u64)>) -> ProbeLog {
        let mut log = ProbeLog::default();
        for i in 0..n {
            let sent = 1_000_000 + i * 1000;
            log.apply_line(&format!("S {i} {sent}"));
            if let Some((who, rtt)) = answer(i) {
                log.apply_line(&format!("R {i} {sent} {} {who}", sent + rtt));
            }
        }
        log
    }

    #[test]
    fn failover_outage_is_the_gap_between_old_and_new_master() {
        // Fault at probe 500; probes 500..=849 lost; pay2 answers from 850.
        let l = log(1500, |i| match i {
            ..500 => Some(("pay1", 200)),
            500..850 => None,
            _ => Some(("pay2", 300)),
        });
        let w = Window { fault_us: 1_000_000 + 500_000, end_us: 1_000_000 + 1_400_000 };
        let o = analyse(&l, w, "pay1");
        // Last pay1 reply at 499 ms + 0.2, first pay2 reply at 850 ms + 0.3.
        assert_eq!(o.outage_us, 1_850_300 - 1_499_200);
        assert_eq!((o.before.as_deref(), o.after.as_deref()), (Some("pay1"), Some("pay2")));
        assert_eq!(o.lost, 350);
        assert_eq!(o.sent, 1100);
        assert_eq!(o.new_master.as_deref(), Some("pay2"));
        assert_eq!(o.first_new_us, Some(1_850_300));
        assert_eq!(o.last_old_us, Some(1_499_200));
        assert_eq!(o.max_send_gap_us, 1000);
    }

    #[test]
    fn no_failover_means_the_gap_runs_to_the_end() {
        let l = log(1000, |i| (i < 300).then_some(("pay1", 100)));
        let w = Window { fault_us: 1_300_000, end_us: 1_900_000 };
        let o = analyse(&l, w, "pay1");
        assert_eq!(o.outage_us, 1_900_000 - 1_299_100);
        assert_eq!(o.after, None);
        assert_eq!(o.new_master, None);
    }

    #[test]
    fn replies_after_the_window_do_not_count() {
        // A frozen responder answering long after the run ended.
        let l = log(1000, |i| match i {
            ..300 => Some(("pay1", 100)),
            300..400 => Some(("pay1", 5_000_000)),
            _ => Some(("pay2", 100)),
        });
        let w = Window { fault_us: 1_300_000, end_us: 1_990_000 };
        let o = analyse(&l, w, "pay1");
        assert_eq!(o.lost, 100);
        assert_eq!(o.outage_us, 1_400_100 - 1_299_100);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 95.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}

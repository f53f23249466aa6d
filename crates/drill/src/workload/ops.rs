//! What the workload client did and what the database kept (pure): the
//! client's lines parsed, then judged on exact sets.

use std::collections::BTreeSet;

use super::client::Fate;
use crate::record::ApplyLine;

/// One operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub id: u64,
    pub worker: u32,
    pub sent_us: u64,
    pub done_us: u64,
    pub fate: Fate,
}

/// Every operation the client reported, in the order of its lines.
#[derive(Debug, Default, Clone)]
pub struct OpLog {
    /// The client's first id (its `start` line).
    pub base: Option<u64>,
    pub ops: Vec<Op>,
}

impl ApplyLine for OpLog {
    fn apply_line(&mut self, line: &str) {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("start") => self.base = w.next().and_then(|v| v.parse().ok()),
            Some("op") => {
                let mut num = || w.next().and_then(|v| v.parse::<u64>().ok());
                let (Some(id), Some(worker), Some(sent_us), Some(done_us)) = (num(), num(), num(), num()) else {
                    return;
                };
                let Some(fate) = w.next().and_then(Fate::parse) else { return };
                let Ok(worker) = u32::try_from(worker) else { return };
                self.ops.push(Op { id, worker, sent_us, done_us, fate });
            }
            _ => {}
        }
    }
}

impl OpLog {
    /// Acknowledged operations finished in `[from_us, to_us)`.
    pub fn acked_between(&self, from_us: u64, to_us: u64) -> usize {
        self.ops.iter().filter(|o| o.fate == Fate::Ack && (from_us..to_us).contains(&o.done_us)).count()
    }

    /// The longest time without an acknowledgement in `[from_us, to_us]`
    /// (µs, between consecutive acknowledgements; `None` with fewer than
    /// two).
    pub fn longest_gap(&self, from_us: u64, to_us: u64) -> Option<u64> {
        longest_gap(self.ops.iter().filter(|o| o.fate == Fate::Ack).map(|o| o.done_us), from_us, to_us)
    }
}

/// The longest time between consecutive `done` times (µs) that fall in
/// `[from_us, to_us]`; `None` with fewer than two.
pub fn longest_gap(done: impl Iterator<Item = u64>, from_us: u64, to_us: u64) -> Option<u64> {
    let mut done: Vec<u64> = done.filter(|t| (from_us..=to_us).contains(t)).collect();
    done.sort_unstable();
    done.windows(2).map(|w| w[1] - w[0]).max()
}

/// The judgement of a log against what the database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub acked: usize,
    pub refused: usize,
    pub in_doubt: usize,
    /// In doubt and found stored (committed after all).
    pub in_doubt_stored: usize,
    /// Acknowledged but not stored: must be empty.
    pub lost: Vec<u64>,
    /// Stored but never sent: must be empty.
    pub phantoms: Vec<u64>,
    /// Refused but stored: must be empty.
    pub refused_stored: Vec<u64>,
    /// Reported twice by the client (two fates for one id): must be empty.
    pub duplicates: Vec<u64>,
}

impl Verdict {
    /// Whether nothing acknowledged was lost and nothing appeared.
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.phantoms.is_empty() && self.refused_stored.is_empty() && self.duplicates.is_empty()
    }
}

/// Judges the operations of `log` that finished in `[from_us, snapshot_us)`
/// against `stored`, the ids the database held at `snapshot_us` (at or
/// above the client's base); every stored id must be in the log (which must
/// by now hold every operation in flight at the snapshot). Lists are capped
/// at 20 ids; the second value is the exact number lost.
pub fn verify(log: &OpLog, stored: &BTreeSet<u64>, from_us: u64, snapshot_us: u64) -> (Verdict, usize) {
    const SHOW: usize = 20;
    let mut v = Verdict::default();
    let mut seen = BTreeSet::new();
    let mut lost = 0;
    for o in &log.ops {
        if !seen.insert(o.id) {
            v.duplicates.push(o.id);
            continue;
        }
        if !(from_us..snapshot_us).contains(&o.done_us) {
            continue;
        }
        let kept = stored.contains(&o.id);
        match o.fate {
            Fate::Ack => {
                v.acked += 1;
                if !kept {
                    lost += 1;
                    if v.lost.len() < SHOW {
                        v.lost.push(o.id);
                    }
                }
            }
            Fate::Refused => {
                v.refused += 1;
                if kept && v.refused_stored.len() < SHOW {
                    v.refused_stored.push(o.id);
                }
            }
            Fate::Doubt => {
                v.in_doubt += 1;
                v.in_doubt_stored += usize::from(kept);
            }
        }
    }
    v.phantoms = stored.iter().filter(|id| !seen.contains(id)).take(SHOW).copied().collect();
    v.duplicates.truncate(SHOW);
    (v, lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> OpLog {
        let mut l = OpLog::default();
        for line in lines {
            l.apply_line(line);
        }
        l
    }

    #[test]
    fn parses_lines_and_ignores_junk() {
        let l = log(&["start 1000", "op 1000 0 10 20 ack", "op 1001 1 11 30 doubt", "op x", "op 1002 0 1 2 maybe", ""]);
        assert_eq!(l.base, Some(1000));
        assert_eq!(l.ops.len(), 2);
        assert_eq!(l.ops[1], Op { id: 1001, worker: 1, sent_us: 11, done_us: 30, fate: Fate::Doubt });
    }

    #[test]
    fn exact_sets() {
        let l = log(&[
            "op 1 0 0 10 ack",
            "op 2 0 10 20 ack",
            "op 3 0 20 30 refused",
            "op 4 0 30 40 doubt",
            "op 5 0 40 50 doubt",
        ]);
        let stored: BTreeSet<u64> = [1, 2, 4].into();
        let (v, lost) = verify(&l, &stored, 0, 100);
        assert!(v.clean());
        assert_eq!((v.acked, v.refused, v.in_doubt, v.in_doubt_stored, lost), (2, 1, 2, 1, 0));

        // An acknowledged write missing, a phantom, a refused one stored.
        let stored: BTreeSet<u64> = [1, 3, 9].into();
        let (v, lost) = verify(&l, &stored, 0, 100);
        assert!(!v.clean());
        assert_eq!((v.lost.clone(), lost), (vec![2], 1));
        assert_eq!(v.phantoms, vec![9]);
        assert_eq!(v.refused_stored, vec![3]);
    }

    #[test]
    fn only_the_window_is_judged_but_every_stored_id_must_be_known() {
        let l = log(&["op 1 0 0 10 ack", "op 2 0 10 20 ack", "op 3 0 20 200 ack"]);
        // 1 was judged by an earlier run; 3 finished after the snapshot.
        let (v, lost) = verify(&l, &[2].into(), 15, 100);
        assert_eq!((v.acked, lost), (1, 0));
        assert!(v.clean());
        let (v, _) = verify(&l, &[2, 3, 4].into(), 15, 100);
        assert_eq!(v.phantoms, vec![4]);
    }

    #[test]
    fn a_twice_reported_id_is_a_duplicate() {
        let l = log(&["op 1 0 0 10 ack", "op 1 1 0 12 ack"]);
        let (v, _) = verify(&l, &[1].into(), 0, 100);
        assert_eq!(v.duplicates, vec![1]);
        assert!(!v.clean());
    }

    #[test]
    fn outage_is_the_longest_gap_between_acknowledgements() {
        let l = log(&[
            "op 1 0 0 100 ack",
            "op 2 0 100 200 ack",
            "op 3 0 200 900 doubt",
            "op 5 1 250 260 ack",
            "op 4 1 300 1500 ack",
        ]);
        assert_eq!(l.longest_gap(0, 2000), Some(1240));
        assert_eq!(l.longest_gap(0, 1000), Some(100));
        assert_eq!(l.longest_gap(2000, 3000), None);
        assert_eq!(l.acked_between(0, 201), 2);
    }
}

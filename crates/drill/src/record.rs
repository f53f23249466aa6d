//! What the prober saw, as the drill reads it: one [`Probe`] per request,
//! indexed by sequence number, with its reply (time and responder) if one
//! came. [`Tail`] follows the prober's output file while it grows.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One request and its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub seq: u64,
    /// When it was sent (µs since the Unix epoch); 0 if only its reply was seen.
    pub sent_us: u64,
    /// (received at µs, index into [`ProbeLog::responders`])
    pub reply: Option<(u64, u16)>,
    /// The send failed (e.g. no route while a link is down).
    pub send_error: bool,
}

/// Every probe of one prober.
#[derive(Debug, Clone, Default)]
pub struct ProbeLog {
    probes: Vec<Probe>,
    responders: Vec<String>,
}

impl ProbeLog {
    /// Applies one line of the prober's output (`S`, `R` or `E`; anything
    /// else is ignored).
    pub fn apply_line(&mut self, line: &str) {
        let mut f = line.split(' ');
        let kind = f.next();
        let seq = f.next().and_then(|s| s.parse::<u64>().ok());
        let sent = f.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(kind), Some(seq), Some(sent)) = (kind, seq, sent) else { return };
        // Sequence numbers are dense from 0; refuse absurd jumps.
        let Ok(i) = usize::try_from(seq) else { return };
        if i > self.probes.len() + 1_000_000 {
            return;
        }
        while self.probes.len() <= i {
            let seq = self.probes.len() as u64;
            self.probes.push(Probe { seq, sent_us: 0, reply: None, send_error: false });
        }
        let responder = match (kind, f.next(), f.next()) {
            ("R", Some(recv), Some(name)) => recv.parse::<u64>().ok().map(|r| (r, self.responder_index(name))),
            _ => None,
        };
        let Some(p) = self.probes.get_mut(i) else { return };
        p.sent_us = sent;
        match kind {
            // The first reply counts (a duplicate changes nothing).
            "R" if p.reply.is_none() => p.reply = responder,
            "E" => p.send_error = true,
            _ => {}
        }
    }

    fn responder_index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.responders.iter().position(|r| r == name) {
            return u16::try_from(i).unwrap_or(u16::MAX);
        }
        self.responders.push(name.to_string());
        u16::try_from(self.responders.len() - 1).unwrap_or(u16::MAX)
    }

    /// Every probe, by sequence number.
    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    /// Responder names, by index.
    pub fn responders(&self) -> &[String] {
        &self.responders
    }

    /// The name of responder `i`.
    pub fn responder(&self, i: u16) -> &str {
        self.responders.get(usize::from(i)).map(String::as_str).unwrap_or("?")
    }

    /// Probes sent in `[from_us, to_us)`, in order (the log is in send order).
    pub fn sent_between(&self, from_us: u64, to_us: u64) -> &[Probe] {
        let start = self.probes.partition_point(|p| p.sent_us < from_us);
        let end = self.probes.partition_point(|p| p.sent_us < to_us).max(start);
        self.probes.get(start..end).unwrap_or_default()
    }

    /// Whether the prober is steady at `now_us`: at least `min_count`
    /// probes were sent in the `window_us` before `now_us - grace_us`
    /// (replies still in flight are not judged), every one was answered by
    /// `now_us`, and — if `by` is given — by that responder.
    pub fn steady(&self, now_us: u64, window_us: u64, grace_us: u64, min_count: usize, by: Option<&str>) -> bool {
        let to = now_us.saturating_sub(grace_us);
        let probes = self.sent_between(to.saturating_sub(window_us), to);
        probes.len() >= min_count
            && probes.iter().all(|p| match p.reply {
                Some((at, r)) => at <= now_us && by.is_none_or(|b| self.responder(r) == b),
                None => false,
            })
    }
}

/// A record built from the lines of a file (a prober's, a workload
/// client's).
pub trait ApplyLine {
    fn apply_line(&mut self, line: &str);
}

impl ApplyLine for ProbeLog {
    fn apply_line(&mut self, line: &str) {
        ProbeLog::apply_line(self, line);
    }
}

/// Follows a file that a prober appends lines to.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail { path, offset: 0, partial: String::new() }
    }

    /// Reads what was appended since the last call into `log`; returns how
    /// many complete lines were applied.
    pub fn poll(&mut self, log: &mut impl ApplyLine) -> std::io::Result<usize> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf)?;
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut applied = 0;
        if let Some(last_nl) = self.partial.rfind('\n') {
            let complete: String = self.partial.drain(..=last_nl).collect();
            for line in complete.lines() {
                log.apply_line(line);
                applied += 1;
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_build_probes_in_order() {
        let mut log = ProbeLog::default();
        for l in ["S 0 1000", "S 1 2000", "R 0 1000 1500 pay1", "S 2 3000", "E 3 4000 NetworkUnreachable", "junk", ""] {
            log.apply_line(l);
        }
        log.apply_line("R 2 3000 3900 pay2");
        log.apply_line("R 2 3000 3950 pay1"); // a duplicate: the first counts
        let p = log.probes();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].reply.map(|(t, r)| (t, log.responder(r))), Some((1500, "pay1")));
        assert_eq!(p[1].reply, None);
        assert_eq!(p[2].reply.map(|(t, r)| (t, log.responder(r))), Some((3900, "pay2")));
        assert!(p[3].send_error);
        assert_eq!(log.sent_between(2000, 4000).iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn steady_needs_every_recent_probe_answered() {
        let mut log = ProbeLog::default();
        for i in 0..100u64 {
            log.apply_line(&format!("S {i} {}", i * 1000));
            if i != 50 {
                log.apply_line(&format!("R {i} {} {} pay1", i * 1000, i * 1000 + 300));
            }
        }
        // Probes 60..=89 answered by pay1; 50 was lost.
        assert!(log.steady(100_000, 30_000, 10_000, 25, Some("pay1")));
        assert!(!log.steady(100_000, 30_000, 10_000, 25, Some("pay2")));
        assert!(!log.steady(100_000, 60_000, 10_000, 25, None));
        assert!(!log.steady(100_000, 30_000, 10_000, 40, None), "too few probes");
    }

    #[test]
    fn tail_reads_only_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, "S 0 10\nS 1 2").unwrap();
        let mut t = Tail::new(path.clone());
        let mut log = ProbeLog::default();
        assert_eq!(t.poll(&mut log).unwrap(), 1);
        std::fs::write(&path, "S 0 10\nS 1 20\n").unwrap();
        assert_eq!(t.poll(&mut log).unwrap(), 1);
        assert_eq!(log.probes()[1].sent_us, 20);
    }
}

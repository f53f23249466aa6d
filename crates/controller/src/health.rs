//! The store's health as this controller sees it: whether the store
//! acknowledges writes, and whether the state the controller serves follows
//! the store. `/healthz` answers the first (503 when writes cannot be
//! acknowledged), `/readyz` the second, and both bodies say which.
//!
//! ```text
//!  probe task ─every store_probe (and at once after a failed write)─► Store::probe  ┐ each bounded by
//!                                                                     Store::revision ┘ store_probe_timeout
//!        └──────────────► StoreHealth::probed(now, write, read)
//!  Controller::write ── a transaction's outcome ──► StoreHealth::wrote(now, result)
//!  /healthz, /readyz ──► StoreHealth::status(now, cache following) ──► up, writable, reason
//! ```
//! [`StoreHealth`] holds no clock: time is an argument.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::Controller;

/// What was last learnt about one side (writes or reads) of the store.
#[derive(Debug, Clone)]
struct Evidence {
    at: Instant,
    /// Why it failed, or `None` if it worked.
    error: Option<String>,
}

/// The store's health from probes and writes, in explicit time.
#[derive(Debug, Clone)]
pub struct StoreHealth {
    write: Option<Evidence>,
    read: Option<Evidence>,
    /// How old the last evidence may be before it no longer counts.
    stale: Duration,
}

/// The store's health at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state served follows the store: the cache's watch is established
    /// and the store answered a read lately.
    pub up: bool,
    /// The store acknowledged a write lately (a probe or a real one), and
    /// nothing failed since.
    pub writable: bool,
    /// Why not, when one of them is false.
    pub reason: Option<String>,
    /// How long ago the store last answered or failed a write.
    pub checked: Option<Duration>,
}

impl StoreHealth {
    /// Evidence older than `stale` no longer counts (so a probe that stops
    /// answering makes the store unhealthy).
    pub fn new(stale: Duration) -> StoreHealth {
        StoreHealth { write: None, read: None, stale }
    }

    /// The outcome of a write (a probe's or a transaction's) at `now`.
    pub fn wrote(&mut self, now: Instant, result: Result<(), String>) {
        self.write = Some(Evidence { at: now, error: result.err() });
    }

    /// The outcome of a read probe at `now`.
    pub fn read(&mut self, now: Instant, result: Result<(), String>) {
        self.read = Some(Evidence { at: now, error: result.err() });
    }

    /// The health at `now`, with whether the cache follows the store.
    pub fn status(&self, now: Instant, following: bool) -> Status {
        let judge = |e: &Option<Evidence>, what: &str| match e {
            None => Err(format!("the store has not answered a {what} probe yet")),
            Some(Evidence { error: Some(error), .. }) => Err(error.clone()),
            Some(Evidence { at, .. }) if now.saturating_duration_since(*at) > self.stale => Err(format!(
                "the store has not answered a {what} for {:.1} s",
                now.saturating_duration_since(*at).as_secs_f64()
            )),
            Some(_) => Ok(()),
        };
        let write = judge(&self.write, "write");
        let read = if following {
            judge(&self.read, "read")
        } else {
            Err("the controller's state does not follow the store (its watch is being re-established)".into())
        };
        Status {
            up: read.is_ok(),
            writable: write.is_ok(),
            reason: read.err().or(write.err()),
            checked: self.write.as_ref().map(|e| now.saturating_duration_since(e.at)),
        }
    }
}

/// A controller's [`StoreHealth`] and its probe task's wake-up.
#[derive(Debug)]
pub(crate) struct Health {
    tracker: Mutex<StoreHealth>,
    wake: Notify,
}

impl Health {
    pub(crate) fn new(stale: Duration) -> Health {
        Health { tracker: Mutex::new(StoreHealth::new(stale)), wake: Notify::new() }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, StoreHealth> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a transaction's outcome: a store failure makes the store
    /// unwritable at once (and probes it again now); a refusal of the
    /// request (an invalid one, an unknown lease) says nothing of the store.
    pub(crate) fn wrote<T>(&self, result: &vipcast_store::Result<T>) {
        use vipcast_store::Error;
        let outcome = match result {
            Ok(_) => Ok(()),
            Err(e @ (Error::Unavailable(_) | Error::File { .. } | Error::Corrupt { .. })) => Err(e.to_string()),
            Err(_) => return,
        };
        let failed = outcome.is_err();
        self.tracker().wrote(Instant::now(), outcome);
        if failed {
            self.wake.notify_one();
        }
    }

    pub(crate) fn status(&self, following: bool) -> Status {
        self.tracker().status(Instant::now(), following)
    }
}

/// One probe: a write ([`vipcast_store::Store::probe`]) and a read, each
/// bounded by the configured timeout.
pub(crate) async fn probe(c: &Controller) {
    let timeout = c.config.store_probe_timeout;
    let bounded = |what: &'static str, r: Result<vipcast_store::Result<()>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the store did not answer a {what} within {} ms", timeout.as_millis())),
    };
    let write = bounded("write", tokio::time::timeout(timeout, c.store.probe()).await);
    if let Err(e) = &write {
        tracing::warn!(error = %e, "store health: a probe write failed");
    }
    c.health.tracker().wrote(Instant::now(), write);
    let read = tokio::time::timeout(timeout, async { c.store.revision().await.map(|_| ()) }).await;
    let read = bounded("read", read);
    c.health.tracker().read(Instant::now(), read);
}

/// Probes the store every [`Config::store_probe`](crate::Config::store_probe),
/// and at once after a failed write, until the controller is dropped.
pub(crate) async fn run(c: Weak<Controller>, health: Arc<Health>) {
    loop {
        let Some(interval) = c.upgrade().map(|c| c.config.store_probe) else { return };
        // A failed write stores a permit: the probe after it is not missed.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = health.wake.notified() => {}
        }
        let Some(c) = c.upgrade() else { return };
        probe(&c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_the_evidence_is_fresh_and_good() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut h = StoreHealth::new(Duration::from_secs(3));
        let st = h.status(t0, true);
        assert!(!st.up && !st.writable, "nothing known yet");
        h.wrote(s(0), Ok(()));
        h.read(s(0), Ok(()));
        assert_eq!(
            h.status(s(100), true),
            Status { up: true, writable: true, reason: None, checked: Some(Duration::from_millis(100)) }
        );
        // A failed write: up (reads work) but not writable, at once.
        h.wrote(s(200), Err("no space".into()));
        let st = h.status(s(250), true);
        assert_eq!((st.up, st.writable, st.reason.as_deref()), (true, false, Some("no space")));
        // A probe write that works again.
        h.wrote(s(1000), Ok(()));
        assert!(h.status(s(1000), true).writable);
        // Probes that stop answering: stale after 3 s.
        let st = h.status(s(4001), true);
        assert!(!st.writable && !st.up, "{st:?}");
        assert!(st.reason.unwrap().contains("has not answered a read for 4.0 s"));
        // The cache's watch broken: not up, whatever the probes.
        h.wrote(s(5000), Ok(()));
        h.read(s(5000), Ok(()));
        let st = h.status(s(5000), false);
        assert!(!st.up && st.writable && st.reason.unwrap().contains("does not follow"));
    }
}

//! Which watch streams hear of each revision, and the bound on what each
//! may have waiting.
//!
//! ```text
//!  cache ──Applied(rev)──► Fanout::dispatch ──route()──► chassis of the VPCs touched
//!                              │                         (+ chassis touched, replicators)
//!                              └─try_send─► [queue of one stream] ─► watch::run ─► HTTP
//!                                            full? the stream is cut (counted) and its
//!                                            client resumes with ?from=REV
//! ```
//! A region has thousands of subscribers and a VIP move concerns the few
//! dozen chassis of its VPC: waking every stream for every revision would
//! cost O(subscribers) per move. [`route`] works out, from the change alone
//! and the state's indexes, a superset of the subscribers whose view it
//! changes (the property tests check it against the per-stream diff), and
//! only those are handed the revision. A stream skips the revisions not
//! routed to it safely: what it should hold changes only by revisions that
//! are (its own chassis, or a VPC it takes part in, before or after).
//!
//! Each stream's queue holds at most [`QUEUE`] of the revisions routed to it. One that stops
//! reading fills it; it is then cut rather than buffered without bound
//! (Kubernetes drops a watcher that blocks dispatch the same way), counted
//! in `vipcast_controller_watch_dropped_total`, and its client resumes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vipcast_model::{Object, ObjectKey, State};

use crate::cache::Applied;

/// Revisions one stream may have waiting before it is cut.
pub const QUEUE: usize = 256;

/// Whom a revision may concern.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Every subscriber (a replicator or a gateway changed, or a reload).
    pub all: bool,
    /// Chassis named directly (their own record, or one of their ports).
    pub chassis: BTreeSet<String>,
    /// VPCs whose participants (before or after) must hear of it.
    pub vpcs: BTreeSet<String>,
}

impl Route {
    fn is_empty(&self) -> bool {
        !self.all && self.chassis.is_empty() && self.vpcs.is_empty()
    }
}

/// Whom `applied` may concern. Replicator streams are not named: they hear
/// of every revision that concerns anyone.
pub fn route(applied: &Applied) -> Route {
    let mut r = Route { all: applied.reload, ..Route::default() };
    let (before, after) = (&*applied.before, &*applied.state);
    for (key, new) in &applied.changes {
        let old = before.get(key);
        for obj in [old.as_ref(), new.as_ref()].into_iter().flatten() {
            touch(&mut r, before, after, obj);
        }
        // A deleted object that was never in the state still names its key.
        if let ObjectKey::Vpc(v) | ObjectKey::Subnet(v, _) = key {
            r.vpcs.insert(v.clone());
        }
    }
    r
}

fn touch(r: &mut Route, before: &State, after: &State, obj: &Object) {
    match obj {
        Object::Vpc(v) => {
            r.vpcs.insert(v.name.clone());
            // Gateways take part in every VPC: one coming or going changes theirs.
            for s in [before, after] {
                r.chassis.extend(s.index().gateways().iter().cloned());
            }
        }
        Object::Subnet(s) => {
            r.vpcs.insert(s.vpc.clone());
        }
        Object::Port(p) => {
            r.vpcs.insert(p.vpc.clone());
            r.chassis.insert(p.chassis.clone());
        }
        Object::Vip(v) => {
            r.vpcs.insert(v.spec.vpc.clone());
        }
        Object::Chassis(c) => {
            r.chassis.insert(c.name.clone());
            for s in [before, after] {
                if s.index().gateways().contains(&c.name) {
                    r.all = true;
                }
                r.vpcs.extend(s.index().chassis_vpcs(&c.name).keys().cloned());
            }
        }
        Object::Replicator(_) => r.all = true,
        Object::History(_) | Object::Router(_) | Object::Arbitration(_) => {}
    }
}

/// The chassis whose streams must hear of a revision.
#[derive(Debug, PartialEq, Eq)]
pub enum Concerned {
    All,
    /// These (registered or not); the replicators' streams too.
    Chassis(BTreeSet<String>),
}

/// The chassis `applied` may concern, `None` for nobody: [`route`]'s
/// chassis, and the participants of its VPCs before and after (gateways
/// take part in every VPC).
pub fn concerned(applied: &Applied) -> Option<Concerned> {
    let r = route(applied);
    if r.is_empty() {
        return None;
    }
    if r.all {
        return Some(Concerned::All);
    }
    let mut names = r.chassis;
    for vpc in &r.vpcs {
        for s in [&*applied.before, &*applied.state] {
            let idx = s.index();
            names.extend(idx.vpc_chassis(vpc).keys().chain(idx.gateways().iter()).cloned());
        }
    }
    Some(Concerned::Chassis(names))
}

/// A stream's queue, and what cuts it.
type Tx = (mpsc::Sender<Arc<Applied>>, CancellationToken);

/// The open watch streams, by chassis (and the replicators').
#[derive(Debug)]
pub struct Fanout {
    next: u64,
    chassis: HashMap<String, Vec<(u64, Tx)>>,
    replicators: Vec<(u64, Tx)>,
    dropped: Counter,
    capacity: usize,
}

impl Fanout {
    pub fn new(dropped: Counter) -> Fanout {
        Fanout::with_capacity(dropped, QUEUE)
    }

    pub fn with_capacity(dropped: Counter, capacity: usize) -> Fanout {
        Fanout { next: 1, chassis: HashMap::new(), replicators: Vec::new(), dropped, capacity: capacity.max(1) }
    }

    /// A new stream for `chassis` (`None`: a replicator): its id, queue,
    /// and the token cancelled when it is cut.
    pub fn add(&mut self, chassis: Option<&str>) -> (u64, mpsc::Receiver<Arc<Applied>>, CancellationToken) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let cut = CancellationToken::new();
        let tx = (tx, cut.clone());
        let id = self.next;
        self.next += 1;
        match chassis {
            Some(c) => self.chassis.entry(c.to_string()).or_default().push((id, tx)),
            None => self.replicators.push((id, tx)),
        }
        (id, rx, cut)
    }

    /// Forgets stream `id` (it ended).
    pub fn remove(&mut self, chassis: Option<&str>, id: u64) {
        match chassis {
            Some(c) => {
                if let Some(v) = self.chassis.get_mut(c) {
                    v.retain(|(i, _)| *i != id);
                    if v.is_empty() {
                        self.chassis.remove(c);
                    }
                }
            }
            None => self.replicators.retain(|(i, _)| *i != id),
        }
    }

    /// The counter of streams cut because their queue was full.
    pub fn dropped(&self) -> Counter {
        self.dropped.clone()
    }

    /// Open streams.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.replicators.len() + self.chassis.values().map(Vec::len).sum::<usize>()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands `applied` to every stream it may concern; returns how many.
    /// A stream whose queue is full is cut (its queue closed) and counted.
    pub fn dispatch(&mut self, applied: &Arc<Applied>) -> usize {
        let Some(names) = concerned(applied) else { return 0 };
        let mut cut: Vec<(Option<String>, u64)> = Vec::new();
        let targets: Vec<&str> = match &names {
            Concerned::All => self.chassis.keys().map(String::as_str).collect(),
            Concerned::Chassis(names) => {
                names.iter().map(String::as_str).filter(|c| self.chassis.contains_key(*c)).collect()
            }
        };
        let mut sent = 0;
        let mut send = |name: Option<&str>, id: u64, (tx, token): &Tx| match tx.try_send(applied.clone()) {
            Ok(()) => sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                token.cancel();
                self.dropped.inc();
                tracing::warn!(chassis = name.unwrap_or("(replicator)"), "watch stream cut: its queue is full");
                cut.push((name.map(str::to_string), id));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => cut.push((name.map(str::to_string), id)),
        };
        for name in targets {
            for (id, tx) in self.chassis.get(name).into_iter().flatten() {
                send(Some(name), *id, tx);
            }
        }
        for (id, tx) in &self.replicators {
            send(None, *id, tx);
        }
        for (name, id) in cut {
            self.remove(name.as_deref(), id);
        }
        sent
    }
}

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
//! cost O(subscribers) per move. [`route`] and [`targets`] work out, per
//! change and from the state's indexes, a superset of the subscribers whose
//! view it changes (the property tests check it against the per-stream
//! diff), and only those are handed the revision, with the changes each
//! must weigh. A stream skips the revisions not
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

/// Whom one change may concern.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Every subscriber (a replicator or a gateway changed).
    pub all: bool,
    /// Chassis named directly (their own record).
    pub chassis: BTreeSet<String>,
    /// VPCs whose participants (before or after) must hear of it.
    pub vpcs: BTreeSet<String>,
}

impl Route {
    fn is_empty(&self) -> bool {
        !self.all && self.chassis.is_empty() && self.vpcs.is_empty()
    }
}

/// Whom change `i` of `applied` may concern (replicator streams, which
/// weigh every change, are not named).
pub fn route(applied: &Applied, i: usize) -> Route {
    let mut r = Route::default();
    let (before, after) = (&*applied.before, &*applied.state);
    let Some((key, new)) = applied.changes.get(i) else { return r };
    let old = before.get(key);
    for obj in [old.as_ref(), new.as_ref()].into_iter().flatten() {
        touch(&mut r, before, after, obj);
    }
    // A deleted object that was never in the state still names its key.
    if let ObjectKey::Vpc(v) | ObjectKey::Subnet(v, _) = key {
        r.vpcs.insert(v.clone());
    }
    r
}

fn touch(r: &mut Route, before: &State, after: &State, obj: &Object) {
    match obj {
        // Gateways take part in every VPC: [`targets`] adds them to every
        // VPC's participants, so a VPC coming or going reaches them too.
        Object::Vpc(v) => {
            r.vpcs.insert(v.name.clone());
        }
        Object::Subnet(s) => {
            r.vpcs.insert(s.vpc.clone());
        }
        // Its chassis is among the VPC's participants before (deleted) or
        // after (created), so its own stream hears of it.
        Object::Port(p) => {
            r.vpcs.insert(p.vpc.clone());
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

/// Which of a revision's changes (indexes into [`Applied::changes`]) the
/// streams of each chassis must weigh.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Whether any change concerns anyone: replicators' streams weigh all.
    pub any: bool,
    /// Changes every stream weighs (a gateway's, a replicator's).
    pub all: Vec<u32>,
    /// Chassis (registered or not) -> the other changes its streams weigh:
    /// those of the VPCs it takes part in before or after, and those that
    /// name it.
    pub chassis: HashMap<String, Vec<u32>>,
}

impl Targets {
    /// The changes the streams of `chassis` weigh, in order; empty: none.
    pub fn of(&self, chassis: &str) -> Vec<u32> {
        let own = self.chassis.get(chassis).map(Vec::as_slice).unwrap_or_default();
        let mut v: Vec<u32> = own.iter().chain(&self.all).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether no change concerns anyone.
    pub fn is_empty(&self) -> bool {
        !self.any
    }
}

/// Who must weigh each change of `applied`: the chassis [`route`] names, and
/// the participants of its VPCs before and after (gateways take part in
/// every VPC). A VIP move is weighed by its VPC's chassis only; a batch of
/// liveness changes by each changed chassis' neighbours, each for its own.
pub fn targets(applied: &Applied) -> Targets {
    let mut t = Targets::default();
    for i in 0..applied.changes.len() {
        let r = route(applied, i);
        if r.is_empty() {
            continue;
        }
        t.any = true;
        let i = i as u32;
        if r.all {
            t.all.push(i);
            continue;
        }
        let mut names: BTreeSet<&str> = r.chassis.iter().map(String::as_str).collect();
        for vpc in &r.vpcs {
            for s in [&*applied.before, &*applied.state] {
                let idx = s.index();
                names.extend(idx.vpc_chassis(vpc).keys().chain(idx.gateways().iter()).map(String::as_str));
            }
        }
        for n in names {
            t.chassis.entry(n.to_string()).or_default().push(i);
        }
    }
    t
}

/// What a stream is handed: a revision, and which of its changes to weigh
/// (`None`: all of them).
#[derive(Debug, Clone)]
pub struct Routed {
    pub applied: Arc<Applied>,
    pub changes: Option<Arc<[u32]>>,
}

impl Routed {
    /// The changes to weigh, by key (final values).
    pub fn changes(&self) -> std::collections::BTreeMap<ObjectKey, Option<Object>> {
        let all = &self.applied.changes;
        match &self.changes {
            None => all.iter().cloned().collect(),
            Some(ix) => ix.iter().filter_map(|&i| all.get(i as usize).cloned()).collect(),
        }
    }
}

/// A stream's queue, and what cuts it.
type Tx = (mpsc::Sender<Routed>, CancellationToken);

/// A stream to hand a revision to: its chassis (`None`: a replicator), id,
/// queue, and the changes it weighs.
type Handed<'a> = (Option<&'a str>, u64, &'a Tx, Option<Arc<[u32]>>);

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
    pub fn add(&mut self, chassis: Option<&str>) -> (u64, mpsc::Receiver<Routed>, CancellationToken) {
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

    /// Hands `applied` to every stream it may concern, with the changes it
    /// must weigh; returns how many streams. A stream whose queue is full is
    /// cut (its token cancelled, its queue closed) and counted.
    pub fn dispatch(&mut self, applied: &Arc<Applied>) -> usize {
        let mut handed: Vec<Handed<'_>> = Vec::new();
        if applied.reload {
            for (name, streams) in &self.chassis {
                handed.extend(streams.iter().map(|(id, tx)| (Some(name.as_str()), *id, tx, None)));
            }
            handed.extend(self.replicators.iter().map(|(id, tx)| (None, *id, tx, None)));
        } else {
            let t = targets(applied);
            if t.is_empty() {
                return 0;
            }
            // Changes for every stream: each open stream; otherwise only
            // the chassis named.
            let names: Vec<&String> =
                if t.all.is_empty() { t.chassis.keys().collect() } else { self.chassis.keys().collect() };
            for name in names {
                let Some((name, streams)) = self.chassis.get_key_value(name) else { continue };
                let ix = t.of(name);
                if ix.is_empty() {
                    continue;
                }
                let ix = Arc::<[u32]>::from(ix);
                handed.extend(streams.iter().map(|(id, tx)| (Some(name.as_str()), *id, tx, Some(ix.clone()))));
            }
            handed.extend(self.replicators.iter().map(|(id, tx)| (None, *id, tx, None)));
        }
        let mut sent = 0;
        let mut cut: Vec<(Option<String>, u64)> = Vec::new();
        for (name, id, (tx, token), changes) in handed {
            match tx.try_send(Routed { applied: applied.clone(), changes }) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    token.cancel();
                    self.dropped.inc();
                    tracing::warn!(chassis = name.unwrap_or("(replicator)"), "watch stream cut: its queue is full");
                    cut.push((name.map(str::to_string), id));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => cut.push((name.map(str::to_string), id)),
            }
        }
        for (name, id) in cut {
            self.remove(name.as_deref(), id);
        }
        sent
    }
}

//! The controller's in-memory copy of the state, kept in step with the store.
//!
//! ```text
//!  store ──range(PREFIX)──► initial State at revision R
//!  store ──watch(PREFIX, R+1)──► batch ──► new Arc<State> ──┬─► `current` (watch channel)
//!                                                           └─► `Applied` to the watch streams it
//!                                                               concerns ([`crate::fanout`])
//! ```
//! Every controller sharing a store sees every write through this path, its
//! own included, so all of them serve the same reads and watch streams.
//! Writers wait until the cache has reached their write's revision before
//! answering (read-your-writes).
//!
//! A stored object that cannot be decoded stops the load (nothing is served
//! from a state with objects missing), unless recovering, which deletes it.
//! The cache also keeps which objects the latest revisions changed (up to
//! [`RECENT_KEYS`] keys), so a watch stream resuming from a recent revision
//! is answered from memory ([`Cache::changed_between`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};
use vipcast_model::{Object, ObjectKey, State};
use vipcast_store::{Compare, Error, Event, Op, Revision, Store};

use crate::fanout::Fanout;

/// Key every write transaction bumps, so that a transaction validated against
/// the state at one revision fails if anything was written since.
pub const GUARD_KEY: &str = "/vipcast/meta/guard";

/// The state at one revision.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: Revision,
    pub state: Arc<State>,
    /// Every object of `state` as its watch streams send it (JSON), encoded
    /// once when it changes rather than once per stream.
    pub encoded: Encoded,
    /// Mod revision of [`GUARD_KEY`] (0: never written).
    pub guard: Revision,
}

/// What one store revision changed.
#[derive(Debug)]
pub struct Applied {
    pub revision: Revision,
    /// Objects written (`Some`) or deleted (`None`) at this revision.
    pub changes: Vec<(ObjectKey, Option<Object>)>,
    /// The state before it (cheap: states share structure).
    pub before: Arc<State>,
    /// The state after it.
    pub state: Arc<State>,
    /// The objects of `state`, encoded.
    pub encoded: Encoded,
    /// The cache was reloaded from scratch: subscribers must resynchronise.
    pub reload: bool,
}

/// Objects encoded as JSON, by key (a persistent map: cloning is O(1)).
pub type Encoded = imbl::OrdMap<ObjectKey, bytes::Bytes>;

/// `obj` as watch streams send it; `None` for history records, which no
/// stream is sent.
fn encode(obj: &Object) -> Option<bytes::Bytes> {
    (!matches!(obj, Object::History(_))).then(|| serde_json::to_vec(obj).unwrap_or_default().into())
}

/// The cache handle.
#[derive(Debug, Clone)]
pub struct Cache {
    current: watch::Receiver<Arc<Snapshot>>,
    /// The open watch streams; held while a revision is handed out and
    /// published, so a stream opening sees each revision exactly once
    /// (in its snapshot, or in its queue).
    fanout: Arc<Mutex<Fanout>>,
    recent: Arc<Mutex<Recent>>,
    /// Whether the store's watch is established (false while it is being
    /// re-established after a failure).
    following: Arc<AtomicBool>,
}

/// How many changed keys the window of recent revisions holds (about 1.5
/// MiB at most); a resume from before it gets a snapshot.
pub const RECENT_KEYS: usize = 16 * 1024;

/// Which objects each of the latest revisions changed.
#[derive(Debug)]
struct Recent {
    /// Every change after this revision is in `revisions`.
    since: Revision,
    revisions: VecDeque<(Revision, Vec<ObjectKey>)>,
    keys: usize,
}

impl Recent {
    fn new(since: Revision) -> Recent {
        Recent { since, revisions: VecDeque::new(), keys: 0 }
    }

    fn push(&mut self, revision: Revision, keys: Vec<ObjectKey>) {
        if keys.is_empty() {
            return;
        }
        self.keys += keys.len();
        self.revisions.push_back((revision, keys));
        while self.keys > RECENT_KEYS {
            let Some((oldest, keys)) = self.revisions.pop_front() else { break };
            self.keys -= keys.len();
            self.since = oldest;
        }
    }

    fn changed_between(&self, from: Revision, to: Revision) -> Option<BTreeSet<ObjectKey>> {
        if from < self.since {
            return None;
        }
        let mut out = BTreeSet::new();
        for (revision, keys) in &self.revisions {
            if *revision > from && *revision <= to {
                out.extend(keys.iter().cloned());
            }
        }
        Some(out)
    }
}

impl Cache {
    /// Loads the state and starts following the store; a stored object
    /// that cannot be decoded is an [`Error::Corrupt`].
    pub async fn start(store: Arc<dyn Store>) -> vipcast_store::Result<Cache> {
        Ok(Cache::start_with(store, false).await?.0)
    }

    /// Like [`Cache::start`]; with `recover`, objects that cannot be
    /// decoded are deleted from the store instead, and said (one sentence
    /// each, also logged).
    pub async fn start_with(store: Arc<dyn Store>, recover: bool) -> vipcast_store::Result<(Cache, Vec<String>)> {
        let (first, bad) = load(store.as_ref()).await?;
        let dropped = drop_undecodable(store.as_ref(), bad, recover).await?;
        let recent = Arc::new(Mutex::new(Recent::new(first.revision)));
        let following = Arc::new(AtomicBool::new(true));
        let (tx, rx) = watch::channel(Arc::new(first));
        let fanout = Arc::new(Mutex::new(Fanout::new(Counter::default())));
        let cache = Cache { current: rx, fanout: fanout.clone(), recent: recent.clone(), following: following.clone() };
        tokio::spawn(follow(store, tx, fanout, recent, following));
        Ok((cache, dropped))
    }

    /// The objects changed by the revisions after `from` up to `to`, or
    /// `None` if `from` is older than the window of recent revisions kept.
    pub fn changed_between(&self, from: Revision, to: Revision) -> Option<BTreeSet<ObjectKey>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).changed_between(from, to)
    }

    /// Whether the cache's watch of the store is established.
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    /// The latest state.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.borrow().clone()
    }

    /// A receiver of the latest state, woken at each new one (states in
    /// between may be skipped).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.current.clone()
    }

    /// Waits until the cache holds revision `rev` (or later).
    pub async fn wait_for(&self, rev: Revision) -> Arc<Snapshot> {
        let mut rx = self.current.clone();
        match rx.wait_for(|s| s.revision >= rev).await {
            Ok(s) => s.clone(),
            Err(_) => self.current(),
        }
    }

    /// Opens a watch stream for `chassis` (`None`: a replicator): the
    /// state now, and a queue of the later revisions that may concern it
    /// (closed if the stream falls [`crate::fanout::QUEUE`] revisions behind).
    pub fn watch(&self, chassis: Option<&str>) -> Subscription {
        let mut f = self.fanout.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.current();
        let (id, rx, cut) = f.add(chassis);
        let guard = Unsubscribe { fanout: self.fanout.clone(), chassis: chassis.map(str::to_string), id };
        Subscription { snapshot, rx, cut, _guard: guard }
    }

    /// Watch streams cut because their queue was full.
    pub fn watch_dropped(&self) -> Counter {
        self.fanout.lock().unwrap_or_else(PoisonError::into_inner).dropped()
    }
}

/// An open watch stream's view of the cache.
#[derive(Debug)]
pub struct Subscription {
    /// The state it starts from.
    pub snapshot: Arc<Snapshot>,
    /// The revisions after it that may concern it.
    pub rx: mpsc::Receiver<crate::fanout::Routed>,
    /// Cancelled when the stream is cut (its queue was full): it must end
    /// at once, even while blocked on its client.
    pub cut: tokio_util::sync::CancellationToken,
    _guard: Unsubscribe,
}

/// Removes the stream from the fan-out when it ends.
#[derive(Debug)]
struct Unsubscribe {
    fanout: Arc<Mutex<Fanout>>,
    chassis: Option<String>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.fanout.lock().unwrap_or_else(PoisonError::into_inner).remove(self.chassis.as_deref(), self.id);
    }
}

/// A stored object that cannot be decoded: its key, mod revision and why.
type Undecodable = (String, Revision, String);

/// The state in the store, and the objects in it that cannot be decoded
/// (left out of the state).
async fn load(store: &dyn Store) -> vipcast_store::Result<(Snapshot, Vec<Undecodable>)> {
    let (kvs, revision) = store.range(vipcast_model::objects_prefix()).await?;
    let mut state = State::default();
    let mut encoded = Encoded::new();
    let mut guard = 0;
    let mut bad = Vec::new();
    for kv in kvs {
        if kv.key == GUARD_KEY {
            guard = kv.mod_revision;
            continue;
        }
        if let Some(key) = ObjectKey::parse(&kv.key) {
            match Object::from_value(&key, &kv.value) {
                Ok(obj) => {
                    if let Some(e) = encode(&obj) {
                        encoded.insert(key, e);
                    }
                    state.put(obj)
                }
                Err(e) => bad.push((kv.key, kv.mod_revision, e.to_string())),
            }
        }
    }
    Ok((Snapshot { revision, state: Arc::new(state), encoded, guard }, bad))
}

/// Refuses undecodable objects, or (recovering) deletes each, unless it
/// changed since it was read; what was deleted.
async fn drop_undecodable(
    store: &dyn Store,
    bad: Vec<Undecodable>,
    recover: bool,
) -> vipcast_store::Result<Vec<String>> {
    let Some((key, _, error)) = bad.first() else { return Ok(Vec::new()) };
    if !recover {
        let more = match bad.len() {
            1 => String::new(),
            n => format!(" (and {} more objects)", n - 1),
        };
        return Err(Error::Corrupt {
            what: format!("stored object {key}"),
            message: format!("it cannot be decoded: {error}{more}"),
        });
    }
    let mut dropped = Vec::new();
    for (key, revision, error) in bad {
        let compare = vec![Compare::ModRevision { key: key.clone(), revision }];
        let res = store.txn(compare, vec![Op::Delete { key: key.clone() }]).await?;
        let line = if res.succeeded {
            format!("deleted stored object {key}: it cannot be decoded ({error})")
        } else {
            format!("left stored object {key}, rewritten meanwhile (it could not be decoded: {error})")
        };
        tracing::warn!("store recovery: {line}");
        dropped.push(line);
    }
    Ok(dropped)
}

async fn follow(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<Snapshot>>,
    fanout: Arc<Mutex<Fanout>>,
    recent: Arc<Mutex<Recent>>,
    following: Arc<AtomicBool>,
) {
    loop {
        let from = tx.borrow().revision + 1;
        let mut stream = match store.watch(vipcast_model::objects_prefix(), from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "store watch failed; reloading");
                following.store(false, Ordering::Relaxed);
                reload(store.as_ref(), &tx, &fanout, &recent).await;
                continue;
            }
        };
        following.store(true, Ordering::Relaxed);
        loop {
            // Ends with the last handle (the controller), releasing the store.
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            let Some(item) = item else { break };
            let batch = match item {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "store watch broke; reloading");
                    following.store(false, Ordering::Relaxed);
                    reload(store.as_ref(), &tx, &fanout, &recent).await;
                    break;
                }
            };
            let prev = tx.borrow().clone();
            if batch.revision <= prev.revision {
                continue;
            }
            let mut state = (*prev.state).clone();
            let mut encoded = prev.encoded.clone();
            let mut guard = prev.guard;
            let mut changes = Vec::with_capacity(batch.events.len());
            for ev in batch.events {
                let (key, value) = match ev {
                    Event::Put(kv) => (kv.key, Some(kv.value)),
                    Event::Delete { key, .. } => (key, None),
                };
                if key == GUARD_KEY {
                    guard = batch.revision;
                    continue;
                }
                let Some(okey) = ObjectKey::parse(&key) else { continue };
                match value {
                    Some(v) => match Object::from_value(&okey, &v) {
                        Ok(obj) => {
                            if let Some(e) = encode(&obj) {
                                encoded.insert(okey.clone(), e);
                            }
                            state.put(obj.clone());
                            changes.push((okey, Some(obj)));
                        }
                        Err(e) => tracing::warn!(key, error = %e, "skipping undecodable object"),
                    },
                    None => {
                        state.delete(&okey);
                        encoded.remove(&okey);
                        changes.push((okey, None));
                    }
                }
            }
            let state = Arc::new(state);
            // Before the revision is published: a resume that sees it as
            // current finds its changes.
            recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(batch.revision, changes.iter().map(|(k, _)| k.clone()).collect());
            let applied = Arc::new(Applied {
                revision: batch.revision,
                changes,
                before: prev.state.clone(),
                state: state.clone(),
                encoded: encoded.clone(),
                reload: false,
            });
            let mut f = fanout.lock().unwrap_or_else(PoisonError::into_inner);
            f.dispatch(&applied);
            tx.send_replace(Arc::new(Snapshot { revision: batch.revision, state, encoded, guard }));
            drop(f);
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reload(store: &dyn Store, tx: &watch::Sender<Arc<Snapshot>>, fanout: &Mutex<Fanout>, recent: &Mutex<Recent>) {
    loop {
        match load(store).await {
            Ok((s, bad)) => {
                for (key, _, error) in bad {
                    tracing::warn!(key, error, "skipping undecodable object");
                }
                // What changed across the reload is not known.
                *recent.lock().unwrap_or_else(PoisonError::into_inner) = Recent::new(s.revision);
                let s = Arc::new(s);
                let applied = Arc::new(Applied {
                    revision: s.revision,
                    changes: Vec::new(),
                    before: s.state.clone(),
                    state: s.state.clone(),
                    encoded: s.encoded.clone(),
                    reload: true,
                });
                let mut f = fanout.lock().unwrap_or_else(PoisonError::into_inner);
                f.dispatch(&applied);
                tx.send_replace(s);
                drop(f);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

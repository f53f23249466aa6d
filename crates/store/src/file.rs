//! The embedded backend: one redb file with etcd semantics.
//!
//! ```text
//!  txn, lease grant/revoke, ──► spawn_blocking ──► writer lock ──► redb write txn
//!  lease expiry task, probe                                        (kv, lease_keys, log, meta)
//!                                                                  commit, fsynced
//!                                                                  broadcast Batch(rev)
//!                                                   writer lock released
//!
//!  watch(prefix, from) ──► subscribe to the broadcast, then replay the log from `from`,
//!                          then live batches; a batch at or below the last revision
//!                          delivered is a repeat and dropped; a lagged receiver or a
//!                          gap ──► replay from the log again
//! ```
//!
//! Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format"`, `"revision"`, `"oldest"` (oldest revision in `log`), `"next_lease"` | `i64` |
//! | `kv` | key | create revision, mod revision, lease, value |
//! | `log` | revision | the events of that revision |
//! | `leases` | lease id | ttl in milliseconds |
//! | `lease_keys` | (lease id, key) | `()` |
//! | `health` | `"probe"` | how many probes wrote (no revision) |
//!
//! Lease deadlines live in memory only: on open every lease restarts with its
//! full ttl, as etcd does after a restart.
//!
//! ## What is trusted
//!
//! A new store file is made under a temporary name and renamed into place
//! once its tables exist, so a `store.redb` that exists was complete once.
//! Opening one verifies it before anything is served (`check.rs`): redb checks
//! the checksum of every page of the committed trees (its open with an
//! integrity check), then every record is decoded and the revisions, leases
//! and history are checked against each other. An empty file, one redb
//! refuses, or one whose records do not add up fails with
//! [`Error::Corrupt`]; with [`FileOptions::recover`] the store opens anyway,
//! dropping what cannot be read, and [`FileStore::recovery`] says what.
//!
//! ## Failures while open
//!
//! Any redb failure (an I/O error such as a full disk, after which redb
//! refuses every write until the file is reopened; a corrupt page; a panic
//! inside redb, caught) closes the database: the failed call returns
//! [`Error::File`], and the next call opens the file again, verified as at
//! start, at most once a second while that fails. Writes thus
//! resume without a restart once the disk has room again. A write whose
//! commit failed may still have reached the disk (as a write to etcd that
//! timed out may have been applied): the revisions found on reopen that were
//! never broadcast are sent to watchers before the next write's.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::time::Instant;

use crate::{
    Compare, Error, Event, KeyValue, LeaseId, Op, Result, Revision, Store, TxnResult, WatchBatch, WatchStream,
};

mod check;

const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");
const HEALTH: TableDefinition<&str, u64> = TableDefinition::new("health");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_OLDEST: &str = "oldest";
const META_NEXT_LEASE: &str = "next_lease";
const HEALTH_PROBE: &str = "probe";

/// The store file in the store's directory.
const FILE_NAME: &str = "store.redb";
/// A new store file while its tables are made.
const NEW_FILE_NAME: &str = "store.redb.new";

/// Version of the on-disk layout, stored in `meta`.
const FORMAT: i64 = 1;
/// Version byte in front of every encoded record.
const RECORD_VERSION: u8 = 1;
/// Revisions read from the log per replay step of a watcher.
const REPLAY_CHUNK: usize = 256;
/// How often a closed store file is opened again while that fails.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// Options of a [`FileStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// How many of the latest revisions the log keeps for watchers resuming
    /// from the past; older ones are [`Error::Compacted`]. Default 100,000;
    /// at least 1.
    pub history: u64,
    /// Revisions buffered per live watcher before it falls back to reading
    /// the log (it never loses events either way). Default 1,024; at least 1.
    pub watch_buffer: usize,
    /// Open a store file that fails verification anyway: a file redb cannot
    /// open (or an empty one) is moved aside (`store.redb.corrupt-<unix
    /// time>`) and an empty store started; undecodable records are deleted;
    /// history that does not add up is dropped (watchers resuming from
    /// before it get [`Error::Compacted`]). [`FileStore::recovery`] lists
    /// what was done. Default `false`: such a file fails with
    /// [`Error::Corrupt`].
    pub recover: bool,
    /// Bytes that must be free on the store's filesystem for
    /// [`Store::probe`] to pass. Default 1 MiB.
    pub min_free: u64,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions { history: 100_000, watch_buffer: 1024, recover: false, min_free: 1 << 20 }
    }
}

/// The embedded store: a redb file (`DIR/store.redb`) owned by one process.
///
/// Every write is one redb write transaction, committed with immediate
/// durability (fsync) before the call returns. Cloning gives another handle to
/// the same store; the file is closed when the last handle (and any operation
/// still running) is gone, and watch streams then end.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    dir: PathBuf,
    history: i64,
    min_free: u64,
    /// The open database, or why there is none.
    slot: RwLock<Slot>,
    /// When the file was last opened: it is opened again at most once per
    /// [`REOPEN_INTERVAL`].
    opened: Mutex<std::time::Instant>,
    /// Set by a redb failure during a call: the database is closed when the
    /// call ends.
    broken: Mutex<Option<String>>,
    /// Serialises writers so that batches are broadcast in revision order.
    writer: Mutex<()>,
    /// The last revision broadcast.
    sent: AtomicI64,
    /// Every committed revision, for live watchers.
    events: broadcast::Sender<Arc<WatchBatch>>,
    /// Deadlines of the live leases (shared with the expiry task, which
    /// holds the store itself only while it ends a lease).
    leases: Timers,
    /// Wakes the expiry task when a deadline moves.
    lease_changed: Arc<Notify>,
    /// What opening with [`FileOptions::recover`] dropped.
    recovery: Vec<String>,
    /// Dropped with the store: stops the expiry task.
    _stop_expiry: oneshot::Sender<()>,
}

enum Slot {
    Open(Database),
    /// Closed after a failure; opened again on a call from `retry` on.
    Closed {
        reason: String,
        retry: std::time::Instant,
    },
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("path", &self.path).field("history", &self.history).finish_non_exhaustive()
    }
}

type Timers = Arc<Mutex<HashMap<LeaseId, LeaseTimer>>>;

fn lock_timers(timers: &Timers) -> Result<MutexGuard<'_, HashMap<LeaseId, LeaseTimer>>> {
    timers.lock().map_err(|_| Error::Unavailable("lease table lock poisoned".into()))
}

#[derive(Debug, Clone, Copy)]
struct LeaseTimer {
    ttl: Duration,
    deadline: Instant,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir/store.redb`, with default
    /// [`FileOptions`].
    ///
    /// Must be called within a tokio runtime (it starts the lease expiry
    /// task). Opening reads and verifies the whole file on the calling
    /// thread: call it at start up, or from `spawn_blocking`. Fails with
    /// [`Error::File`] if another process (or another `FileStore` in this
    /// one) has the file open or it cannot be read, and with
    /// [`Error::Corrupt`] if it fails verification.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::open_with(dir, FileOptions::default())
    }

    /// Like [`FileStore::open`], with options.
    pub fn open_with(dir: impl AsRef<Path>, options: FileOptions) -> Result<FileStore> {
        let dir = dir.as_ref();
        let path = dir.join(FILE_NAME);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Unavailable("FileStore::open must be called within a tokio runtime".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| file_error(&path, format!("cannot create directory: {e}")))?;
        let mut recovery = Vec::new();
        let db = check::open(&path, true, options.recover, &mut recovery)?;
        let (revision, restored) = {
            let verified = catch_unwind(AssertUnwindSafe(|| check::verify(&db, &path, options.recover)));
            let verified = verified.unwrap_or_else(|panic| {
                Err(Error::Corrupt {
                    what: format!("store file {}", path.display()),
                    message: panicked("verifying it", &panic),
                })
            });
            let (state, dropped) = match verified {
                Ok(v) => v,
                Err(e) => {
                    // Closed before the error is returned, so the file is free.
                    drop(db);
                    return Err(e);
                }
            };
            recovery.extend(dropped);
            state
        };
        for line in &recovery {
            tracing::warn!(path = %path.display(), "store recovery: {line}");
        }
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            path: path.clone(),
            dir: dir.to_path_buf(),
            history: i64::try_from(options.history.max(1)).unwrap_or(i64::MAX),
            min_free: options.min_free,
            slot: RwLock::new(Slot::Open(db)),
            opened: Mutex::new(std::time::Instant::now()),
            broken: Mutex::new(None),
            writer: Mutex::new(()),
            sent: AtomicI64::new(revision),
            events,
            leases: Arc::new(Mutex::new(HashMap::new())),
            lease_changed: Arc::new(Notify::new()),
            recovery,
            _stop_expiry: stop_tx,
        });
        tracing::info!(path = %path.display(), revision, leases = restored.len(), "store: opened");
        {
            let now = Instant::now();
            let mut timers = inner.timers()?;
            for (id, ttl) in restored {
                timers.insert(id, LeaseTimer { ttl, deadline: now + ttl });
            }
        }
        runtime.spawn(expire_leases(
            Arc::downgrade(&inner),
            inner.leases.clone(),
            inner.lease_changed.clone(),
            stop_rx,
        ));
        Ok(FileStore { inner })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What opening with [`FileOptions::recover`] dropped or changed, one
    /// sentence each (also logged); empty when the file was sound.
    pub fn recovery(&self) -> &[String] {
        &self.inner.recovery
    }

    /// Runs `f` on the blocking pool with the store.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl Store for FileStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.range(&prefix)).await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnResult> {
        self.blocking(move |inner| inner.txn(&compares, &ops)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        // Subscribe first: every revision committed from now on reaches `rx`,
        // older ones are read from the log.
        let rx = self.inner.events.subscribe();
        let (next, first, replay) = if from > 0 {
            let p = prefix.to_owned();
            let (next, first) = self.blocking(move |inner| inner.read_log(&p, from)).await?;
            (next, first, next - from >= REPLAY_CHUNK as i64)
        } else {
            // The last revision broadcast, not the file's: one committed but
            // not yet broadcast is still to come through `rx`.
            (self.inner.sent.load(Ordering::SeqCst) + 1, Vec::new(), false)
        };
        let state = WatchState {
            inner: Arc::downgrade(&self.inner),
            rx,
            prefix: prefix.to_owned(),
            next,
            pending: first.into(),
            replay,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::step)))
    }

    async fn revision(&self) -> Result<Revision> {
        self.blocking(|inner| inner.revision()).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl = ttl.max(Duration::from_millis(1));
        let id = self.blocking(move |inner| inner.lease_grant(ttl)).await?;
        self.inner.lease_changed.notify_one();
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut timers = self.inner.timers()?;
        let timer = timers.get_mut(&lease).ok_or(Error::LeaseNotFound(lease))?;
        timer.deadline = Instant::now() + timer.ttl;
        drop(timers);
        self.inner.lease_changed.notify_one();
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |inner| inner.lease_end(lease, false).map(|_| ())).await
    }

    /// Free space on the file's filesystem (at least
    /// [`FileOptions::min_free`]), then a write of the `health` table,
    /// fsynced, read back. Reopens the file first if it was closed.
    async fn probe(&self) -> Result<()> {
        self.blocking(|inner| inner.probe()).await
    }
}

/// What a write transaction decided.
enum Outcome<T> {
    /// Commit, then broadcast the batch if there is one.
    Commit(T, Option<WatchBatch>),
    /// Roll back; nothing changed.
    Abort(T),
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File { path: path.display().to_string(), message: message.into() }
}

/// The message of a caught panic.
fn panicked(doing: &str, panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("redb panicked {doing}: {what}")
}

impl Inner {
    /// The error for a failure of redb, which closes the database once the
    /// current call ends (a value too large is the caller's, not redb's).
    fn redb(&self, e: impl Into<redb::Error>) -> Error {
        let e: redb::Error = e.into();
        if !matches!(e, redb::Error::ValueTooLarge(_)) {
            self.set_broken(e.to_string());
        }
        file_error(&self.path, e.to_string())
    }

    /// A record that cannot be decoded: the file is no longer what was
    /// verified, so it is closed (and verified again on reopen).
    fn corrupt(&self, what: &str) -> Error {
        let message = format!("corrupt record: {what}");
        self.set_broken(message.clone());
        Error::Corrupt { what: format!("store file {}", self.path.display()), message }
    }

    fn set_broken(&self, reason: String) {
        let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
        broken.get_or_insert(reason);
    }

    fn timers(&self) -> Result<MutexGuard<'_, HashMap<LeaseId, LeaseTimer>>> {
        lock_timers(&self.leases)
    }

    /// Runs `f` with the open database (opening it again first if a failure
    /// closed it); a panic inside is caught and reported as an error. If `f`
    /// met a redb failure, the database is closed afterwards.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        self.reopen_if_closed()?;
        let result = {
            let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Slot::Open(db) => match catch_unwind(AssertUnwindSafe(|| f(db))) {
                    Ok(result) => result,
                    Err(panic) => {
                        let message = panicked("in a store call", &panic);
                        self.set_broken(message.clone());
                        Err(file_error(&self.path, message))
                    }
                },
                Slot::Closed { reason, .. } => Err(self.closed(reason)),
            }
        };
        let broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(reason) = broken {
            self.close(reason);
        }
        result
    }

    fn closed(&self, reason: &str) -> Error {
        file_error(&self.path, format!("closed after a failure ({reason}); not open again yet"))
    }

    /// Closes the database after a failure; the next call opens it again.
    fn close(&self, reason: String) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if let Slot::Open(_) = &*slot {
            tracing::warn!(path = %self.path.display(), reason, "store: closing the file after a failure; it is opened again on the next call");
            let retry = *self.opened.lock().unwrap_or_else(PoisonError::into_inner) + REOPEN_INTERVAL;
            let old = std::mem::replace(&mut *slot, Slot::Closed { reason, retry });
            if let Slot::Open(db) = old {
                // Errors here are the failure's own; the reopen repairs.
                match catch_unwind(AssertUnwindSafe(|| db.close())) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "store: closing after a failure"),
                    Err(_) => tracing::debug!("store: redb panicked while closing after a failure"),
                }
            }
        }
    }

    /// Opens the file again (verified as at start, never recovering) if a
    /// failure closed it and the retry time has come; else the reason it is
    /// closed.
    fn reopen_if_closed(&self) -> Result<()> {
        {
            let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Slot::Open(_) => return Ok(()),
                Slot::Closed { reason, retry } if std::time::Instant::now() < *retry => {
                    return Err(self.closed(reason));
                }
                Slot::Closed { .. } => {}
            }
        }
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        let Slot::Closed { reason, retry } = &*slot else { return Ok(()) };
        if std::time::Instant::now() < *retry {
            return Err(self.closed(reason));
        }
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
        let opened = catch_unwind(AssertUnwindSafe(|| {
            let db = check::open(&self.path, false, false, &mut Vec::new())?;
            check::verify(&db, &self.path, false)?;
            Ok(db)
        }))
        .unwrap_or_else(|panic| Err(file_error(&self.path, panicked("reopening", &panic))));
        match opened {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "store: opened again after a failure");
                *slot = Slot::Open(db);
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(path = %self.path.display(), error = %reason, "store: cannot open the file again yet");
                *slot = Slot::Closed { reason, retry: std::time::Instant::now() + REOPEN_INTERVAL };
                Err(e)
            }
        }
    }

    /// Runs `f` in a write transaction under the writer lock; commits
    /// (fsynced) or aborts as it decides, and broadcasts its batch after the
    /// commit, still under the lock so batches go out in revision order.
    /// Revisions committed earlier but never broadcast (a commit that
    /// reported a failure yet reached the disk) go out first.
    fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<Outcome<T>>) -> Result<T> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, batches) = self.with_db(|db| {
            let mut wtx = db.begin_write().map_err(|e| self.redb(e))?;
            wtx.set_durability(Durability::Immediate).map_err(|e| self.redb(e))?;
            let mut batches = self.unsent(&wtx)?;
            match f(&wtx) {
                Ok(Outcome::Commit(value, batch)) => {
                    wtx.commit().map_err(|e| self.redb(e))?;
                    batches.extend(batch);
                    Ok((value, batches))
                }
                Ok(Outcome::Abort(value)) => {
                    wtx.abort().map_err(|e| self.redb(e))?;
                    Ok((value, batches))
                }
                Err(e) => {
                    if let Err(abort) = wtx.abort() {
                        tracing::warn!(error = %abort, "store: aborting a failed write transaction failed");
                    }
                    Err(e)
                }
            }
        })?;
        for batch in batches {
            self.sent.store(batch.revision, Ordering::SeqCst);
            // No receiver is fine: nobody is watching.
            let _ = self.events.send(Arc::new(batch));
        }
        Ok(value)
    }

    /// The revisions in the file after the last one broadcast.
    fn unsent(&self, wtx: &WriteTransaction) -> Result<Vec<WatchBatch>> {
        let sent = self.sent.load(Ordering::SeqCst);
        let revision = {
            let meta = wtx.open_table(META).map_err(|e| self.redb(e))?;
            self.read_meta(&meta, META_REVISION)?
        };
        if revision <= sent {
            return Ok(Vec::new());
        }
        tracing::warn!(sent, revision, "store: revisions committed by a write that reported a failure");
        let log = wtx.open_table(LOG).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        for entry in log.range::<i64>(sent + 1..=revision).map_err(|e| self.redb(e))? {
            let (rev, events) = entry.map_err(|e| self.redb(e))?;
            out.push(WatchBatch { revision: rev.value(), events: self.decode_events(rev.value(), events.value())? });
        }
        Ok(out)
    }

    fn read_meta(&self, meta: &impl ReadableTable<&'static str, i64>, key: &str) -> Result<i64> {
        meta.get(key).map_err(|e| self.redb(e))?.map(|g| g.value()).ok_or_else(|| self.corrupt("missing meta"))
    }

    /// The revision in the file; while the file is closed after a failure
    /// and not due to be opened again, the last revision committed (nothing
    /// else writes the file, and nothing can while it is closed).
    fn revision(&self) -> Result<Revision> {
        {
            let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
            if let Slot::Closed { retry, .. } = &*slot
                && std::time::Instant::now() < *retry
            {
                return Ok(self.sent.load(Ordering::SeqCst));
            }
        }
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(|e| self.redb(e))?;
            let meta = rtx.open_table(META).map_err(|e| self.redb(e))?;
            self.read_meta(&meta, META_REVISION)
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(|e| self.redb(e))?;
            let kv = rtx.open_table(KV).map_err(|e| self.redb(e))?;
            let record = kv.get(key).map_err(|e| self.redb(e))?;
            record.map(|r| self.decode_kv(key, r.value())).transpose()
        })
    }

    fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(|e| self.redb(e))?;
            let meta = rtx.open_table(META).map_err(|e| self.redb(e))?;
            let revision = self.read_meta(&meta, META_REVISION)?;
            let kv = rtx.open_table(KV).map_err(|e| self.redb(e))?;
            let mut out = Vec::new();
            for entry in kv.range::<&str>(prefix..).map_err(|e| self.redb(e))? {
                let (key, record) = entry.map_err(|e| self.redb(e))?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                out.push(self.decode_kv(key, record.value())?);
            }
            Ok((out, revision))
        })
    }

    /// Free space, then a fsynced write read back (see [`Store::probe`]).
    fn probe(&self) -> Result<()> {
        let stat = rustix::fs::statvfs(&self.dir)
            .map_err(|e| file_error(&self.path, format!("cannot read the free space of its filesystem: {e}")))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < self.min_free {
            return Err(file_error(
                &self.path,
                format!("{} KiB free on its filesystem, below the {} KiB writes need", free >> 10, self.min_free >> 10),
            ));
        }
        let written = self.write(|wtx| {
            let mut health = wtx.open_table(HEALTH).map_err(|e| self.redb(e))?;
            let n = health.get(HEALTH_PROBE).map_err(|e| self.redb(e))?.map_or(0, |g| g.value()).wrapping_add(1);
            health.insert(HEALTH_PROBE, n).map_err(|e| self.redb(e))?;
            Ok(Outcome::Commit(n, None))
        })?;
        let read = self.with_db(|db| {
            let rtx = db.begin_read().map_err(|e| self.redb(e))?;
            let health = rtx.open_table(HEALTH).map_err(|e| self.redb(e))?;
            Ok(health.get(HEALTH_PROBE).map_err(|e| self.redb(e))?.map(|g| g.value()))
        })?;
        if read != Some(written) {
            return Err(self.corrupt("the health probe read back something else than it wrote"));
        }
        Ok(())
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnResult> {
        validate_ops(ops)?;
        self.write(|wtx| {
            let mut meta = wtx.open_table(META).map_err(|e| self.redb(e))?;
            let mut kv = wtx.open_table(KV).map_err(|e| self.redb(e))?;
            let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(|e| self.redb(e))?;
            let leases = wtx.open_table(LEASES).map_err(|e| self.redb(e))?;
            let revision = self.read_meta(&meta, META_REVISION)?;
            for Compare::ModRevision { key, revision: expected } in compares {
                let actual = match kv.get(key.as_str()).map_err(|e| self.redb(e))? {
                    Some(record) => self.decode_kv(key, record.value())?.mod_revision,
                    None => 0,
                };
                if actual != *expected {
                    return Ok(Outcome::Abort(TxnResult { succeeded: false, revision }));
                }
            }
            let new = revision + 1;
            let mut events = Vec::new();
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        if *lease != 0 && leases.get(*lease).map_err(|e| self.redb(e))?.is_none() {
                            return Err(Error::LeaseNotFound(*lease));
                        }
                        let old = match kv.get(key.as_str()).map_err(|e| self.redb(e))? {
                            Some(record) => Some(self.decode_kv(key, record.value())?),
                            None => None,
                        };
                        let create_revision = old.as_ref().map_or(new, |o| o.create_revision);
                        if let Some(old) = old.filter(|o| o.lease != 0 && o.lease != *lease) {
                            lease_keys.remove((old.lease, key.as_str())).map_err(|e| self.redb(e))?;
                        }
                        if *lease != 0 {
                            lease_keys.insert((*lease, key.as_str()), ()).map_err(|e| self.redb(e))?;
                        }
                        let record = encode_kv(create_revision, new, *lease, value);
                        kv.insert(key.as_str(), record.as_slice()).map_err(|e| self.redb(e))?;
                        events.push(Event::Put(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision,
                            mod_revision: new,
                            lease: *lease,
                        }));
                    }
                    Op::Delete { key } => {
                        if self.delete_key(&mut kv, &mut lease_keys, key)? {
                            events.push(Event::Delete { key: key.clone(), revision: new });
                        }
                    }
                }
            }
            if events.is_empty() {
                // Only deletes of absent keys: nothing changed, no revision.
                return Ok(Outcome::Abort(TxnResult { succeeded: true, revision }));
            }
            let batch = self.log_revision(wtx, &mut meta, new, events)?;
            Ok(Outcome::Commit(TxnResult { succeeded: true, revision: new }, Some(batch)))
        })
    }

    /// Removes `key` and its lease attachment; whether it existed.
    fn delete_key(
        &self,
        kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
        lease_keys: &mut redb::Table<'_, (i64, &'static str), ()>,
        key: &str,
    ) -> Result<bool> {
        let Some(old) = kv.remove(key).map_err(|e| self.redb(e))? else {
            return Ok(false);
        };
        let old = self.decode_kv(key, old.value())?;
        if old.lease != 0 {
            lease_keys.remove((old.lease, key)).map_err(|e| self.redb(e))?;
        }
        Ok(true)
    }

    /// Records revision `new` with its events: log entry, revision counter,
    /// log pruned to the configured history.
    fn log_revision(
        &self,
        wtx: &WriteTransaction,
        meta: &mut redb::Table<'_, &'static str, i64>,
        new: Revision,
        events: Vec<Event>,
    ) -> Result<WatchBatch> {
        let mut log = wtx.open_table(LOG).map_err(|e| self.redb(e))?;
        log.insert(new, encode_events(&events).as_slice()).map_err(|e| self.redb(e))?;
        meta.insert(META_REVISION, new).map_err(|e| self.redb(e))?;
        let oldest = self.read_meta(meta, META_OLDEST)?;
        let keep_from = new - self.history + 1;
        if keep_from > oldest {
            log.retain_in(oldest..keep_from, |_, _| false).map_err(|e| self.redb(e))?;
            meta.insert(META_OLDEST, keep_from).map_err(|e| self.redb(e))?;
        }
        Ok(WatchBatch { revision: new, events })
    }

    fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let id = self.write(|wtx| {
            let mut meta = wtx.open_table(META).map_err(|e| self.redb(e))?;
            let mut leases = wtx.open_table(LEASES).map_err(|e| self.redb(e))?;
            let id = self.read_meta(&meta, META_NEXT_LEASE)?;
            leases.insert(id, ttl_ms).map_err(|e| self.redb(e))?;
            meta.insert(META_NEXT_LEASE, id + 1).map_err(|e| self.redb(e))?;
            Ok(Outcome::Commit(id, None))
        })?;
        let ttl = Duration::from_millis(ttl_ms);
        self.timers()?.insert(id, LeaseTimer { ttl, deadline: Instant::now() + ttl });
        Ok(id)
    }

    /// Ends a lease and deletes its keys in one revision. With `if_expired`,
    /// only if its deadline has passed (a keep-alive may have come in since
    /// the expiry task looked); returns whether it ended.
    fn lease_end(&self, lease: LeaseId, if_expired: bool) -> Result<bool> {
        // Taken out of the timers first, so that a keep-alive from now on
        // finds no lease; put back if the transaction fails.
        let timer = {
            let mut timers = self.timers()?;
            match timers.get(&lease).map(|t| t.deadline) {
                Some(deadline) if if_expired && deadline > Instant::now() => return Ok(false),
                Some(_) => timers.remove(&lease),
                None if if_expired => return Ok(false),
                None => None,
            }
        };
        let result = self.write(|wtx| {
            let mut leases = wtx.open_table(LEASES).map_err(|e| self.redb(e))?;
            if leases.remove(lease).map_err(|e| self.redb(e))?.is_none() {
                return Err(Error::LeaseNotFound(lease));
            }
            let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(|e| self.redb(e))?;
            let mut keys = Vec::new();
            for entry in lease_keys.range::<(i64, &str)>((lease, "")..).map_err(|e| self.redb(e))? {
                let (k, _) = entry.map_err(|e| self.redb(e))?;
                let (id, key) = k.value();
                if id != lease {
                    break;
                }
                keys.push(key.to_owned());
            }
            if keys.is_empty() {
                return Ok(Outcome::Commit((), None));
            }
            let mut meta = wtx.open_table(META).map_err(|e| self.redb(e))?;
            let mut kv = wtx.open_table(KV).map_err(|e| self.redb(e))?;
            let new = self.read_meta(&meta, META_REVISION)? + 1;
            let mut events = Vec::with_capacity(keys.len());
            for key in keys {
                if self.delete_key(&mut kv, &mut lease_keys, &key)? {
                    events.push(Event::Delete { key, revision: new });
                }
            }
            let batch = self.log_revision(wtx, &mut meta, new, events)?;
            Ok(Outcome::Commit((), Some(batch)))
        });
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                if let (Some(timer), false) = (timer, matches!(e, Error::LeaseNotFound(_))) {
                    self.timers()?.insert(lease, timer);
                }
                Err(e)
            }
        }
    }

    /// Reads the log from `from` (at most [`REPLAY_CHUNK`] revisions) and
    /// returns the revision to continue from and the batches under `prefix`.
    fn read_log(&self, prefix: &str, from: Revision) -> Result<(Revision, Vec<WatchBatch>)> {
        self.with_db(|db| {
            let rtx = db.begin_read().map_err(|e| self.redb(e))?;
            let meta = rtx.open_table(META).map_err(|e| self.redb(e))?;
            let oldest = self.read_meta(&meta, META_OLDEST)?;
            if from < oldest {
                return Err(Error::Compacted { requested: from, oldest });
            }
            let log = rtx.open_table(LOG).map_err(|e| self.redb(e))?;
            let mut next = from;
            let mut out = Vec::new();
            for entry in log.range::<i64>(from..).map_err(|e| self.redb(e))?.take(REPLAY_CHUNK) {
                let (revision, events) = entry.map_err(|e| self.redb(e))?;
                let revision = revision.value();
                if revision != next {
                    return Err(self.corrupt("gap in the revision log"));
                }
                let events = self.decode_events(revision, events.value())?;
                let events: Vec<Event> = events.into_iter().filter(|e| event_key(e).starts_with(prefix)).collect();
                if !events.is_empty() {
                    out.push(WatchBatch { revision, events });
                }
                next = revision + 1;
            }
            Ok((next, out))
        })
    }

    fn decode_kv(&self, key: &str, bytes: &[u8]) -> Result<KeyValue> {
        decode_kv(key, bytes).map_err(|what| self.corrupt(what))
    }

    fn decode_events(&self, revision: Revision, bytes: &[u8]) -> Result<Vec<Event>> {
        decode_events(revision, bytes).map_err(|what| self.corrupt(what))
    }
}

fn validate_ops(ops: &[Op]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        if key.is_empty() {
            return Err(Error::InvalidArgument("empty key".into()));
        }
        if !seen.insert(key.as_str()) {
            return Err(Error::InvalidArgument(format!("key {key:?} written twice in one transaction")));
        }
    }
    Ok(())
}

fn event_key(event: &Event) -> &str {
    match event {
        Event::Put(kv) => &kv.key,
        Event::Delete { key, .. } => key,
    }
}

/// `version, create, mod, lease` (little-endian) then the value.
fn encode_kv(create: Revision, modified: Revision, lease: LeaseId, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + value.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(&lease.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// `version, count: u32`, then per event `kind: u8 (0 put, 1 delete), key
/// (u32 length + bytes)` and for a put `create, lease, value (u32 length +
/// bytes)`; the mod revision is the log entry's revision.
fn encode_events(events: &[Event]) -> Vec<u8> {
    fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        // Keys and values far beyond 4 GiB cannot reach here: redb refuses them.
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = vec![RECORD_VERSION];
    out.extend_from_slice(&u32::try_from(events.len()).unwrap_or(u32::MAX).to_le_bytes());
    for event in events {
        match event {
            Event::Put(kv) => {
                out.push(0);
                put_bytes(&mut out, kv.key.as_bytes());
                out.extend_from_slice(&kv.create_revision.to_le_bytes());
                out.extend_from_slice(&kv.lease.to_le_bytes());
                put_bytes(&mut out, &kv.value);
            }
            Event::Delete { key, .. } => {
                out.push(1);
                put_bytes(&mut out, key.as_bytes());
            }
        }
    }
    out
}

/// Decodes a `kv` record: `version, create, mod, lease` then the value.
fn decode_kv(key: &str, bytes: &[u8]) -> std::result::Result<KeyValue, &'static str> {
    let mut r = Reader { bytes, what: "key value" };
    if r.u8()? != RECORD_VERSION {
        return Err("unknown key value version");
    }
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let lease = r.i64()?;
    Ok(KeyValue { key: key.to_owned(), value: r.rest().to_vec(), create_revision, mod_revision, lease })
}

/// Decodes a `log` entry (see [`encode_events`]).
fn decode_events(revision: Revision, bytes: &[u8]) -> std::result::Result<Vec<Event>, &'static str> {
    let mut r = Reader { bytes, what: "log entry" };
    if r.u8()? != RECORD_VERSION {
        return Err("unknown log entry version");
    }
    let count = r.u32()?;
    let mut events = Vec::new();
    for _ in 0..count {
        let kind = r.u8()?;
        let key = String::from_utf8(r.bytes_u32()?.to_vec()).map_err(|_| "log entry key is not UTF-8")?;
        match kind {
            0 => {
                let create_revision = r.i64()?;
                let lease = r.i64()?;
                let value = r.bytes_u32()?.to_vec();
                events.push(Event::Put(KeyValue { key, value, create_revision, mod_revision: revision, lease }));
            }
            1 => events.push(Event::Delete { key, revision }),
            _ => return Err("unknown event kind"),
        }
    }
    Ok(events)
}

/// Bounds-checked reading of an encoded record; errors name the record.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err(self.what);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| self.what)
    }

    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> std::result::Result<i64, &'static str> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes_u32(&mut self) -> std::result::Result<&'a [u8], &'static str> {
        let n = usize::try_from(self.u32()?).map_err(|_| self.what)?;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// One watcher's position: the next revision it has not seen, batches read
/// from the log and not yet delivered, and whether it must read the log
/// before taking live batches again.
struct WatchState {
    inner: Weak<Inner>,
    rx: broadcast::Receiver<Arc<WatchBatch>>,
    prefix: String,
    next: Revision,
    pending: VecDeque<WatchBatch>,
    replay: bool,
    done: bool,
}

impl WatchState {
    async fn step(mut self) -> Option<(Result<WatchBatch>, WatchState)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            if self.done {
                return None;
            }
            if self.replay {
                let inner = self.inner.upgrade()?;
                let (prefix, from) = (self.prefix.clone(), self.next);
                let read = tokio::task::spawn_blocking(move || inner.read_log(&prefix, from)).await;
                match read {
                    Ok(Ok((next, batches))) => {
                        // A short read means the log is exhausted: go live.
                        self.replay = next - from >= REPLAY_CHUNK as i64;
                        self.next = next;
                        self.pending.extend(batches);
                    }
                    Ok(Err(e)) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some((Err(Error::Unavailable(format!("store task failed: {e}"))), self));
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(batch) if batch.revision < self.next => {} // already delivered from the log
                Ok(batch) if batch.revision == self.next => {
                    self.next += 1;
                    let events: Vec<Event> =
                        batch.events.iter().filter(|e| event_key(e).starts_with(&self.prefix)).cloned().collect();
                    if !events.is_empty() {
                        return Some((Ok(WatchBatch { revision: batch.revision, events }), self));
                    }
                }
                // A gap (cannot happen while subscribed, but never skip) or
                // a lagged receiver: the log has everything.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.replay = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Ends leases whose deadline passed; sleeps until the next deadline or a
/// change. Stops when the store is dropped.
async fn expire_leases(inner: Weak<Inner>, timers: Timers, changed: Arc<Notify>, mut stop: oneshot::Receiver<()>) {
    loop {
        let next_deadline = match lock_timers(&timers) {
            Ok(timers) => timers.values().map(|t| t.deadline).min(),
            Err(_) => return,
        };
        let sleep = async {
            match next_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = changed.notified() => continue,
            _ = sleep => {}
        }
        let now = Instant::now();
        let expired: Vec<LeaseId> = match lock_timers(&timers) {
            Ok(timers) => timers.iter().filter(|(_, t)| t.deadline <= now).map(|(id, _)| *id).collect(),
            Err(_) => return,
        };
        if expired.is_empty() {
            continue;
        }
        let Some(store) = inner.upgrade() else { return };
        for lease in expired {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.lease_end(lease, true)).await {
                Ok(Ok(true)) => tracing::debug!(lease, "store: lease expired"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease, error = %e, "store: cannot expire lease, retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => tracing::warn!(lease, error = %e, "store: lease expiry task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside redb (here: inside a call's closure) is an error, not
    /// a crash; it closes the file, and the next call opens it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_store_call_is_an_error_and_the_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.txn(vec![], vec![Op::Put { key: "k".into(), value: b"v".to_vec(), lease: 0 }]).await.unwrap();
        let inner = store.inner.clone();
        let failed =
            tokio::task::spawn_blocking(move || inner.with_db(|_| -> Result<()> { panic!("boom") })).await.unwrap();
        match failed {
            Err(Error::File { message, .. }) => assert!(message.contains("panicked") && message.contains("boom")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&*store.inner.slot.read().unwrap(), Slot::Closed { .. }), "closed after the panic");
        // Opened (and verified) again by a call once a second has passed
        // since the file was last opened; nothing was lost.
        let start = std::time::Instant::now();
        let kv = loop {
            match store.get("k").await {
                Ok(kv) => break kv,
                Err(Error::File { message, .. }) if message.contains("not open again yet") => {
                    assert!(start.elapsed() < Duration::from_secs(3), "not reopened");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(kv.unwrap().value, b"v");
        assert_eq!(store.txn(vec![], vec![Op::Delete { key: "k".into() }]).await.unwrap().revision, 2);
    }
}

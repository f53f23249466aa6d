//! vipcast's store: one trait with etcd semantics, two backends.
//!
//! * [`FileStore`]: embedded, a redb file owned by one controller process
//!   (the default; every acknowledged write is fsynced before the call returns;
//!   a file that fails verification is refused, and the file is reopened
//!   after an I/O error such as a full disk);
//! * [`EtcdStore`]: etcd v3 (Debian `etcd-server`), shared by several controllers.
//!
//! Both pass one conformance suite (`tests/conformance.rs`). With the cargo
//! feature `testing`, `testing::Etcd` starts a throwaway etcd for tests.
//!
//! ## Model
//! A flat, ordered key space of UTF-8 keys and byte values. Every successful
//! write transaction advances the store revision by exactly one; every key
//! records the revision that created it and the one that last modified it.
//! Watches deliver, per revision, the events of that transaction, in revision
//! order, from any revision the store still holds (older ones are
//! [`Error::Compacted`]). Leases hold keys that disappear when the lease is not
//! kept alive.
//!
//! Fine print, identical in both backends because it is etcd's:
//! * a transaction that changes nothing (no ops, or only deletes of absent
//!   keys) succeeds without creating a revision;
//! * a transaction may touch each key at most once, and keys must not be empty
//!   ([`Error::InvalidArgument`] otherwise);
//! * a put attached to a lease that does not exist fails with
//!   [`Error::LeaseNotFound`];
//! * granting, renewing and revoking a lease without keys create no revision;
//!   expiring or revoking a lease deletes all its keys in one revision;
//! * revisions are only ever compared, never assumed absolute: a fresh
//!   [`FileStore`] is at revision 0, a fresh etcd at revision 1.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

mod etcd;
mod file;
#[cfg(feature = "testing")]
pub mod testing;

pub use etcd::EtcdStore;
pub use file::{FileOptions, FileStore};

/// A store revision: positive for a write (a fresh [`FileStore`]'s first
/// write is 1, a fresh etcd's is 2); 0 means "none".
pub type Revision = i64;

/// A lease id.
pub type LeaseId = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, 0 for none.
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals `revision`; 0 means "the key does not exist".
    ModRevision { key: String, revision: Revision },
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, attached to `lease` (0 for none).
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    /// Removes `key` (no-op if absent).
    Delete { key: String },
}

/// Outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (the new one if it wrote).
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key now holds this value (`kv.mod_revision` is the event's revision).
    Put(KeyValue),
    /// The key was deleted at `revision`.
    Delete { key: String, revision: Revision },
}

/// The events of one revision under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision of the transaction.
    pub revision: Revision,
    /// Its events under the watched prefix, in the order of its ops.
    pub events: Vec<Event>,
}

/// A stream of watch batches, in increasing revision order, without gaps or
/// repeats. It ends (or yields an error) if the store goes away.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch>> + Send>>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revision asked for has been compacted away.
    #[error("revision {requested} is compacted (oldest available: {oldest})")]
    Compacted { requested: Revision, oldest: Revision },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// The store cannot be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The embedded store file cannot be opened (locked by another process,
    /// unreadable), failed an I/O (a full disk), or was closed after a
    /// failure and is not open again yet.
    #[error("store file {path}: {message}")]
    File { path: String, message: String },
    /// What the store holds cannot be trusted: the embedded store file is
    /// empty, refused by redb (a page checksum, a truncation), or its
    /// records do not decode or add up (see [`FileOptions::recover`]); or a
    /// stored value cannot be read by its user. `what` names it (`store
    /// file /var/lib/vipcast/store.redb`).
    #[error("{what} cannot be trusted: {message}")]
    Corrupt { what: String, message: String },
    /// The request is malformed (an empty key, a key written twice in one
    /// transaction, more operations than etcd accepts in one transaction).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A key-value store with etcd semantics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, and the store revision
    /// the snapshot was read at.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// Applies `ops` atomically if every compare holds.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnResult>;

    /// Watches keys starting with `prefix`, delivering every revision from
    /// `from` (inclusive) onwards; `from` 0 means "from the next write".
    ///
    /// Revisions that touch no key under `prefix` are skipped. The watch is
    /// established when this returns: a write made afterwards is delivered.
    /// A compacted `from` is reported as [`Error::Compacted`], either by this
    /// call or as the stream's first item (etcd reports it asynchronously); a
    /// watcher that falls behind the store's history also gets it, and then
    /// the stream ends.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// The current store revision.
    async fn revision(&self) -> Result<Revision>;

    /// Creates a lease that expires `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends a lease now, deleting its keys.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// Whether the store can acknowledge a write now: a write that goes
    /// through the store's own durability path (fsync, consensus) and
    /// creates no revision, and a read. For health checks; callers bound it
    /// with their own timeout.
    async fn probe(&self) -> Result<()>;
}

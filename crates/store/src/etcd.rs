//! The etcd backend: the etcd v3 API through etcd-client.
//!
//! Revisions are etcd's header revisions. A watch response may carry several
//! revisions and a transaction's events share one, so the events of each
//! response are grouped by mod revision into [`WatchBatch`]es (etcd never
//! splits one revision over two responses unless fragmenting is asked for,
//! which this client does not).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;

use crate::{
    Compare, Error, Event, KeyValue, LeaseId, Op, Result, Revision, Store, TxnResult, WatchBatch, WatchStream,
};

/// How long a unary call (not a watch) may take before it fails with
/// [`Error::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// gRPC status codes (tonic's `Code` as `i32`).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_NOT_FOUND: i32 = 5;

/// A store in etcd, shared by several controllers.
///
/// Cloning gives another handle on the same connection. etcd's own limits
/// apply: at most `--max-txn-ops` (default 128) ops per transaction
/// ([`Error::InvalidArgument`] beyond), lease ttls in whole seconds (rounded
/// up, at least 1 s, and raised to etcd's minimum ttl), and history kept
/// until etcd compacts it (see [`EtcdStore::compact`]).
#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port` or `host:port`)
    /// and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoint given".into()));
        }
        let options = ec::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // HTTP/2 pings only while a call or watch is open: etcd refuses
            // idle pings by default.
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10))
            .with_keep_alive_while_idle(false);
        let client = call(ec::Client::connect(endpoints, Some(options))).await?;
        let store = EtcdStore { client, endpoints: endpoints.to_vec() };
        store.revision().await?;
        Ok(store)
    }

    /// The endpoints this store was connected to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Discards the history before `revision` (etcd keeps it until told, or
    /// until its own `--auto-compaction-*` does it); watches from an older
    /// revision then fail with [`Error::Compacted`]. Returns once the
    /// compaction is applied.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.client.kv_client();
        call(kv.compact(revision, Some(ec::CompactionOptions::new().with_physical()))).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        let resp = call(kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(key_value))
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let mut kv = self.client.kv_client();
        let resp = call(kv.get(prefix, Some(ec::GetOptions::new().with_prefix()))).await?;
        Ok((resp.kvs().iter().map(key_value).collect(), header_revision(resp.header())?))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnResult> {
        // Which lease a "lease not found" is about: the first one named.
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        });
        let compares: Vec<ec::Compare> = compares
            .into_iter()
            .map(|Compare::ModRevision { key, revision }| {
                ec::Compare::mod_revision(key, ec::CompareOp::Equal, revision)
            })
            .collect();
        let ops: Vec<ec::TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = (lease != 0).then(|| ec::PutOptions::new().with_lease(lease));
                    ec::TxnOp::put(key, value, options)
                }
                Op::Delete { key } => ec::TxnOp::delete(key, None),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp =
            match tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(ec::Txn::new().when(compares).and_then(ops))).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    return Err(match lease {
                        Some(lease) if is_lease_not_found(&e) => Error::LeaseNotFound(lease),
                        _ => map_err(e),
                    });
                }
                Err(_) => return Err(timed_out()),
            };
        Ok(TxnResult { succeeded: resp.succeeded(), revision: header_revision(resp.header())? })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let mut options = ec::WatchOptions::new().with_prefix();
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let mut watch = self.client.watch_client();
        let stream = call(watch.watch(prefix, Some(options))).await?;
        // Wait until etcd has created the watch, so that a write made after
        // this returns is seen.
        let mut state = EtcdWatch { stream, pending: VecDeque::new(), next: from, done: false };
        match call(state.stream.message()).await? {
            None => return Err(Error::Unavailable("etcd closed the watch".into())),
            Some(resp) if resp.created() && !resp.canceled() => {
                if from <= 0 {
                    state.next = header_revision(resp.header())? + 1;
                }
                // etcd sends events in later responses, but take any here.
                if let Some(e) = state.absorb(&resp) {
                    return Err(e);
                }
            }
            Some(resp) => {
                if let Some(e) = state.absorb(&resp) {
                    return Err(e);
                }
                if resp.canceled() {
                    return Err(Error::Unavailable(format!("etcd refused the watch: {}", resp.cancel_reason())));
                }
            }
        }
        Ok(Box::pin(futures::stream::unfold(state, EtcdWatch::step)))
    }

    async fn revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let resp = call(kv.get(*b"\0", Some(ec::GetOptions::new().with_count_only()))).await?;
        header_revision(resp.header())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let resp = call(lease.grant(secs, None)).await?;
        if !resp.error().is_empty() {
            return Err(Error::Unavailable(format!("etcd refused the lease: {}", resp.error())));
        }
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.client.lease_client();
        // One request, one answer; the stream is closed when dropped.
        match tokio::time::timeout(REQUEST_TIMEOUT, client.keep_alive(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(Error::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(timed_out()),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.client.lease_client();
        match tokio::time::timeout(REQUEST_TIMEOUT, client.revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(Error::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(timed_out()),
        }
    }
}

/// One etcd watch: batches decoded from the last response and not yet
/// delivered, and the next revision expected (for [`Error::Compacted`]).
struct EtcdWatch {
    stream: ec::WatchStream,
    pending: VecDeque<WatchBatch>,
    next: Revision,
    done: bool,
}

impl EtcdWatch {
    async fn step(mut self) -> Option<(Result<WatchBatch>, EtcdWatch)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => {
                    if let Some(e) = self.absorb(&resp) {
                        return Some((Err(e), self));
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some((Err(map_err(e)), self));
                }
            }
        }
    }

    /// Queues the events of `resp` grouped by revision; an error if etcd
    /// ended the watch (then the watch is done).
    fn absorb(&mut self, resp: &ec::WatchResponse) -> Option<Error> {
        if resp.compact_revision() > 0 {
            self.done = true;
            return Some(Error::Compacted { requested: self.next, oldest: resp.compact_revision() });
        }
        if resp.canceled() {
            self.done = true;
            return Some(Error::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason())));
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            let event = match event.event_type() {
                ec::EventType::Put => Event::Put(key_value(kv)),
                ec::EventType::Delete => {
                    Event::Delete { key: String::from_utf8_lossy(kv.key()).into_owned(), revision }
                }
            };
            match self.pending.back_mut() {
                Some(batch) if batch.revision == revision => batch.events.push(event),
                _ => self.pending.push_back(WatchBatch { revision, events: vec![event] }),
            }
            self.next = revision + 1;
        }
        None
    }
}

fn key_value(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

fn header_revision(header: Option<&ec::ResponseHeader>) -> Result<Revision> {
    header.map(|h| h.revision()).ok_or_else(|| Error::Unavailable("etcd answered without a header".into()))
}

/// Awaits an etcd call with [`REQUEST_TIMEOUT`].
async fn call<T>(fut: impl Future<Output = std::result::Result<T, ec::Error>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(map_err),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> Error {
    Error::Unavailable(format!("etcd did not answer within {} s", REQUEST_TIMEOUT.as_secs()))
}

fn map_err(e: ec::Error) -> Error {
    match &e {
        ec::Error::GRpcStatus(status) if i32::from(status.code()) == GRPC_INVALID_ARGUMENT => {
            Error::InvalidArgument(status.message().to_owned())
        }
        ec::Error::GRpcStatus(status) => Error::Unavailable(format!("etcd: {}", status.message())),
        _ => Error::Unavailable(format!("etcd: {e}")),
    }
}

fn is_lease_not_found(e: &ec::Error) -> bool {
    match e {
        ec::Error::GRpcStatus(status) => {
            i32::from(status.code()) == GRPC_NOT_FOUND && status.message().contains("lease not found")
        }
        ec::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

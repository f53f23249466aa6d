//! The etcd backend: etcd's v3 API through its JSON gateway (`/v3/...` on the
//! client port, served by every etcd since 3.3; Debian's `etcd-server` 3.4
//! included).
//!
//! The gateway carries the same requests and answers as etcd's gRPC API, as
//! JSON over HTTP/1.1 (proto field names, 64-bit integers as strings, bytes
//! as base64, fields at their default value left out). Talking to it needs no
//! generated code, so building vipcast needs no `protoc`. Streams (watch,
//! lease keep-alive) are newline-delimited JSON messages, each
//! `{"result": ...}` or `{"error": ...}`; closing the HTTP response cancels
//! the stream inside etcd.
//!
//! Revisions are etcd's header revisions. A watch response may carry several
//! revisions and a transaction's events share one, so the events of each
//! response are grouped by mod revision into [`WatchBatch`]es (etcd never
//! splits one revision over two responses unless fragmenting is asked for,
//! which this client does not).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    Compare, Error, Event, KeyValue, LeaseId, Op, Result, Revision, Store, TxnResult, WatchBatch, WatchStream,
};

/// How long a unary call (not a watch) may take before it fails with
/// [`Error::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Ttl of the lease a probe grants and revokes at once (if the revoke does
/// not get through, etcd ends it soon anyway).
const PROBE_LEASE_TTL: Duration = Duration::from_secs(5);

/// How long opening a TCP connection to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line of a stream (one watch response) accepted; etcd's own
/// request limit is 1.5 MiB, so a response of one revision stays far below.
const MAX_STREAM_LINE: usize = 64 << 20;

/// gRPC status codes, as the gateway reports them in `code`.
const GRPC_INVALID_ARGUMENT: i64 = 3;
const GRPC_NOT_FOUND: i64 = 5;

/// How a call to etcd failed: a gRPC status etcd reported (kept apart so
/// that callers can tell "lease not found" from other refusals), or a
/// store error.
#[derive(Debug)]
enum Failure {
    Status { code: i64, message: String },
    Store(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

impl Failure {
    /// The store error for it: etcd's invalid-argument refusals are the
    /// caller's fault, everything else makes the store unavailable.
    fn into_store(self) -> Error {
        match self {
            Failure::Status { code: GRPC_INVALID_ARGUMENT, message } => Error::InvalidArgument(message),
            Failure::Status { code, message } => Error::Unavailable(format!("etcd (status {code}): {message}")),
            Failure::Store(e) => e,
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        f.into_store()
    }
}

impl Failure {
    fn unavailable(message: String) -> Failure {
        Failure::Store(Error::Unavailable(message))
    }
}

type Call<T> = std::result::Result<T, Failure>;

/// A store in etcd, shared by several controllers.
///
/// Cloning gives another handle on the same connection pool. With several
/// endpoints, a request that cannot reach one is sent to the next. etcd's
/// own limits apply: at most `--max-txn-ops` (default 128) ops per
/// transaction ([`Error::InvalidArgument`] beyond), lease ttls in whole
/// seconds (rounded up, at least 1 s, and raised to etcd's minimum ttl), and
/// history kept until etcd compacts it (see [`EtcdStore::compact`]).
#[derive(Clone)]
pub struct EtcdStore {
    http: reqwest::Client,
    /// Base URLs (`http://host:port` or `https://host:port`), as given.
    endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last: requests start there.
    current: Arc<AtomicUsize>,
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
        EtcdStore::connect_tls(endpoints, None).await
    }

    /// Connects to etcd at `endpoints` and checks that it answers; with
    /// `tls`, over TLS (`https://host:port` or `host:port`): etcd verified
    /// against the configuration's roots, and its client certificate
    /// presented (etcd's `--client-cert-auth`). Without, plain HTTP.
    pub async fn connect_tls(endpoints: &[String], tls: Option<rustls::ClientConfig>) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoint given".into()));
        }
        let mut urls = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            urls.push(base_url(endpoint, tls.is_some())?);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(config) = tls {
            builder = builder.tls_backend_preconfigured(config);
        }
        let http = builder.build().map_err(|e| Error::Unavailable(format!("etcd client: {e}")))?;
        let store = EtcdStore { http, endpoints: Arc::new(urls), current: Arc::new(AtomicUsize::new(0)) };
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
        let _: Header =
            self.unary("/v3/kv/compaction", &json!({"revision": revision.to_string(), "physical": true})).await?;
        Ok(())
    }

    /// Sends `body` to `path` on the first endpoint that takes the
    /// connection, starting with the one that answered last. Returns the
    /// response with its status unchecked.
    async fn send(&self, path: &str, body: &Value) -> Call<reqwest::Response> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let index = (start + i) % n;
            let url = format!("{}{path}", self.endpoints[index]);
            match self.http.post(&url).json(body).send().await {
                Ok(resp) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(resp);
                }
                // Only a request that surely never reached etcd is sent again.
                Err(e) if e.is_connect() => last = format!("{}: {}", self.endpoints[index], error_chain(&e)),
                Err(e) => return Err(Failure::unavailable(format!("etcd: {}", error_chain(&e)))),
            }
        }
        Err(Failure::unavailable(format!("etcd cannot be reached ({last})")))
    }

    /// A unary call: the decoded answer, or the error etcd reported.
    async fn unary<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Call<T> {
        let call = async {
            let resp = self.send(path, body).await?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| Failure::unavailable(format!("etcd: {}", error_chain(&e))))?;
            if !status.is_success() {
                return Err(gateway_error(&bytes).unwrap_or_else(|| {
                    Failure::unavailable(format!("etcd answered {status}: {}", String::from_utf8_lossy(&bytes)))
                }));
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| Failure::unavailable(format!("etcd sent an answer this client cannot read: {e}")))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(timed_out().into()),
        }
    }

    /// Opens a stream call: the response, once etcd has accepted it.
    async fn open_stream(&self, path: &str, body: &Value) -> Call<Lines> {
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.send(path, body)).await {
            Ok(resp) => resp?,
            Err(_) => return Err(timed_out().into()),
        };
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(gateway_error(&bytes)
                .unwrap_or_else(|| Failure::unavailable(format!("etcd answered {status} to {path}"))));
        }
        Ok(Lines { body: resp.bytes_stream().boxed(), buf: Vec::new() })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp: RangeResponse = self.unary("/v3/kv/range", &json!({"key": b64(key.as_bytes())})).await?;
        resp.kvs.into_iter().next().map(key_value).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let resp: RangeResponse = self.unary("/v3/kv/range", &prefix_range(prefix)).await?;
        let kvs = resp.kvs.into_iter().map(key_value).collect::<Result<Vec<_>>>()?;
        Ok((kvs, resp.header.revision()?))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnResult> {
        // Which lease a "lease not found" is about: the first one named.
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        });
        let compare: Vec<Value> = compares
            .into_iter()
            .map(|Compare::ModRevision { key, revision }| {
                json!({"target": "MOD", "result": "EQUAL", "key": b64(key.as_bytes()), "mod_revision": revision.to_string()})
            })
            .collect();
        let success: Vec<Value> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => json!({"request_put": {
                    "key": b64(key.as_bytes()), "value": b64(&value), "lease": lease.to_string(),
                }}),
                Op::Delete { key } => json!({"request_delete_range": {"key": b64(key.as_bytes())}}),
            })
            .collect();
        let resp: TxnResponse = match self.unary("/v3/kv/txn", &json!({"compare": compare, "success": success})).await {
            Ok(resp) => resp,
            Err(Failure::Status { code: GRPC_NOT_FOUND, message })
                if is_lease_not_found(&message) && lease.is_some() =>
            {
                return Err(Error::LeaseNotFound(lease.unwrap_or_default()));
            }
            Err(e) => return Err(e.into_store()),
        };
        Ok(TxnResult { succeeded: resp.succeeded, revision: resp.header.revision()? })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let mut create = prefix_range(prefix);
        if from > 0 {
            create["start_revision"] = Value::String(from.to_string());
        }
        let lines = self.open_stream("/v3/watch", &json!({"create_request": create})).await?;
        // Wait until etcd has created the watch, so that a write made after
        // this returns is seen.
        let mut state = EtcdWatch { lines, pending: VecDeque::new(), next: from, done: false };
        let first = match tokio::time::timeout(REQUEST_TIMEOUT, state.lines.next_message::<WatchResponse>()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return Err(Error::Unavailable("etcd closed the watch".into())),
            Ok(Err(e)) => return Err(e.into_store()),
            Err(_) => return Err(timed_out()),
        };
        let created = first.created;
        if created && from <= 0 {
            state.next = first.header.revision()? + 1;
        }
        // A refusal (a compacted `from`) comes here; etcd sends events in
        // later responses, but any here are taken.
        if let Some(e) = state.absorb(first) {
            return Err(e);
        }
        if !created {
            return Err(Error::Unavailable("etcd answered the watch without creating it".into()));
        }
        Ok(Box::pin(futures::stream::unfold(state, EtcdWatch::step)))
    }

    async fn revision(&self) -> Result<Revision> {
        let resp: RangeResponse = self
            .unary("/v3/kv/range", &json!({"key": b64(b"\0"), "count_only": true}))
            .await
            .map_err(Failure::into_store)?;
        resp.header.revision()
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let resp: LeaseGrantResponse =
            self.unary("/v3/lease/grant", &json!({"TTL": secs.to_string()})).await.map_err(Failure::into_store)?;
        if !resp.error.is_empty() {
            return Err(Error::Unavailable(format!("etcd refused the lease: {}", resp.error)));
        }
        if resp.id == 0 {
            return Err(Error::Unavailable("etcd granted a lease without an id".into()));
        }
        Ok(resp.id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        // One request, one answer; dropping the stream ends the call.
        let call = async {
            let mut lines = self.open_stream("/v3/lease/keepalive", &json!({"ID": lease.to_string()})).await?;
            match lines.next_message::<LeaseKeepAliveResponse>().await? {
                // etcd answers a lease it does not know with a ttl of 0.
                Some(resp) if resp.ttl > 0 => Ok(()),
                Some(_) => Err(Failure::Store(Error::LeaseNotFound(lease))),
                None => Err(Failure::unavailable("etcd closed the keep-alive stream".into())),
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Err(Failure::Status { code: GRPC_NOT_FOUND, message })) if is_lease_not_found(&message) => {
                Err(Error::LeaseNotFound(lease))
            }
            Ok(result) => result.map_err(Failure::into_store),
            Err(_) => Err(timed_out()),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        match self.unary::<Header>("/v3/lease/revoke", &json!({"ID": lease.to_string()})).await {
            Ok(_) => Ok(()),
            Err(Failure::Status { code: GRPC_NOT_FOUND, message }) if is_lease_not_found(&message) => {
                Err(Error::LeaseNotFound(lease))
            }
            Err(e) => Err(e.into_store()),
        }
    }

    /// A lease granted and revoked: two writes through etcd's consensus,
    /// each acknowledged once a quorum has it in its log and applied (refused
    /// under etcd's `NOSPACE` alarm), creating no revision.
    async fn probe(&self) -> Result<()> {
        let lease = self.lease_grant(PROBE_LEASE_TTL).await?;
        self.lease_revoke(lease).await
    }
}

/// The messages of a stream call, one JSON value per line.
struct Lines {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl Lines {
    /// The next message's `result`, `None` at the end of the stream, or the
    /// error etcd reported on the stream.
    async fn next_message<T: DeserializeOwned>(&mut self) -> Call<Option<T>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return decode_stream_message(line).map(Some);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    if self.buf.len() + chunk.len() > MAX_STREAM_LINE {
                        return Err(Failure::unavailable(format!(
                            "etcd sent a stream message over {} MiB",
                            MAX_STREAM_LINE >> 20
                        )));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(Failure::unavailable(format!("etcd stream: {}", error_chain(&e)))),
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    let rest = rest.trim_ascii();
                    return if rest.is_empty() { Ok(None) } else { decode_stream_message(rest).map(Some) };
                }
            }
        }
    }
}

/// Decodes `{"result": T}` or reports `{"error": {...}}`.
fn decode_stream_message<T: DeserializeOwned>(line: &[u8]) -> Call<T> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        result: Option<T>,
        error: Option<StreamError>,
    }
    #[derive(Deserialize)]
    struct StreamError {
        #[serde(default, alias = "grpc_code")]
        code: i64,
        #[serde(default)]
        message: String,
    }
    let envelope: Envelope<T> = serde_json::from_slice(line)
        .map_err(|e| Failure::unavailable(format!("etcd sent a stream message this client cannot read: {e}")))?;
    match (envelope.result, envelope.error) {
        (_, Some(error)) => Err(Failure::Status { code: error.code, message: error.message }),
        (Some(result), None) => Ok(result),
        (None, None) => Err(Failure::unavailable("etcd sent an empty stream message".into())),
    }
}

/// One etcd watch: batches decoded from the last response and not yet
/// delivered, and the next revision expected (for [`Error::Compacted`]).
struct EtcdWatch {
    lines: Lines,
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
            match self.lines.next_message::<WatchResponse>().await {
                Ok(Some(resp)) => {
                    if let Some(e) = self.absorb(resp) {
                        return Some((Err(e), self));
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some((Err(e.into_store()), self));
                }
            }
        }
    }

    /// Queues the events of `resp` grouped by revision; an error if etcd
    /// ended the watch (then the watch is done).
    fn absorb(&mut self, resp: WatchResponse) -> Option<Error> {
        if resp.compact_revision > 0 {
            self.done = true;
            return Some(Error::Compacted { requested: self.next, oldest: resp.compact_revision });
        }
        if resp.canceled {
            self.done = true;
            return Some(Error::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason)));
        }
        for event in resp.events {
            let Some(kv) = event.kv else { continue };
            let revision = kv.mod_revision;
            let event = match event.kind.as_str() {
                "" | "PUT" => match key_value(kv) {
                    Ok(kv) => Event::Put(kv),
                    Err(e) => {
                        self.done = true;
                        return Some(e);
                    }
                },
                "DELETE" => match decode_b64(&kv.key) {
                    Ok(key) => Event::Delete { key: String::from_utf8_lossy(&key).into_owned(), revision },
                    Err(e) => {
                        self.done = true;
                        return Some(e);
                    }
                },
                other => {
                    self.done = true;
                    return Some(Error::Unavailable(format!("etcd sent an unknown event type {other:?}")));
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

// ------------------------------------------------------------ wire types

/// A message's response header; only the revision is used.
#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default)]
    header: Option<ResponseHeader>,
}

impl Header {
    fn revision(&self) -> Result<Revision> {
        match &self.header {
            Some(h) if h.revision > 0 => Ok(h.revision),
            _ => Err(Error::Unavailable("etcd answered without a revision".into())),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ResponseHeader {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct RangeResponse {
    #[serde(flatten)]
    header: Header,
    #[serde(default)]
    kvs: Vec<WireKeyValue>,
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(flatten)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Deserialize)]
struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Deserialize)]
struct LeaseKeepAliveResponse {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Debug, Deserialize)]
struct WatchResponse {
    #[serde(flatten)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<WireEvent>,
}

#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type", default)]
    kind: String,
    kv: Option<WireKeyValue>,
}

#[derive(Debug, Deserialize)]
struct WireKeyValue {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

/// A 64-bit integer as the gateway writes it (a string), or as a number.
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn key_value(kv: WireKeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8_lossy(&decode_b64(&kv.key)?).into_owned(),
        value: decode_b64(&kv.value)?,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease,
    })
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn decode_b64(text: &str) -> Result<Vec<u8>> {
    BASE64.decode(text).map_err(|e| Error::Unavailable(format!("etcd sent bytes that are not base64: {e}")))
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's rule: the prefix with its last byte below 0xff incremented, and
/// `\0`, "to the end", when there is none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The `key` and `range_end` of a request about every key starting with
/// `prefix` (etcd takes key `\0` with range end `\0` for every key).
fn prefix_range(prefix: &str) -> Value {
    let key = if prefix.is_empty() { b"\0" } else { prefix.as_bytes() };
    json!({"key": b64(key), "range_end": b64(&prefix_end(prefix.as_bytes()))})
}

/// `http://host:port` (`https://` with `tls`) for `host:port` or a URL;
/// refuses other schemes, and a scheme that does not match `tls`.
fn base_url(endpoint: &str, tls: bool) -> Result<String> {
    let endpoint = endpoint.trim();
    let scheme = if tls { "https://" } else { "http://" };
    let url = if endpoint.contains("://") { endpoint.to_owned() } else { format!("{scheme}{endpoint}") };
    let Some(host) = url.strip_prefix(scheme) else {
        let why = if url.starts_with("https://") {
            "https:// needs a TLS configuration (--etcd-ca, --etcd-cert, --etcd-key)"
        } else if url.starts_with("http://") {
            "http:// with a TLS configuration: give https:// or host:port"
        } else {
            "only http:// and https:// are supported"
        };
        return Err(Error::InvalidArgument(format!("etcd endpoint {endpoint:?}: {why}")));
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(Error::InvalidArgument(format!("etcd endpoint {endpoint:?} is not host:port")));
    }
    Ok(format!("{scheme}{host}"))
}

/// The error the gateway put in a non-2xx answer:
/// `{"error": "...", "code": N, "message": "..."}`.
fn gateway_error(body: &[u8]) -> Option<Failure> {
    #[derive(Deserialize)]
    struct GatewayError {
        #[serde(default)]
        code: i64,
        #[serde(default)]
        message: String,
        #[serde(default)]
        error: String,
    }
    let e: GatewayError = serde_json::from_slice(body).ok()?;
    let message = if e.message.is_empty() { e.error } else { e.message };
    Some(Failure::Status { code: e.code, message })
}

fn is_lease_not_found(message: &str) -> bool {
    message.contains("lease not found")
}

fn timed_out() -> Error {
    Error::Unavailable(format!("etcd did not answer within {} s", REQUEST_TIMEOUT.as_secs()))
}

/// The error and its causes, for messages ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn endpoints() {
        assert_eq!(base_url("127.0.0.1:2379", false).unwrap(), "http://127.0.0.1:2379");
        assert_eq!(base_url("http://h:1/", false).unwrap(), "http://h:1");
        assert_eq!(base_url("127.0.0.1:2379", true).unwrap(), "https://127.0.0.1:2379");
        assert_eq!(base_url("https://h:1/", true).unwrap(), "https://h:1");
        assert!(matches!(base_url("https://h:1", false), Err(Error::InvalidArgument(_))));
        assert!(matches!(base_url("http://h:1", true), Err(Error::InvalidArgument(_))));
        assert!(matches!(base_url("unix://h", false), Err(Error::InvalidArgument(_))));
        assert!(matches!(base_url("http://", false), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn gateway_messages() {
        let watch: WatchResponse = decode_stream_message(
            br#"{"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"Zm9v","mod_revision":"4","value":"YmFy"}},{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"5"}}]}}"#,
        )
        .unwrap();
        assert_eq!(watch.header.revision().unwrap(), 5);
        assert_eq!(watch.events.len(), 2);
        assert_eq!(watch.events[1].kind, "DELETE");
        let compacted: WatchResponse =
            decode_stream_message(br#"{"result":{"header":{},"canceled":true,"compact_revision":"4"}}"#).unwrap();
        assert_eq!(compacted.compact_revision, 4);
        let err = decode_stream_message::<WatchResponse>(br#"{"error":{"grpc_code":11,"message":"future"}}"#);
        assert!(matches!(err, Err(Failure::Status { code: 11, .. })));
        assert!(matches!(
            gateway_error(br#"{"error":"x","message":"x","code":5}"#),
            Some(Failure::Status { code: 5, .. })
        ));
        assert!(decode_stream_message::<WatchResponse>(b"{").is_err());
    }
}

//! Watch streams: what each agent (per chassis) and replicator is sent.
//!
//! NDJSON over a long-lived HTTP response, one [`Message`] per line:
//!
//! ```text
//! {"type":"snapshot","revision":41,"objects":[{"kind":"vpc",...},...]}   on connect
//! {"type":"delta","revision":42,"upserts":[{"kind":"vip",...}],"deletes":[]}
//! {"type":"ping","revision":42}                                          when idle
//! ```
//! A subscriber keeps the objects it was sent and the last revision; on
//! reconnect with `?from=REV` it gets one delta of what changed after REV
//! (the keys the cache's window of recent revisions lists, with their
//! current values) instead of a snapshot, unless ports or chassis changed
//! meanwhile (which can change what it should hold) or REV is older than
//! the window ([`crate::cache::RECENT_KEYS`] changed keys). A VIP move
//! reaches each subscriber as a delta holding that one VIP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use vipcast_api::Message;
use vipcast_model::view::{self, Subscriber};
use vipcast_model::{Object, ObjectKey, State as ModelState};
use vipcast_store::Revision;

use crate::Controller;
use crate::api::FromQuery;
use crate::error::ErrorBody;

/// Size of the pieces a snapshot is sent in.
const SNAPSHOT_CHUNK: usize = 16 * 1024;

/// The watch stream of one chassis' agent.
///
/// NDJSON, one `Message` per line, until the client disconnects: a snapshot
/// of the objects the chassis needs (or, with `from`, a delta since that
/// revision), then a delta per change that concerns it, and pings when idle.
/// An unregistered chassis gets an empty snapshot and receives its objects
/// once it registers.
#[utoipa::path(get, path = "/v1/watch/chassis/{name}", tag = "watch", operation_id = "watch_chassis",
    params(("name" = String, Path, description = "The chassis' name"), FromQuery),
    responses(
        (status = 200, description = "NDJSON stream, one Message per line", body = Message,
         content_type = "application/x-ndjson"),
        (status = 400, description = "`invalid_query` (`field` names the parameter): the query string is not understood (`from` must be an integer)",
         body = ErrorBody),
))]
pub async fn chassis(
    State(c): State<Arc<Controller>>,
    Path(name): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    open(c, Subscriber::Chassis(name), q.from)
}

/// The watch stream of a replicator.
///
/// NDJSON, one `Message` per line: every object but subnets and history, as
/// a snapshot (or, with `from`, a delta) and then deltas, and pings when
/// idle. The name identifies the replicator but does not change what it is
/// sent.
#[utoipa::path(get, path = "/v1/watch/replicators/{name}", tag = "watch", operation_id = "watch_replicators",
    params(("name" = String, Path, description = "The replicator's name"), FromQuery),
    responses(
        (status = 200, description = "NDJSON stream, one Message per line", body = Message,
         content_type = "application/x-ndjson"),
        (status = 400, description = "`invalid_query` (`field` names the parameter): the query string is not understood (`from` must be an integer)",
         body = ErrorBody),
))]
pub async fn replicators(
    State(c): State<Arc<Controller>>,
    Path(_name): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    open(c, Subscriber::Replicator, q.from)
}

fn open(c: Arc<Controller>, sub: Subscriber, from: Option<Revision>) -> Response {
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(4);
    tokio::spawn(async move {
        c.metrics.watchers.inc();
        let _ = run(&c, sub, from, tx).await;
        c.metrics.watchers.dec();
    });
    let body =
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>));
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_default()
}

/// Per-subscriber bookkeeping: no copy of what it holds, only which VPCs it
/// takes part in and the revision it is at; what changes for it is worked
/// out from the states before and after each revision.
struct Stream {
    sub: Subscriber,
    /// VPCs a chassis takes part in.
    vpcs: BTreeSet<String>,
    revision: Revision,
}

impl Stream {
    fn participation(&self, state: &ModelState) -> BTreeSet<String> {
        match &self.sub {
            Subscriber::Chassis(me) => view::participation(state, me),
            Subscriber::Replicator => BTreeSet::new(),
        }
    }

    /// Sends a snapshot of `state`. It is written object by object in
    /// chunks, so a thousand subscribers connecting at once do not each hold
    /// a copy of the region in memory.
    async fn snapshot(
        &mut self,
        state: &ModelState,
        revision: Revision,
        tx: &mpsc::Sender<bytes::Bytes>,
    ) -> Option<()> {
        self.vpcs = self.participation(state);
        self.revision = revision;
        let keys = view::objects_for(state, &self.sub);
        let mut buf = format!("{{\"type\":\"snapshot\",\"revision\":{revision},\"objects\":[").into_bytes();
        for (i, k) in keys.iter().enumerate() {
            let Some(obj) = state.get(k) else { continue };
            if i > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, &obj).ok()?;
            if buf.len() >= SNAPSHOT_CHUNK {
                tx.send(std::mem::take(&mut buf).into()).await.ok()?;
            }
        }
        buf.extend_from_slice(b"]}\n");
        tx.send(buf.into()).await.ok()
    }

    /// The delta for `changes` (final values) between `before` and `after`,
    /// or `None` if none of them concern the subscriber.
    fn delta(
        &mut self,
        before: &ModelState,
        after: &ModelState,
        revision: Revision,
        changes: &BTreeMap<ObjectKey, Option<Object>>,
    ) -> Option<Message> {
        self.revision = revision;
        let vpcs = self.participation(after);
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        if vpcs != self.vpcs {
            // What the subscriber should hold changed: diff the whole sets.
            let old = view::objects_for(before, &self.sub);
            let new = view::objects_for(after, &self.sub);
            for k in &new {
                if !old.contains(k) || changes.contains_key(k) {
                    upserts.extend(after.get(k));
                }
            }
            deletes.extend(old.difference(&new).map(ObjectKey::store_key));
            self.vpcs = vpcs;
        } else {
            // A port coming or going can bring its chassis into (or out of)
            // the subscriber's VPCs: weigh that chassis record too.
            let mut candidates: BTreeSet<&ObjectKey> = changes.keys().collect();
            let mut extra = Vec::new();
            for k in changes.keys() {
                if let ObjectKey::Port(p) = k {
                    for st in [before, after] {
                        if let Some(port) = st.ports.get(p) {
                            extra.push(ObjectKey::Chassis(port.chassis.clone()));
                        }
                    }
                }
            }
            candidates.extend(extra.iter());
            for k in candidates {
                let now = after.get(k).filter(|_| view::concerns(after, &self.sub, &self.vpcs, k));
                let was = view::concerns(before, &self.sub, &self.vpcs, k) && before.get(k).is_some();
                match now {
                    Some(o) if changes.contains_key(k) || !was => upserts.push(o),
                    Some(_) => {}
                    None if was => deletes.push(k.store_key()),
                    None => {}
                }
            }
        }
        (!upserts.is_empty() || !deletes.is_empty()).then_some(Message::Delta { revision, upserts, deletes })
    }
}

fn line(m: &Message) -> bytes::Bytes {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

async fn run(c: &Controller, sub: Subscriber, from: Option<Revision>, tx: mpsc::Sender<bytes::Bytes>) -> Option<()> {
    // Subscribe before reading the state, so no revision falls in between.
    let mut applied = c.cache.subscribe();
    let snap = c.cache.current();
    let mut s = Stream { sub, vpcs: BTreeSet::new(), revision: 0 };
    let first = match from {
        Some(rev) => resume(c, &mut s, rev, &snap.state, snap.revision),
        None => None,
    };
    match first {
        Some(m) => tx.send(line(&m)).await.ok()?,
        None => s.snapshot(&snap.state, snap.revision, &tx).await?,
    }
    let mut ping = tokio::time::interval(c.config.watch_ping);
    ping.tick().await;
    loop {
        tokio::select! {
            r = applied.recv() => match r {
                Ok(a) if a.revision <= s.revision && !a.reload => {}
                Ok(a) if a.reload => s.snapshot(&a.state, a.revision, &tx).await?,
                Ok(a) => {
                    let changes: BTreeMap<_, _> = a.changes.iter().cloned().collect();
                    if let Some(m) = s.delta(&a.before, &a.state, a.revision, &changes) {
                        tx.send(line(&m)).await.ok()?;
                        ping.reset();
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "watch subscriber lagged; sending a snapshot");
                    let snap = c.cache.current();
                    s.snapshot(&snap.state, snap.revision, &tx).await?;
                }
                Err(RecvError::Closed) => return None,
            },
            _ = ping.tick() => tx.send(line(&Message::Ping { revision: s.revision })).await.ok()?,
            _ = tx.closed() => return None,
        }
    }
}

/// The delta from `from` to `now`, from the cache's window of recent
/// revisions (memory only: no store reads, so concurrent resumes cost no
/// more than snapshots), or `None` when a snapshot is needed instead: `from`
/// is older than the window, or ahead of `now`.
fn resume(c: &Controller, s: &mut Stream, from: Revision, state: &ModelState, now: Revision) -> Option<Message> {
    if from > now || from < 0 {
        return None;
    }
    let changed = c.cache.changed_between(from, now)?;
    // Ports and chassis decide what a chassis holds; a change to them since
    // `from` means the subscriber's set may differ in ways history cannot tell.
    if changed.iter().any(|k| matches!(k, ObjectKey::Port(_) | ObjectKey::Chassis(_)))
        && s.sub != Subscriber::Replicator
    {
        return None;
    }
    s.vpcs = s.participation(state);
    s.revision = now;
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for k in changed {
        if matches!(k, ObjectKey::History(..) | ObjectKey::Router(..) | ObjectKey::Arbitration(..)) {
            continue;
        }
        match state.get(&k) {
            Some(o) if view::concerns(state, &s.sub, &s.vpcs, &k) => upserts.push(o),
            _ => deletes.push(k.store_key()),
        }
    }
    Some(Message::Delta { revision: now, upserts, deletes })
}

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
use tokio::sync::mpsc;
use vipcast_api::Message;
use vipcast_model::view::{self, Subscriber};
use vipcast_model::{Object, ObjectKey, State as ModelState};
use vipcast_store::Revision;

use crate::Controller;
use crate::api::FromQuery;
use crate::cache::Encoded;
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
        c: &Controller,
        state: &ModelState,
        encoded: &Encoded,
        revision: Revision,
        tx: &Out<'_>,
    ) -> Option<()> {
        // One of a bounded number written at once (see SNAPSHOTS_AT_ONCE).
        let _turn = tokio::select! {
            p = c.snapshots.acquire() => p.ok()?,
            _ = tx.cut.cancelled() => return None,
        };
        self.vpcs = self.participation(state);
        self.revision = revision;
        let keys = view::objects_for(state, &self.sub);
        let mut buf = format!("{{\"type\":\"snapshot\",\"revision\":{revision},\"objects\":[").into_bytes();
        let mut first = true;
        for k in &keys {
            let Some(obj) = encoded.get(k) else { continue };
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(obj);
            if buf.len() >= SNAPSHOT_CHUNK {
                tx.send(std::mem::take(&mut buf).into()).await?;
            }
        }
        buf.extend_from_slice(b"]}\n");
        tx.send(buf.into()).await
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

/// The stream's way to its HTTP response; a send gives up when the
/// stream is cut.
struct Out<'a> {
    tx: &'a mpsc::Sender<bytes::Bytes>,
    cut: &'a tokio_util::sync::CancellationToken,
}

impl Out<'_> {
    async fn send(&self, b: bytes::Bytes) -> Option<()> {
        tokio::select! {
            r = self.tx.send(b) => r.ok(),
            _ = self.cut.cancelled() => None,
        }
    }
}

fn line(m: &Message) -> bytes::Bytes {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

async fn run(c: &Controller, sub: Subscriber, from: Option<Revision>, tx: mpsc::Sender<bytes::Bytes>) -> Option<()> {
    // The state and the queue of later revisions, taken together: no
    // revision falls in between.
    let chassis = match &sub {
        Subscriber::Chassis(name) => Some(name.clone()),
        Subscriber::Replicator => None,
    };
    let mut subscription = c.cache.watch(chassis.as_deref());
    let cut = subscription.cut.clone();
    let tx = Out { tx: &tx, cut: &cut };
    let snap = subscription.snapshot.clone();
    let mut s = Stream { sub, vpcs: BTreeSet::new(), revision: 0 };
    let first = match from {
        Some(rev) => resume(c, &mut s, rev, &snap.state, snap.revision),
        None => None,
    };
    match first {
        Some(m) => tx.send(line(&m)).await?,
        None => s.snapshot(c, &snap.state, &snap.encoded, snap.revision, &tx).await?,
    }
    let mut ping = tokio::time::interval(c.config.watch_ping);
    ping.tick().await;
    loop {
        tokio::select! {
            // `None`: the stream fell too far behind and was cut (its
            // client resumes from the last revision it holds).
            r = subscription.rx.recv() => match r {
                Some(r) if r.applied.revision <= s.revision && !r.applied.reload => {}
                Some(r) if r.applied.reload => {
                    let a = &r.applied;
                    s.snapshot(c, &a.state, &a.encoded, a.revision, &tx).await?
                }
                Some(r) => {
                    // Only the changes routed to this stream: a batch of
                    // many chassis costs each stream what concerns it.
                    let (a, changes) = (&r.applied, r.changes());
                    if let Some(m) = s.delta(&a.before, &a.state, a.revision, &changes) {
                        tx.send(line(&m)).await?;
                        ping.reset();
                    }
                }
                None => return None,
            },
            _ = ping.tick() => {
                // Nothing waiting in the queue after revision `now` was
                // published: the stream holds everything up to `now`
                // (revisions are queued before they are published), so a
                // resume from it need not go back further.
                let now = c.cache.current().revision;
                if subscription.rx.is_empty() {
                    s.revision = s.revision.max(now);
                }
                tx.send(line(&Message::Ping { revision: s.revision })).await?
            }
            _ = tx.tx.closed() => return None,
            _ = cut.cancelled() => return None,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vipcast_model::*;
    use vipcast_packet::MacAddr;

    use super::*;
    use crate::cache::Applied;
    use crate::fanout::{Fanout, Routed, targets};

    const CHASSIS: u8 = 6;

    #[derive(Debug, Clone)]
    enum Op {
        Vpc(u8),
        DeleteVpc(u8),
        Subnet(u8),
        Port { name: u8, vpc: u8, chassis: u8 },
        DeletePort(u8),
        Vip { name: u8, vpc: u8, owner: Option<u8> },
        DeleteVip(u8),
        Chassis { name: u8, gateway: bool, alive: bool },
        DeleteChassis(u8),
        Replicator(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..3u8).prop_map(Op::Vpc),
            1 => (0..3u8).prop_map(Op::DeleteVpc),
            1 => (0..3u8).prop_map(Op::Subnet),
            4 => (0..10u8, 0..3u8, 0..CHASSIS).prop_map(|(name, vpc, chassis)| Op::Port { name, vpc, chassis }),
            2 => (0..10u8).prop_map(Op::DeletePort),
            3 => (0..4u8, 0..3u8, proptest::option::of(0..CHASSIS))
                .prop_map(|(name, vpc, owner)| Op::Vip { name, vpc, owner }),
            1 => (0..4u8).prop_map(Op::DeleteVip),
            2 => (0..CHASSIS, proptest::bool::weighted(0.3), any::<bool>())
                .prop_map(|(name, gateway, alive)| Op::Chassis { name, gateway, alive }),
            1 => (0..CHASSIS).prop_map(Op::DeleteChassis),
            1 => (0..2u8).prop_map(Op::Replicator),
        ]
    }

    /// The change `op` makes to `s`: the key and its new value.
    fn change(s: &ModelState, op: &Op) -> (ObjectKey, Option<Object>) {
        let obj = match *op {
            Op::Vpc(n) => Object::Vpc(Vpc {
                name: format!("v{n}"),
                vni: 100 + u32::from(n),
                bum: BumMode::Headend,
                arp_suppression: false,
                assist: true,
                encap: Encap::Vxlan,
            }),
            Op::Subnet(n) => Object::Subnet(Subnet {
                vpc: format!("v{n}"),
                name: "net".into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway: None,
            }),
            Op::Port { name, vpc, chassis } => Object::Port(Port::vm(
                format!("p{name}"),
                format!("v{vpc}"),
                "net",
                format!("hv{chassis}"),
                MacAddr([2, 0, 0, 0, 0, name]),
                format!("10.0.0.{}", name + 1).parse().unwrap(),
            )),
            Op::Vip { name, vpc, owner } => {
                let mut v = Vip::new(VipSpec {
                    name: format!("vip{name}"),
                    vpc: format!("v{vpc}"),
                    subnet: "net".into(),
                    ip: format!("10.0.0.{}", 100 + name).parse().unwrap(),
                    members: vec![],
                });
                let generation =
                    s.vips.get(&v.spec.name).and_then(|v| v.owner.as_ref()).map_or(1, |o| o.generation + 1);
                v.owner = owner.map(|c| Owner {
                    port: format!("p{c}"),
                    mac: MacAddr([2, 0, 0, 0, 0, c]),
                    chassis: format!("hv{c}"),
                    generation,
                    since: 0,
                });
                Object::Vip(v)
            }
            Op::Chassis { name, gateway, alive } => Object::Chassis(Chassis {
                name: format!("hv{name}"),
                underlay_ip: format!("172.31.0.{}", name + 1).parse().unwrap(),
                role: if gateway { Role::Gateway } else { Role::Hypervisor },
                dataplane: Dataplane::Kernel,
                liveness: Some(Liveness { alive, since_ms: 0, last_heard_ms: 0 }),
            }),
            Op::Replicator(n) => Object::Replicator(Replicator {
                name: format!("rep{n}"),
                address: format!("172.31.1.{}:4789", n + 1).parse().unwrap(),
            }),
            Op::DeleteVpc(n) => return (ObjectKey::Vpc(format!("v{n}")), None),
            Op::DeletePort(n) => return (ObjectKey::Port(format!("p{n}")), None),
            Op::DeleteVip(n) => return (ObjectKey::Vip(format!("vip{n}")), None),
            Op::DeleteChassis(n) => return (ObjectKey::Chassis(format!("hv{n}")), None),
        };
        (obj.key(), Some(obj))
    }

    fn apply(s: &mut ModelState, (key, value): &(ObjectKey, Option<Object>)) {
        match value {
            Some(o) => s.put(o.clone()),
            None => drop(s.delete(key)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the state and whatever one revision changes, every
        /// stream whose view it changes is among those it is handed to.
        #[test]
        fn every_stream_a_revision_concerns_is_handed_it(
            ops in proptest::collection::vec(op(), 0..60),
            last in proptest::collection::vec(op(), 1..4),
        ) {
            let mut before = ModelState::default();
            for op in &ops {
                let c = change(&before, op);
                apply(&mut before, &c);
            }
            let mut after = before.clone();
            let mut changes = Vec::new();
            for op in &last {
                let c = change(&after, op);
                apply(&mut after, &c);
                changes.push(c);
            }
            let applied = Applied {
                revision: 2,
                changes: changes.clone(),
                before: Arc::new(before.clone()),
                state: Arc::new(after.clone()),
                encoded: Default::default(),
                reload: false,
            };
            let t = targets(&applied);
            let applied = Arc::new(applied);
            let finals: BTreeMap<_, _> = changes.into_iter().collect();
            let subs = (0..CHASSIS).map(|c| Subscriber::Chassis(format!("hv{c}"))).chain([Subscriber::Replicator]);
            for sub in subs {
                let fresh = || {
                    let mut s = Stream { sub: sub.clone(), vpcs: BTreeSet::new(), revision: 1 };
                    s.vpcs = s.participation(&before);
                    s
                };
                let full = fresh().delta(&before, &after, 2, &finals);
                // What the stream is handed: its changes, or all of them.
                let handed = match &sub {
                    Subscriber::Chassis(me) => {
                        let ix = t.of(me);
                        (!ix.is_empty()).then(|| Routed { applied: applied.clone(), changes: Some(ix.into()) })
                    }
                    Subscriber::Replicator => {
                        (!t.is_empty()).then(|| Routed { applied: applied.clone(), changes: None })
                    }
                };
                match handed {
                    None => prop_assert!(full.is_none(), "{:?} has a delta but was not handed the revision ({:?})", sub, t),
                    Some(r) => {
                        let routed = fresh().delta(&before, &after, 2, &r.changes());
                        prop_assert_eq!(routed, full, "{:?}: the changes it was handed make another delta", sub);
                    }
                }
            }
        }
    }

    fn vip_move(before: &ModelState, generation: u64) -> Arc<Applied> {
        let mut after = before.clone();
        let (key, value) = change(before, &Op::Vip { name: 0, vpc: 0, owner: Some((generation % 2) as u8) });
        apply(&mut after, &(key.clone(), value.clone()));
        Arc::new(Applied {
            revision: generation as i64 + 10,
            changes: vec![(key, value)],
            before: Arc::new(before.clone()),
            state: Arc::new(after),
            encoded: Default::default(),
            reload: false,
        })
    }

    /// A VIP move is handed to the chassis of its VPC only; a stream that
    /// does not read is cut when its queue is full, counted, and forgotten.
    #[test]
    fn moves_reach_their_vpc_only_and_a_stream_that_does_not_read_is_cut() {
        let mut s = ModelState::default();
        for op in [
            Op::Vpc(0),
            Op::Vpc(1),
            Op::Chassis { name: 0, gateway: false, alive: true },
            Op::Chassis { name: 1, gateway: false, alive: true },
            Op::Chassis { name: 2, gateway: false, alive: true },
            Op::Port { name: 0, vpc: 0, chassis: 0 },
            Op::Port { name: 1, vpc: 0, chassis: 1 },
            Op::Port { name: 2, vpc: 1, chassis: 2 },
            Op::Vip { name: 0, vpc: 0, owner: None },
        ] {
            let c = change(&s, &op);
            apply(&mut s, &c);
        }
        let dropped = prometheus_client::metrics::counter::Counter::default();
        let mut f = Fanout::with_capacity(dropped.clone(), 3);
        let (_, mut hv0, _) = f.add(Some("hv0"));
        let (_, mut hv1, hv1_cut) = f.add(Some("hv1"));
        let (_, mut hv2, _) = f.add(Some("hv2"));
        assert_eq!(f.len(), 3);
        for g in 0..3 {
            assert_eq!(f.dispatch(&vip_move(&s, g)), 2, "hv0 and hv1 only");
            // hv0 reads, hv1 never does.
            assert!(hv0.try_recv().is_ok());
        }
        assert!(hv2.try_recv().is_err(), "hv2 is in another VPC");
        assert_eq!(dropped.get(), 0);
        f.dispatch(&vip_move(&s, 3));
        assert_eq!(dropped.get(), 1, "hv1's queue was full");
        assert!(hv1_cut.is_cancelled(), "hv1's stream is told at once");
        assert_eq!(f.len(), 2);
        // hv1 gets what was queued, then the end of its stream.
        for _ in 0..3 {
            assert!(hv1.try_recv().is_ok());
        }
        assert!(matches!(hv1.try_recv(), Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)));
        assert!(hv0.try_recv().is_ok(), "hv0 keeps its stream");
        assert!(!f.is_empty());
    }
}

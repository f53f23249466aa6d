//! `GET /v1/vips/{name}/watch`: a VIP's changes of owner as they happen;
//! `GET /v1/watch/vips`: every VIP's (what the status page follows).
//!
//! NDJSON, one object a line: first `{"revision", "owner"}` (the owner now,
//! or null), then `{"revision", "change"}` with the history record of each
//! change of owner, in generation order (read from the store, so changes
//! that came between two looks at the state are all there), `{"ping":
//! revision}` every [`PING`] while nothing happens, and `{"revision",
//! "deleted": true}` as the last line if the VIP is deleted. Each stream
//! holds only a receiver of the cache's latest state; the HTTP limits bound
//! how many there are.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use vipcast_model::OwnershipChange;

use super::{ApiResult, Ctl};
use crate::error::{ApiError, ErrorBody};

/// Keep-alive interval of an idle stream.
pub const PING: Duration = Duration::from_secs(5);

/// One NDJSON line.
fn line(v: serde_json::Value) -> bytes::Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\n');
    bytes::Bytes::from(b)
}

/// The streaming answer whose lines come from `out`.
fn ndjson(out: mpsc::Receiver<bytes::Bytes>) -> Response {
    let body =
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out).map(Ok::<_, std::convert::Infallible>));
    ([("content-type", "application/x-ndjson"), ("cache-control", "no-cache")], body).into_response()
}

/// The VIP's owner now, then every change of owner as it is accepted.
#[utoipa::path(get, path = "/v1/vips/{name}/watch", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "NDJSON stream: `{revision, owner}`, then `{revision, change}` (an ownership history record) per change of owner, `{ping}` when idle, `{revision, deleted: true}` at the end if the VIP is deleted",
         body = OwnershipChange, content_type = "application/x-ndjson"),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
))]
pub(super) async fn watch_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Response> {
    let mut rx = c.cache.subscribe();
    let first = rx.borrow_and_update().clone();
    let vip = first.state.vips.get(&name).ok_or_else(|| ApiError::not_found("VIP", &name))?;
    let mut generation = vip.owner.as_ref().map_or(0, |o| o.generation);
    let (tx, out) = mpsc::channel::<bytes::Bytes>(8);
    let hello = line(json!({"revision": first.revision, "owner": vip.owner}));
    tokio::spawn(async move {
        if tx.send(hello).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snap = rx.borrow_and_update().clone();
                    let Some(vip) = snap.state.vips.get(&name) else {
                        let _ = tx.send(line(json!({"revision": snap.revision, "deleted": true}))).await;
                        return;
                    };
                    let now = vip.owner.as_ref().map_or(0, |o| o.generation);
                    if now == generation {
                        continue;
                    }
                    // Every record after the last one sent, in order.
                    let sorted = records(&c, &name, generation, now).await;
                    if sorted.is_empty() {
                        // No record (the store did not answer): the owner itself.
                        if tx.send(line(json!({"revision": snap.revision, "owner": vip.owner}))).await.is_err() {
                            return;
                        }
                    }
                    for h in sorted {
                        if tx.send(line(json!({"revision": snap.revision, "change": h}))).await.is_err() {
                            return;
                        }
                    }
                    generation = now;
                }
                _ = ping.tick() => {
                    let revision = rx.borrow().revision;
                    if tx.send(line(json!({"ping": revision}))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(ndjson(out))
}

/// The history records of `vip` after generation `after`, up to `upto`, in
/// order (empty if the store does not answer).
async fn records(c: &crate::Controller, vip: &str, after: u64, upto: u64) -> Vec<OwnershipChange> {
    let mut v: Vec<OwnershipChange> = match c.store.range(&vipcast_model::history_prefix(vip)).await {
        Ok((kvs, _)) => kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<OwnershipChange>(&kv.value).ok())
            .filter(|h| h.generation > after && h.generation <= upto)
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort_by_key(|h| h.generation);
    v
}

/// Every VIP's owner now, then every change of owner of any VIP.
#[utoipa::path(get, path = "/v1/watch/vips", tag = "watch", operation_id = "watch_vips",
    responses(
        (status = 200, description = "NDJSON stream: `{revision, owners: {vip: owner}}`, then `{revision, change}` (an ownership history record) per change of owner, `{revision, vip, owner}` for a VIP created, `{revision, vip, deleted: true}` for one deleted, `{ping}` when idle",
         body = OwnershipChange, content_type = "application/x-ndjson"),
))]
pub(super) async fn watch_vips(State(c): Ctl) -> Response {
    let mut rx = c.cache.subscribe();
    let first = rx.borrow_and_update().clone();
    let mut known: std::collections::BTreeMap<String, u64> =
        first.state.vips.iter().map(|(n, v)| (n.clone(), v.owner.as_ref().map_or(0, |o| o.generation))).collect();
    let owners: serde_json::Map<String, serde_json::Value> =
        first.state.vips.iter().map(|(n, v)| (n.clone(), json!(v.owner))).collect();
    let (tx, out) = mpsc::channel::<bytes::Bytes>(16);
    let hello = line(json!({"revision": first.revision, "owners": owners}));
    tokio::spawn(async move {
        if tx.send(hello).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snap = rx.borrow_and_update().clone();
                    let mut lines = Vec::new();
                    known.retain(|name, _| {
                        let alive = snap.state.vips.contains_key(name);
                        if !alive {
                            lines.push(json!({"revision": snap.revision, "vip": name, "deleted": true}));
                        }
                        alive
                    });
                    for (name, vip) in snap.state.vips.iter() {
                        let now = vip.owner.as_ref().map_or(0, |o| o.generation);
                        match known.insert(name.clone(), now) {
                            None => lines.push(json!({"revision": snap.revision, "vip": name, "owner": vip.owner})),
                            Some(before) if before != now => {
                                let rs = records(&c, name, before, now).await;
                                if rs.is_empty() {
                                    lines.push(json!({"revision": snap.revision, "vip": name, "owner": vip.owner}));
                                }
                                lines.extend(rs.into_iter().map(|h| json!({"revision": snap.revision, "change": h})));
                            }
                            Some(_) => {}
                        }
                    }
                    for l in lines {
                        if tx.send(line(l)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = ping.tick() => {
                    let revision = rx.borrow().revision;
                    if tx.send(line(json!({"ping": revision}))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    ndjson(out)
}

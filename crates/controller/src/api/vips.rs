//! VIPs: their members, owner claims and ownership history.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vipcast_api::{ClaimAnswer, ClaimResult};
use vipcast_model::claim::{self, Claim, Decision, HISTORY_MAX_AGE_MS, Hold};
use vipcast_model::{Command, ObjectKey, OwnershipChange, Vip, VipSpec, VrrpRouter};

use super::{Actor, ApiResult, Ctl, created, parse};
use crate::Controller;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::ClaimLabels;
use crate::now_ms;

/// A VIP as the API shows it: its spec, its owner, and whether it is flapping.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VipView {
    #[serde(flatten)]
    #[schema(schema_with = vipcast_model::openapi::vip_spec_flattened)]
    spec: VipSpec,
    /// Who holds it; `null` until a member claims it.
    owner: Option<vipcast_model::Owner>,
    /// Members have been alternating as owner recently.
    split_brain: bool,
    /// Flap damping: whether the VIP is on hold, and how much it moved.
    damping: DampingView,
    /// The VRRP view: the virtual routers of the VIP's VPC that advertise
    /// its address, as their masters' chassis saw them.
    vrrp: Vec<VrrpRouter>,
    /// Members marked not eligible to take the VIP.
    ineligible: Vec<String>,
}

/// A VIP's flap damping, now (the policy: 30 moves in a 10 s window put
/// it on hold for 30 s, doubling with each hold in a row up to 10 min; a
/// certain fault of its owner ends a hold).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DampingView {
    /// Claims that would move the VIP are damped until then (ms since the
    /// epoch), unless its owner has a certain fault; `null` when not on hold.
    held_until: Option<u64>,
    /// Moves in the current counting window (0 once it has closed).
    moves_in_window: u32,
    /// Holds in a row: the next one lasts twice as long as the last.
    holds: u32,
}

fn vip_view(s: &vipcast_model::State, v: &Vip) -> VipView {
    let now = now_ms();
    let vrrp =
        s.routers.values().filter(|r| r.vpc == v.spec.vpc && r.addresses.contains(&v.spec.ip)).cloned().collect();
    let d = s.arbitration.get(&v.spec.name).map(|a| a.damping).unwrap_or_default();
    let window_open = now < d.window_start.saturating_add(Hold::DEFAULT.window_ms);
    let damping = DampingView {
        held_until: (now < d.held_until).then_some(d.held_until),
        moves_in_window: if window_open { d.moves_in_window } else { 0 },
        holds: d.holds,
    };
    VipView {
        spec: v.spec.clone(),
        owner: v.owner.clone(),
        split_brain: v.split_brain(now),
        damping,
        vrrp,
        ineligible: v.ineligible.clone(),
    }
}

/// Sets the split-brain gauge to the VIPs flagged now.
pub(super) fn set_split_brain_gauge(c: &Controller) {
    let now = now_ms();
    let flagged = c.cache.current().state.vips.values().filter(|v| v.split_brain(now)).count();
    c.metrics.vip_split_brain.set(flagged as i64);
}

/// Lists the VIPs.
#[utoipa::path(get, path = "/v1/vips", tag = "vips",
    responses((status = 200, description = "All of them, by name", body = Vec<VipView>)))]
pub(super) async fn list_vips(State(c): Ctl) -> Json<Vec<VipView>> {
    let snap = c.cache.current();
    Json(snap.state.vips.values().map(|v| vip_view(&snap.state, v)).collect())
}

/// One VIP, by name.
#[utoipa::path(get, path = "/v1/vips/{name}", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "Found", body = VipView),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
))]
pub(super) async fn get_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<VipView>> {
    let snap = c.cache.current();
    snap.state
        .vips
        .get(&name)
        .map(|v| vip_view(&snap.state, v))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("VIP", &name))
}

/// Creates a VIP (with no owner until a member claims it).
#[utoipa::path(post, path = "/v1/vips", tag = "vips", request_body = VipSpec, responses(
    (status = 201, description = "Created", body = VipView),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `unknown_vpc`, `unknown_subnet`, `ip_outside_subnet`, `no_members`, `duplicate_member`, `unknown_port`, `member_outside_subnet`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_ip`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn create_vip(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let spec: VipSpec = parse(&body)?;
    c.write(Command::CreateVip(spec.clone())).await?;
    let snap = c.cache.current();
    Ok(created(snap.state.vips.get(&spec.name).map(|v| vip_view(&snap.state, v))))
}

/// Deletes a VIP, and its history (in the same transaction: a claim
/// arriving meanwhile cannot leave a record for a VIP created again under
/// its name).
#[utoipa::path(delete, path = "/v1/vips/{name}", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    // The command deletes the records the state knows of; those stored
    // before arbitration records existed are read from the store.
    let (history, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    let history = history.iter().filter_map(|kv| ObjectKey::parse(&kv.key)).collect();
    c.write(Command::DeleteVip { name, history }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A VIP's new member list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    /// Names of the ports that may hold the VIP (at least one).
    members: Vec<String>,
}

/// Replaces a VIP's member list; an owner that is no longer a member loses the VIP.
#[utoipa::path(put, path = "/v1/vips/{name}/members", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    request_body = MembersBody,
    responses(
        (status = 200, description = "The VIP after the change", body = VipView),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `no_members`, `duplicate_member`, `unknown_port`, `member_outside_subnet`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn put_members(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<VipView>> {
    let b: MembersBody = parse(&body)?;
    c.write(Command::PutMembers { vip: name.clone(), members: b.members }).await?;
    get_vip(State(c), Path(name)).await
}

/// A member's standing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    /// Whether the member may take the VIP. A member marked `false` (e.g.
    /// by a database's health agent while its standby is behind) has its
    /// claims refused (`not_eligible`), and agents do not hand the VIP over
    /// to it; an owner marked `false` keeps the VIP until it loses it.
    eligible: bool,
}

/// Marks a member of a VIP eligible to take it, or not.
#[utoipa::path(put, path = "/v1/vips/{name}/members/{port}", tag = "vips",
    params(
        ("name" = String, Path, description = "The VIP's name"),
        ("port" = String, Path, description = "A member port's name"),
    ),
    request_body = MemberBody,
    responses(
        (status = 200, description = "The VIP after the change", body = VipView),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `not_member` (field `port`)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn put_member(
    State(c): Ctl,
    Path((name, port)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<VipView>> {
    let b: MemberBody = parse(&body)?;
    c.write(Command::SetEligible { vip: name.clone(), port, eligible: b.eligible }).await?;
    get_vip(State(c), Path(name)).await
}

/// `?before=&limit=`: a page of history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// Only changes of generation lower than this (to page back: the
    /// generation of the oldest change of the previous page).
    before: Option<u64>,
    /// At most this many changes, the latest of those asked for (1 or more).
    limit: Option<usize>,
}

/// The VIP's changes of owner, oldest first: by default all of those kept
/// (the latest 100, and none older than 30 days but the latest).
#[utoipa::path(get, path = "/v1/vips/{name}/history", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name"), HistoryQuery),
    responses(
        (status = 200, description = "Changes of owner, oldest first", body = Vec<OwnershipChange>),
        (status = 400, description = "`invalid_query`: `before` or `limit` is not a number, or `limit` is 0", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn vip_history(
    State(c): Ctl,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<OwnershipChange>>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", None, e.body_text()))?;
    if q.limit == Some(0) {
        return Err(ApiError::bad_request("invalid_query", Some("limit".into()), "limit must be 1 or more"));
    }
    let span = {
        let snap = c.cache.current();
        if !snap.state.vips.contains_key(&name) {
            return Err(ApiError::not_found("VIP", &name));
        }
        snap.state.arbitration.get(&name).map(|a| a.history)
    };
    let (kvs, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    // Only the records the arbitration record says are this VIP's (none of
    // a deleted VIP's of the same name, none retention already dropped).
    let mut changes: Vec<OwnershipChange> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<OwnershipChange>(&kv.value).ok())
        .filter(|h| span.is_none_or(|s| s.contains(h.generation)))
        .filter(|h| q.before.is_none_or(|b| h.generation < b))
        .collect();
    if let Some(limit) = q.limit {
        changes.drain(..changes.len().saturating_sub(limit));
    }
    Ok(Json(changes))
}

/// Reports a sniffed GARP / unsolicited NA for the VIP: the last valid
/// claim wins, unless the VIP is on hold (flap damping).
#[utoipa::path(post, path = "/v1/vips/{name}/claims", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    request_body = Claim,
    responses(
        (status = 200, description = "Accepted, unchanged, or damped (the VIP is on hold: nothing changed)", body = ClaimAnswer),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `clock_skew` (`observed_at` more than 30 s from the controller's clock)", body = ErrorBody),
        (status = 403, description = "`not_member`: the MAC / chassis is not a member port of the VIP (spoofing)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 409, description = "`stale_claim`: observed before the claim that made the current owner", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn post_claim(
    State(c): Ctl,
    Actor(actor): Actor,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ClaimAnswer>> {
    let claim: Claim = parse(&body)?;
    let count = |result| {
        c.metrics.claims.get_or_create(&ClaimLabels { result }).inc();
    };
    let refused = |e: &vipcast_model::Invalid| {
        count("refused");
        match e.code {
            "not_member" | "clock_skew" | "not_eligible" => {
                tracing::warn!(vip = name, mac = %claim.mac, chassis = claim.chassis, code = e.code, "refused claim: {}", e.message)
            }
            _ => {
                tracing::debug!(vip = name, mac = %claim.mac, chassis = claim.chassis, code = e.code, "refused claim: {}", e.message)
            }
        }
    };
    // `Command::Claim` writes `claim::decide(..).applied()`; the handler
    // makes the decision itself to keep it: what it did to damping is
    // logged and counted.
    let damping = c.config.damping;
    let decide = |s: &vipcast_model::State| {
        claim::decide(s, &name, &claim, now_ms(), &damping, &Hold::DEFAULT).map(|d| d.attributed(actor.as_deref()))
    };
    // Fast path: a claim that writes nothing (the owner's repeat, damped,
    // refused) touches nothing (no write, no lock).
    let snap = c.cache.current();
    let (decision, revision) = match decide(&snap.state) {
        Err(e) => {
            refused(&e);
            return Err(e.into());
        }
        Ok(Decision::Moved(_)) => {
            // Decided again on the state the write is guarded by (and again
            // if another writer won meanwhile); the last decision is the one written.
            let decided = Mutex::new(None);
            let written = c
                .write_with(|s| {
                    let d = decide(s)?;
                    let applied = d.applied();
                    *decided.lock().unwrap_or_else(PoisonError::into_inner) = Some(d);
                    Ok(applied)
                })
                .await
                .inspect_err(|_| count("refused"))?;
            let decided = decided.into_inner().unwrap_or_else(PoisonError::into_inner);
            (decided.unwrap_or(Decision::Unchanged), written.revision)
        }
        Ok(d) => (d, snap.revision),
    };
    let owner = || c.cache.current().state.vips.get(&name).and_then(|v| v.owner.clone());
    let result = match decision {
        Decision::Unchanged => {
            count("unchanged");
            return Ok(Json(ClaimAnswer { result: ClaimResult::Unchanged, owner: owner(), revision }));
        }
        Decision::Damped { owner, held_until } => {
            count("damped");
            c.metrics.vip_damped.inc();
            tracing::debug!(vip = name, mac = %claim.mac, chassis = claim.chassis, owner = owner.port, held_until, "claim damped: the VIP is on hold");
            return Ok(Json(ClaimAnswer { result: ClaimResult::Damped, owner: Some(owner), revision }));
        }
        Decision::Moved(m) => m,
    };
    count("accepted");
    report_move(&c, &name, &result);
    if let Some(a) = &result.arbitration
        && a.history.first < a.history.last
        && a.history.first_at.saturating_add(HISTORY_MAX_AGE_MS) < now_ms()
    {
        expire_history(c.clone(), name.clone());
    }
    Ok(Json(ClaimAnswer { result: ClaimResult::Accepted, owner: Some(result.change.owner), revision }))
}

/// Logs and counts what a move did.
fn report_move(c: &Controller, name: &str, m: &claim::Move) {
    let o = &m.change.owner;
    let moves = m.arbitration.as_ref().map_or(0, |a| a.damping.moves_in_window);
    tracing::info!(vip = name, port = o.port, mac = %o.mac, chassis = o.chassis, generation = o.generation, moves_in_window = moves, actor = m.change.actor, "VIP moved");
    if m.change.previous_port.is_some() {
        c.metrics.vip_moves.inc();
    }
    if let Some(fault) = &m.released {
        tracing::warn!(vip = name, port = o.port, %fault, "VIP hold ended by a certain fault of its owner");
    }
    if m.split_brain {
        tracing::warn!(
            vip = name,
            recent_moves = m.vip.recent_moves.len(),
            "VIP split brain: its members keep taking it from each other"
        );
    }
    if let (Some(until), Some(a)) = (m.held_until, &m.arbitration) {
        let hold_ms = until.saturating_sub(o.since);
        tracing::warn!(
            vip = name,
            port = o.port,
            chassis = o.chassis,
            moves = a.damping.moves_in_window,
            hold_ms,
            held_until = until,
            holds = a.damping.holds,
            "VIP damped: held on its owner"
        );
    }
}

/// Deletes the VIP's history records older than the age retention, in
/// the background (their ages are read from the store).
fn expire_history(c: Arc<Controller>, name: String) {
    tokio::spawn(async move {
        let (kvs, _) = match c.store.range(&vipcast_model::history_prefix(&name)).await {
            Ok(r) => r,
            Err(e) => return tracing::debug!(vip = name, error = %e, "history expiry: cannot read"),
        };
        let Some(span) = c.cache.current().state.arbitration.get(&name).map(|a| a.history) else { return };
        let cutoff = now_ms().saturating_sub(HISTORY_MAX_AGE_MS);
        let mut kept: Vec<OwnershipChange> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<OwnershipChange>(&kv.value).ok())
            .filter(|h| span.contains(h.generation))
            .collect();
        kept.sort_by_key(|h| h.generation);
        let Some(keep) = kept.iter().find(|h| h.accepted_at >= cutoff).or(kept.last()) else { return };
        let command =
            Command::ExpireHistory { vip: name.clone(), keep_from: keep.generation, keep_from_at: keep.accepted_at };
        if let Err(e) = c.write(command).await {
            tracing::debug!(vip = name, error = %e.message, "history expiry not written");
        }
    });
}

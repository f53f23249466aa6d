//! VIPs: their members, owner claims and ownership history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vipcast_api::{ClaimAnswer, ClaimResult};
use vipcast_model::claim::Claim;
use vipcast_model::command::{self, Outcome};
use vipcast_model::{Command, ObjectKey, OwnershipChange, Vip, VipSpec, VrrpRouter};

use super::{ApiResult, Ctl, created, parse};
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
    /// The VRRP view: the virtual routers of the VIP's VPC that advertise
    /// its address, as their masters' chassis saw them.
    vrrp: Vec<VrrpRouter>,
}

fn vip_view(s: &vipcast_model::State, v: &Vip) -> VipView {
    let vrrp =
        s.routers.values().filter(|r| r.vpc == v.spec.vpc && r.addresses.contains(&v.spec.ip)).cloned().collect();
    VipView { spec: v.spec.clone(), owner: v.owner.clone(), split_brain: v.split_brain(now_ms()), vrrp }
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

/// Deletes a VIP, and its history.
#[utoipa::path(delete, path = "/v1/vips/{name}", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    // The history is not in the state: its records are read from the store.
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

/// The VIP's changes of owner, oldest first.
#[utoipa::path(get, path = "/v1/vips/{name}/history", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "Changes of owner, oldest first", body = Vec<OwnershipChange>),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn vip_history(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vec<OwnershipChange>>> {
    if !c.cache.current().state.vips.contains_key(&name) {
        return Err(ApiError::not_found("VIP", &name));
    }
    let (kvs, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    let changes = kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    Ok(Json(changes))
}

/// Reports a sniffed GARP / unsolicited NA for the VIP: the last valid claim wins.
#[utoipa::path(post, path = "/v1/vips/{name}/claims", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    request_body = Claim,
    responses(
        (status = 200, description = "Accepted or unchanged", body = ClaimAnswer),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault)", body = ErrorBody),
        (status = 403, description = "`not_member`: the MAC / chassis is not a member port of the VIP (spoofing)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn post_claim(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<ClaimAnswer>> {
    let claim: Claim = parse(&body)?;
    let count = |result| {
        c.metrics.claims.get_or_create(&ClaimLabels { result }).inc();
    };
    let (mac, chassis) = (claim.mac, claim.chassis.clone());
    let command = Command::Claim { vip: name.clone(), claim, damping: c.config.damping };
    // Fast path: a repeated claim by the owner touches nothing (no write, no lock).
    let snap = c.cache.current();
    match command::apply(&snap.state, &command, now_ms()) {
        Ok(a) if a.outcome == Outcome::Unchanged => {
            count("unchanged");
            let owner = snap.state.vips.get(&name).and_then(|v| v.owner.clone());
            return Ok(Json(ClaimAnswer { result: ClaimResult::Unchanged, owner, revision: snap.revision }));
        }
        Err(e) => {
            count("refused");
            if e.kind == vipcast_model::InvalidKind::Forbidden {
                tracing::warn!(vip = name, mac = %mac, chassis, "refused claim: {}", e.message);
            }
            return Err(e.into());
        }
        Ok(_) => {}
    }
    let written = c.write(command).await.inspect_err(|_| count("refused"))?;
    let moved = matches!(written.outcome, Outcome::Moved { .. });
    count(if moved { "accepted" } else { "unchanged" });
    let snap = c.cache.current();
    let owner = snap.state.vips.get(&name).and_then(|v| v.owner.clone());
    if moved && let Some(o) = &owner {
        tracing::info!(vip = name, port = o.port, mac = %o.mac, chassis = o.chassis, generation = o.generation, "VIP moved");
    }
    let result = if moved { ClaimResult::Accepted } else { ClaimResult::Unchanged };
    Ok(Json(ClaimAnswer { result, owner, revision: written.revision }))
}

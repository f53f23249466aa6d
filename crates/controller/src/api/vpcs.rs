//! VPCs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::ToSchema;
use vipcast_model::{Command, Vpc};

use super::{ApiResult, Ctl, created, delete, parse};
use crate::error::{ApiError, ErrorBody};

/// Lists the VPCs.
#[utoipa::path(get, path = "/v1/vpcs", tag = "vpcs",
    responses((status = 200, description = "All of them, by name", body = Vec<Vpc>)))]
pub(super) async fn list_vpcs(State(c): Ctl) -> Json<Vec<Vpc>> {
    Json(c.cache.current().state.vpcs.values().cloned().collect())
}

/// One VPC, by name.
#[utoipa::path(get, path = "/v1/vpcs/{name}", tag = "vpcs",
    params(("name" = String, Path, description = "The VPC's name")),
    responses(
        (status = 200, description = "Found", body = Vpc),
        (status = 404, description = "`not_found`: no such VPC", body = ErrorBody),
))]
pub(super) async fn get_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vpc>> {
    c.cache.current().state.vpcs.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("VPC", &name))
}

/// Creates a VPC.
#[utoipa::path(post, path = "/v1/vpcs", tag = "vpcs", request_body = Vpc, responses(
    (status = 201, description = "Created", body = Vpc),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `invalid_vni`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_vni`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn create_vpc(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Vpc = parse(&body)?;
    c.write(Command::CreateVpc(v.clone())).await?;
    Ok(created(v))
}

/// The settings of a VPC that may change after creation (name and VNI may
/// not); absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VpcPatch {
    /// Platform-assisted VRRP handover.
    assist: Option<bool>,
    /// ARP / ND answered by the chassis for known addresses.
    arp_suppression: Option<bool>,
}

/// Changes a VPC's settings.
#[utoipa::path(patch, path = "/v1/vpcs/{name}", tag = "vpcs",
    params(("name" = String, Path, description = "The VPC's name")),
    request_body = VpcPatch,
    responses(
        (status = 200, description = "Changed (or already so)", body = Vpc),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VPC", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn patch_vpc(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Vpc>> {
    let p: VpcPatch = parse(&body)?;
    c.write(Command::PatchVpc { name: name.clone(), assist: p.assist, arp_suppression: p.arp_suppression }).await?;
    c.cache.current().state.vpcs.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("VPC", &name))
}

/// Deletes a VPC (once it has no subnets).
#[utoipa::path(delete, path = "/v1/vpcs/{name}", tag = "vpcs",
    params(("name" = String, Path, description = "The VPC's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such VPC", body = ErrorBody),
        (status = 409, description = "`in_use`: the VPC still has subnets", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeleteVpc(name)).await
}

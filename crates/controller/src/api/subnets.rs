//! Subnets of a VPC.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use vipcast_model::{Command, Subnet};

use super::{ApiResult, Ctl, created, delete, parse};
use crate::error::{ApiError, ErrorBody};

/// Lists the subnets.
#[utoipa::path(get, path = "/v1/subnets", tag = "subnets",
    responses((status = 200, description = "All of them, by name", body = Vec<Subnet>)))]
pub(super) async fn list_subnets(State(c): Ctl) -> Json<Vec<Subnet>> {
    Json(c.cache.current().state.subnets.values().cloned().collect())
}

/// One subnet, by VPC and name.
#[utoipa::path(get, path = "/v1/subnets/{vpc}/{name}", tag = "subnets",
    params(("vpc" = String, Path, description = "The VPC's name"), ("name" = String, Path, description = "The subnet's name within the VPC")),
    responses(
        (status = 200, description = "Found", body = Subnet),
        (status = 404, description = "`not_found`: no such subnet", body = ErrorBody),
))]
pub(super) async fn get_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<Json<Subnet>> {
    let snap = c.cache.current();
    snap.state
        .subnets
        .get(&(vpc.clone(), name.clone()))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("subnet", &format!("{vpc}/{name}")))
}

/// Creates a subnet in a VPC.
#[utoipa::path(post, path = "/v1/subnets", tag = "subnets", request_body = Subnet, responses(
    (status = 201, description = "Created", body = Subnet),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `unknown_vpc`, `invalid_cidr`, `gateway_outside_subnet`", body = ErrorBody),
    (status = 409, description = "`exists` (name in the VPC), `overlapping_cidr`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn create_subnet(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Subnet = parse(&body)?;
    c.write(Command::CreateSubnet(v.clone())).await?;
    Ok(created(v))
}

/// Deletes a subnet (once it has no ports or VIPs).
#[utoipa::path(delete, path = "/v1/subnets/{vpc}/{name}", tag = "subnets",
    params(("vpc" = String, Path, description = "The VPC's name"), ("name" = String, Path, description = "The subnet's name within the VPC")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such subnet", body = ErrorBody),
        (status = 409, description = "`in_use`: the subnet still has ports or VIPs", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeleteSubnet { vpc, name }).await
}

//! Chassis: hypervisors and gateways.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use vipcast_api::ChassisRegistration;
use vipcast_model::{Chassis, Command};

use super::{ApiResult, Ctl, check_name_matches, delete, parse};
use crate::error::{ApiError, ErrorBody};

/// Lists the chassis.
#[utoipa::path(get, path = "/v1/chassis", tag = "chassis",
    responses((status = 200, description = "All of them, by name", body = Vec<Chassis>)))]
pub(super) async fn list_chassis(State(c): Ctl) -> Json<Vec<Chassis>> {
    Json(c.cache.current().state.chassis.values().cloned().collect())
}

/// One chassis, by name.
#[utoipa::path(get, path = "/v1/chassis/{name}", tag = "chassis",
    params(("name" = String, Path, description = "The chassis's name")),
    responses(
        (status = 200, description = "Found", body = Chassis),
        (status = 404, description = "`not_found`: no such chassis", body = ErrorBody),
))]
pub(super) async fn get_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Chassis>> {
    c.cache.current().state.chassis.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

/// Registers a chassis, or updates its registration (idempotent).
#[utoipa::path(put, path = "/v1/chassis/{name}", tag = "chassis",
    params(("name" = String, Path, description = "The chassis's name")),
    request_body = ChassisRegistration,
    responses(
        (status = 200, description = "Registered", body = Chassis),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `name_mismatch`, `invalid_name`, `invalid_underlay_ip` (unspecified or multicast), `ipv4_mapped_underlay_ip` (`::ffff:a.b.c.d`: register a.b.c.d), `broadcast_underlay_ip`, `loopback_underlay_ip`, `link_local_underlay_ip`", body = ErrorBody),
        (status = 409, description = "`duplicate_underlay_ip`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn put_chassis(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Chassis>> {
    let b: ChassisRegistration = parse(&body)?;
    check_name_matches(b.name.as_ref(), &name)?;
    // Liveness is the controller's: the command keeps the recorded one.
    let ch = Chassis { name, underlay_ip: b.underlay_ip, role: b.role, dataplane: b.dataplane, liveness: None };
    c.write(Command::PutChassis(ch.clone())).await?;
    let stored = c.cache.current().state.chassis.get(&ch.name).cloned();
    Ok(Json(stored.unwrap_or(ch)))
}

/// Deletes a chassis (once it hosts no ports).
#[utoipa::path(delete, path = "/v1/chassis/{name}", tag = "chassis",
    params(("name" = String, Path, description = "The chassis's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such chassis", body = ErrorBody),
        (status = 409, description = "`in_use`: the chassis still hosts ports", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeleteChassis(name)).await
}

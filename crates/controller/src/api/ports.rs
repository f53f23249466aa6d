//! Ports: VM interfaces.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use vipcast_model::{Command, Port};

use super::{ApiResult, Ctl, created, delete, parse};
use crate::error::{ApiError, ErrorBody};

/// Lists the ports.
#[utoipa::path(get, path = "/v1/ports", tag = "ports",
    responses((status = 200, description = "All of them, by name", body = Vec<Port>)))]
pub(super) async fn list_ports(State(c): Ctl) -> Json<Vec<Port>> {
    Json(c.cache.current().state.ports.values().cloned().collect())
}

/// One port, by name.
#[utoipa::path(get, path = "/v1/ports/{name}", tag = "ports",
    params(("name" = String, Path, description = "The port's name")),
    responses(
        (status = 200, description = "Found", body = Port),
        (status = 404, description = "`not_found`: no such port", body = ErrorBody),
))]
pub(super) async fn get_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Port>> {
    c.cache.current().state.ports.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("port", &name))
}

/// Creates a port.
#[utoipa::path(post, path = "/v1/ports", tag = "ports", request_body = Port, responses(
    (status = 201, description = "Created", body = Port),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `unknown_vpc`, `unknown_subnet`, `unknown_chassis`, `invalid_mac` (multicast or zero), `vrrp_virtual_mac` (`00:00:5e:00:01:xx` / `00:00:5e:00:02:xx` is VRRP's, not a port's), `ip_outside_subnet`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_ip`, `duplicate_mac`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn create_port(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let p: Port = parse(&body)?;
    c.write(Command::CreatePort(p.clone())).await?;
    Ok(created(p))
}

/// Deletes a port (once it is no VIP's member).
#[utoipa::path(delete, path = "/v1/ports/{name}", tag = "ports",
    params(("name" = String, Path, description = "The port's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such port", body = ErrorBody),
        (status = 409, description = "`in_use`: the port is a member of a VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeletePort(name)).await
}

//! BUM replicator nodes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use vipcast_api::ReplicatorRegistration;
use vipcast_model::{Command, Replicator};

use super::{ApiResult, Ctl, check_name_matches, delete, parse};
use crate::error::{ApiError, ErrorBody};

/// Lists the replicators.
#[utoipa::path(get, path = "/v1/replicators", tag = "replicators",
    responses((status = 200, description = "All of them, by name", body = Vec<Replicator>)))]
pub(super) async fn list_replicators(State(c): Ctl) -> Json<Vec<Replicator>> {
    Json(c.cache.current().state.replicators.values().cloned().collect())
}

/// One replicator, by name.
#[utoipa::path(get, path = "/v1/replicators/{name}", tag = "replicators",
    params(("name" = String, Path, description = "The replicator's name")),
    responses(
        (status = 200, description = "Found", body = Replicator),
        (status = 404, description = "`not_found`: no such replicator", body = ErrorBody),
))]
pub(super) async fn get_replicator(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Replicator>> {
    c.cache
        .current()
        .state
        .replicators
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("replicator", &name))
}

/// Registers a replicator, or updates its registration (idempotent).
#[utoipa::path(put, path = "/v1/replicators/{name}", tag = "replicators",
    params(("name" = String, Path, description = "The replicator's name")),
    request_body = ReplicatorRegistration,
    responses(
        (status = 200, description = "Registered", body = Replicator),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `name_mismatch`, `invalid_name`, `invalid_address`", body = ErrorBody),
        (status = 409, description = "`duplicate_address`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn put_replicator(
    State(c): Ctl,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Replicator>> {
    let b: ReplicatorRegistration = parse(&body)?;
    check_name_matches(b.name.as_ref(), &name)?;
    let r = Replicator { name, address: b.address };
    c.write(Command::PutReplicator(r.clone())).await?;
    Ok(Json(r))
}

/// Deletes a replicator.
#[utoipa::path(delete, path = "/v1/replicators/{name}", tag = "replicators",
    params(("name" = String, Path, description = "The replicator's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such replicator", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_replicator(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeleteReplicator(name)).await
}

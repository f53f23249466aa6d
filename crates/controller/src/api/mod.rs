//! The REST API, one module per resource. Handlers only parse and validate
//! input into a [`Command`] (or read the cached state), have the controller
//! execute it, and turn its outcome into the answer; errors become statuses
//! in `error.rs`.
//!
//! Every route is registered through utoipa-axum's `routes!`, which takes the
//! path and methods from the handler's `#[utoipa::path]`: a route cannot be
//! served without being in the OpenAPI document (`openapi.rs`), nor documented
//! at a path other than the one it is served at.

mod chassis;
mod meta;
mod ports;
mod replicators;
mod subnets;
mod views;
mod vips;
mod vpcs;
mod vrrp;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vipcast_model::Command;

use crate::Controller;
use crate::error::ApiError;
use crate::metrics::RequestLabels;

type Ctl = State<Arc<Controller>>;
type ApiResult<T> = Result<T, ApiError>;

/// Every route, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(vpcs::list_vpcs, vpcs::create_vpc))
        .routes(routes!(vpcs::get_vpc, vpcs::patch_vpc, vpcs::delete_vpc))
        .routes(routes!(subnets::list_subnets, subnets::create_subnet))
        .routes(routes!(subnets::get_subnet, subnets::delete_subnet))
        .routes(routes!(chassis::list_chassis))
        .routes(routes!(chassis::put_chassis, chassis::get_chassis, chassis::delete_chassis))
        .routes(routes!(ports::list_ports, ports::create_port))
        .routes(routes!(ports::get_port, ports::delete_port))
        .routes(routes!(vips::list_vips, vips::create_vip))
        .routes(routes!(vips::get_vip, vips::delete_vip))
        .routes(routes!(vips::put_members))
        .routes(routes!(vips::vip_history))
        .routes(routes!(vips::post_claim))
        .routes(routes!(vrrp::list_vrrp, vrrp::post_vrrp))
        .routes(routes!(vrrp::delete_vrrp))
        .routes(routes!(vrrp::post_assist))
        .routes(routes!(replicators::list_replicators))
        .routes(routes!(replicators::put_replicator, replicators::get_replicator, replicators::delete_replicator))
        .routes(routes!(views::chassis_view))
        .routes(routes!(views::replicator_view))
        .routes(routes!(crate::watch::chassis))
        .routes(routes!(crate::watch::replicators))
}

pub fn router(c: Arc<Controller>) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "no_route",
                field: None,
                message: "no such endpoint".into(),
            }
        })
        .layer(middleware::from_fn_with_state(c.clone(), count_requests))
        .with_state(c)
}

async fn count_requests(State(c): Ctl, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let resp = next.run(req).await;
    c.metrics.requests.get_or_create(&RequestLabels { method, status: resp.status().as_u16() }).inc();
    resp
}

/// Parses a JSON body; errors name the field at fault.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let code = if inner.is_syntax() || inner.is_eof() { "malformed_json" } else { "invalid_body" };
        let field = (path != ".").then_some(path);
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner.to_string(),
        };
        ApiError::bad_request(code, field, message)
    })?;
    Ok(value)
}

/// A registration's body may name the object, but only as the path does.
fn check_name_matches(body_name: Option<&String>, path_name: &str) -> ApiResult<()> {
    if body_name.is_some_and(|n| n != path_name) {
        return Err(ApiError::bad_request(
            "name_mismatch",
            Some("name".into()),
            "name in the body differs from the path",
        ));
    }
    Ok(())
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// Executes a deletion: 204 once done.
async fn delete(c: &Controller, command: Command) -> ApiResult<StatusCode> {
    c.write(command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?from=REV`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FromQuery {
    /// Revision the subscriber already holds: the stream then starts with a
    /// delta of what changed after it instead of a snapshot, when it can.
    pub from: Option<i64>,
}

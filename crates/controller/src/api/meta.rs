//! Health and metrics (the OpenAPI document is served from `openapi.rs`).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::Ctl;

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// The store revision this controller's state is at.
    revision: i64,
}

/// Liveness, and the revision the controller has reached.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "Up", body = Health)))]
pub(super) async fn healthz(State(c): Ctl) -> Json<Health> {
    Json(Health { status: "ok", revision: c.cache.current().revision })
}

/// The controller's counters, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition", body = String,
     content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
pub(super) async fn metrics(State(c): Ctl) -> Response {
    c.metrics.vrrp_routers.set(c.cache.current().state.routers.len() as i64);
    super::vips::set_split_brain_gauge(&c);
    let mut body = c.metrics.encode();
    if body.is_empty() {
        body.push_str("# EOF\n");
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

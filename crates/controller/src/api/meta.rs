//! Health and metrics (the OpenAPI document is served from `openapi.rs`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiResult, Ctl};
use crate::error::{ApiError, ErrorBody};

/// The answer of `/healthz` and `/readyz` when they answer 200.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "read_only", "revision": 41, "up": true, "writable": false,
    "reason": "store: store file /var/lib/vipcast/store.redb: I/O error: No space left on device (os error 28)",
    "checked_ms_ago": 120}))]
pub(super) struct Health {
    /// `ok`: the store acknowledges writes and the state served follows it;
    /// `read_only` (only from `/readyz`): the state served follows the
    /// store, but writes cannot be acknowledged.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// The store revision this controller's state is at.
    revision: i64,
    /// The state served follows the store (its watch is established and the
    /// store answered a read lately).
    up: bool,
    /// The store acknowledged a write lately (a probe, or a real write) and
    /// no write failed since.
    writable: bool,
    /// Why not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    reason: Option<String>,
    /// Milliseconds since the store last answered (or failed) a write.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false)]
    checked_ms_ago: Option<u64>,
}

/// The health now, or the error a 503 carries: `store_unavailable` when the
/// state served may not follow the store, `store_read_only` (if `writes`)
/// when only writes fail.
fn health(c: &crate::Controller, writes: bool) -> ApiResult<Health> {
    let s = c.store_health();
    let reason = s.reason.clone().unwrap_or_default();
    let refuse = |code, what: &str| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code,
        field: None,
        message: format!("{what}: {reason}"),
    };
    if !s.up {
        return Err(refuse("store_unavailable", "the state served may not follow the store"));
    }
    if writes && !s.writable {
        return Err(refuse("store_read_only", "the store cannot acknowledge writes"));
    }
    Ok(Health {
        status: if s.writable { "ok" } else { "read_only" },
        revision: c.cache.current().revision,
        up: s.up,
        writable: s.writable,
        reason: s.reason,
        checked_ms_ago: s.checked.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// Whether the controller can do its whole job, and the revision it has
/// reached: 503 as soon as the store cannot acknowledge writes (a write
/// failed, or a probe write failed or went unanswered for the probe
/// timeout; probes run every second) or the state may not follow it.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses(
    (status = 200, description = "The store acknowledges writes", body = Health),
    (status = 503, description = "`store_read_only`: writes cannot be acknowledged; `store_unavailable`: the state served may not follow the store", body = ErrorBody),
))]
pub(super) async fn healthz(State(c): Ctl) -> ApiResult<Json<Health>> {
    health(&c, true).map(Json)
}

/// Whether the controller serves a state that follows the store (reads and
/// watch streams), writable or not: 200 also when only writes fail
/// (`status: read_only`, `writable: false`).
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "Up; `writable` says whether writes are acknowledged", body = Health),
    (status = 503, description = "`store_unavailable`: the state served may not follow the store", body = ErrorBody),
))]
pub(super) async fn readyz(State(c): Ctl) -> ApiResult<Json<Health>> {
    health(&c, false).map(Json)
}

/// The controller's counters, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition", body = String,
     content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
pub(super) async fn metrics(State(c): Ctl) -> Response {
    let state = c.cache.current().state.clone();
    c.metrics.vrrp_routers.set(state.routers.len() as i64);
    c.metrics.set_state(&state);
    super::vips::set_split_brain_gauge(&c);
    let mut body = c.metrics.encode();
    if body.is_empty() {
        body.push_str("# EOF\n");
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

//! The views: what a chassis or the replicators program, computed from the state.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use vipcast_model::view;

use super::{ApiResult, Ctl, FromQuery};
use crate::error::{ApiError, ErrorBody};

/// What a chassis must program.
///
/// Per VPC the chassis takes part in: its subnets, local ports, FDB, neighbours, flood list and VIPs.
#[utoipa::path(get, path = "/v1/views/chassis/{name}", tag = "views",
    params(("name" = String, Path, description = "The chassis's name")),
    responses(
        (status = 200, description = "The chassis' view", body = view::ChassisView),
        (status = 404, description = "`not_found`: no such chassis registered", body = ErrorBody),
))]
pub(super) async fn chassis_view(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<view::ChassisView>> {
    view::chassis_view(&c.cache.current().state, &name).map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

/// What the replicators need.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplicatorView {
    /// The store revision of the state this view was computed from.
    revision: i64,
    /// VNI (in decimal) -> the VPC's members and VIPs, for VPCs in `replicator` BUM mode.
    #[schema(value_type = BTreeMap<String, view::VniEntry>)]
    vnis: BTreeMap<u32, view::VniEntry>,
}

/// What the replicators need.
///
/// VNI -> underlay IPs of the chassis taking part and the VPC's VIPs, for VPCs in `replicator` BUM mode.
#[utoipa::path(get, path = "/v1/views/replicators", tag = "views",
    params(("from" = Option<i64>, Query, description = "Accepted and ignored: the view is always complete")),
    responses(
        (status = 200, description = "The replicators' view", body = ReplicatorView),
        (status = 400, description = "`invalid_query` (`field` names the parameter): the query string is not understood (`from` must be an integer)",
         body = ErrorBody),
))]
pub(super) async fn replicator_view(State(c): Ctl, Query(_q): Query<FromQuery>) -> Json<ReplicatorView> {
    let snap = c.cache.current();
    Json(ReplicatorView { revision: snap.revision, vnis: view::replicator_view(&snap.state) })
}

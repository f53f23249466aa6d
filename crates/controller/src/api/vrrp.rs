//! The VRRP view: the virtual routers agents and replicators report.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use vipcast_api::VrrpReport;
use vipcast_model::command::Outcome;
use vipcast_model::{AssistRecord, Command, VrrpMaster, VrrpRouter};

use super::{ApiResult, Ctl, delete, parse};
use crate::Controller;
use crate::error::{ApiError, ErrorBody};

/// The VRRP view: every virtual router seen, by VPC and id.
#[utoipa::path(get, path = "/v1/vrrp", tag = "vrrp",
    responses((status = 200, description = "All of them", body = Vec<VrrpRouter>)))]
pub(super) async fn list_vrrp(State(c): Ctl) -> Json<Vec<VrrpRouter>> {
    Json(c.cache.current().state.routers.values().cloned().collect())
}

/// The router a report describes, before the state fills in the master's
/// port and the assists counted so far.
fn router(b: VrrpReport) -> VrrpRouter {
    let id = vipcast_model::vrrp_router_id(b.vrid, b.master_ip.is_ipv6());
    VrrpRouter {
        vpc: b.vpc,
        id,
        vrid: b.vrid,
        version: b.version,
        master: VrrpMaster { ip: b.master_ip, mac: b.master_mac, port: String::new(), chassis: b.chassis },
        priority: b.priority,
        interval_cs: b.interval_cs,
        addresses: b.addresses,
        destinations: b.destinations,
        auth_type: b.auth_type,
        observed_at: b.observed_at,
        assists: 0,
        last_assist: None,
    }
}

/// The router `key` as the cache has it.
fn stored(c: &Controller, key: &(String, String)) -> ApiResult<Json<VrrpRouter>> {
    c.cache
        .current()
        .state
        .routers
        .get(key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("VRRP router", &key.1))
}

/// Reports a VRRP master (agents do, when the master or what it advertises
/// changes). Writes nothing when only `observed_at` differs.
#[utoipa::path(post, path = "/v1/vrrp", tag = "vrrp", request_body = VrrpReport, responses(
    (status = 200, description = "The router as stored", body = VrrpRouter),
    (status = 400, description = "`malformed_json`, `invalid_body`, `unknown_vpc`, `invalid_vrid`, `invalid_version`, `invalid_interval`, `invalid_addresses`, `invalid_destinations`, `too_many`, `master_outside_subnet` (`master_ip` is in no subnet of the VPC; IPv6 masters may use their link-local address)", body = ErrorBody),
    (status = 403, description = "`not_a_local_port`: the reporting chassis hosts no port of the VPC with that MAC", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn post_vrrp(State(c): Ctl, body: Bytes) -> ApiResult<Json<VrrpRouter>> {
    let report = router(parse(&body)?);
    let key = (report.vpc.clone(), report.id.clone());
    let written = c.write(Command::ReportVrrp(report.clone())).await?;
    if written.outcome == Outcome::NewMaster {
        c.metrics.vrrp_master_changes.inc();
        tracing::info!(vpc = report.vpc, router = report.id, master = %report.master.ip, chassis = report.master.chassis, "VRRP master reported");
    }
    stored(&c, &key)
}

/// Forgets a VRRP router (it is reported again by its master's chassis).
#[utoipa::path(delete, path = "/v1/vrrp/{vpc}/{id}", tag = "vrrp",
    params(("vpc" = String, Path, description = "The VPC"), ("id" = String, Path, description = "`<vrid>-ipv4` or `<vrid>-ipv6`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn delete_vrrp(State(c): Ctl, Path((vpc, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    delete(&c, Command::DeleteVrrp { vpc, id }).await
}

/// Records an assisted handover (agents do, after sending the priority-0
/// advert): counted in the metrics and on the router.
#[utoipa::path(post, path = "/v1/vrrp/{vpc}/{id}/assists", tag = "vrrp",
    params(("vpc" = String, Path, description = "The VPC"), ("id" = String, Path, description = "`<vrid>-ipv4` or `<vrid>-ipv6`")),
    request_body = AssistRecord,
    responses(
        (status = 200, description = "The router after counting it", body = VrrpRouter),
        (status = 400, description = "`malformed_json`, `invalid_body`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such router", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
pub(super) async fn post_assist(
    State(c): Ctl,
    Path((vpc, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<VrrpRouter>> {
    let a: AssistRecord = parse(&body)?;
    c.metrics.assists.get_or_create(&crate::metrics::FaultLabels { fault: a.fault.as_str() }).inc();
    let key = (vpc, id);
    c.write(Command::RecordAssist { vpc: key.0.clone(), id: key.1.clone(), record: a }).await?;
    stored(&c, &key)
}

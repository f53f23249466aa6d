//! The REST API. Handlers only parse and validate input into model types and
//! call the controller; errors become statuses in `error.rs`.
//!
//! Every route is registered through utoipa-axum's `routes!`, which takes the
//! path and methods from the handler's `#[utoipa::path]`: a route cannot be
//! served without being in the OpenAPI document (`openapi.rs`), nor documented
//! at a path other than the one it is served at.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vipcast_model::claim::{self, Claim, Outcome};
use vipcast_model::{
    AssistRecord, Chassis, Invalid, Object, ObjectKey, OwnershipChange, Port, Replicator, Subnet, Vip, VipSpec, Vpc,
    VrrpMaster, VrrpRouter, view,
};
use vipcast_store::Op;

use vipcast_api::{ChassisRegistration, ClaimAnswer, ClaimResult, ReplicatorRegistration, VrrpReport};

use crate::error::{ApiError, ErrorBody};
use crate::metrics::{ClaimLabels, RequestLabels};
use crate::{Controller, now_ms};

type Ctl = State<Arc<Controller>>;
type ApiResult<T> = Result<T, ApiError>;

/// Every route, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(list_vpcs, create_vpc))
        .routes(routes!(get_vpc, patch_vpc, delete_vpc))
        .routes(routes!(list_subnets, create_subnet))
        .routes(routes!(get_subnet, delete_subnet))
        .routes(routes!(list_chassis))
        .routes(routes!(put_chassis, get_chassis, delete_chassis))
        .routes(routes!(list_ports, create_port))
        .routes(routes!(get_port, delete_port))
        .routes(routes!(list_vips, create_vip))
        .routes(routes!(get_vip, delete_vip))
        .routes(routes!(put_members))
        .routes(routes!(vip_history))
        .routes(routes!(post_claim))
        .routes(routes!(list_vrrp, post_vrrp))
        .routes(routes!(delete_vrrp))
        .routes(routes!(post_assist))
        .routes(routes!(list_replicators))
        .routes(routes!(put_replicator, get_replicator, delete_replicator))
        .routes(routes!(chassis_view))
        .routes(routes!(replicator_view))
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

pub(crate) fn put_op(obj: &Object) -> Op {
    Op::Put { key: obj.key().store_key(), value: obj.to_value(), lease: 0 }
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// The answer of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// The store revision this controller's state is at.
    revision: i64,
}

/// Liveness, and the revision the controller has reached.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "Up", body = Health)))]
async fn healthz(State(c): Ctl) -> Json<Health> {
    Json(Health { status: "ok", revision: c.cache.current().revision })
}

/// The controller's counters, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition", body = String,
     content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
async fn metrics(State(c): Ctl) -> Response {
    c.metrics.vrrp_routers.set(c.cache.current().state.routers.len() as i64);
    let mut body = c.metrics.encode();
    if body.is_empty() {
        body.push_str("# EOF\n");
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

// ---- VPCs ----

/// Lists the VPCs.
#[utoipa::path(get, path = "/v1/vpcs", tag = "vpcs",
    responses((status = 200, description = "All of them, by name", body = Vec<Vpc>)))]
async fn list_vpcs(State(c): Ctl) -> Json<Vec<Vpc>> {
    Json(c.cache.current().state.vpcs.values().cloned().collect())
}

/// One VPC, by name.
#[utoipa::path(get, path = "/v1/vpcs/{name}", tag = "vpcs",
    params(("name" = String, Path, description = "The VPC's name")),
    responses(
        (status = 200, description = "Found", body = Vpc),
        (status = 404, description = "`not_found`: no such VPC", body = ErrorBody),
))]
async fn get_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vpc>> {
    c.cache.current().state.vpcs.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("VPC", &name))
}

/// Creates a VPC.
#[utoipa::path(post, path = "/v1/vpcs", tag = "vpcs", request_body = Vpc, responses(
    (status = 201, description = "Created", body = Vpc),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `invalid_vni`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_vni`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn create_vpc(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Vpc = parse(&body)?;
    let obj = Object::Vpc(v.clone());
    c.write(|s| s.check_vpc(&v).map(|()| vec![put_op(&obj)])).await?;
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
async fn patch_vpc(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Vpc>> {
    let p: VpcPatch = parse(&body)?;
    c.write(|s| {
        let old = s.vpcs.get(&name).ok_or_else(|| Invalid::not_found("VPC", &name))?;
        let new = Vpc {
            assist: p.assist.unwrap_or(old.assist),
            arp_suppression: p.arp_suppression.unwrap_or(old.arp_suppression),
            ..old.clone()
        };
        Ok(if &new == old { vec![] } else { vec![put_op(&Object::Vpc(new))] })
    })
    .await?;
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
async fn delete_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Vpc(name)).await
}

async fn delete(c: &Controller, key: ObjectKey) -> ApiResult<StatusCode> {
    c.write(|s| s.check_delete(&key).map(|()| vec![Op::Delete { key: key.store_key() }])).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- subnets ----

/// Lists the subnets.
#[utoipa::path(get, path = "/v1/subnets", tag = "subnets",
    responses((status = 200, description = "All of them, by name", body = Vec<Subnet>)))]
async fn list_subnets(State(c): Ctl) -> Json<Vec<Subnet>> {
    Json(c.cache.current().state.subnets.values().cloned().collect())
}

/// One subnet, by VPC and name.
#[utoipa::path(get, path = "/v1/subnets/{vpc}/{name}", tag = "subnets",
    params(("vpc" = String, Path, description = "The VPC's name"), ("name" = String, Path, description = "The subnet's name within the VPC")),
    responses(
        (status = 200, description = "Found", body = Subnet),
        (status = 404, description = "`not_found`: no such subnet", body = ErrorBody),
))]
async fn get_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<Json<Subnet>> {
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
async fn create_subnet(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Subnet = parse(&body)?;
    let obj = Object::Subnet(v.clone());
    c.write(|s| s.check_subnet(&v).map(|()| vec![put_op(&obj)])).await?;
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
async fn delete_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Subnet(vpc, name)).await
}

// ---- chassis ----

/// Lists the chassis.
#[utoipa::path(get, path = "/v1/chassis", tag = "chassis",
    responses((status = 200, description = "All of them, by name", body = Vec<Chassis>)))]
async fn list_chassis(State(c): Ctl) -> Json<Vec<Chassis>> {
    Json(c.cache.current().state.chassis.values().cloned().collect())
}

/// One chassis, by name.
#[utoipa::path(get, path = "/v1/chassis/{name}", tag = "chassis",
    params(("name" = String, Path, description = "The chassis's name")),
    responses(
        (status = 200, description = "Found", body = Chassis),
        (status = 404, description = "`not_found`: no such chassis", body = ErrorBody),
))]
async fn get_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Chassis>> {
    c.cache.current().state.chassis.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

/// Registers a chassis, or updates its registration (idempotent).
#[utoipa::path(put, path = "/v1/chassis/{name}", tag = "chassis",
    params(("name" = String, Path, description = "The chassis's name")),
    request_body = ChassisRegistration,
    responses(
        (status = 200, description = "Registered", body = Chassis),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `name_mismatch`, `invalid_name`, `invalid_underlay_ip`", body = ErrorBody),
        (status = 409, description = "`duplicate_underlay_ip`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn put_chassis(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Chassis>> {
    let b: ChassisRegistration = parse(&body)?;
    if b.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "name_mismatch",
            Some("name".into()),
            "name in the body differs from the path",
        ));
    }
    let ch = Chassis { name, underlay_ip: b.underlay_ip, role: b.role, dataplane: b.dataplane, liveness: None };
    c.write(|s| {
        // Liveness is the controller's to decide: registering keeps it.
        let ch = Chassis { liveness: s.chassis.get(&ch.name).and_then(|old| old.liveness), ..ch.clone() };
        s.check_chassis(&ch)?;
        // Registering again with the same settings writes nothing.
        Ok(if s.chassis.get(&ch.name) == Some(&ch) { vec![] } else { vec![put_op(&Object::Chassis(ch))] })
    })
    .await?;
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
async fn delete_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Chassis(name)).await
}

// ---- ports ----

/// Lists the ports.
#[utoipa::path(get, path = "/v1/ports", tag = "ports",
    responses((status = 200, description = "All of them, by name", body = Vec<Port>)))]
async fn list_ports(State(c): Ctl) -> Json<Vec<Port>> {
    Json(c.cache.current().state.ports.values().cloned().collect())
}

/// One port, by name.
#[utoipa::path(get, path = "/v1/ports/{name}", tag = "ports",
    params(("name" = String, Path, description = "The port's name")),
    responses(
        (status = 200, description = "Found", body = Port),
        (status = 404, description = "`not_found`: no such port", body = ErrorBody),
))]
async fn get_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Port>> {
    c.cache.current().state.ports.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("port", &name))
}

/// Creates a port.
#[utoipa::path(post, path = "/v1/ports", tag = "ports", request_body = Port, responses(
    (status = 201, description = "Created", body = Port),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `unknown_vpc`, `unknown_subnet`, `unknown_chassis`, `invalid_mac`, `ip_outside_subnet`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_ip`, `duplicate_mac`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn create_port(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let p: Port = parse(&body)?;
    let obj = Object::Port(p.clone());
    c.write(|s| s.check_port(&p).map(|()| vec![put_op(&obj)])).await?;
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
async fn delete_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Port(name)).await
}

// ---- VIPs ----

/// A VIP as the API shows it: its spec, its owner, and whether it is flapping.
#[derive(Debug, Serialize, ToSchema)]
struct VipView {
    #[serde(flatten)]
    #[schema(schema_with = vipcast_model::openapi::vip_spec_flattened)]
    spec: VipSpec,
    /// Who holds it; `null` until a member claims it.
    owner: Option<vipcast_model::Owner>,
    /// Members have been alternating as owner recently.
    split_brain: bool,
    /// The VRRP view: the virtual routers of the VIP's VPC that advertise
    /// its address, as their masters' chassis saw them.
    vrrp: Vec<VrrpRouter>,
}

fn vip_view(s: &vipcast_model::State, v: &Vip) -> VipView {
    let vrrp =
        s.routers.values().filter(|r| r.vpc == v.spec.vpc && r.addresses.contains(&v.spec.ip)).cloned().collect();
    VipView { spec: v.spec.clone(), owner: v.owner.clone(), split_brain: v.split_brain(now_ms()), vrrp }
}

/// Lists the VIPs.
#[utoipa::path(get, path = "/v1/vips", tag = "vips",
    responses((status = 200, description = "All of them, by name", body = Vec<VipView>)))]
async fn list_vips(State(c): Ctl) -> Json<Vec<VipView>> {
    let snap = c.cache.current();
    Json(snap.state.vips.values().map(|v| vip_view(&snap.state, v)).collect())
}

/// One VIP, by name.
#[utoipa::path(get, path = "/v1/vips/{name}", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "Found", body = VipView),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
))]
async fn get_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<VipView>> {
    let snap = c.cache.current();
    snap.state
        .vips
        .get(&name)
        .map(|v| vip_view(&snap.state, v))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("VIP", &name))
}

/// Creates a VIP (with no owner until a member claims it).
#[utoipa::path(post, path = "/v1/vips", tag = "vips", request_body = VipSpec, responses(
    (status = 201, description = "Created", body = VipView),
    (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `invalid_name`, `unknown_vpc`, `unknown_subnet`, `ip_outside_subnet`, `no_members`, `duplicate_member`, `unknown_port`, `member_outside_subnet`", body = ErrorBody),
    (status = 409, description = "`exists` (name), `duplicate_ip`", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn create_vip(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let spec: VipSpec = parse(&body)?;
    let obj = Object::Vip(Vip::new(spec.clone()));
    c.write(|s| s.check_vip(&spec).map(|()| vec![put_op(&obj)])).await?;
    let snap = c.cache.current();
    Ok(created(snap.state.vips.get(&spec.name).map(|v| vip_view(&snap.state, v))))
}

/// Deletes a VIP, and its history.
#[utoipa::path(delete, path = "/v1/vips/{name}", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn delete_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    // The history goes with the VIP (a new VIP of the same name starts over).
    let (history, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    let key = ObjectKey::Vip(name);
    c.write(|s| {
        s.check_delete(&key)?;
        let mut ops = vec![Op::Delete { key: key.store_key() }];
        ops.extend(history.iter().map(|kv| Op::Delete { key: kv.key.clone() }));
        Ok(ops)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A VIP's new member list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    /// Names of the ports that may hold the VIP (at least one).
    members: Vec<String>,
}

/// Replaces a VIP's member list; an owner that is no longer a member loses the VIP.
#[utoipa::path(put, path = "/v1/vips/{name}/members", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    request_body = MembersBody,
    responses(
        (status = 200, description = "The VIP after the change", body = VipView),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault), `no_members`, `duplicate_member`, `unknown_port`, `member_outside_subnet`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn put_members(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<VipView>> {
    let b: MembersBody = parse(&body)?;
    c.write(|s| {
        let vip = s.vips.get(&name).ok_or_else(|| Invalid::not_found("VIP", &name))?;
        let mut next = vip.clone();
        next.spec.members = b.members.clone();
        s.check_members(&next.spec)?;
        // An owner that is no longer a member no longer owns the VIP.
        if next.owner.as_ref().is_some_and(|o| !next.spec.members.contains(&o.port)) {
            next.owner = None;
        }
        Ok(if &next == vip { vec![] } else { vec![put_op(&Object::Vip(next))] })
    })
    .await?;
    get_vip(State(c), Path(name)).await
}

// ---- the VRRP view ----

/// The VRRP view: every virtual router seen, by VPC and id.
#[utoipa::path(get, path = "/v1/vrrp", tag = "vrrp",
    responses((status = 200, description = "All of them", body = Vec<VrrpRouter>)))]
async fn list_vrrp(State(c): Ctl) -> Json<Vec<VrrpRouter>> {
    Json(c.cache.current().state.routers.values().cloned().collect())
}

/// Reports a VRRP master (agents do, when the master or what it advertises
/// changes). Writes nothing when only `observed_at` differs.
#[utoipa::path(post, path = "/v1/vrrp", tag = "vrrp", request_body = VrrpReport, responses(
    (status = 200, description = "The router as stored", body = VrrpRouter),
    (status = 400, description = "`malformed_json`, `invalid_body`, `unknown_vpc`, `invalid_vrid`, `invalid_version`, `invalid_interval`, `invalid_addresses`, `invalid_destinations`, `too_many`", body = ErrorBody),
    (status = 403, description = "`not_a_local_port`: the reporting chassis hosts no port of the VPC with that MAC", body = ErrorBody),
    (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn post_vrrp(State(c): Ctl, body: Bytes) -> ApiResult<Json<VrrpRouter>> {
    let b: VrrpReport = parse(&body)?;
    let id = vipcast_model::vrrp_router_id(b.vrid, b.master_ip.is_ipv6());
    let report = VrrpRouter {
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
    };
    let new_master = std::sync::atomic::AtomicBool::new(false);
    c.write(|s| {
        let mut r = report.clone();
        s.check_router(&mut r)?;
        let old = s.routers.get(&(r.vpc.clone(), r.id.clone()));
        if let Some(old) = old {
            r.assists = old.assists;
            r.last_assist = old.last_assist.clone();
            if (VrrpRouter { observed_at: old.observed_at, ..r.clone() }) == *old {
                return Ok(vec![]);
            }
        }
        new_master.store(old.is_none_or(|o| o.master != r.master), std::sync::atomic::Ordering::Relaxed);
        Ok(vec![put_op(&Object::Router(r))])
    })
    .await?;
    if new_master.load(std::sync::atomic::Ordering::Relaxed) {
        c.metrics.vrrp_master_changes.inc();
        tracing::info!(vpc = report.vpc, router = report.id, master = %report.master.ip, chassis = report.master.chassis, "VRRP master reported");
    }
    let key = (report.vpc.clone(), report.id.clone());
    c.cache
        .current()
        .state
        .routers
        .get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("VRRP router", &key.1))
}

/// Forgets a VRRP router (it is reported again by its master's chassis).
#[utoipa::path(delete, path = "/v1/vrrp/{vpc}/{id}", tag = "vrrp",
    params(("vpc" = String, Path, description = "The VPC"), ("id" = String, Path, description = "`<vrid>-ipv4` or `<vrid>-ipv6`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn delete_vrrp(State(c): Ctl, Path((vpc, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Router(vpc, id)).await
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
async fn post_assist(
    State(c): Ctl,
    Path((vpc, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<VrrpRouter>> {
    let a: AssistRecord = parse(&body)?;
    c.metrics.assists.get_or_create(&crate::metrics::FaultLabels { fault: a.fault.as_str() }).inc();
    let key = (vpc, id);
    c.write(|s| {
        let r =
            s.routers.get(&key).ok_or_else(|| Invalid::not_found("VRRP router", &format!("{}/{}", key.0, key.1)))?;
        let r = VrrpRouter { assists: r.assists + 1, last_assist: Some(a.clone()), ..r.clone() };
        Ok(vec![put_op(&Object::Router(r))])
    })
    .await?;
    c.cache
        .current()
        .state
        .routers
        .get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("VRRP router", &key.1))
}

/// The VIP's changes of owner, oldest first.
#[utoipa::path(get, path = "/v1/vips/{name}/history", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    responses(
        (status = 200, description = "Changes of owner, oldest first", body = Vec<OwnershipChange>),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn vip_history(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vec<OwnershipChange>>> {
    if !c.cache.current().state.vips.contains_key(&name) {
        return Err(ApiError::not_found("VIP", &name));
    }
    let (kvs, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    let changes = kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    Ok(Json(changes))
}

/// Reports a sniffed GARP / unsolicited NA for the VIP: the last valid claim wins.
#[utoipa::path(post, path = "/v1/vips/{name}/claims", tag = "vips",
    params(("name" = String, Path, description = "The VIP's name")),
    request_body = Claim,
    responses(
        (status = 200, description = "Accepted or unchanged", body = ClaimAnswer),
        (status = 400, description = "`malformed_json`, `invalid_body` (with `field` naming the JSON path at fault)", body = ErrorBody),
        (status = 403, description = "`not_member`: the MAC / chassis is not a member port of the VIP (spoofing)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such VIP", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store failed or writes kept conflicting; try again", body = ErrorBody),
))]
async fn post_claim(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<ClaimAnswer>> {
    let claim: Claim = parse(&body)?;
    let count = |result| {
        c.metrics.claims.get_or_create(&ClaimLabels { result }).inc();
    };
    // Fast path: a repeated claim by the owner touches nothing.
    let snap = c.cache.current();
    match claim::arbitrate(&snap.state, &name, &claim, now_ms(), &c.config.damping) {
        Ok(Outcome::Unchanged) => {
            count("unchanged");
            let owner = snap.state.vips.get(&name).and_then(|v| v.owner.clone());
            return Ok(Json(ClaimAnswer { result: ClaimResult::Unchanged, owner, revision: snap.revision }));
        }
        Err(e) => {
            count("refused");
            if e.kind == vipcast_model::InvalidKind::Forbidden {
                tracing::warn!(vip = name, mac = %claim.mac, chassis = claim.chassis, "refused claim: {}", e.message);
            }
            return Err(e.into());
        }
        Ok(Outcome::Moved { .. }) => {}
    }
    let moved = Mutex::new(false);
    let revision = c
        .write(|s| match claim::arbitrate(s, &name, &claim, now_ms(), &c.config.damping)? {
            Outcome::Unchanged => {
                *moved.lock().unwrap_or_else(|p| p.into_inner()) = false;
                Ok(vec![])
            }
            Outcome::Moved { vip, change } => {
                *moved.lock().unwrap_or_else(|p| p.into_inner()) = true;
                Ok(vec![put_op(&Object::Vip(*vip)), put_op(&Object::History(*change))])
            }
        })
        .await
        .inspect_err(|_| count("refused"))?;
    let moved = *moved.lock().unwrap_or_else(|p| p.into_inner());
    count(if moved { "accepted" } else { "unchanged" });
    let snap = c.cache.current();
    let owner = snap.state.vips.get(&name).and_then(|v| v.owner.clone());
    if moved && let Some(o) = &owner {
        tracing::info!(vip = name, port = o.port, mac = %o.mac, chassis = o.chassis, generation = o.generation, "VIP moved");
    }
    let result = if moved { ClaimResult::Accepted } else { ClaimResult::Unchanged };
    Ok(Json(ClaimAnswer { result, owner, revision }))
}

// ---- replicators ----

/// Lists the replicators.
#[utoipa::path(get, path = "/v1/replicators", tag = "replicators",
    responses((status = 200, description = "All of them, by name", body = Vec<Replicator>)))]
async fn list_replicators(State(c): Ctl) -> Json<Vec<Replicator>> {
    Json(c.cache.current().state.replicators.values().cloned().collect())
}

/// One replicator, by name.
#[utoipa::path(get, path = "/v1/replicators/{name}", tag = "replicators",
    params(("name" = String, Path, description = "The replicator's name")),
    responses(
        (status = 200, description = "Found", body = Replicator),
        (status = 404, description = "`not_found`: no such replicator", body = ErrorBody),
))]
async fn get_replicator(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Replicator>> {
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
async fn put_replicator(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Replicator>> {
    let b: ReplicatorRegistration = parse(&body)?;
    if b.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "name_mismatch",
            Some("name".into()),
            "name in the body differs from the path",
        ));
    }
    let r = Replicator { name, address: b.address };
    let obj = Object::Replicator(r.clone());
    c.write(|s| {
        s.check_replicator(&r)?;
        Ok(if s.replicators.get(&r.name) == Some(&r) { vec![] } else { vec![put_op(&obj)] })
    })
    .await?;
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
async fn delete_replicator(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Replicator(name)).await
}

// ---- views ----

/// What a chassis must program.
///
/// Per VPC the chassis takes part in: its subnets, local ports, FDB, neighbours, flood list and VIPs.
#[utoipa::path(get, path = "/v1/views/chassis/{name}", tag = "views",
    params(("name" = String, Path, description = "The chassis's name")),
    responses(
        (status = 200, description = "The chassis' view", body = view::ChassisView),
        (status = 404, description = "`not_found`: no such chassis registered", body = ErrorBody),
))]
async fn chassis_view(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<view::ChassisView>> {
    view::chassis_view(&c.cache.current().state, &name).map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

/// `?from=REV`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FromQuery {
    /// Revision the subscriber already holds: the stream then starts with a
    /// delta of what changed after it instead of a snapshot, when it can.
    pub from: Option<i64>,
}

/// What the replicators need.
#[derive(Debug, Serialize, ToSchema)]
struct ReplicatorView {
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
        (status = 400, description = "The query string is not understood (`from` must be an integer); plain text, not the JSON error body",
         body = String, content_type = "text/plain"),
))]
async fn replicator_view(State(c): Ctl, Query(_q): Query<FromQuery>) -> Json<ReplicatorView> {
    let snap = c.cache.current();
    Json(ReplicatorView { revision: snap.revision, vnis: view::replicator_view(&snap.state) })
}

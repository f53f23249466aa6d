//! The REST API. Handlers only parse and validate input into model types and
//! call the controller; errors become statuses in `error.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vipcast_model::claim::{self, Claim, Outcome};
use vipcast_model::{
    Chassis, Invalid, Object, ObjectKey, OwnershipChange, Port, Replicator, Role, Subnet, Vip, VipSpec, Vpc, view,
};
use vipcast_store::Op;

use crate::error::ApiError;
use crate::metrics::{ClaimLabels, RequestLabels};
use crate::{Controller, now_ms};

type Ctl = State<Arc<Controller>>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(c: Arc<Controller>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/vpcs", get(list_vpcs).post(create_vpc))
        .route("/v1/vpcs/{name}", get(get_vpc).delete(delete_vpc))
        .route("/v1/subnets", get(list_subnets).post(create_subnet))
        .route("/v1/subnets/{vpc}/{name}", get(get_subnet).delete(delete_subnet))
        .route("/v1/chassis", get(list_chassis))
        .route("/v1/chassis/{name}", put(put_chassis).get(get_chassis).delete(delete_chassis))
        .route("/v1/ports", get(list_ports).post(create_port))
        .route("/v1/ports/{name}", get(get_port).delete(delete_port))
        .route("/v1/vips", get(list_vips).post(create_vip))
        .route("/v1/vips/{name}", get(get_vip).delete(delete_vip))
        .route("/v1/vips/{name}/members", put(put_members))
        .route("/v1/vips/{name}/history", get(vip_history))
        .route("/v1/vips/{name}/claims", post(post_claim))
        .route("/v1/replicators", get(list_replicators))
        .route("/v1/replicators/{name}", put(put_replicator).get(get_replicator).delete(delete_replicator))
        .route("/v1/views/chassis/{name}", get(chassis_view))
        .route("/v1/views/replicators", get(replicator_view))
        .route("/v1/watch/chassis/{name}", get(crate::watch::chassis))
        .route("/v1/watch/replicators/{name}", get(crate::watch::replicators))
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

fn put_op(obj: &Object) -> Op {
    Op::Put { key: obj.key().store_key(), value: obj.to_value(), lease: 0 }
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

async fn healthz(State(c): Ctl) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "revision": c.cache.current().revision }))
}

async fn metrics(State(c): Ctl) -> Response {
    let mut body = c.metrics.encode();
    if body.is_empty() {
        body.push_str("# EOF\n");
    }
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

// ---- VPCs ----

async fn list_vpcs(State(c): Ctl) -> Json<Vec<Vpc>> {
    Json(c.cache.current().state.vpcs.values().cloned().collect())
}

async fn get_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vpc>> {
    c.cache.current().state.vpcs.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("VPC", &name))
}

async fn create_vpc(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Vpc = parse(&body)?;
    let obj = Object::Vpc(v.clone());
    c.write(|s| s.check_vpc(&v).map(|()| vec![put_op(&obj)])).await?;
    Ok(created(v))
}

async fn delete_vpc(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Vpc(name)).await
}

async fn delete(c: &Controller, key: ObjectKey) -> ApiResult<StatusCode> {
    c.write(|s| s.check_delete(&key).map(|()| vec![Op::Delete { key: key.store_key() }])).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- subnets ----

async fn list_subnets(State(c): Ctl) -> Json<Vec<Subnet>> {
    Json(c.cache.current().state.subnets.values().cloned().collect())
}

async fn get_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<Json<Subnet>> {
    let snap = c.cache.current();
    snap.state
        .subnets
        .get(&(vpc.clone(), name.clone()))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("subnet", &format!("{vpc}/{name}")))
}

async fn create_subnet(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let v: Subnet = parse(&body)?;
    let obj = Object::Subnet(v.clone());
    c.write(|s| s.check_subnet(&v).map(|()| vec![put_op(&obj)])).await?;
    Ok(created(v))
}

async fn delete_subnet(State(c): Ctl, Path((vpc, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Subnet(vpc, name)).await
}

// ---- chassis ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChassisBody {
    underlay_ip: IpAddr,
    #[serde(default)]
    role: Role,
    /// Optional; must equal the name in the path.
    name: Option<String>,
}

async fn list_chassis(State(c): Ctl) -> Json<Vec<Chassis>> {
    Json(c.cache.current().state.chassis.values().cloned().collect())
}

async fn get_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Chassis>> {
    c.cache.current().state.chassis.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

async fn put_chassis(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Chassis>> {
    let b: ChassisBody = parse(&body)?;
    if b.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::bad_request(
            "name_mismatch",
            Some("name".into()),
            "name in the body differs from the path",
        ));
    }
    let ch = Chassis { name, underlay_ip: b.underlay_ip, role: b.role };
    let obj = Object::Chassis(ch.clone());
    c.write(|s| {
        s.check_chassis(&ch)?;
        // Registering again with the same settings writes nothing.
        Ok(if s.chassis.get(&ch.name) == Some(&ch) { vec![] } else { vec![put_op(&obj)] })
    })
    .await?;
    Ok(Json(ch))
}

async fn delete_chassis(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Chassis(name)).await
}

// ---- ports ----

async fn list_ports(State(c): Ctl) -> Json<Vec<Port>> {
    Json(c.cache.current().state.ports.values().cloned().collect())
}

async fn get_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Port>> {
    c.cache.current().state.ports.get(&name).cloned().map(Json).ok_or_else(|| ApiError::not_found("port", &name))
}

async fn create_port(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let p: Port = parse(&body)?;
    let obj = Object::Port(p.clone());
    c.write(|s| s.check_port(&p).map(|()| vec![put_op(&obj)])).await?;
    Ok(created(p))
}

async fn delete_port(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Port(name)).await
}

// ---- VIPs ----

/// A VIP as the API shows it.
#[derive(Debug, Serialize)]
struct VipView {
    #[serde(flatten)]
    spec: VipSpec,
    owner: Option<vipcast_model::Owner>,
    split_brain: bool,
}

fn vip_view(v: &Vip) -> VipView {
    VipView { spec: v.spec.clone(), owner: v.owner.clone(), split_brain: v.split_brain(now_ms()) }
}

async fn list_vips(State(c): Ctl) -> Json<Vec<VipView>> {
    Json(c.cache.current().state.vips.values().map(vip_view).collect())
}

async fn get_vip(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<VipView>> {
    c.cache.current().state.vips.get(&name).map(vip_view).map(Json).ok_or_else(|| ApiError::not_found("VIP", &name))
}

async fn create_vip(State(c): Ctl, body: Bytes) -> ApiResult<Response> {
    let spec: VipSpec = parse(&body)?;
    let obj = Object::Vip(Vip::new(spec.clone()));
    c.write(|s| s.check_vip(&spec).map(|()| vec![put_op(&obj)])).await?;
    let snap = c.cache.current();
    Ok(created(snap.state.vips.get(&spec.name).map(vip_view)))
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    members: Vec<String>,
}

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

async fn vip_history(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<Vec<OwnershipChange>>> {
    if !c.cache.current().state.vips.contains_key(&name) {
        return Err(ApiError::not_found("VIP", &name));
    }
    let (kvs, _) = c.store.range(&vipcast_model::history_prefix(&name)).await?;
    let changes = kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    Ok(Json(changes))
}

/// The answer to a claim.
#[derive(Debug, Serialize)]
struct ClaimAnswer {
    /// `accepted` (the owner changed) or `unchanged` (already the owner).
    result: &'static str,
    owner: Option<vipcast_model::Owner>,
    revision: i64,
}

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
            return Ok(Json(ClaimAnswer { result: "unchanged", owner, revision: snap.revision }));
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
    Ok(Json(ClaimAnswer { result: if moved { "accepted" } else { "unchanged" }, owner, revision }))
}

// ---- replicators ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicatorBody {
    address: SocketAddr,
    name: Option<String>,
}

async fn list_replicators(State(c): Ctl) -> Json<Vec<Replicator>> {
    Json(c.cache.current().state.replicators.values().cloned().collect())
}

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

async fn put_replicator(State(c): Ctl, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Replicator>> {
    let b: ReplicatorBody = parse(&body)?;
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

async fn delete_replicator(State(c): Ctl, Path(name): Path<String>) -> ApiResult<StatusCode> {
    delete(&c, ObjectKey::Replicator(name)).await
}

// ---- views ----

async fn chassis_view(State(c): Ctl, Path(name): Path<String>) -> ApiResult<Json<view::ChassisView>> {
    view::chassis_view(&c.cache.current().state, &name).map(Json).ok_or_else(|| ApiError::not_found("chassis", &name))
}

#[derive(Debug, Deserialize)]
pub struct FromQuery {
    pub from: Option<i64>,
}

async fn replicator_view(State(c): Ctl, Query(_q): Query<FromQuery>) -> Json<serde_json::Value> {
    let snap = c.cache.current();
    Json(serde_json::json!({ "revision": snap.revision, "vnis": view::replicator_view(&snap.state) }))
}

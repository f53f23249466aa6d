//! The REST API, one module per resource. Handlers only parse and validate
//! input into a [`Command`] (or read the cached state), have the controller
//! execute it, and turn its outcome into the answer; errors become statuses
//! in `error.rs`.
//!
//! Every route is registered through utoipa-axum's `routes!`, which takes the
//! path and methods from the handler's `#[utoipa::path]`: a route cannot be
//! served without being in the OpenAPI document (`openapi.rs`), nor documented
//! at a path other than the one it is served at.
//!
//! Every request, matched or not, goes through [`guard`]: the limits of
//! [`HttpLimits`] on its target, headers and body (the body is read here,
//! whole, under a deadline, so handlers never wait on a slow client), then
//! whatever answered an error without the JSON error body (axum's 405 and
//! extractor rejections) gets one, and the request is counted under labels
//! from closed sets.

mod chassis;
mod check;
mod meta;
mod ports;
mod replicators;
mod subnets;
mod ui;
mod views;
mod vip_watch;
mod vips;
mod vpcs;
mod vrrp;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vipcast_model::Command;

use crate::Controller;
use crate::error::ApiError;
use crate::http::HttpLimits;
use crate::metrics::{RequestLabels, method_label};

pub use check::CheckConfig;

type Ctl = State<Arc<Controller>>;
type ApiResult<T> = Result<T, ApiError>;

/// Every route, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    let mut r = OpenApiRouter::with_openapi(crate::openapi::base())
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
        .routes(routes!(vips::put_member))
        .routes(routes!(vips::vip_history))
        .routes(routes!(check::check_vip))
        .routes(routes!(vip_watch::watch_vip))
        .routes(routes!(vip_watch::watch_vips))
        .routes(routes!(ui::page))
        .routes(routes!(ui::script))
        .routes(routes!(ui::style))
        .routes(routes!(vips::post_claim))
        .routes(routes!(vrrp::list_vrrp, vrrp::post_vrrp))
        .routes(routes!(vrrp::delete_vrrp))
        .routes(routes!(vrrp::post_assist))
        .routes(routes!(replicators::list_replicators))
        .routes(routes!(replicators::put_replicator, replicators::get_replicator, replicators::delete_replicator))
        .routes(routes!(views::chassis_view))
        .routes(routes!(views::replicator_view))
        .routes(routes!(crate::watch::chassis))
        .routes(routes!(crate::watch::replicators));
    document_limits(r.get_openapi_mut());
    r
}

/// Adds the answers [`guard`] may give to every operation of `doc`: 414 and
/// 431 to all, 408 and 413 to those taking a body.
fn document_limits(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |what: &str| {
        let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        RefOr::T(ResponseBuilder::new().description(what).content("application/json", body).build())
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in ops.into_iter().flatten() {
            let mut add = |status: &str, what: &str| {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| error(what));
            };
            add("414", "`uri_too_long`: the path and query are longer than the limit (8 KiB by default)");
            add("431", "`headers_too_large`: the headers are larger than the limit (32 KiB by default)");
            if op.request_body.is_some() {
                add(
                    "408",
                    "`body_timeout`: the body did not arrive within the limit (10 s by default); the connection is closed",
                );
                add(
                    "413",
                    "`body_too_large`: the body (or its `Content-Length`, refused before reading) is larger than the limit (1 MiB by default)",
                );
            }
        }
    }
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
        .layer(middleware::from_fn_with_state(c.clone(), crate::authz::middleware))
        .layer(middleware::from_fn_with_state(c.clone(), guard))
        // The body is read (and limited) by `guard`.
        .layer(DefaultBodyLimit::disable())
        .with_state(c)
}

/// Every request: limits, JSON errors, counting.
async fn guard(State(c): Ctl, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().into());
    let resp = match admit(&c.config.http, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    };
    let resp = with_error_body(resp).await;
    c.metrics.requests.get_or_create(&RequestLabels { method, route, status: resp.status().as_u16() }).inc();
    resp
}

/// Checks a request against `limits` and reads its body, whole, within
/// `body_timeout`; or the answer refusing it.
async fn admit(limits: &HttpLimits, req: Request) -> Result<Request, Response> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri {
        let message = format!("the path and query are {target} bytes, more than {}", limits.max_uri);
        return Err(ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", message).into_response());
    }
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers > limits.max_headers {
        let message = format!("the headers are {headers} bytes, more than {}", limits.max_headers);
        return Err(
            ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message).into_response()
        );
    }
    let too_large = |what: String| {
        let message = format!("{what}, more than {} bytes", limits.max_body);
        closing(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message))
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limits.max_body as u64
    {
        return Err(too_large(format!("the body is announced as {n} bytes")));
    }
    if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let mut chunks = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let read = tokio::time::timeout(limits.body_timeout, async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                closing(ApiError::bad_request("body_unreadable", None, format!("reading the body: {e}")))
            })?;
            if buf.len() + chunk.len() > limits.max_body {
                return Err(too_large(format!("the body is at least {} bytes", buf.len() + chunk.len())));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    });
    match read.await {
        Ok(Ok(())) => Ok(Request::from_parts(parts, Body::from(buf))),
        Ok(Err(refused)) => Err(refused),
        Err(_) => {
            let message = format!("the body did not arrive within {} ms", limits.body_timeout.as_millis());
            Err(closing(ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)))
        }
    }
}

/// An answer after which the connection is closed (what is left of the
/// request body is never read).
fn closing(e: ApiError) -> Response {
    ([(header::CONNECTION, HeaderValue::from_static("close"))], e).into_response()
}

/// `resp`, with the JSON error body if it is an error without one (axum's
/// 405 and its extractors' rejections answer plain text or nothing).
async fn with_error_body(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok());
    let e = ApiError::rejection(status, &String::from_utf8_lossy(&text), allow);
    let fresh = e.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in fresh.headers() {
        parts.headers.insert(k, v.clone());
    }
    Response::from_parts(parts, fresh.into_body())
}

/// Who sent the request, from its verified client certificate
/// (`agent:hv1`); `None` without one (or without TLS).
struct Actor(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Actor, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<crate::tls::Peer>>();
        Ok(Actor(peer.and_then(|p| p.0.identity.as_ref()).map(vipcast_api::Identity::actor)))
    }
}

/// Parses a JSON body; errors name the field at fault. Anything but
/// whitespace after the value is refused as `malformed_json`.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
    de.end().map_err(|e| ApiError::bad_request("malformed_json", None, format!("after the JSON value: {e}")))?;
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

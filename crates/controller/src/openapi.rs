//! The OpenAPI 3.1 document of the REST API, served at `GET /openapi.json`.
//!
//! Nothing here is written by hand but the document's header: the paths come
//! from the `#[utoipa::path]` of each handler, gathered by [`crate::api::routes`]
//! (the same list the server routes from), and the schemas from `ToSchema` on
//! the model types (vipcast-model's `openapi` feature) and the API's own
//! bodies.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::error::ErrorBody;

/// The document's header: everything but the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vipcast controller",
        description = "The northbound REST API of vipcast's controller, and the watch streams agents and \
replicators follow.\n\n\
JSON conventions: MACs lowercase colon-separated hex (`02:00:00:00:00:01`), IPs and CIDRs as strings, \
names as given (1-63 letters, digits, '.', '_' or '-'), times in milliseconds since the Unix epoch. \
Request bodies are strict: an unknown field is refused.\n\n\
Every error is answered with the body `{\"error\":{\"code\",\"message\",\"field\"}}` \
(`field` only when one request field is at fault); a path that matches no route is answered \
404 with code `no_route`, and a method a path does not have with 405 and no body.",
    ),
    tags(
        (name = "meta", description = "Health, metrics and this document"),
        (name = "vpcs", description = "VPCs: one VXLAN segment each"),
        (name = "subnets", description = "IP subnets of a VPC"),
        (name = "chassis", description = "Hypervisors and gateways (tunnel endpoints)"),
        (name = "ports", description = "VM interfaces"),
        (name = "vips", description = "Virtual IPs, their members, owner claims and ownership history"),
        (name = "replicators", description = "BUM replicator nodes"),
        (name = "views", description = "What a chassis or the replicators program, computed from the state"),
        (name = "watch", description = "NDJSON streams of the objects a subscriber holds"),
    ),
    components(schemas(ErrorBody)),
)]
struct Header;

/// The header the routes are added to.
pub fn base() -> utoipa::openapi::OpenApi {
    Header::openapi()
}

/// The whole document, generated from the routes.
pub fn document() -> utoipa::openapi::OpenApi {
    crate::api::routes().split_for_parts().1
}

/// The document as served (generated once).
fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().unwrap_or_default())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses(
    (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object,
     content_type = "application/json"),
))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

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
404 with code `no_route`, a method a path does not have 405 `method_not_allowed` (with `Allow`), \
a query string that is not understood 400 `invalid_query`, and anything after a JSON body's value \
400 `malformed_json`.\n\n\
Limits (the controller's flags): a request target of at most 8 KiB (414 `uri_too_long`), headers of at \
most 32 KiB (431 `headers_too_large`), a body of at most 1 MiB (413 `body_too_large`, refused from its \
`Content-Length` before it is read) arriving within 10 s of the head (408 `body_timeout`). A connection \
is closed when a request head is not complete 10 s after its first byte, or when it has no request in \
progress and receives nothing for 60 s; a watch stream is a request in progress and is never cut. At \
the connection cap the connection idle the longest is closed to make room (none idle: 503 \
`too_many_connections`). Beyond 128 KiB of request head, more than 100 headers or a 64 KiB target, the \
HTTP library answers 431 or 414 itself, with an empty body.",
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

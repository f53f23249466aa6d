//! The status page, `GET /ui`: VPCs, every VIP with its owner, VRRP master,
//! split-brain and damping state and a timeline of its last changes of
//! owner, chassis with their liveness and data plane, replicators; kept
//! live by `GET /v1/watch/vips` (and the rest re-read every 2 s). Plain
//! HTML, CSS and JavaScript compiled into the binary: no CDN, works
//! offline. Served through the same guard and authorization as the API (a
//! GET: admins and viewers).

use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([("content-type", content_type), ("cache-control", "no-cache")], body).into_response()
}

/// The status page.
#[utoipa::path(get, path = "/ui", tag = "meta",
    responses((status = 200, description = "The status page (HTML)", body = String, content_type = "text/html")))]
pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// The status page's script.
#[utoipa::path(get, path = "/ui/app.js", tag = "meta",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The status page's style sheet.
#[utoipa::path(get, path = "/ui/style.css", tag = "meta",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

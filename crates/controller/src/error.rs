//! The one place errors become HTTP statuses: `{"error":{"code","message","field"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use vipcast_model::{Invalid, InvalidKind};

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, field: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, code, field, message: message.into() }
    }

    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            field: None,
            message: format!("{what} {name:?} does not exist"),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", field: None, message: message.into() }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        let status = match e.kind {
            InvalidKind::BadRequest => StatusCode::BAD_REQUEST,
            InvalidKind::NotFound => StatusCode::NOT_FOUND,
            InvalidKind::Conflict => StatusCode::CONFLICT,
            InvalidKind::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError { status, code: e.code, field: e.field.map(str::to_string), message: e.message }
    }
}

/// A store failure (a full disk, etcd not answering, a file that cannot be
/// trusted) is a 503 with code `store_unavailable` and the store's reason.
impl From<vipcast_store::Error> for ApiError {
    fn from(e: vipcast_store::Error) -> Self {
        tracing::warn!(error = %e, "store error");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            field: None,
            message: format!("store: {e}"),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "duplicate_vni", "message": "vni 100 is used by VPC \"prod\"", "field": "vni"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `not_found`, `invalid_body`, `duplicate_vni`.
    #[schema(example = "duplicate_vni")]
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field at fault, if one is (a JSON path such as `members` or `mac`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, example = "vni")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, field: self.field } };
        (self.status, axum::Json(body)).into_response()
    }
}

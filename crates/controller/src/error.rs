//! The one place errors become HTTP statuses: `{"error":{"code","message","field"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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

impl From<vipcast_store::Error> for ApiError {
    fn from(e: vipcast_store::Error) -> Self {
        tracing::warn!(error = %e, "store error");
        ApiError::unavailable(format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(f), Some(obj)) = (&self.field, err.as_object_mut()) {
            obj.insert("field".into(), serde_json::Value::String(f.clone()));
        }
        (self.status, axum::Json(serde_json::json!({ "error": err }))).into_response()
    }
}

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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, field: None, message: message.into() }
    }

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

    /// The error for an answer produced without the JSON body — by axum's
    /// router (405, with its `Allow` header) or an extractor's rejection
    /// (`text`, e.g. `Failed to deserialize query string: from: invalid
    /// digit found in string`): a code by status, the text as the message.
    pub fn rejection(status: StatusCode, text: &str, allow: Option<&str>) -> ApiError {
        let text = text.trim();
        let message =
            if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text.into() };
        let mut e = ApiError { status, code: "http_error", field: None, message };
        e.code = match status {
            StatusCode::BAD_REQUEST => match text.strip_prefix("Failed to deserialize query string: ") {
                Some(rest) => {
                    // serde_path_to_error puts the parameter first: `from: ...`.
                    e.field = rest
                        .split_once(": ")
                        .map(|(f, _)| f)
                        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                        .map(str::to_string);
                    "invalid_query"
                }
                None if text.starts_with("Invalid URL") || text.starts_with("Wrong number of path") => "invalid_path",
                None => "bad_request",
            },
            StatusCode::NOT_FOUND => "no_route",
            StatusCode::METHOD_NOT_ALLOWED => {
                e.message = match allow {
                    Some(a) => format!("this path allows {a} only"),
                    None => "this path does not allow this method".into(),
                };
                "method_not_allowed"
            }
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::LENGTH_REQUIRED => "length_required",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
            s if s.is_server_error() => "internal",
            _ => "http_error",
        };
        e
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_get_a_code_a_message_and_the_field_when_named() {
        let e = ApiError::rejection(
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: from: invalid digit found in string",
            None,
        );
        assert_eq!((e.code, e.field.as_deref()), ("invalid_query", Some("from")));
        assert!(e.message.contains("invalid digit"), "{}", e.message);
        let e = ApiError::rejection(StatusCode::METHOD_NOT_ALLOWED, "", Some("GET,HEAD"));
        assert_eq!((e.code, e.message.as_str()), ("method_not_allowed", "this path allows GET,HEAD only"));
        let e = ApiError::rejection(StatusCode::PAYLOAD_TOO_LARGE, "", None);
        assert_eq!((e.code, e.message.as_str()), ("body_too_large", "Payload Too Large"));
        assert_eq!(ApiError::rejection(StatusCode::IM_A_TEAPOT, "x", None).code, "http_error");
        assert_eq!(ApiError::rejection(StatusCode::BAD_GATEWAY, "", None).code, "internal");
        let e = ApiError::rejection(StatusCode::BAD_REQUEST, "Failed to deserialize query string: a b: c", None);
        assert_eq!((e.code, e.field), ("invalid_query", None));
    }
}

//! The API's error answers: `{"error": "...", "field": "..."}` with a fitting status.
//!
//! Engine refusals map to what a deploy script can act on: 404 for an unknown deploy, 409
//! for a duplicate or an event that does not fit the phase, 400 for a missing or bad field
//! (named in `field`). Malformed JSON is a 400 that quotes serde's message and, when it
//! names one, the field.

use crate::engine::EngineError;
use crate::engine::handle::HandleError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub error: String,
    /// The request field it concerns, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    /// The same error, about `field`.
    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// A 400 from a serde_json error on the body, naming the field when serde does.
    pub fn bad_json(message: String) -> ApiError {
        let field = field_in(&message);
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: message,
            field,
        }
    }
}

/// The field a serde message names (`missing field `x``, `unknown field `x``).
fn field_in(message: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(i) = message.find(marker) {
            let rest = &message[i + marker.len()..];
            return rest.find('`').map(|j| rest[..j].to_string());
        }
    }
    None
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        // axum's own status: 415 without a JSON content type, 413 over the body limit,
        // 400/422 for bad JSON (422 is folded into 400: the client sent a bad body).
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let mut e = ApiError::bad_json(r.body_text());
        e.status = status;
        e
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let message = e.to_string();
        match e {
            EngineError::UnknownDeploy(_) => {
                ApiError::new(StatusCode::NOT_FOUND, message).field("deploy")
            }
            EngineError::DuplicateDeploy(_) => {
                ApiError::new(StatusCode::CONFLICT, message).field("deploy")
            }
            EngineError::WrongPhase { .. } => ApiError::new(StatusCode::CONFLICT, message),
            EngineError::MissingField { field, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, message).field(field)
            }
            EngineError::BadTime(_) => ApiError::new(StatusCode::BAD_REQUEST, message).field("at"),
            EngineError::Store(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
        }
    }
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "field": self.field})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_serde_names() {
        assert_eq!(
            field_in("Failed to deserialize: missing field `service` at line 1 column 2"),
            Some("service".into())
        );
        assert_eq!(field_in("expected value at line 1 column 1"), None);
    }
}

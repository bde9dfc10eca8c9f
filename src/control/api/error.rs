//! API errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error the portal can see has a stable `code` (snake_case, never
//! renamed once released) next to the RFC 9457 members; `type` is
//! `urn:kolokol:problem:<code>`. The codes below are the HTTP layer's own;
//! the call engine maps its refusals (policy, anti-fraud, capacity) to
//! [`ApiError`] with codes of its own choosing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Media type of a problem document (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: status, stable code, human text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (400..=599).
    pub status: u16,
    /// Stable machine-readable code, e.g. `invalid_body`.
    pub code: &'static str,
    /// Short summary, the same for every occurrence of `code`.
    pub title: &'static str,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after_s: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

/// The body of a problem response.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl ApiError {
    /// A new error. A `status` outside 400..=599 (a bug in the caller) is
    /// answered as 500.
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    /// The same error with a `Retry-After`.
    pub fn retry_after(mut self, s: u32) -> ApiError {
        self.retry_after_s = Some(s);
        self
    }

    /// 401 `unauthorized`: no bearer token.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(401, "unauthorized", "Authentication required", detail)
    }

    /// 401 `invalid_token`: a bearer token that does not verify.
    pub fn invalid_token(detail: impl Into<String>) -> ApiError {
        ApiError::new(401, "invalid_token", "Invalid bearer token", detail)
    }

    /// 403 `forbidden_scope`: the token lacks the route's scope.
    pub fn forbidden_scope(scope: &str) -> ApiError {
        ApiError::new(
            403,
            "forbidden_scope",
            "Insufficient scope",
            format!("this request needs the scope `{scope}`"),
        )
    }

    /// 403 `forbidden_account`: the token is bound to another account.
    pub fn forbidden_account(detail: impl Into<String>) -> ApiError {
        ApiError::new(403, "forbidden_account", "Account not allowed", detail)
    }

    /// 422 `invalid_body`: JSON that does not match the schema.
    pub fn invalid_body(detail: impl Into<String>) -> ApiError {
        ApiError::new(422, "invalid_body", "Invalid request body", detail)
    }

    /// 422 `invalid_query`: query parameters that do not match.
    pub fn invalid_query(detail: impl Into<String>) -> ApiError {
        ApiError::new(422, "invalid_query", "Invalid query parameters", detail)
    }

    /// 422 `invalid_idempotency_key`: a malformed `Idempotency-Key`.
    pub fn invalid_idempotency_key() -> ApiError {
        ApiError::new(
            422,
            "invalid_idempotency_key",
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1..=255 visible ASCII characters",
        )
    }

    /// 422 `idempotency_conflict`: the key was used with another body.
    pub fn idempotency_conflict() -> ApiError {
        ApiError::new(
            422,
            "idempotency_conflict",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request body",
        )
    }

    /// 409 `idempotency_in_progress`: the first request with this key has
    /// not finished yet.
    pub fn idempotency_in_progress() -> ApiError {
        ApiError::new(
            409,
            "idempotency_in_progress",
            "Request in progress",
            "a request with this Idempotency-Key is still being processed; retry it",
        )
        .retry_after(1)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", "Not found", detail)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "method_not_allowed",
            "Method not allowed",
            "the resource does not support this method (see Allow)",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "payload_too_large",
            "Request body too large",
            format!("the body must be at most {limit} bytes"),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "the body must be JSON (Content-Type: application/json)",
        )
    }

    /// 503 `draining`: the gateway takes no new calls.
    pub fn draining() -> ApiError {
        ApiError::new(
            503,
            "draining",
            "Draining",
            "this gateway is draining and takes no new calls; use another instance",
        )
    }

    /// 503 `not_ready`: the engine is not up (yet).
    pub fn not_ready() -> ApiError {
        ApiError::new(
            503,
            "not_ready",
            "Not ready",
            "the call engine is not ready; retry shortly",
        )
        .retry_after(1)
    }

    /// 503 `request_timeout`: the server gave up waiting for the engine.
    pub fn request_timeout() -> ApiError {
        ApiError::new(
            503,
            "request_timeout",
            "Request timed out",
            "the request took too long; retry it with the same Idempotency-Key",
        )
        .retry_after(1)
    }

    /// 503 `overloaded`: a bounded table of the server is full.
    pub fn overloaded(detail: impl Into<String>) -> ApiError {
        ApiError::new(503, "overloaded", "Overloaded", detail).retry_after(1)
    }

    /// 500 `internal`: a bug; the detail says no more than that.
    pub fn internal() -> ApiError {
        ApiError::new(
            500,
            "internal",
            "Internal error",
            "the server failed to process the request",
        )
    }

    /// The status as an HTTP status (500 if it is not a valid one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem document.
    pub fn body(&self) -> String {
        let p = Problem {
            kind: format!("urn:kolokol:problem:{}", self.code),
            title: self.title,
            status: self.status_code().as_u16(),
            detail: &self.detail,
            code: self.code,
        };
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_string(&p).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status_code(), self.body()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        match (self.status, self.code) {
            // RFC 6750 §3: no error code when no credentials were sent.
            (401, "unauthorized") => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kolokol\""),
                );
            }
            (401, _) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kolokol\", error=\"invalid_token\""),
                );
            }
            (403, "forbidden_scope") => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"kolokol\", error=\"insufficient_scope\"",
                    ),
                );
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn problem_shape_and_headers() {
        let r = ApiError::idempotency_in_progress().into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::invalid_body("x: bad").body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "urn:kolokol:problem:invalid_body",
                "title": "Invalid request body",
                "status": 422,
                "detail": "x: bad",
                "code": "invalid_body",
            })
        );
        let r = ApiError::invalid_token("expired").into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"kolokol\", error=\"invalid_token\""
        );
    }
}

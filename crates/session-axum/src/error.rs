//! The library's errors as HTTP answers: one status per error kind and one JSON shape.

use axum_core::response::{IntoResponse, Response};
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;
use session_core::Error;

/// A session error as an HTTP answer: a handler returns it (or uses `?` on any session call)
/// and the client gets the status of [`status_of`] with a JSON body
/// `{"error": "<code>", "message": "<text>"}`.
///
/// Server errors (5xx) are logged at WARN with the error kind; their body says only what a
/// client may know. No message carries a session id.
#[derive(Debug)]
pub struct SessionError(Error);

impl SessionError {
    /// The library error behind the answer.
    pub fn error(&self) -> &Error {
        &self.0
    }

    /// The HTTP status it answers with (see [`status_of`]).
    pub fn status(&self) -> StatusCode {
        status_of(&self.0)
    }

    /// Its short, stable code in the JSON body (`"store_unavailable"`, `"session_conflict"`, ...).
    pub fn code(&self) -> &'static str {
        code_of(&self.0)
    }

    /// Unwraps the library error.
    pub fn into_inner(self) -> Error {
        self.0
    }
}

impl From<Error> for SessionError {
    fn from(e: Error) -> Self {
        SessionError(e)
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The HTTP status for a library error:
///
/// | error | status |
/// |---|---|
/// | `InvalidId`, `InvalidNamespace`, `InvalidKeyPrefix` | 400 Bad Request |
/// | `NotFound` | 404 Not Found |
/// | `Conflict`, `AlreadyExists` | 409 Conflict (the session changed or was created meanwhile: reload and retry) |
/// | `TooLarge` | 413 Content Too Large |
/// | `Unavailable`, `Timeout`, `Full`, `Refused` | 503 Service Unavailable (with `Retry-After: 1`) |
/// | `Codec`, `Corrupt`, `Backend`, `Config`, others | 500 Internal Server Error |
///
/// A 503 means "can't tell now": the client keeps its cookie and retries. It is what a load
/// answers while the store (or the fallback, for a session it holds no copy of) cannot say
/// whether the session exists.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidId { .. } | Error::InvalidNamespace { .. } | Error::InvalidKeyPrefix { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict { .. } | Error::AlreadyExists { .. } => StatusCode::CONFLICT,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable { .. } | Error::Timeout { .. } | Error::Full { .. } | Error::Refused { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code_of(e: &Error) -> &'static str {
    match e {
        Error::InvalidId { .. } => "invalid_session_id",
        Error::InvalidNamespace { .. } | Error::InvalidKeyPrefix { .. } => "invalid_request",
        Error::NotFound { .. } => "no_session",
        Error::Conflict { .. } | Error::AlreadyExists { .. } => "session_conflict",
        Error::TooLarge { .. } => "session_too_large",
        Error::Unavailable { .. } | Error::Timeout { .. } | Error::Full { .. } => "store_unavailable",
        Error::Refused { .. } => "store_refused",
        _ => "session_error",
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The body says what the client may know; the store's own text (hosts, settings,
        // limits) goes to the server log.
        if status.is_server_error() {
            tracing::warn!(error.kind = self.0.kind().as_str(), "session error: {}", self.0);
        } else {
            tracing::debug!(error.kind = self.0.kind().as_str(), "session error: {}", self.0);
        }
        let code = self.code();
        let message = match code {
            "invalid_session_id" => "the session id is malformed",
            "invalid_request" => "the session request is invalid",
            "no_session" => "there is no such session: it ended or never existed",
            "session_conflict" => {
                "the session was changed by another request at the same time; reload and retry"
            }
            "session_too_large" => "the session is larger than the store accepts",
            "store_unavailable" => "the session store cannot answer now; retry shortly",
            "store_refused" => "the session store refused the write; retry later",
            _ => "the session could not be read or written; the server log has the cause",
        };
        json_response(status, code, message)
    }
}

/// A JSON error answer: `{"error": code, "message": message}`, with `Retry-After: 1` on a 503.
pub(crate) fn json_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let cases = [
            (Error::InvalidId { reason: "empty" }, 400),
            (Error::not_found("cart"), 404),
            (
                Error::AlreadyExists {
                    namespace: "cart".into(),
                },
                409,
            ),
            (
                Error::TooLarge {
                    namespace: "cart".into(),
                    size: 10,
                    limit: 5,
                },
                413,
            ),
            (
                Error::Unavailable {
                    backend: "redis",
                    message: "down".into(),
                    source: None,
                },
                503,
            ),
            (Error::corrupt("cart", "bad"), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e}");
        }
    }

    #[test]
    fn a_503_says_retry_and_is_json() {
        let r = SessionError::from(Error::Unavailable {
            backend: "redis",
            message: "down".into(),
            source: None,
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}

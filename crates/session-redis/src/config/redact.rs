//! Passwords out of URLs and settings, for `Debug`, logs and error messages.

use session_core::backend::REDACTED;

pub(super) fn redact_opt(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

/// A URL with the password of its user info and any `sentinelPassword` / `password=` value
/// replaced by `<redacted>`, for logs and error messages (the one rule every crate of the
/// family shares: [`session_core::backend::redact_url`]).
pub use session_core::backend::redact_url;

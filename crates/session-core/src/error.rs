//! The one error type of the workspace and its classifier.

use std::time::Duration;

use crate::version::Version;

/// A boxed error kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every fallible operation in this workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a session store.
///
/// Each variant is a category a caller can act on; backends keep their precise
/// errors as the [`source`](std::error::Error::source). Use
/// [`Error::is_temporary`] to decide whether retrying or failing over can help.
///
/// Messages never contain a full session id or a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id given by a caller is not a valid id. Nothing was sent to the backend.
    #[error("invalid session id: {reason}; ids are 16 to 128 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidId {
        /// What is wrong with the id (never the id itself).
        reason: &'static str,
    },

    /// A principal (a session's owner) is not 1 to 90 bytes of text without control
    /// characters. Nothing was sent to the backend.
    #[error("invalid principal: {reason}; principals are 1 to 90 bytes of text without control characters")]
    InvalidPrincipal {
        /// What is wrong with it (never the principal itself).
        reason: &'static str,
    },

    /// A namespace is not `[a-z0-9_-]{1,32}`.
    #[error("invalid namespace {namespace:?}: {reason}; namespaces are 1 to 32 characters of a-z, 0-9, '_' and '-'")]
    InvalidNamespace {
        /// The rejected namespace, cut to 40 characters.
        namespace: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A key prefix contains characters that would break keys or SCAN patterns.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    InvalidKeyPrefix {
        /// The rejected prefix, cut to 40 characters.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The encoded session is larger than the configured limit. Nothing was written.
    #[error("session in namespace {namespace:?} is {size} bytes encoded, over the limit of {limit} bytes; store less in the session or raise max_session_bytes")]
    TooLarge {
        /// The namespace of the session.
        namespace: String,
        /// The encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The session does not exist (it was never created, was deleted, or expired).
    #[error("session not found in namespace {namespace:?}")]
    NotFound {
        /// The namespace of the session.
        namespace: String,
    },

    /// `create` found a session already stored under the id.
    #[error("a session already exists under this id in namespace {namespace:?}")]
    AlreadyExists {
        /// The namespace of the session.
        namespace: String,
    },

    /// A compare-and-set lost: the stored version is not the expected one.
    #[error("version conflict in namespace {namespace:?}: expected version {expected}, stored version is {actual}; reload the session and retry")]
    Conflict {
        /// The namespace of the session.
        namespace: String,
        /// The version the caller expected.
        expected: Version,
        /// The version found in the store.
        actual: Version,
    },

    /// The bytes stored under a key are not a session envelope this build can read.
    #[error("corrupt session value in namespace {namespace:?}: {reason}")]
    Corrupt {
        /// The namespace of the key.
        namespace: String,
        /// What is wrong with the bytes.
        reason: String,
    },

    /// The backend is down, unreachable or did not answer in time. Temporary.
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// The backend name (`memory`, `redis`, `fallback`, ...).
        backend: &'static str,
        /// What happened, without secrets.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend did not answer within the configured timeout. Temporary.
    ///
    /// The outcome of a write that timed out is unknown: it may have taken effect or
    /// not. A fencing store (Redis) reports this only once the write can no longer land
    /// later; read the session to find out. (The message says so for writes only.)
    #[error("{backend} backend did not answer {op} within {after:?}{}", write_note(.op))]
    Timeout {
        /// The backend name.
        backend: &'static str,
        /// The operation that timed out (`load`, `save`, …).
        op: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// The backend refused the operation for a reason that retrying will not fix
    /// (permissions, wrong data type, a bug). Permanent.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// The backend name.
        backend: &'static str,
        /// What happened, without secrets.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A configuration value is wrong.
    #[error("configuration error in `{key}`: {message}")]
    Config {
        /// The configuration key, e.g. `redis.url`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A value could not be encoded or decoded by a codec.
    #[error("{codec} codec could not {action} the session in namespace {namespace:?}")]
    Codec {
        /// The codec name.
        codec: &'static str,
        /// `encode` or `decode`.
        action: &'static str,
        /// The namespace of the session.
        namespace: String,
        /// The serde error.
        #[source]
        source: BoxError,
    },

    /// The backend answers but refuses this operation for a reason of its own
    /// state or permissions: out of memory (`OOM`), persistence failing
    /// (`MISCONF`), a read-only replica (`READONLY`), a missing ACL
    /// permission (`NOPERM`). Nothing was written. Not temporary: a fallback
    /// does not fail over on it (reads still work), and an operator must act.
    #[error("{backend} refused the {op}: {code} ({message})")]
    Refused {
        /// The backend name.
        backend: &'static str,
        /// The operation refused, e.g. `save`.
        op: &'static str,
        /// The backend's error code, e.g. `OOM`.
        code: &'static str,
        /// The backend's explanation and what to do.
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// The store has reached a configured bound and refused the write.
    #[error("{backend} store is full: {message}")]
    Full {
        /// The backend name.
        backend: &'static str,
        /// Which bound was reached.
        message: String,
    },
}

/// Whether an error may go away by itself (retry, fail over) or needs a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The backend may answer later: fail over or retry.
    Temporary,
    /// The request or the data is wrong: failing over would hide a bug.
    Permanent,
}

/// A short, stable name for each error category, for metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidId`].
    InvalidId,
    /// [`Error::InvalidPrincipal`].
    InvalidPrincipal,
    /// [`Error::InvalidNamespace`].
    InvalidNamespace,
    /// [`Error::InvalidKeyPrefix`].
    InvalidKeyPrefix,
    /// [`Error::TooLarge`].
    TooLarge,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::AlreadyExists`].
    AlreadyExists,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Backend`].
    Backend,
    /// [`Error::Config`].
    Config,
    /// [`Error::Codec`].
    Codec,
    /// [`Error::Full`].
    Full,
    /// [`Error::Refused`].
    Refused,
}

impl ErrorKind {
    /// The label used in metrics and logs, e.g. `"unavailable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidId => "invalid_id",
            ErrorKind::InvalidPrincipal => "invalid_principal",
            ErrorKind::InvalidNamespace => "invalid_namespace",
            ErrorKind::InvalidKeyPrefix => "invalid_key_prefix",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Backend => "backend",
            ErrorKind::Config => "config",
            ErrorKind::Codec => "codec",
            ErrorKind::Full => "full",
            ErrorKind::Refused => "refused",
        }
    }
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } => ErrorKind::InvalidId,
            Error::InvalidPrincipal { .. } => ErrorKind::InvalidPrincipal,
            Error::InvalidNamespace { .. } => ErrorKind::InvalidNamespace,
            Error::InvalidKeyPrefix { .. } => ErrorKind::InvalidKeyPrefix,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Config { .. } => ErrorKind::Config,
            Error::Codec { .. } => ErrorKind::Codec,
            Error::Full { .. } => ErrorKind::Full,
            Error::Refused { .. } => ErrorKind::Refused,
        }
    }

    /// Whether this error may go away by itself.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } => ErrorClass::Temporary,
            _ => ErrorClass::Permanent,
        }
    }

    /// Shorthand for `self.class() == ErrorClass::Temporary`: the backend is
    /// down or slow, and a fallback store may take the call.
    pub fn is_temporary(&self) -> bool {
        self.class() == ErrorClass::Temporary
    }

    /// Builds [`Error::Unavailable`] without a source.
    pub fn unavailable(backend: &'static str, message: impl Into<String>) -> Self {
        Error::Unavailable {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// Builds [`Error::Config`] without a source.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Builds [`Error::Corrupt`].
    pub fn corrupt(namespace: &str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            namespace: namespace.to_owned(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::NotFound`].
    pub fn not_found(namespace: &str) -> Self {
        Error::NotFound {
            namespace: namespace.to_owned(),
        }
    }
}

/// Cuts a rejected input for inclusion in an error message: at most 40 characters (then
/// `…`), control characters replaced.
pub fn clip(s: &str) -> String {
    clip_to(s, 40)
}

/// Cuts text for an error message or a log line: at most `max` characters (then `…`),
/// control characters (line breaks included) replaced, so the text stays on one line.
pub fn clip_to(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// What a timeout's message adds for an operation that writes.
fn write_note(op: &str) -> &'static str {
    match op {
        "load" | "load_many" | "count" | "stats" | "health" | "connect" => "",
        _ => "; the outcome of the write is unknown (read the session to find out)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_speaks_of_a_write_only_for_writes() {
        let timeout = |op| Error::Timeout {
            backend: "redis",
            op,
            after: Duration::from_millis(250),
        };
        let load = timeout("load").to_string();
        assert_eq!(load, "redis backend did not answer load within 250ms");
        let save = timeout("save").to_string();
        assert!(
            save.starts_with("redis backend did not answer save within 250ms; "),
            "{save}"
        );
        assert!(save.contains("outcome of the write is unknown"), "{save}");
    }

    #[test]
    fn classifies_temporary_and_permanent() {
        assert!(Error::unavailable("redis", "down").is_temporary());
        assert!(Error::Timeout {
            backend: "redis",
            op: "load",
            after: Duration::from_millis(250)
        }
        .is_temporary());
        assert!(!Error::corrupt("task", "bad magic").is_temporary());
        assert!(!Error::Conflict {
            namespace: "task".into(),
            expected: Version::from_u64(1),
            actual: Version::from_u64(2)
        }
        .is_temporary());
        assert!(!Error::InvalidId { reason: "empty" }.is_temporary());
    }

    #[test]
    fn kinds_have_stable_labels() {
        assert_eq!(Error::unavailable("redis", "x").kind().as_str(), "unavailable");
        assert_eq!(Error::not_found("task").kind().as_str(), "not_found");
    }

    #[test]
    fn clip_cuts_and_hides_control_bytes() {
        assert_eq!(clip("a\nb"), "a\u{fffd}b");
        assert_eq!(clip(&"x".repeat(50)).chars().count(), 41);
    }
}

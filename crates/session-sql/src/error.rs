//! How database errors become [`session_core::Error`]s: temporary when waiting may help
//! (unreachable, shutting down, too many connections, a lock), a refusal when an operator must
//! act (read-only, disk full, permissions), a permanent backend error otherwise. Messages carry
//! no URL, password or key.

use session_core::Error;

/// The backend name reported by `SessionStore::backend`.
pub(crate) const BACKEND: &str = "sql";

/// `e` as a store error for `op`.
pub(crate) fn from_sqlx(op: &'static str, e: sqlx::Error) -> Error {
    let message = clean(&e);
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            classify(op, &code, message, db)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {message}"),
            source: Some(Box::new(e)),
        },
        sqlx::Error::Configuration(_) => Error::Config {
            key: "sql.url".into(),
            message,
            source: None,
        },
        other => Error::Backend {
            backend: BACKEND,
            message: format!("{op}: {message}"),
            source: Some(Box::new(other)),
        },
    }
}

fn classify(op: &'static str, code: &str, message: String, db: Box<dyn sqlx::error::DatabaseError>) -> Error {
    // PostgreSQL's SQLSTATE classes, or SQLite's (extended) result codes as text.
    let refused = |code: &'static str, hint: &str| Error::Refused {
        backend: BACKEND,
        op,
        code,
        message: format!("{message}; {hint}"),
        source: None,
    };
    let temporary = match code {
        // connection exceptions, insufficient resources (too many connections, out of memory),
        // operator intervention (shutdown, cannot connect now), lock and serialization failures.
        c if c.starts_with("08") || c == "53300" || c == "53200" || c.starts_with("57P") => true,
        // serialization failure, deadlock, lock not available, query cancelled (statement_timeout).
        "40001" | "40P01" | "55P03" | "57014" => true,
        // SQLite: BUSY, LOCKED (and their extended codes: the low byte).
        c if sqlite_primary(c).is_some_and(|p| p == 5 || p == 6) => true,
        _ => false,
    };
    if temporary {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{op}: {message}"),
            source: Some(db.into()),
        };
    }
    match code {
        "25006" => refused(
            "READONLY",
            "the server is read-only (a standby?): point sql.url at the primary",
        ),
        "53100" => refused("DISKFULL", "the database's disk is full"),
        "42501" => refused(
            "NOPERM",
            "the database role lacks a permission on the session table",
        ),
        c if sqlite_primary(c) == Some(8) => refused("READONLY", "the SQLite file is read-only"),
        c if sqlite_primary(c) == Some(13) => refused("DISKFULL", "the SQLite file's disk is full"),
        _ => Error::Backend {
            backend: BACKEND,
            message: format!("{op}: {message}"),
            source: Some(db.into()),
        },
    }
}

/// SQLite's primary result code from a code given as decimal text. PostgreSQL's SQLSTATEs are
/// five characters (some all digits, e.g. `42501`); SQLite's codes, extended ones included, are
/// at most four digits: a five-character code is never SQLite's.
fn sqlite_primary(code: &str) -> Option<u32> {
    if code.len() >= 5 {
        return None;
    }
    code.parse::<u32>().ok().map(|c| c & 0xff)
}

/// The error's text without anything that may hold a secret: a connection error can quote the
/// URL or the user, so only the error's category is kept for those.
pub(crate) fn clean(e: &sqlx::Error) -> String {
    let text = match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => format!("I/O error: {}", io.kind()),
        sqlx::Error::Tls(_) => "TLS error".to_owned(),
        sqlx::Error::Configuration(_) => "the URL or an option is not valid".to_owned(),
        sqlx::Error::PoolTimedOut => "no pooled connection became free in time".to_owned(),
        sqlx::Error::PoolClosed => "the store is closed".to_owned(),
        sqlx::Error::WorkerCrashed => "the SQLite worker thread stopped".to_owned(),
        sqlx::Error::Protocol(_) => "protocol error (connection out of step)".to_owned(),
        other => other.to_string(),
    };
    session_core::backend::clip_to(&text, 200)
}

/// Whether the connection an error came from is still in step with the server (a database
/// error is an answer; anything else may have left a request or a reply in flight).
#[cfg(feature = "postgres")]
pub(crate) fn connection_ok(e: &Error) -> bool {
    !matches!(
        e.kind(),
        session_core::ErrorKind::Unavailable | session_core::ErrorKind::Timeout
    )
}

#[cfg(test)]
mod tests {
    use super::sqlite_primary;

    #[test]
    fn postgres_sqlstates_are_never_read_as_sqlite_codes() {
        assert_eq!(
            sqlite_primary("42501"),
            None,
            "insufficient_privilege is not SQLITE_BUSY"
        );
        assert_eq!(sqlite_primary("53000"), None);
        assert_eq!(sqlite_primary("5"), Some(5));
        assert_eq!(sqlite_primary("517"), Some(5), "SQLITE_BUSY_SNAPSHOT");
        assert_eq!(sqlite_primary("8"), Some(8));
    }
}

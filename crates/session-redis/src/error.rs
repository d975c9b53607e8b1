//! Mapping fred's errors to the workspace [`Error`]: which are temporary (fail over, retry) and
//! which are permanent (a configuration or data problem that must be loud).

use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind as FredKind};
use session_core::Error;

use crate::BACKEND;

/// Reply prefixes of Redis errors that go away by themselves: a failover, a restart, a replica
/// that is not yet in sync, a busy script. The store reports them as [`Error::Unavailable`].
const TEMPORARY_PREFIXES: &[&str] = &[
    "LOADING",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
    "BUSY",
    "MOVED",
    "ASK",
];

/// Reply codes of a server that answers but refuses the operation: not an outage (reads still
/// work), so never a reason to fail over; reported as [`Error::Refused`] with what to do.
const REFUSALS: &[(&str, &str)] = &[
    (
        "OOM",
        "Redis is at maxmemory and refuses writes; raise maxmemory, set an eviction policy or free memory",
    ),
    (
        "MISCONF",
        "Redis cannot persist (an RDB or AOF write failed) and refuses writes; check its disk and logs",
    ),
    (
        "READONLY",
        "this Redis node is a read-only replica (a failover in progress, or redis.url names a replica)",
    ),
    (
        "NOPERM",
        "the ACL user may not run this command or touch this key; grant it the key pattern and GET SET DEL \
         GETRANGE STRLEN PEXPIREAT SETRANGE EXISTS TIME EVALSHA EVAL SCAN INFO PING CLIENT|ID CLIENT|KILL",
    ),
];

/// Errors fred reports about its own connection state (a connection that went away between the
/// fail-fast check and the write, a redirection loop during a failover).
const CLIENT_TRANSIENT: &[&str] = &[
    "Failed to route command",
    "Too many failed write attempts",
    "Max attempts exceeded",
    "Max redirections exceeded",
    "Missing expected connection",
    "Client is not initialized",
    "Failed to send command to router",
];

/// The first word of a server error reply, if the details look like one.
fn reply_code(details: &str) -> &str {
    details.split_whitespace().next().unwrap_or("")
}

/// A shortened, single-line copy of an error's details for a message.
fn clip(details: &str) -> String {
    session_core::backend::clip_to(details, 200)
}

fn unavailable(message: String, e: FredError) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message,
        source: Some(Box::new(e)),
    }
}

fn backend(message: String, e: FredError) -> Error {
    Error::Backend {
        backend: BACKEND,
        message,
        source: Some(Box::new(e)),
    }
}

/// Maps an error of a command. `namespace` is the session's namespace when the command
/// touched one key (a `WRONGTYPE` there is data that is not a session: [`Error::Corrupt`]).
pub(crate) fn map_command_error(
    e: FredError,
    op: &'static str,
    namespace: Option<&str>,
    timeout: Duration,
) -> Error {
    let code = reply_code(e.details());
    if let Some((code, advice)) = REFUSALS.iter().find(|(c, _)| *c == code) {
        return Error::Refused {
            backend: BACKEND,
            op,
            code,
            message: (*advice).to_owned(),
            source: Some(Box::new(e)),
        };
    }
    if TEMPORARY_PREFIXES.contains(&code) {
        let message = format!("Redis answered {}; retry or fail over", clip(e.details()));
        return unavailable(message, e);
    }
    if CLIENT_TRANSIENT.iter().any(|m| e.details().starts_with(m)) {
        let message = format!("{} (the client reconnects in the background)", clip(e.details()));
        return unavailable(message, e);
    }
    match code {
        "WRONGTYPE" => {
            return match namespace {
                Some(ns) => Error::corrupt(ns, "the key holds a Redis type other than a string"),
                None => backend(format!("Redis answered {}", clip(e.details())), e),
            }
        }
        "NOAUTH" | "WRONGPASS" => {
            let message = format!(
                "Redis refused the credentials ({}); check redis.username and redis.password",
                code
            );
            return backend(message, e);
        }
        _ => {}
    }
    match e.kind() {
        FredKind::Timeout => Error::Timeout {
            backend: BACKEND,
            op,
            after: timeout,
        },
        FredKind::Canceled => unavailable(
            "not connected to Redis (the client reconnects in the background)".to_owned(),
            e,
        ),
        FredKind::IO => unavailable(format!("connection error: {}", clip(e.details())), e),
        FredKind::Backpressure => unavailable(
            "too many commands are queued in the client (redis.max_pending_commands)".to_owned(),
            e,
        ),
        FredKind::Cluster | FredKind::Routing | FredKind::Sentinel | FredKind::Protocol => {
            unavailable(clip(e.details()), e)
        }
        FredKind::Auth => backend(
            "Redis refused the credentials; check redis.username and redis.password".to_owned(),
            e,
        ),
        #[cfg(feature = "tls")]
        FredKind::Tls => backend(format!("TLS error: {}", clip(e.details())), e),
        FredKind::Parse => backend(format!("unexpected reply from Redis: {}", clip(e.details())), e),
        _ => backend(format!("Redis answered {}", clip(e.details())), e),
    }
}

/// Maps an error of the first connection (`RedisStore::connect`), saying what to check.
pub(crate) fn map_connect_error(e: FredError, tls: bool, connect_timeout: Duration) -> Error {
    let details = e.details().to_owned();
    let code = reply_code(&details);
    let lower = details.to_ascii_lowercase();
    let config = |key: &str, message: String, e: FredError| Error::Config {
        key: key.to_owned(),
        message,
        source: Some(Box::new(e)),
    };
    if matches!(code, "WRONGPASS" | "NOAUTH") || e.kind() == &FredKind::Auth {
        return config(
            "redis.password",
            format!("Redis refused the credentials ({code}); check redis.username and redis.password"),
            e,
        );
    }
    if lower.contains("auth") && lower.contains("without any password configured") {
        return config(
            "redis.password",
            "a password is configured but the server has none; remove redis.password or configure \
             the server's requirepass / ACL user"
                .to_owned(),
            e,
        );
    }
    if code == "NOPERM" {
        return config(
            "redis.username",
            format!("the ACL user may not run a setup command: {}", clip(&details)),
            e,
        );
    }
    if lower.contains("invalid db index") || lower.contains("db index is out of range") {
        return config(
            "redis.database",
            "the server has no such database index".to_owned(),
            e,
        );
    }
    if lower.contains("cluster support disabled") {
        return config(
            "redis.url",
            "this is a cluster URL but the server is not in cluster mode; use redis://".to_owned(),
            e,
        );
    }
    if tls
        && e.kind() != &FredKind::Timeout
        && ["certificate", "unknownissuer", "handshake", "alert", "tls"]
            .iter()
            .any(|w| lower.contains(w))
    {
        return config(
            "redis.tls",
            format!(
                "TLS handshake failed: {}; check redis.tls.ca_file (the CA that signed the server \
                 certificate), redis.tls.server_name and, for mTLS, redis.tls.cert_file/key_file",
                clip(&details)
            ),
            e,
        );
    }
    match e.kind() {
        FredKind::Timeout => {
            let message = if tls {
                format!(
                    "no connection within {} ms: TLS handshake did not complete: is the server TLS? \
                     (a TLS client on a plaintext port waits for an answer that never comes)",
                    connect_timeout.as_millis()
                )
            } else {
                format!(
                    "no connection within {} ms (unreachable host, firewall, or a hung server)",
                    connect_timeout.as_millis()
                )
            };
            unavailable(message, e)
        }
        #[cfg(feature = "tls")]
        FredKind::Tls => config(
            "redis.tls",
            format!(
                "TLS handshake failed: {}; check redis.tls.ca_file (and redis.tls.server_name)",
                clip(&details)
            ),
            e,
        ),
        FredKind::Config | FredKind::Url => config("redis.url", clip(&details), e),
        FredKind::IO | FredKind::Protocol | FredKind::Canceled | FredKind::Unknown
            if !tls && (lower.contains("reset") || lower.contains("eof") || lower.contains("closed")) =>
        {
            unavailable(
                format!(
                    "the server closed the connection during the handshake ({}); if it expects TLS, \
                     use rediss://",
                    clip(&details)
                ),
                e,
            )
        }
        // fred's details are the OS error's debug form; the words say it all.
        FredKind::IO if lower.contains("refused") => unavailable(
            "connection refused: is Redis running on that host and port?".to_owned(),
            e,
        ),
        _ => match map_command_error(e, "connect", None, connect_timeout) {
            Error::Unavailable { message, source, .. } => Error::Unavailable {
                backend: BACKEND,
                message: format!("cannot connect: {message}"),
                source,
            },
            other => other,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn fe(kind: FredKind, details: &str) -> FredError {
        FredError::new(kind, details.to_owned())
    }

    #[test]
    fn transient_replies_are_temporary() {
        for d in [
            "LOADING Redis is loading the dataset in memory",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down",
            "NOREPLICAS Not enough good replicas to write.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            let e = map_command_error(
                fe(FredKind::Unknown, d),
                "save",
                Some("task"),
                Duration::from_millis(250),
            );
            assert!(e.is_temporary(), "{d}: {e}");
        }
        let t = map_command_error(
            fe(FredKind::Timeout, "Request timed out."),
            "save",
            None,
            Duration::from_millis(250),
        );
        assert!(matches!(t, Error::Timeout { .. }));
        let c = map_command_error(
            fe(FredKind::Canceled, "closed"),
            "save",
            None,
            Duration::from_millis(250),
        );
        assert!(matches!(c, Error::Unavailable { .. }));
        let io = map_command_error(
            fe(FredKind::IO, "Broken pipe"),
            "save",
            None,
            Duration::from_millis(250),
        );
        assert!(io.is_temporary());
    }

    #[test]
    fn refusals_are_typed_and_not_temporary() {
        for (d, code) in [
            ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
            (
                "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist",
                "MISCONF",
            ),
            (
                "READONLY You can't write against a read only replica.",
                "READONLY",
            ),
            (
                "NOPERM this user has no permissions to run the 'set' command",
                "NOPERM",
            ),
        ] {
            let e = map_command_error(
                fe(FredKind::Unknown, d),
                "save",
                Some("task"),
                Duration::from_millis(250),
            );
            assert!(!e.is_temporary(), "{d}: {e}");
            match &e {
                Error::Refused { code: c, op, .. } => assert_eq!((*c, *op), (code, "save")),
                other => panic!("{d}: expected Refused, got {other}"),
            }
            assert!(std::error::Error::source(&e).is_some(), "source kept");
        }
    }

    #[test]
    fn data_and_permission_errors_are_permanent() {
        let e = map_command_error(
            fe(
                FredKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            "load",
            Some("task"),
            Duration::from_millis(250),
        );
        assert!(
            matches!(e, Error::Corrupt { ref namespace, .. } if namespace == "task"),
            "{e}"
        );
        for d in [
            "NOPERM this user has no permissions to run the 'evalsha' command",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "ERR something else",
        ] {
            let e = map_command_error(
                fe(FredKind::Unknown, d),
                "save",
                Some("task"),
                Duration::from_millis(250),
            );
            assert!(!e.is_temporary(), "{d}: {e}");
            assert!(std::error::Error::source(&e).is_some(), "source kept");
        }
    }

    #[test]
    fn connect_errors_say_what_to_check() {
        let tls = Duration::from_millis(500);
        let e = map_connect_error(fe(FredKind::Timeout, "Connection timed out."), true, tls);
        assert!(e.to_string().contains("is the server TLS?"), "{e}");
        assert!(e.is_temporary());
        let e = map_connect_error(
            fe(
                FredKind::Auth,
                "WRONGPASS invalid username-password pair or user is disabled.",
            ),
            false,
            tls,
        );
        assert!(
            matches!(e, Error::Config { ref key, .. } if key == "redis.password"),
            "{e}"
        );
        let e = map_connect_error(
            fe(
                FredKind::IO,
                "Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }",
            ),
            false,
            tls,
        );
        assert!(e.is_temporary() && e.to_string().contains("refused"), "{e}");
        assert!(!e.to_string().contains("Os {"), "no debug dump: {e}");
    }
}

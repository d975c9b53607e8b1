//! Parsing Redis replies: script results, SCAN pages, INFO.

use bytes::Bytes;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::types::Value;
use session_core::Version;

/// What a script answered.
#[derive(Debug, PartialEq)]
pub(crate) enum ScriptReply {
    /// An integer status code.
    Code(i64),
    /// A value (the session `rotate` moved).
    Bytes(Bytes),
    /// `{-2, version}`: another version is stored.
    Conflict(Version),
    /// Anything else.
    Other,
}

impl ScriptReply {
    pub(crate) fn of(reply: Value) -> ScriptReply {
        match reply {
            Value::Integer(n) => ScriptReply::Code(n),
            Value::Bytes(b) => ScriptReply::Bytes(b),
            Value::String(s) => ScriptReply::Bytes(Bytes::copy_from_slice(s.as_bytes())),
            Value::Array(items) => match items.as_slice() {
                [Value::Integer(-2), version] => match version_of(version) {
                    Some(v) => ScriptReply::Conflict(v),
                    None => ScriptReply::Other,
                },
                _ => ScriptReply::Other,
            },
            _ => ScriptReply::Other,
        }
    }
}

/// A version token sent back by a script as its 8 raw bytes.
fn version_of(v: &Value) -> Option<Version> {
    let bytes: &[u8] = match v {
        Value::Bytes(b) => b,
        Value::String(s) => s.as_bytes(),
        _ => return None,
    };
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some(Version::from_u64(u64::from_be_bytes(raw)))
}

/// `[cursor, [keys...]]` → (cursor, keys).
pub(crate) fn parse_scan_page(page: Value) -> Result<(String, Vec<String>), FredError> {
    parse_scan_keys(page).map(|(cursor, keys, _)| (cursor, keys))
}

/// `[cursor, [keys...]]` → (cursor, the keys that are UTF-8, how many were not: no session
/// key is one).
pub(crate) fn parse_scan_keys(page: Value) -> Result<(String, Vec<String>, u64), FredError> {
    let bad = || FredError::new(FredKind::Parse, "SCAN returned an unexpected reply");
    let Value::Array(mut parts) = page else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let mut unreadable = 0u64;
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys
            .into_iter()
            .filter_map(|k| {
                let key = k.as_str().map(|s| s.into_owned());
                if key.is_none() {
                    unreadable += 1;
                }
                key
            })
            .collect(),
        Some(Value::Null) => Vec::new(),
        _ => return Err(bad()),
    };
    let cursor = parts
        .pop()
        .and_then(|c| c.as_str().map(|s| s.into_owned()))
        .ok_or_else(bad)?;
    Ok((cursor, keys, unreadable))
}

/// `run_id` from an `INFO server` reply: the server process (a restart or a failover's new
/// master has another).
pub(crate) fn parse_run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// `[keys...]` of `CLUSTER GETKEYSINSLOT` (keys that are not UTF-8 are left out: no session
/// key is one).
pub(crate) fn parse_key_list(reply: Value) -> Result<Vec<String>, FredError> {
    match reply {
        Value::Array(keys) => Ok(keys
            .into_iter()
            .filter_map(|k| k.as_str().map(|s| s.into_owned()))
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(FredError::new(
            FredKind::Parse,
            "CLUSTER GETKEYSINSLOT returned an unexpected reply",
        )),
    }
}

/// `used_memory` from an `INFO memory` reply.
pub(crate) fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_script_replies() {
        assert_eq!(ScriptReply::of(Value::Integer(1)), ScriptReply::Code(1));
        let v = Version::from_u64(0x0102_0304_0506_0708);
        let conflict = Value::Array(vec![
            Value::Integer(-2),
            Value::Bytes(Bytes::copy_from_slice(&v.as_u64().to_be_bytes())),
        ]);
        assert_eq!(ScriptReply::of(conflict), ScriptReply::Conflict(v));
        let short = Value::Array(vec![Value::Integer(-2), Value::Bytes(Bytes::from_static(b"abc"))]);
        assert_eq!(ScriptReply::of(short), ScriptReply::Other);
        assert_eq!(
            ScriptReply::of(Value::Bytes(Bytes::from_static(b"x"))),
            ScriptReply::Bytes(Bytes::from_static(b"x"))
        );
        assert_eq!(ScriptReply::of(Value::Null), ScriptReply::Other);
    }

    #[test]
    fn parses_scan_pages_and_info() {
        let page = Value::Array(vec![
            Value::from("17"),
            Value::Array(vec![Value::from("a"), Value::from("b")]),
        ]);
        assert_eq!(
            parse_scan_page(page).unwrap(),
            ("17".to_owned(), vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(parse_scan_page(Value::Null).is_err());
        assert_eq!(
            parse_used_memory("# Memory\r\nused_memory:12345\r\nused_memory_human:12K\r\n"),
            Some(12345)
        );
        assert_eq!(parse_used_memory("nothing"), None);
        assert_eq!(
            parse_run_id("# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c0e2a\r\ntcp_port:6379\r\n"),
            Some("4f1c0e2a")
        );
        assert_eq!(parse_run_id("# Server\r\nrun_id:\r\n"), None);
        let page = Value::Array(vec![
            Value::from("0"),
            Value::Array(vec![
                Value::from("a"),
                Value::Bytes(Bytes::from_static(b"\xff\xfe")),
            ]),
        ]);
        assert_eq!(
            parse_scan_keys(page).unwrap(),
            ("0".to_owned(), vec!["a".to_owned()], 1)
        );
        let keys = Value::Array(vec![Value::from("a"), Value::from("b")]);
        assert_eq!(
            parse_key_list(keys).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert!(parse_key_list(Value::Null).unwrap().is_empty());
        assert!(parse_key_list(Value::from("x")).is_err());
    }
}

//! Session ids: generated from the OS CSPRNG, or validated when a caller hands one in.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Shortest id accepted from a caller.
pub const MIN_ID_LEN: usize = 16;
/// Longest id accepted from a caller.
pub const MAX_ID_LEN: usize = 128;

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A validated session id: 16 to 128 characters of `[A-Za-z0-9_-]`.
///
/// A session id is a bearer credential.
/// `Debug` prints only a short hash (`SessionId(sid:1a2b3c4d)`) and there is
/// deliberately no `Display`, so an id that reaches a log line by accident does
/// not leak; [`SessionId::as_str`] gives the full id for cookies and bodies.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionId(Box<str>);

impl SessionId {
    /// A new id: 128 bits from the operating system's CSPRNG, base64url without
    /// padding (22 characters).
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the operating system cannot provide randomness,
    /// which on supported platforms does not happen after boot.
    pub fn generate() -> Result<Self> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| Error::Unavailable {
            backend: "os-random",
            message: format!("the OS random source failed: {e}"),
            source: None,
        })?;
        Ok(SessionId(encode_b64url(&raw).into_boxed_str()))
    }

    /// Validates an id given by a caller (a cookie, a URL segment, a header).
    ///
    /// # Errors
    /// [`Error::InvalidId`] if the id is empty, shorter than 16 or longer than 128
    /// characters, or has any character outside `[A-Za-z0-9_-]` — so `*`, `?`,
    /// `[`, `:`, `{`, spaces and control bytes never reach a backend.
    pub fn parse(id: &str) -> Result<Self> {
        validate(id)?;
        Ok(SessionId(id.into()))
    }

    /// The id of a principal index (`p.…`, see `principals`): not an id a caller can give
    /// (`.` is refused by [`parse`](Self::parse)), so no session shares its key.
    pub(crate) fn index(text: String) -> Self {
        SessionId(text.into_boxed_str())
    }

    /// The full id. Treat it as a secret: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible tag of the id (8 hex digits of a hash),
    /// safe for logs and traces.
    pub fn short_hash(&self) -> String {
        format!("{:08x}", fnv1a(self.0.as_bytes()) as u32)
    }
}

fn validate(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidId { reason: "empty" });
    }
    if id.len() < MIN_ID_LEN {
        return Err(Error::InvalidId {
            reason: "shorter than 16 characters",
        });
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidId {
            reason: "longer than 128 characters",
        });
    }
    if let Some(b) = id
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
    {
        return Err(Error::InvalidId {
            reason: if b.is_ascii_control() {
                "contains a control byte"
            } else if b == b' ' {
                "contains a space"
            } else if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                "contains a glob character"
            } else if matches!(b, b':' | b'{' | b'}') {
                "contains a key separator or hash-tag character"
            } else if !b.is_ascii() {
                "contains a non-ASCII character"
            } else {
                "contains a character outside A-Z, a-z, 0-9, '_' and '-'"
            },
        });
    }
    Ok(())
}

pub(crate) fn encode_b64url(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
            out.push(char::from(B64URL[idx]));
        }
    }
    out
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SessionId::parse(s)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        SessionId::parse(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        validate(&s)?;
        Ok(SessionId(s.into_boxed_str()))
    }
}

impl Hash for SessionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(sid:{})", self.short_hash())
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionId::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_22_chars_and_valid() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert!(SessionId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(encode_b64url(b"\xfb\xff"), "-_8");
        assert_eq!(encode_b64url(b"Man"), "TWFu");
        assert_eq!(encode_b64url(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn guids_pass() {
        assert!(SessionId::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").is_ok());
    }

    #[test]
    fn rejects_each_bad_class() {
        for bad in [
            "",
            "short",
            &"a".repeat(129),
            "aaaaaaaaaaaaaaa*",
            "aaaaaaaaaaaaaaa?",
            "aaaaaaaaaaaaaaa[",
            "aaaaaaaaaaaaaaa:",
            "aaaaaaaa aaaaaaa",
            "aaaaaaaa\naaaaaaa",
            "aaaaaaaa\0aaaaaaa",
            "aaaaaaaa{a}aaaaaa",
            "aaaaaaaaaaaaaaaé",
        ] {
            assert!(
                matches!(SessionId::parse(bad), Err(Error::InvalidId { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn debug_hides_the_id() {
        let id = SessionId::parse("abcdefghijklmnopqrstuvwxyz").unwrap();
        assert!(!format!("{id:?}").contains("abcdefghijklmnop"));
        assert_eq!(id.short_hash().len(), 8);
    }
}

//! Namespaces, key prefixes and the key of one session: `{key_prefix}{namespace}:{id}`.

use std::fmt;
use std::sync::Arc;

use crate::error::{clip, Error, Result};
use crate::id::SessionId;

/// Longest namespace accepted.
pub const MAX_NAMESPACE_LEN: usize = 32;
/// Longest key prefix accepted.
pub const MAX_PREFIX_LEN: usize = 64;
/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// A kind of session, such as `task` or `orchestrator`: `[a-z0-9_-]{1,32}`.
///
/// Each namespace has its own keys, counts and (optionally) its own TTL.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Validates a namespace.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] unless it is 1 to 32 characters of `a-z`, `0-9`, `_`, `-`.
    pub fn new(name: &str) -> Result<Self> {
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_NAMESPACE_LEN {
            Some("longer than 32 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            Some("contains a character outside a-z, 0-9, '_' and '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidNamespace {
                namespace: clip(name),
                reason,
            }),
            None => Ok(Namespace(name.into())),
        }
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace as a shared string (a cheap clone, e.g. for metric labels).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({:?})", &*self.0)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Namespace {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Namespace::new(s)
    }
}

/// The text every key of a store starts with, e.g. `session:` or `omnia:session:`.
///
/// Up to 64 printable ASCII characters; `*`, `?`, `[`, `]`, `\`, `{`, `}` and
/// spaces are refused because they would change the meaning of a `SCAN MATCH`
/// pattern or pin every key to one cluster slot. A non-empty prefix ends with
/// a character no namespace can hold (`:` by convention), so two prefixes
/// never share keys. An empty prefix is allowed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    /// Validates a key prefix.
    ///
    /// # Errors
    /// [`Error::InvalidKeyPrefix`] for the characters listed on the type.
    pub fn new(prefix: &str) -> Result<Self> {
        let reason = if prefix.len() > MAX_PREFIX_LEN {
            Some("longer than 64 characters")
        } else if prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            Some("contains a space, control or non-ASCII character")
        } else if prefix
            .bytes()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'{' | b'}'))
        {
            Some("contains a glob or hash-tag character (* ? [ ] \\ { })")
        } else if prefix
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            // Otherwise prefix `app` + namespace `task` and prefix `appt` + namespace `ask`
            // would share keys.
            Some("must end with a separator such as ':' (a character no namespace can hold)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidKeyPrefix {
                prefix: clip(prefix),
                reason,
            }),
            None => Ok(KeyPrefix(prefix.into())),
        }
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full backend key of a session: `{prefix}{namespace}:{id}`.
    pub fn render(&self, key: &SessionKey) -> String {
        let mut s =
            String::with_capacity(self.0.len() + key.namespace.as_str().len() + 1 + key.id.as_str().len());
        s.push_str(&self.0);
        s.push_str(key.namespace.as_str());
        s.push(':');
        s.push_str(key.id.as_str());
        s
    }

    /// The start of every key of a namespace: `{prefix}{namespace}:`. Safe to
    /// follow with `*` in a `SCAN MATCH` pattern, since neither part may hold
    /// a glob character.
    pub fn namespace_prefix(&self, namespace: &Namespace) -> String {
        format!("{}{}:", self.0, namespace.as_str())
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        KeyPrefix(DEFAULT_KEY_PREFIX.into())
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPrefix({:?})", &*self.0)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The address of one session inside a store: namespace and id.
///
/// The store adds its own key prefix. `Debug` hides the id like [`SessionId`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SessionKey {
    /// The kind of session.
    pub namespace: Namespace,
    /// The session id.
    pub id: SessionId,
}

impl SessionKey {
    /// Builds a key from its parts.
    pub fn new(namespace: Namespace, id: SessionId) -> Self {
        SessionKey { namespace, id }
    }

    /// The namespace as text, for error messages.
    pub fn ns(&self) -> &str {
        self.namespace.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(Namespace::new("task").is_ok());
        assert!(Namespace::new("orchestrator").is_ok());
        assert!(Namespace::new("a_b-9").is_ok());
        for bad in ["", "Task", "a:b", "a*", &"a".repeat(33), "a b"] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(KeyPrefix::new("omnia:session:").is_ok());
        assert!(KeyPrefix::new("").is_ok());
        assert!(KeyPrefix::new("app/").is_ok());
        for bad in [
            "a*",
            "a{b}",
            "a b",
            "x[",
            &"a".repeat(65),
            "app",
            "omnia:session",
            "x-",
        ] {
            assert!(KeyPrefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn renders_keys() {
        let p = KeyPrefix::new("omnia:session:").unwrap();
        let k = SessionKey::new(
            Namespace::new("task").unwrap(),
            SessionId::parse("0123456789abcdef").unwrap(),
        );
        assert_eq!(p.render(&k), "omnia:session:task:0123456789abcdef");
        assert_eq!(p.namespace_prefix(&k.namespace), "omnia:session:task:");
    }
}

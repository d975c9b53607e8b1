//! Principals: who a session belongs to (a user id), and how a record carries it.
//!
//! A session bound to a principal carries it in its record: the codec id has
//! [`CodecId::BOUND`] set and the payload starts with the principal (one length byte, then its
//! UTF-8 bytes), followed by the codec's payload. Stores keep the record as they keep any
//! other (the principal is part of the payload to them), so it moves with every write,
//! `rotate`, copy, backup and replay, and is sealed with the payload by an encrypting store.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::CodecId;
use crate::envelope::Record;
use crate::error::{Error, Result};

/// Longest principal accepted, in bytes.
pub const MAX_PRINCIPAL_LEN: usize = 90;

/// Who a session belongs to: an application's user id (or account, or tenant/user pair).
///
/// 1 to 90 bytes of UTF-8 without control characters. It is personal data: `Debug` prints
/// only a short hash (`Principal(p:1a2b3c4d)`) and there is no `Display`; [`as_str`](Self::as_str)
/// gives the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(Arc<str>);

impl Principal {
    /// Validates a principal.
    ///
    /// # Errors
    /// [`Error::InvalidPrincipal`] when it is empty, longer than 90 bytes or holds a control
    /// character.
    pub fn new(text: &str) -> Result<Self> {
        let reason = if text.is_empty() {
            Some("empty")
        } else if text.len() > MAX_PRINCIPAL_LEN {
            Some("longer than 90 bytes")
        } else if text.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidPrincipal { reason }),
            None => Ok(Principal(text.into())),
        }
    }

    /// The principal's text. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short tag (8 hex digits of a hash keyed by a random number drawn once per process),
    /// for telling principals apart in one process's logs. Principals are often guessable (user
    /// numbers, e-mail addresses), so an unkeyed hash could be reversed by trying them; this
    /// one is stable only within the process.
    pub fn short_hash(&self) -> String {
        static SEED: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
        let seed = SEED.get_or_init(|| {
            let mut seed = [0u8; 8];
            // Without randomness the tag is merely unkeyed.
            let _ = getrandom::fill(&mut seed);
            seed
        });
        let mut keyed = Vec::with_capacity(8 + self.0.len());
        keyed.extend_from_slice(seed);
        keyed.extend_from_slice(self.0.as_bytes());
        format!("{:08x}", crate::id::fnv1a(&keyed) as u32)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal(p:{})", self.short_hash())
    }
}

impl std::str::FromStr for Principal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Principal::new(s)
    }
}

impl Record {
    /// This record bound to `principal` (replacing any binding it had): the principal is
    /// stored in front of the payload and the codec id gets [`CodecId::BOUND`].
    pub fn bound_to(&self, principal: &Principal) -> Record {
        let (codec, payload) = self.unbound_parts();
        let p = principal.as_str().as_bytes();
        let mut b = BytesMut::with_capacity(1 + p.len() + payload.len());
        // A principal is at most 90 bytes: its length fits the byte.
        b.put_u8(u8::try_from(p.len()).unwrap_or(u8::MAX));
        b.put_slice(p);
        b.put_slice(&payload);
        Record {
            meta: self.meta,
            codec: CodecId(codec.0 | CodecId::BOUND.0),
            payload: b.freeze(),
        }
    }

    /// The principal this record is bound to, if any.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `namespace` for a bound record whose principal does not
    /// parse.
    pub fn principal(&self, namespace: &str) -> Result<Option<Principal>> {
        if !self.codec.is_bound() {
            return Ok(None);
        }
        let (principal, _) = split_bound(&self.payload, namespace)?;
        Ok(Some(principal))
    }

    /// The codec and payload as the codec wrote them, without a binding; the record as it is
    /// when it is not bound. A bound record whose principal does not parse gives its bytes as
    /// they are (the codec then refuses them).
    pub fn unbound_parts(&self) -> (CodecId, Bytes) {
        if !self.codec.is_bound() {
            return (self.codec, self.payload.clone());
        }
        let codec = CodecId(self.codec.0 & !CodecId::BOUND.0);
        match self.payload.first() {
            Some(&len) if usize::from(len) < self.payload.len() => {
                (codec, self.payload.slice(1 + usize::from(len)..))
            }
            _ => (codec, self.payload.clone()),
        }
    }
}

/// A bound payload's principal and the codec's payload.
fn split_bound(payload: &Bytes, namespace: &str) -> Result<(Principal, Bytes)> {
    let Some(&len) = payload.first() else {
        return Err(Error::corrupt(namespace, "a bound session without its principal"));
    };
    let end = 1 + usize::from(len);
    let Some(text) = payload.get(1..end) else {
        return Err(Error::corrupt(
            namespace,
            "a bound session's principal is cut short",
        ));
    };
    let principal = std::str::from_utf8(text)
        .ok()
        .and_then(|t| Principal::new(t).ok())
        .ok_or_else(|| Error::corrupt(namespace, "a bound session's principal is not valid text"))?;
    Ok((principal, payload.slice(end..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_validated_and_hidden_in_debug() {
        assert!(Principal::new("alice@example.com").is_ok());
        assert!(Principal::new(&"é".repeat(45)).is_ok(), "90 bytes");
        for bad in ["", "a\nb", &"x".repeat(91)] {
            assert!(
                matches!(Principal::new(bad), Err(Error::InvalidPrincipal { .. })),
                "{bad:?}"
            );
        }
        let p = Principal::new("alice@example.com").unwrap_or_else(|_| unreachable!());
        assert!(!format!("{p:?}").contains("alice"));
    }

    #[test]
    fn a_binding_round_trips_and_leaves_the_payload_as_it_was() {
        let r = Record::new(CodecId::JSON, &b"{\"a\":1}"[..], 10);
        assert_eq!(r.principal("t").ok().flatten(), None);
        let p = Principal::new("user-42").unwrap_or_else(|_| unreachable!());
        let bound = r.bound_to(&p);
        assert!(bound.codec.is_bound());
        assert_eq!(bound.principal("t").ok().flatten(), Some(p.clone()));
        assert_eq!(bound.unbound_parts(), (CodecId::JSON, r.payload.clone()));
        let q = Principal::new("user-43").unwrap_or_else(|_| unreachable!());
        let rebound = bound.bound_to(&q);
        assert_eq!(rebound.principal("t").ok().flatten(), Some(q));
        assert_eq!(rebound.unbound_parts(), (CodecId::JSON, r.payload.clone()));
        for cut in 0..1 + p.as_str().len() {
            let broken = Record {
                payload: bound.payload.slice(..cut),
                ..bound.clone()
            };
            assert!(
                matches!(broken.principal("t"), Err(Error::Corrupt { .. })),
                "{cut}"
            );
            let _ = broken.unbound_parts();
        }
    }
}

//! Session ids stored as keyed hashes: HMAC-SHA-256 of the namespace and the id under a
//! secret, so that a dump of the backend names no session and cannot be matched against ids
//! without the secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use session_core::backend::{is_principal_index, principal_index_id};
use session_core::{Error, Result, SessionId, SessionKey};
use sha2::Sha256;

use crate::secret::Secret;

/// The shortest secret accepted, in bytes: HMAC-SHA-256's full strength.
pub const MIN_SECRET_BYTES: usize = 32;
/// The length of a stored (hashed) id: 32 bytes of HMAC-SHA-256, base64url without padding.
pub const HASHED_ID_LEN: usize = 43;
/// Domain separation: what is hashed starts with this, so that the secret, were it reused
/// elsewhere, gives unrelated values.
const CONTEXT: &[u8] = b"session-secure id v1\0";

/// One secret's hashing of session ids.
#[derive(Clone)]
pub(crate) struct IdHasher {
    mac: Hmac<Sha256>,
}

impl IdHasher {
    /// A hasher with the secret in `secret` (base64, at least 32 bytes); `field` names it in
    /// errors.
    ///
    /// # Errors
    /// [`Error::Config`] for text that is not base64 or decodes to fewer than 32 bytes.
    pub(crate) fn new(secret: &Secret, field: &str) -> Result<Self> {
        let bytes = secret.decode(field)?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(Error::config(
                field,
                format!(
                    "must decode to at least {MIN_SECRET_BYTES} bytes, got {} (generate one with \
                     `openssl rand -base64 32`)",
                    bytes.len()
                ),
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(&bytes)
            .map_err(|_| Error::config(field, "cannot key HMAC-SHA-256 with this secret"))?;
        Ok(IdHasher { mac })
    }

    /// The id stored for `key`: HMAC-SHA-256(secret, context ‖ namespace ‖ 0 ‖ id), 43
    /// characters of base64url.
    ///
    /// A principal index (`p.…`) stays one: its stored id is `p.` and the hash, so that stores
    /// still tell it from a session (and leave it out of their counts).
    pub(crate) fn hash(&self, key: &SessionKey) -> SessionKey {
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(key.ns().as_bytes());
        mac.update(&[0]);
        mac.update(key.id.as_str().as_bytes());
        let text = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        // 43 characters of [A-Za-z0-9_-]: always a valid id (or index id).
        let id = if is_principal_index(key) {
            principal_index_id(&text)
        } else {
            SessionId::parse(&text).ok()
        };
        match id {
            Some(id) => SessionKey::new(key.namespace.clone(), id),
            None => unreachable_id(key),
        }
    }

    /// A key derived from the secret for `purpose`: 32 bytes of HMAC-SHA-256.
    pub(crate) fn derive(&self, purpose: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
        let mut mac = self.mac.clone();
        mac.update(b"session-secure derived key v1\0");
        mac.update(purpose);
        zeroize::Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }
}

/// base64url of 32 bytes is 43 characters of the id alphabet, which `SessionId::parse`
/// accepts; should that ever change, the key is left as given rather than panicking (the
/// tests hold the length).
#[cold]
fn unreachable_id(key: &SessionKey) -> SessionKey {
    key.clone()
}

#[cfg(test)]
mod tests {
    use session_core::Namespace;

    use super::*;

    const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn key(ns: &str, id: &str) -> SessionKey {
        SessionKey::new(Namespace::new(ns).unwrap(), SessionId::parse(id).unwrap())
    }

    #[test]
    fn a_hash_is_a_valid_id_of_fixed_length_and_depends_on_everything() {
        let h = IdHasher::new(&Secret::new(SECRET), "s").unwrap();
        let a = h.hash(&key("task", "aaaaaaaaaaaaaaaaaaaaaa"));
        assert_eq!(a.id.as_str().len(), HASHED_ID_LEN);
        assert_eq!(a.ns(), "task");
        assert_eq!(a, h.hash(&key("task", "aaaaaaaaaaaaaaaaaaaaaa")), "stable");
        assert_ne!(a, h.hash(&key("task", "aaaaaaaaaaaaaaaaaaaaab")));
        assert_ne!(a.id, h.hash(&key("cart", "aaaaaaaaaaaaaaaaaaaaaa")).id);
        let other = IdHasher::new(&Secret::new("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="), "s").unwrap();
        assert_ne!(a, other.hash(&key("task", "aaaaaaaaaaaaaaaaaaaaaa")), "keyed");
    }

    #[test]
    fn short_secrets_are_refused_without_showing_them() {
        let e = IdHasher::new(&Secret::new("c2hvcnQ="), "hashed_ids.secret")
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::Config { key, .. } if key == "hashed_ids.secret"),
            "{e}"
        );
        assert!(e.to_string().contains("at least 32 bytes"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
    }
}

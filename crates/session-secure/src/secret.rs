//! Key material from configuration: base64 text decoded into bytes that are wiped when dropped
//! and never printed.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Deserializer};
use session_core::{Error, Result};
use zeroize::Zeroizing;

/// A secret as configured: base64 text (standard or URL-safe alphabet, padded or not).
///
/// `Debug` prints `Secret(<redacted>)`; there is no `Display` and no accessor for the text.
/// The decoded bytes are wiped from memory when the value is dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// A secret from its base64 text.
    pub fn new(base64: impl Into<String>) -> Self {
        Secret(Zeroizing::new(base64.into()))
    }

    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The decoded bytes.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` when the text is not base64; the message never holds the
    /// text.
    pub(crate) fn decode(&self, field: &str) -> Result<Zeroizing<Vec<u8>>> {
        decode_base64(self.0.trim(), field)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret::new(text)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret::new(text)
    }
}

/// Decodes base64 in any of the four usual forms.
pub(crate) fn decode_base64(text: &str, field: &str) -> Result<Zeroizing<Vec<u8>>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .find_map(|engine| engine.decode(text).ok())
        .map(Zeroizing::new)
        .ok_or_else(|| {
            Error::config(
                field,
                "is not base64 (generate one with `openssl rand -base64 32`); its value is not shown",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let s = Secret::new("c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{s:#?}").contains("c2Vj"));
    }

    #[test]
    fn every_base64_form_decodes() {
        let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(250)).collect();
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&bytes);
            assert_eq!(*Secret::new(text).decode("k").unwrap(), bytes);
        }
        let e = Secret::new("not base64 at all!")
            .decode("hashed_ids.secret")
            .unwrap_err();
        assert!(
            matches!(&e, Error::Config { key, .. } if key == "hashed_ids.secret"),
            "{e}"
        );
        assert!(!e.to_string().contains("not base64 at all"), "{e}");
    }
}

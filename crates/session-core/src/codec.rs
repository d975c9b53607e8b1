//! Codecs turn a user's session type into the envelope's payload and back.
//!
//! The envelope records which codec wrote it, so a reader decodes every codec
//! it is built with: changing the configured codec logs nobody out.
//!
//! * [`Json`] (feature `json`, codec id 1), the default: self-describing, so a
//!   session type can grow: a field added with `#[serde(default)]`, untagged and
//!   internally tagged enums, `#[serde(flatten)]` and maps of
//!   `serde_json::Value` all load sessions written before the change. It is also
//!   what `redis-cli GET` can show a person.
//! * [`Bincode`] (feature `bincode`, codec id 2): compact and fast, for session
//!   types whose shape is fixed: it is positional, so adding, removing or
//!   reordering a field makes every stored session undecodable. bincode is
//!   no longer maintained (3.0.0 on crates.io only emits `compile_error!`), so
//!   this crate pins 2.0.1; moving away from it is a configuration change, see
//!   `docs/format.md`. Like any non-self-describing format it cannot decode
//!   types that need `deserialize_any` (`#[serde(untagged)]`, `serde_json::Value`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};

/// The one-byte codec tag stored in every envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CodecId(pub u8);

impl CodecId {
    /// Opaque bytes, written by stores or tools that do not use a codec.
    pub const RAW: CodecId = CodecId(0);
    /// JSON (serde_json).
    pub const JSON: CodecId = CodecId(1);
    /// bincode 2 with its standard configuration.
    pub const BINCODE: CodecId = CodecId(2);
    /// A payload sealed with an AEAD by `session-secure`: the ciphertext names the key it was
    /// sealed with and, inside, the codec of the plaintext. Only a store that holds the key
    /// opens it; read directly it is [`Error::Corrupt`].
    pub const SEALED: CodecId = CodecId(3);

    /// The flag of a record bound to a principal: the payload starts with the principal
    /// (one length byte, its UTF-8 bytes), then the payload of the codec named by the other
    /// bits (see [`Record::bound_to`](crate::backend::Record::bound_to)).
    pub const BOUND: CodecId = CodecId(0x80);

    /// Whether this build knows the id (whether or not the codec is compiled in), bound or not.
    pub fn is_known(self) -> bool {
        (self.0 & !Self::BOUND.0) <= 3
    }

    /// Whether the record is bound to a principal.
    pub fn is_bound(self) -> bool {
        self.0 & Self::BOUND.0 != 0
    }

    /// The codec's name, `"unknown"` for ids this build does not know.
    pub fn name(self) -> &'static str {
        match self.0 & !Self::BOUND.0 {
            0 => "raw",
            1 => "json",
            2 => "bincode",
            3 => "sealed",
            _ => "unknown",
        }
    }
}

/// A serde format usable as a session payload.
pub trait Codec: Send + Sync + 'static {
    /// The id stored in the envelope.
    const ID: CodecId;

    /// Serializes a value.
    ///
    /// # Errors
    /// The format's own error when the value cannot be represented.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError>;

    /// Deserializes a value; trailing bytes are an error.
    ///
    /// # Errors
    /// The format's own error when the bytes are not a `T`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError>;
}

/// The JSON codec.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const ID: CodecId = CodecId::JSON;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// The bincode 2 codec (standard configuration, 64 MiB decode limit).
#[cfg(feature = "bincode")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

#[cfg(feature = "bincode")]
const BINCODE_LIMIT: usize = 64 * 1024 * 1024;

#[cfg(feature = "bincode")]
impl Codec for Bincode {
    const ID: CodecId = CodecId::BINCODE;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
        let config = bincode::config::standard().with_limit::<BINCODE_LIMIT>();
        Ok(bincode::serde::encode_to_vec(value, config)?)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError> {
        let config = bincode::config::standard().with_limit::<BINCODE_LIMIT>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes after the value", bytes.len() - used).into());
        }
        Ok(value)
    }
}

/// The codec chosen in configuration (`codec = "json"` or `"bincode"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CodecKind {
    /// [`Json`].
    Json,
    /// [`Bincode`].
    Bincode,
}

impl Default for CodecKind {
    /// JSON: a session type can gain fields (`#[serde(default)]`) across a deploy
    /// without making stored sessions undecodable. bincode in a build that has
    /// only bincode.
    fn default() -> Self {
        if cfg!(feature = "json") || !cfg!(feature = "bincode") {
            CodecKind::Json
        } else {
            CodecKind::Bincode
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id().name())
    }
}

impl std::str::FromStr for CodecKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(CodecKind::Json),
            "bincode" => Ok(CodecKind::Bincode),
            other => Err(Error::config(
                "codec",
                format!(
                    "unknown codec {:?}; accepted: \"json\", \"bincode\"",
                    crate::error::clip(other)
                ),
            )),
        }
    }
}

impl CodecKind {
    /// The id this codec stores in envelopes.
    pub fn id(self) -> CodecId {
        match self {
            CodecKind::Json => CodecId::JSON,
            CodecKind::Bincode => CodecId::BINCODE,
        }
    }

    /// Whether this build includes the codec.
    pub fn is_available(self) -> bool {
        match self {
            CodecKind::Json => cfg!(feature = "json"),
            CodecKind::Bincode => cfg!(feature = "bincode"),
        }
    }

    /// Encodes a value with this codec.
    ///
    /// # Errors
    /// [`Error::Codec`] when serialization fails; [`Error::Config`] when the
    /// codec is not built into this binary.
    #[cfg_attr(
        not(all(feature = "json", feature = "bincode")),
        allow(
            unreachable_code,
            unused_variables,
            reason = "a build without a codec has nothing to encode with"
        )
    )]
    pub fn encode<T: Serialize + ?Sized>(self, value: &T, namespace: &str) -> Result<Vec<u8>> {
        let result: Result<Vec<u8>, BoxError> = match self {
            #[cfg(feature = "json")]
            CodecKind::Json => Json::encode(value),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode::encode(value),
            #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
            other => return Err(not_built(other.id())),
        };
        result.map_err(|source| Error::Codec {
            codec: self.id().name(),
            action: "encode",
            namespace: namespace.to_owned(),
            source,
        })
    }
}

fn not_built(id: CodecId) -> Error {
    Error::config(
        "codec",
        format!(
            "the {} codec is not built into this binary; enable the cargo feature `{}`",
            id.name(),
            id.name()
        ),
    )
}

/// Decodes a payload with whichever codec wrote it.
///
/// # Errors
/// [`Error::Codec`] when the payload is not a `T` (a changed type, say);
/// [`Error::Corrupt`] when the codec id is raw or unknown, or its codec is not
/// built into this binary.
#[cfg_attr(
    not(all(feature = "json", feature = "bincode")),
    allow(
        unreachable_code,
        unused_variables,
        reason = "a build without a codec has nothing to decode with"
    )
)]
pub fn decode_payload<T: DeserializeOwned>(codec: CodecId, payload: &[u8], namespace: &str) -> Result<T> {
    let result: Result<T, BoxError> = match codec {
        #[cfg(feature = "json")]
        CodecId::JSON => Json::decode(payload),
        #[cfg(feature = "bincode")]
        CodecId::BINCODE => Bincode::decode(payload),
        CodecId::SEALED => {
            return Err(Error::corrupt(
                namespace,
                "the payload is sealed (encrypted at rest): read it through the store that holds \
                 its key (session-secure)",
            ))
        }
        other if other.is_known() && other != CodecId::RAW => {
            return Err(Error::corrupt(
                namespace,
                format!(
                    "written with the {} codec, which this binary is built without (cargo feature `{}`)",
                    other.name(),
                    other.name()
                ),
            ))
        }
        other => {
            return Err(Error::corrupt(
                namespace,
                format!(
                    "payload codec {} ({}) cannot be decoded into a typed session",
                    other.0,
                    other.name()
                ),
            ))
        }
    };
    result.map_err(|source| Error::Codec {
        codec: codec.name(),
        action: "decode",
        namespace: namespace.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        a: String,
        b: Vec<u32>,
        m: BTreeMap<String, String>,
    }

    #[cfg(all(feature = "json", feature = "bincode"))]
    fn s() -> S {
        S {
            a: "x".into(),
            b: vec![1, 2, 3],
            m: [("k".to_string(), "v".to_string())].into(),
        }
    }

    #[test]
    #[cfg(all(feature = "json", feature = "bincode"))]
    fn both_codecs_round_trip_and_cross_decode_by_id() {
        for kind in [CodecKind::Json, CodecKind::Bincode] {
            let bytes = kind.encode(&s(), "task").unwrap();
            let back: S = decode_payload(kind.id(), &bytes, "task").unwrap();
            assert_eq!(back, s());
        }
    }

    #[test]
    fn wrong_bytes_are_codec_errors() {
        #[cfg(feature = "json")]
        {
            let e = decode_payload::<S>(CodecId::JSON, b"not json", "task").unwrap_err();
            assert!(matches!(e, Error::Codec { .. }));
        }
        #[cfg(feature = "bincode")]
        {
            let e = decode_payload::<S>(CodecId::BINCODE, &[0xff; 3], "task").unwrap_err();
            assert!(matches!(e, Error::Codec { .. }));
        }
        let e = decode_payload::<S>(CodecId::RAW, b"x", "task").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }));
    }

    #[test]
    fn parses_names() {
        assert_eq!("json".parse::<CodecKind>().unwrap(), CodecKind::Json);
        assert!("xml".parse::<CodecKind>().is_err());
    }
}

//! Payloads sealed with XChaCha20-Poly1305 under a keyring: the newest key seals, every key
//! opens, and the key a payload was sealed with is named in it.
//!
//! A sealed payload (the payload of a record whose codec is [`CodecId::SEALED`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | sealed format, `1` |
//! | 1 | 2 | key id, big-endian |
//! | 3 | 24 | nonce: random, new for every seal |
//! | 27 | n + 1 | ciphertext of the plaintext codec id (1 byte) and the payload (n bytes) |
//! | 28 + n | 16 | Poly1305 tag |
//!
//! The associated data binds the sealed format, the key id, the header fields no store changes
//! once written (version, created at, updated at, lifetime cap), the namespace and the id the
//! value is stored under (the hashed id when ids are hashed): a value copied to another key,
//! its key id altered, or its cap or version rewritten, does not open. The header stays in the
//! clear for the backend, which needs it; the deadline is not bound (`touch` moves it, and
//! never past the bound cap). A value an attacker saved earlier and writes back is not
//! detected: that needs state outside the value.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use session_core::backend::CodecId;
use session_core::backend::Record;
use session_core::{Error, Meta, Result, SessionKey};

use crate::secret::Secret;

/// The sealed format this build writes and reads.
const SEALED_FORMAT: u8 = 1;
/// Bytes before the ciphertext: format, key id, nonce.
const PREFIX_LEN: usize = 1 + 2 + NONCE_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a seal adds to a payload: prefix, the codec byte, the tag.
pub const SEAL_OVERHEAD: usize = PREFIX_LEN + 1 + TAG_LEN;
/// The length of a key, in bytes.
pub const KEY_BYTES: usize = 32;
/// Domain separation of the associated data.
const CONTEXT: &[u8] = b"session-secure payload v1\0";

/// Encryption keys by id: the current one seals, all of them open.
///
/// Built from configuration ([`EncryptionConfig`](crate::EncryptionConfig)). `Debug` shows key
/// ids only.
pub struct Keyring {
    keys: BTreeMap<u16, XChaCha20Poly1305>,
    current: u16,
    /// Keys derived from the hashing secrets, which seal principal indexes under
    /// [`INDEX_KEY_ID`] when ids are hashed and payloads are not sealed otherwise; the first
    /// seals, each is tried when opening.
    derived: Vec<XChaCha20Poly1305>,
}

/// The key id of values sealed by a key derived from a hashing secret (principal indexes
/// when only ids are hashed); reserved, not configurable.
pub const INDEX_KEY_ID: u16 = u16::MAX;

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .field("derived", &self.derived.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring of `(id, key)` pairs, each key 32 bytes of base64; `current` seals (`None`:
    /// the highest id). `field` names the setting in errors.
    ///
    /// # Errors
    /// [`Error::Config`]: no key, an id given twice, a key that is not 32 bytes of base64, a
    /// `current` id that is not in the ring. Messages never hold key material.
    pub fn new(keys: &[(u16, Secret)], current: Option<u16>, field: &str) -> Result<Self> {
        let mut ring = BTreeMap::new();
        for (id, secret) in keys {
            let name = format!("{field}.keys[{id}]");
            let bytes = secret.decode(&name)?;
            if bytes.len() != KEY_BYTES {
                return Err(Error::config(
                    name,
                    format!(
                        "must decode to {KEY_BYTES} bytes, got {} (generate one with `openssl rand -base64 32`)",
                        bytes.len()
                    ),
                ));
            }
            if *id == INDEX_KEY_ID {
                return Err(Error::config(
                    name,
                    format!("key id {INDEX_KEY_ID} is reserved; use 0 to {}", INDEX_KEY_ID - 1),
                ));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| Error::config(name.clone(), "cannot key XChaCha20-Poly1305 with this key"))?;
            if ring.insert(*id, cipher).is_some() {
                return Err(Error::config(
                    format!("{field}.keys"),
                    format!("key id {id} is given twice"),
                ));
            }
        }
        let Some(&highest) = ring.keys().next_back() else {
            return Err(Error::config(
                format!("{field}.keys"),
                "encryption needs at least one key (`ID:BASE64`, e.g. `1:` followed by `openssl rand -base64 32`)",
            ));
        };
        let current = current.unwrap_or(highest);
        if !ring.contains_key(&current) {
            return Err(Error::config(
                format!("{field}.current"),
                format!("key id {current} is not among the configured keys"),
            ));
        }
        Ok(Keyring {
            keys: ring,
            current,
            derived: Vec::new(),
        })
    }

    /// A ring of keys derived from the hashing secrets only (32 bytes each, current first):
    /// it seals under [`INDEX_KEY_ID`].
    pub(crate) fn derived_only(derived: &[zeroize::Zeroizing<Vec<u8>>]) -> Result<Self> {
        Ok(Keyring {
            keys: BTreeMap::new(),
            current: INDEX_KEY_ID,
            derived: ciphers(derived)?,
        })
    }

    /// This ring, also opening what the derived keys sealed.
    pub(crate) fn with_derived(mut self, derived: &[zeroize::Zeroizing<Vec<u8>>]) -> Result<Self> {
        self.derived = ciphers(derived)?;
        Ok(self)
    }

    /// The id of the key that seals.
    pub fn current(&self) -> u16 {
        self.current
    }

    /// The ids of every key that opens.
    pub fn key_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.keys().copied()
    }

    /// `record` with its payload sealed for `stored` (the key it is stored under), by the
    /// current key. Metadata is kept as given.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the OS random source fails (a nonce cannot be drawn).
    pub fn seal(&self, stored: &SessionKey, record: &Record) -> Result<Record> {
        let cipher = if self.current == INDEX_KEY_ID {
            self.derived.first()
        } else {
            self.keys.get(&self.current)
        };
        let Some(cipher) = cipher else {
            return Err(Error::Backend {
                backend: "secure",
                message: "the current key is missing from the keyring".to_owned(),
                source: None,
            });
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Unavailable {
            backend: "os-random",
            message: format!("the OS random source failed: {e}"),
            source: None,
        })?;
        let mut out = Vec::with_capacity(record.payload.len() + SEAL_OVERHEAD);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.push(record.codec.0);
        out.extend_from_slice(&record.payload);
        let aad = associated_data(self.current, stored, &record.meta);
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut out[PREFIX_LEN..]).into())
            .map_err(|_| Error::Backend {
                backend: "secure",
                message: "the payload is too long to seal".to_owned(),
                source: None,
            })?;
        out.extend_from_slice(&tag);
        Ok(Record {
            meta: record.meta,
            codec: CodecId::SEALED,
            payload: Bytes::from(out),
        })
    }

    /// `record` opened, if it is sealed for `stored` by a key of the ring: its plaintext codec
    /// and payload. A record that is not sealed comes back as it is.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the namespace: a key id not in the ring, a truncated value, an
    /// unknown sealed format, or a value that does not open (tampered, sealed for another key,
    /// or by another key under the same id).
    pub fn open(&self, stored: &SessionKey, record: Record) -> Result<Record> {
        if record.codec != CodecId::SEALED {
            return Ok(record);
        }
        let ns = stored.ns();
        let bytes = &record.payload;
        if bytes.len() < PREFIX_LEN + 1 + TAG_LEN {
            return Err(Error::corrupt(ns, "sealed payload too short"));
        }
        if bytes[0] != SEALED_FORMAT {
            return Err(Error::corrupt(
                ns,
                format!("sealed format {} is not supported by this build", bytes[0]),
            ));
        }
        let key_id = u16::from_be_bytes([bytes[1], bytes[2]]);
        let ciphers: Vec<&XChaCha20Poly1305> = if key_id == INDEX_KEY_ID {
            self.derived.iter().collect()
        } else {
            self.keys.get(&key_id).into_iter().collect()
        };
        if ciphers.is_empty() {
            return Err(Error::corrupt(
                ns,
                format!(
                    "sealed with key id {key_id}, which is not in the keyring (keys: {:?}); add it to \
                     `encryption.keys`",
                    self.keys.keys().collect::<Vec<_>>()
                ),
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[3..PREFIX_LEN]);
        let tag_at = bytes.len() - TAG_LEN;
        let Ok(tag) = Tag::try_from(&bytes[tag_at..]) else {
            return Err(Error::corrupt(ns, "sealed payload too short"));
        };
        let aad = associated_data(key_id, stored, &record.meta);
        let opened = ciphers.iter().find_map(|cipher| {
            let mut plain = bytes[PREFIX_LEN..tag_at].to_vec();
            cipher
                .decrypt_inout_detached(&XNonce::from(nonce), &aad, plain.as_mut_slice().into(), &tag)
                .ok()
                .map(|()| plain)
        });
        let Some(plain) = opened else {
            return Err(Error::corrupt(
                ns,
                "the sealed payload does not open: altered, moved from another key, or sealed by \
                 another key under the same id",
            ));
        };
        let codec = CodecId(plain[0]);
        let payload = Bytes::from(plain).slice(1..);
        Ok(Record {
            meta: record.meta,
            codec,
            payload,
        })
    }
}

/// Ciphers of 32-byte keys.
fn ciphers(keys: &[zeroize::Zeroizing<Vec<u8>>]) -> Result<Vec<XChaCha20Poly1305>> {
    keys.iter()
        .map(|k| {
            XChaCha20Poly1305::new_from_slice(k)
                .map_err(|_| Error::config("hashed_ids.secret", "cannot derive a key"))
        })
        .collect()
}

/// What a seal binds besides the plaintext: format, key id, the header fields no store
/// changes once written (version, created at, updated at, lifetime cap — not the deadline,
/// which `touch` moves), namespace and stored id.
fn associated_data(key_id: u16, stored: &SessionKey, meta: &Meta) -> Vec<u8> {
    let (ns, id) = (stored.ns().as_bytes(), stored.id.as_str().as_bytes());
    let mut aad = Vec::with_capacity(CONTEXT.len() + 3 + 32 + ns.len() + 1 + id.len());
    aad.extend_from_slice(CONTEXT);
    aad.push(SEALED_FORMAT);
    aad.extend_from_slice(&key_id.to_be_bytes());
    for field in [
        meta.version.as_u64(),
        meta.created_at,
        meta.updated_at,
        meta.max_expires_at,
    ] {
        aad.extend_from_slice(&field.to_be_bytes());
    }
    aad.extend_from_slice(ns);
    aad.push(b':');
    aad.extend_from_slice(id);
    aad
}

#[cfg(test)]
mod tests {
    use session_core::{Namespace, SessionId};

    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn ring(keys: &[(u16, &str)], current: Option<u16>) -> Keyring {
        let keys: Vec<(u16, Secret)> = keys.iter().map(|(id, k)| (*id, Secret::new(*k))).collect();
        Keyring::new(&keys, current, "encryption").unwrap()
    }

    fn key(id: &str) -> SessionKey {
        SessionKey::new(Namespace::new("task").unwrap(), SessionId::parse(id).unwrap())
    }

    fn record() -> Record {
        let mut r = Record::new(
            CodecId::JSON,
            &b"{\"user\":\"alice\",\"token\":\"t0ps3cret\"}"[..],
            1_000,
        );
        r.meta.created_at = 500;
        r.meta.updated_at = 600;
        r
    }

    #[test]
    fn seals_and_opens_with_every_key_of_the_ring() {
        let old = ring(&[(1, K1)], None);
        let new = ring(&[(1, K1), (2, K2)], None);
        assert_eq!(new.current(), 2, "the highest id seals by default");
        let k = key("aaaaaaaaaaaaaaaaaaaaaa");
        let sealed_old = old.seal(&k, &record()).unwrap();
        assert_eq!(sealed_old.codec, CodecId::SEALED);
        assert_eq!(sealed_old.meta, record().meta);
        assert_eq!(sealed_old.payload.len(), record().payload.len() + SEAL_OVERHEAD);
        let needle: &[u8] = b"t0ps3cret";
        assert!(!sealed_old.payload.windows(needle.len()).any(|w| w == needle));
        assert_eq!(
            new.open(&k, sealed_old).unwrap(),
            record(),
            "a new ring opens old values"
        );
        let sealed_new = new.seal(&k, &record()).unwrap();
        let e = old.open(&k, sealed_new.clone()).unwrap_err();
        assert!(e.to_string().contains("key id 2"), "{e}");
        assert_eq!(new.open(&k, sealed_new).unwrap(), record());
        let a = new.seal(&k, &record()).unwrap();
        let b = new.seal(&k, &record()).unwrap();
        assert_ne!(a.payload, b.payload, "a fresh nonce per seal");
    }

    #[test]
    fn a_value_moved_or_altered_does_not_open() {
        let r = ring(&[(1, K1), (2, K2)], Some(1));
        let k = key("aaaaaaaaaaaaaaaaaaaaaa");
        let sealed = r.seal(&k, &record()).unwrap();
        let moved = r.open(&key("bbbbbbbbbbbbbbbbbbbbbb"), sealed.clone());
        assert!(matches!(moved, Err(Error::Corrupt { .. })), "{moved:?}");
        let other_ns = SessionKey::new(Namespace::new("cart").unwrap(), k.id.clone());
        assert!(matches!(
            r.open(&other_ns, sealed.clone()),
            Err(Error::Corrupt { .. })
        ));
        for i in 0..sealed.payload.len() {
            let mut bytes = sealed.payload.to_vec();
            bytes[i] ^= 0x01;
            let altered = Record {
                payload: Bytes::from(bytes),
                ..sealed.clone()
            };
            let got = r.open(&k, altered);
            assert!(matches!(got, Err(Error::Corrupt { .. })), "byte {i}: {got:?}");
        }
        for len in 0..sealed.payload.len() {
            let cut = Record {
                payload: sealed.payload.slice(..len),
                ..sealed.clone()
            };
            assert!(
                matches!(r.open(&k, cut), Err(Error::Corrupt { .. })),
                "length {len}"
            );
        }
        let plain = record();
        assert_eq!(r.open(&k, plain.clone()).unwrap(), plain, "not sealed: as it is");
    }

    #[test]
    fn bad_keyrings_are_config_errors_without_key_material() {
        type Case = (Vec<(u16, Secret)>, Option<u16>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![], None, "at least one key"),
            (vec![(1, Secret::new("c2hvcnQ="))], None, "32 bytes"),
            (vec![(1, Secret::new("%%%"))], None, "not base64"),
            (vec![(1, Secret::new(K1)), (1, Secret::new(K2))], None, "twice"),
            (vec![(1, Secret::new(K1))], Some(7), "key id 7"),
        ];
        for (keys, current, expected) in cases {
            let e = Keyring::new(&keys, current, "encryption").unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("MDEy") && !text.contains("ZmVk"), "{text}");
        }
        let r = ring(&[(3, K1), (9, K2)], Some(3));
        let debug = format!("{r:?}");
        assert!(debug.contains("[3, 9]") && !debug.contains("MDEy"), "{debug}");
    }
}

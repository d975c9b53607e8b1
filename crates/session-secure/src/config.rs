//! What to protect and with which secrets: `[hashed_ids]` and `[encryption]`.

use serde::{Deserialize, Deserializer};
use session_core::{Error, Result};

use crate::secret::Secret;

/// The configuration of a [`SecureStore`](crate::SecureStore): both parts are off by default.
///
/// ```toml
/// [hashed_ids]
/// enabled = true
/// secret = "…"              # base64 of 32 random bytes: openssl rand -base64 32
/// read_plain_ids = true     # while turning it on: sessions stored under plain ids still load
/// write_plain_ids = false   # true for the first step of a rolling change (see below)
///
/// [encryption]
/// enabled = true
/// keys = ["1:…", "2:…"]     # ID:BASE64 (32 bytes each); or one string "1:…,2:…" (env)
/// current = 2               # the key that seals; default the highest id
/// accept_plaintext = true   # while turning it on: values stored before still load
/// write_plaintext = false   # true for the first step of a rolling change (see below)
/// ```
///
/// Several instances change configuration one at a time, so each change that alters what is
/// written comes in two steps: first every instance learns to read the new form
/// (`write_plain_ids`, `write_plaintext`, or a new key that is not `current` yet), then every
/// instance writes it. docs/operations.md ("Security") lists the steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SecureConfig {
    /// Ids stored as keyed hashes.
    pub hashed_ids: HashedIdsConfig,
    /// Payloads sealed with an AEAD.
    pub encryption: EncryptionConfig,
}

/// Ids stored as HMAC-SHA-256 of the namespace and id under a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HashedIdsConfig {
    /// Whether ids are hashed.
    pub enabled: bool,
    /// The secret: base64 of at least 32 bytes.
    pub secret: Secret,
    /// Secrets used before `secret`, newest first: sessions stored under their hashes still
    /// load, and are deleted and rotated like the others (a secret's rotation logs no one
    /// out). Keep each for the longest session lifetime after it was replaced.
    pub previous_secrets: Vec<Secret>,
    /// Sessions stored under their plain id (before hashing was turned on) still load, and
    /// are deleted and rotated like the others. Keep it on for the longest session lifetime
    /// after turning hashing on, then turn it off: a plain id of exactly 43 characters (the
    /// length of a hashed one) is never looked up, so that a hash read from a dump cannot be
    /// used as a cookie.
    pub read_plain_ids: bool,
    /// The first step of turning hashing on across several instances: ids are still stored
    /// plain, hashed ones are read too. Deploy it everywhere, then turn it off (with
    /// `read_plain_ids` on): no instance then meets a session it cannot find, whatever the
    /// order of the restarts.
    pub write_plain_ids: bool,
}

/// Payloads sealed with XChaCha20-Poly1305.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EncryptionConfig {
    /// Whether payloads are sealed.
    pub enabled: bool,
    /// The keyring: `ID:BASE64` entries (ids 0–65535, keys 32 bytes), as a list or as one
    /// comma-separated string (for an environment variable).
    #[serde(deserialize_with = "key_list")]
    pub keys: Vec<KeyEntry>,
    /// The id of the key that seals; `None`: the highest.
    pub current: Option<u16>,
    /// Values stored without a seal (before encryption was turned on) still load. Off, such a
    /// value is [`Error::Corrupt`]: someone who can write to the backend could otherwise plant
    /// a session. Keep it on for the longest session lifetime after turning encryption on.
    pub accept_plaintext: bool,
    /// The first step of turning encryption on across several instances: values are still
    /// written unsealed (and unsealed ones accepted), sealed ones are opened. Deploy it
    /// everywhere, then turn it off (with `accept_plaintext` on): no instance then meets a
    /// value it cannot open.
    pub write_plaintext: bool,
}

/// One key of the keyring: its id and its base64 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The id stored with every value it seals.
    pub id: u16,
    /// 32 bytes, base64.
    pub key: Secret,
}

impl KeyEntry {
    /// Parses `ID:BASE64`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `encryption.keys` when there is no `:` or the id is not a
    /// number from 0 to 65535; the message never holds the key.
    pub fn parse(text: &str) -> Result<Self> {
        let Some((id, key)) = text.trim().split_once(':') else {
            return Err(Error::config(
                "encryption.keys",
                "each key is `ID:BASE64` (e.g. `1:` followed by `openssl rand -base64 32`)",
            ));
        };
        let id = id.trim().parse::<u16>().map_err(|_| {
            Error::config(
                "encryption.keys",
                "a key id is a number from 0 to 65535 (`ID:BASE64`)",
            )
        })?;
        Ok(KeyEntry {
            id,
            key: Secret::new(key.trim()),
        })
    }
}

/// Keys as a list of `ID:BASE64` strings or one comma-separated string.
fn key_list<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Vec<KeyEntry>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Keys {
        One(String),
        Many(Vec<String>),
    }
    let texts = match Keys::deserialize(deserializer)? {
        Keys::One(text) => text.split(',').map(str::to_owned).collect(),
        Keys::Many(texts) => texts,
    };
    texts
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| KeyEntry::parse(t).map_err(serde::de::Error::custom))
        .collect()
}

impl SecureConfig {
    /// Nothing on.
    pub fn new() -> Self {
        SecureConfig::default()
    }

    /// The size limit the wrapped store needs for sessions of `max_session_bytes` once
    /// sealed: `max_session_bytes` plus [`SEAL_OVERHEAD`](crate::SEAL_OVERHEAD) when
    /// encryption is on.
    pub fn inner_limit(&self, max_session_bytes: usize) -> usize {
        if self.encryption.enabled {
            max_session_bytes.saturating_add(crate::SEAL_OVERHEAD)
        } else {
            max_session_bytes
        }
    }

    /// Refuses the transition settings of a part that is off: turning hashing off while
    /// hashed keys remain would make every hash in a dump read as a plain id (the way back is
    /// `write_plain_ids`, with hashing on, for a session lifetime); turning encryption off
    /// would leave every sealed value unreadable (the way back is `write_plaintext`).
    pub(crate) fn check_transitions(&self) -> Result<()> {
        let h = &self.hashed_ids;
        if !h.enabled {
            for (set, name) in [
                (!h.previous_secrets.is_empty(), "previous_secrets"),
                (h.read_plain_ids, "read_plain_ids"),
                (h.write_plain_ids, "write_plain_ids"),
            ] {
                if set {
                    return Err(Error::config(
                        format!("hashed_ids.{name}"),
                        "is a transition setting of hashed_ids and needs hashed_ids.enabled; to turn \
                         hashing off, run with write_plain_ids = true (hashing still enabled) for the \
                         longest session lifetime first",
                    ));
                }
            }
        }
        let e = &self.encryption;
        if !e.enabled {
            for (set, name) in [
                (e.accept_plaintext, "accept_plaintext"),
                (e.write_plaintext, "write_plaintext"),
                (e.current.is_some(), "current"),
            ] {
                if set {
                    return Err(Error::config(
                        format!("encryption.{name}"),
                        "needs encryption.enabled; to turn encryption off, run with write_plaintext = \
                         true (encryption still enabled) for the longest session lifetime first",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every secret and key the enabled parts need, naming the first bad setting.
    ///
    /// # Errors
    /// [`Error::Config`], as [`SecureStore::new`](crate::SecureStore::new) would answer; never
    /// key material.
    pub fn validate(&self) -> Result<()> {
        self.check_transitions()?;
        crate::layout::Layouts::new(&self.hashed_ids)?;
        self.encryption.keyring()?;
        Ok(())
    }

    /// Whether anything is on.
    pub fn is_enabled(&self) -> bool {
        self.hashed_ids.enabled || self.encryption.enabled
    }

    /// Ids hashed with `secret` (base64 of at least 32 bytes).
    pub fn with_hashed_ids(mut self, secret: impl Into<Secret>) -> Self {
        self.hashed_ids.enabled = true;
        self.hashed_ids.secret = secret.into();
        self
    }

    /// Payloads sealed with `keys` (`(id, base64 key)`), the highest id sealing.
    pub fn with_encryption<S: Into<Secret>>(mut self, keys: impl IntoIterator<Item = (u16, S)>) -> Self {
        self.encryption.enabled = true;
        self.encryption.keys = keys
            .into_iter()
            .map(|(id, key)| KeyEntry { id, key: key.into() })
            .collect();
        self
    }
}

impl EncryptionConfig {
    /// The keyring these settings describe, when encryption is on.
    ///
    /// # Errors
    /// As [`Keyring::new`](crate::Keyring::new).
    pub(crate) fn keyring(&self) -> Result<Option<crate::Keyring>> {
        if !self.enabled {
            return Ok(None);
        }
        let keys: Vec<_> = self.keys.iter().map(|k| (k.id, k.key.clone())).collect();
        crate::Keyring::new(&keys, self.current, "encryption").map(Some)
    }
}

impl HashedIdsConfig {
    /// Sets whether plain ids are still looked up (the transition when turning hashing on).
    pub fn with_read_plain_ids(mut self, read: bool) -> Self {
        self.read_plain_ids = read;
        self
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Env, Format, Toml};
    use figment::{Figment, Jail};

    use super::*;

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail returns its own error type"
    )]
    fn keys_come_as_a_list_or_as_one_string_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                r#"
                [hashed_ids]
                enabled = true
                secret = "c2VjcmV0"
                [encryption]
                enabled = true
                keys = ["1:AAAA", " 2 : BBBB "]
                "#,
            )?;
            let c: SecureConfig = Figment::from(Toml::file("s.toml")).extract()?;
            assert_eq!(c.encryption.keys.iter().map(|k| k.id).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(c.encryption.keys[1].key, Secret::new("BBBB"));
            jail.set_env("APP_ENCRYPTION__KEYS", "3:CCCC,4:DDDD");
            let c: SecureConfig = Figment::from(Toml::file("s.toml"))
                .merge(Env::prefixed("APP_").split("__"))
                .extract()?;
            assert_eq!(c.encryption.keys.iter().map(|k| k.id).collect::<Vec<_>>(), [3, 4]);
            let debug = format!("{c:?}");
            assert!(!debug.contains("CCCC") && !debug.contains("c2VjcmV0"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_key_entry_names_the_setting_not_the_key() {
        for bad in ["no-colon-AAAA", "x:AAAA", "70000:AAAA"] {
            let e = KeyEntry::parse(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Config { key, .. } if key == "encryption.keys"),
                "{e}"
            );
            assert!(!e.to_string().contains("AAAA"), "{e}");
        }
    }
}

//! Configuration shared by every backend: TTLs, expiry mode, key prefix, codec, size limit.
//! This is the one home of these keys; backends get what they need of it as
//! [`StoreOptions`] at construction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::CodecKind;
use crate::error::{Error, Result};
use crate::expiry::{ExpiryMode, ExpiryPolicy};
use crate::key::{KeyPrefix, Namespace, DEFAULT_KEY_PREFIX};
use crate::options::StoreOptions;
use crate::store::{SessionStore, DEFAULT_MAX_SESSION_BYTES};
use crate::typed::Sessions;

/// Max lifetime used for sliding expiry when none is configured: 24 hours.
pub const DEFAULT_SLIDING_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Settings that apply to every backend. Field names are the configuration keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CoreConfig {
    /// TTL (absolute) or idle timeout (sliding) in seconds. Default 3600.
    pub ttl_secs: u64,
    /// `absolute` (default) or `sliding`.
    pub expiry: ExpiryMode,
    /// The longest a session may live from creation, in seconds. Default:
    /// none for absolute expiry, 86400 for sliding.
    pub max_lifetime_secs: Option<u64>,
    /// Prefix of every key. Default `session:`.
    pub key_prefix: String,
    /// Codec for writing: `json` (default) or `bincode`. Reads decode both.
    pub codec: CodecKind,
    /// Largest encoded session in bytes. Default 1 MiB.
    pub max_session_bytes: usize,
    /// Per-namespace overrides, e.g. `namespaces.task.ttl_secs = 600`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// Overrides for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NamespaceConfig {
    /// TTL or idle timeout in seconds.
    pub ttl_secs: Option<u64>,
    /// Expiry mode.
    pub expiry: Option<ExpiryMode>,
    /// Max lifetime in seconds.
    pub max_lifetime_secs: Option<u64>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            ttl_secs: 3600,
            expiry: ExpiryMode::Absolute,
            max_lifetime_secs: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            codec: CodecKind::default(),
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            namespaces: BTreeMap::new(),
        }
    }
}

impl CoreConfig {
    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.ttl_secs == 0 {
            return Err(Error::config("ttl_secs", "must be at least 1 second"));
        }
        if self.max_lifetime_secs == Some(0) {
            return Err(Error::config(
                "max_lifetime_secs",
                "must be at least 1 second when set",
            ));
        }
        KeyPrefix::new(&self.key_prefix).map_err(|e| Error::Config {
            key: "key_prefix".into(),
            message: e.to_string(),
            source: None,
        })?;
        if !self.codec.is_available() {
            return Err(Error::config(
                "codec",
                format!(
                    "the {} codec is not built into this binary; enable its cargo feature",
                    self.codec
                ),
            ));
        }
        crate::options::check_max_session_bytes(self.max_session_bytes)?;
        for (name, ns) in &self.namespaces {
            let key = format!("namespaces.{name}");
            Namespace::new(name).map_err(|e| Error::Config {
                key: key.clone(),
                message: e.to_string(),
                source: None,
            })?;
            if ns.ttl_secs == Some(0) {
                return Err(Error::config(
                    format!("{key}.ttl_secs"),
                    "must be at least 1 second",
                ));
            }
            if ns.max_lifetime_secs == Some(0) {
                return Err(Error::config(
                    format!("{key}.max_lifetime_secs"),
                    "must be at least 1 second when set",
                ));
            }
        }
        Ok(())
    }

    /// The validated key prefix.
    ///
    /// # Errors
    /// [`Error::Config`] for `key_prefix`.
    pub fn key_prefix(&self) -> Result<KeyPrefix> {
        KeyPrefix::new(&self.key_prefix).map_err(|e| Error::Config {
            key: "key_prefix".into(),
            message: e.to_string(),
            source: None,
        })
    }

    /// The key prefix and size limit every backend is built with.
    ///
    /// # Errors
    /// [`Error::Config`] for `key_prefix` or `max_session_bytes`.
    pub fn store_options(&self) -> Result<StoreOptions> {
        StoreOptions::new(self.key_prefix()?).with_max_session_bytes(self.max_session_bytes)
    }

    /// The expiry policy of a namespace, overrides applied.
    pub fn policy_for(&self, namespace: &Namespace) -> ExpiryPolicy {
        let ns = self.namespaces.get(namespace.as_str());
        let mode = ns.and_then(|n| n.expiry).unwrap_or(self.expiry);
        let ttl = Duration::from_secs(ns.and_then(|n| n.ttl_secs).unwrap_or(self.ttl_secs));
        let max = ns
            .and_then(|n| n.max_lifetime_secs)
            .or(self.max_lifetime_secs)
            .map(Duration::from_secs)
            .or(match mode {
                ExpiryMode::Sliding => Some(DEFAULT_SLIDING_MAX_LIFETIME),
                _ => None,
            });
        ExpiryPolicy {
            mode,
            ttl,
            max_lifetime: max,
        }
    }

    /// The longest one write can keep a session alive, over the default and
    /// every configured namespace: its lifetime cap, or its TTL without one.
    /// A tombstone that lasts this long outlives every write made before it
    /// (the lifetime the facade gives tombstones of sessions a store never
    /// held).
    pub fn longest_lifetime(&self) -> Duration {
        let of = |p: ExpiryPolicy| p.max_lifetime.map_or(p.ttl, |m| m.max(p.ttl));
        let default = Namespace::new("default").map(|ns| of(self.policy_for(&ns)));
        self.namespaces
            .keys()
            .filter_map(|name| Namespace::new(name).ok())
            .map(|ns| of(self.policy_for(&ns)))
            .chain(default)
            .max()
            .unwrap_or(crate::expiry::DEFAULT_TTL)
    }

    /// A typed handle on a namespace with this configuration's codec, policy and limit.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`].
    pub fn sessions<T>(&self, store: Arc<dyn SessionStore>, namespace: &str) -> Result<Sessions<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
    {
        let ns = Namespace::new(namespace)?;
        let policy = self.policy_for(&ns);
        Ok(Sessions::new(store, ns)
            .with_codec(self.codec)
            .with_policy(policy)
            .with_max_bytes(self.max_session_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "json", feature = "bincode"))]
    fn defaults_validate() {
        CoreConfig::default().validate().unwrap();
    }

    #[test]
    fn longest_lifetime_covers_every_namespace() {
        let mut c = CoreConfig::default();
        assert_eq!(c.longest_lifetime(), Duration::from_secs(c.ttl_secs));
        c.namespaces.insert(
            "long".into(),
            NamespaceConfig {
                ttl_secs: Some(60),
                expiry: Some(ExpiryMode::Sliding),
                max_lifetime_secs: Some(90_000),
            },
        );
        assert_eq!(c.longest_lifetime(), Duration::from_secs(90_000));
    }

    #[test]
    #[cfg(any(feature = "json", feature = "bincode"))]
    fn bad_values_name_their_key() {
        let mut c = CoreConfig {
            ttl_secs: 0,
            ..CoreConfig::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config { key, .. }) if key == "ttl_secs"));
        c.ttl_secs = 1;
        c.key_prefix = "a*".into();
        assert!(matches!(c.validate(), Err(Error::Config { key, .. }) if key == "key_prefix"));
        c.key_prefix = "x:".into();
        c.namespaces.insert("Bad".into(), NamespaceConfig::default());
        assert!(matches!(c.validate(), Err(Error::Config { key, .. }) if key == "namespaces.Bad"));
    }

    #[test]
    fn namespace_overrides() {
        let mut c = CoreConfig::default();
        c.namespaces.insert(
            "task".into(),
            NamespaceConfig {
                ttl_secs: Some(60),
                expiry: Some(ExpiryMode::Sliding),
                max_lifetime_secs: None,
            },
        );
        let p = c.policy_for(&Namespace::new("task").unwrap());
        assert_eq!(p.mode, ExpiryMode::Sliding);
        assert_eq!(p.ttl, Duration::from_secs(60));
        assert_eq!(p.max_lifetime, Some(DEFAULT_SLIDING_MAX_LIFETIME));
        let q = c.policy_for(&Namespace::new("other").unwrap());
        assert_eq!(q, ExpiryPolicy::absolute(Duration::from_secs(3600)));
    }

    #[test]
    fn deserializes_from_json_and_rejects_unknown_keys() {
        let c: CoreConfig =
            serde_json::from_str(r#"{"ttl_secs": 10, "expiry": "sliding", "codec": "json"}"#).unwrap();
        assert_eq!(c.ttl_secs, 10);
        assert!(serde_json::from_str::<CoreConfig>(r#"{"tll_secs": 10}"#).is_err());
    }
}

//! [`FallbackConfig`]: the `fallback.*` configuration keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::{Error, Result};

/// Settings of a [`FallbackStore`](crate::FallbackStore). Field names are the
/// configuration keys under `fallback.` (e.g. `fallback.primary_timeout_ms`).
///
/// Every field has a default, so an empty `[fallback]` table is valid:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `failure_threshold` | `1` | consecutive temporary primary failures that open the circuit |
/// | `primary_timeout_ms` | `300` | the fallback's own deadline on every primary call |
/// | `probe_min_ms` | `100` | first delay between probes of a down primary |
/// | `probe_max_ms` | `5000` | longest delay between probes (exponential backoff with jitter) |
/// | `max_journal_keys` | `100000` | sessions that may wait for replay; beyond it new keys are refused |
/// | `replay_concurrency` | `16` | sessions replayed into the primary at once |
/// | `startup_wait_ms` | `1000` | how long construction waits for the primary's first answer |
/// | `batch_keys_per_deadline` | `1000` | a batch call gets one `primary_timeout_ms` per this many keys |
/// | `tombstone_ttl_ms` | `86400000` | how long a replayed delete's tombstone lasts when the primary holds no session |
/// | `warm_entries` | `10000` | sessions kept from healthy traffic, readable and writable during an outage (0: off) |
/// | `warm_bytes` | `67108864` | bytes those may take (64 MiB) |
/// | `recovery_grace_ms` | `10000` | after a recovery, a session the primary holds no trace of is "can't tell", not absent (0: off) |
///
/// One field is not a configuration key: [`name`](Self::name), the store's name in its
/// metrics, set in code with [`with_name`](Self::with_name).
///
/// ```
/// let config: session_fallback::FallbackConfig =
///     serde_json::from_str(r#"{"primary_timeout_ms": 200}"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.failure_threshold, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// Consecutive temporary failures of the primary (errors for which
    /// [`Error::is_temporary`] holds, and the fallback's own timeouts) that
    /// open the circuit. Every failed call is failed over whatever this is;
    /// the threshold only decides when later calls stop trying the primary.
    /// Default `1`: the first failure opens the circuit.
    pub failure_threshold: u32,
    /// The deadline the fallback puts on every primary call, in milliseconds,
    /// on top of the primary's own timeouts: a primary that hangs fails over
    /// after this long. Set it a little above the primary's own timeout
    /// (Redis: `redis.timeout_ms`, default 250). Default `300`.
    pub primary_timeout_ms: u64,
    /// The first delay between probes of a down primary, in milliseconds.
    /// Default `100`.
    pub probe_min_ms: u64,
    /// The longest delay between probes, in milliseconds; the delay doubles
    /// from `probe_min_ms` up to this, with jitter. Default `5000`.
    pub probe_max_ms: u64,
    /// The most sessions the journal holds while waiting for replay. When it
    /// is full, a write or delete of a session not already in the journal is
    /// refused with [`Error::Unavailable`] (never acknowledged and then
    /// dropped); sessions already in the journal keep being accepted.
    /// Default `100000`.
    pub max_journal_keys: usize,
    /// How many sessions are replayed into the primary at once. Default `16`.
    pub replay_concurrency: usize,
    /// How long [`FallbackStore::new`](crate::FallbackStore::new) waits for
    /// the primary's first answer (a lazily connecting primary needs a few
    /// ms), in milliseconds, before it starts with the circuit open. With
    /// the primary up, the first request is then served by it. Default
    /// `1000`.
    pub startup_wait_ms: u64,
    /// Batch calls (`load_many`, `save_many`) get one `primary_timeout_ms`
    /// per started `batch_keys_per_deadline` keys, so that a large batch on
    /// a healthy primary is not cut off and failed over. Default `1000`.
    pub batch_keys_per_deadline: usize,
    /// How long the tombstone of a delete replayed into a primary that holds
    /// no session lasts, in milliseconds: at least as long as any session
    /// another instance might still replay (the longest TTL or lifetime
    /// cap). Default `86400000` (a day).
    pub tombstone_ttl_ms: u64,
    /// Sessions this instance served while the primary was healthy that it
    /// keeps a copy of (with the primary's versions), so that they stay
    /// readable and writable during an outage. At the bound the oldest go
    /// first, counted as evictions. `0` turns the copy off. Default `10000`.
    pub warm_entries: usize,
    /// The bytes the warm copy may take (keys, headers, payloads). Default
    /// `67108864` (64 MiB).
    pub warm_bytes: u64,
    /// How long after this instance's primary recovers from an outage (a circuit closes
    /// after replay) a load that the primary answers with neither a session nor its
    /// tombstone is answered as "can't tell" ([`Error::Unavailable`]) instead of absent,
    /// in milliseconds. Other instances cut off by the same outage may still hold
    /// sessions created during it in their journals: they reconnect within about
    /// `probe_max_ms` and then replay. Without the grace, such a session reads as absent
    /// here meanwhile, and an application that treats absent as "log in again" drops the
    /// user's cookie for good. A session known to be gone (deleted, with its tombstone in
    /// the primary) is still a miss. Set it above `probe_max_ms` plus the time a replay
    /// takes; `0` turns it off (a single instance needs none). Default `10000`.
    pub recovery_grace_ms: u64,
    /// The store's name in its metrics: the value of the label `store` on every
    /// `session_fallback_*` series ([`metric`](crate::metric)). Default `"fallback"`. Give
    /// each fallback store of a process its own name, or their series are one; use a short
    /// fixed name (the same as the `store` label of the
    /// `session_core::instrument::Instrumented` layer around it, if any), never a secret or
    /// anything per request.
    ///
    /// Not a configuration key (`fallback.name` is refused as unknown): set it with
    /// [`with_name`](Self::with_name).
    #[serde(skip, default = "default_name")]
    pub name: String,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            failure_threshold: 1,
            primary_timeout_ms: 300,
            probe_min_ms: 100,
            probe_max_ms: 5000,
            max_journal_keys: 100_000,
            replay_concurrency: 16,
            startup_wait_ms: 1000,
            batch_keys_per_deadline: 1000,
            tombstone_ttl_ms: 86_400_000,
            warm_entries: 10_000,
            warm_bytes: 64 << 20,
            recovery_grace_ms: 10_000,
            name: default_name(),
        }
    }
}

/// The default [`FallbackConfig::name`]: the fallback's backend name.
const DEFAULT_NAME: &str = crate::store::BACKEND;

fn default_name() -> String {
    DEFAULT_NAME.to_owned()
}

impl FallbackConfig {
    /// Sets [`name`](Self::name): the `store` label of this store's metrics.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`failure_threshold`](Self::failure_threshold).
    pub fn with_failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Sets [`primary_timeout_ms`](Self::primary_timeout_ms).
    pub fn with_primary_timeout(mut self, timeout: Duration) -> Self {
        self.primary_timeout_ms = millis(timeout);
        self
    }

    /// Sets [`probe_min_ms`](Self::probe_min_ms) and [`probe_max_ms`](Self::probe_max_ms).
    pub fn with_probe_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.probe_min_ms = millis(min);
        self.probe_max_ms = millis(max);
        self
    }

    /// Sets [`max_journal_keys`](Self::max_journal_keys).
    pub fn with_max_journal_keys(mut self, n: usize) -> Self {
        self.max_journal_keys = n;
        self
    }

    /// Sets [`replay_concurrency`](Self::replay_concurrency).
    pub fn with_replay_concurrency(mut self, n: usize) -> Self {
        self.replay_concurrency = n;
        self
    }

    /// Sets [`startup_wait_ms`](Self::startup_wait_ms).
    pub fn with_startup_wait(mut self, wait: Duration) -> Self {
        self.startup_wait_ms = millis(wait);
        self
    }

    /// Sets [`recovery_grace_ms`](Self::recovery_grace_ms) (`Duration::ZERO` turns it off).
    #[must_use]
    pub fn with_recovery_grace(mut self, grace: Duration) -> Self {
        self.recovery_grace_ms = millis(grace);
        self
    }

    /// The primary timeout as a [`Duration`].
    pub fn primary_timeout(&self) -> Duration {
        Duration::from_millis(self.primary_timeout_ms)
    }

    /// The deadline of a batch call of `keys` keys: one primary timeout per
    /// started [`batch_keys_per_deadline`](Self::batch_keys_per_deadline).
    pub fn batch_timeout(&self, keys: usize) -> Duration {
        let per = self.batch_keys_per_deadline.max(1);
        let parts = u32::try_from(keys.div_ceil(per).max(1)).unwrap_or(u32::MAX);
        self.primary_timeout().saturating_mul(parts)
    }

    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`] naming `fallback.<key>`.
    pub fn validate(&self) -> Result<()> {
        if self.failure_threshold == 0 {
            return Err(Error::config(
                "fallback.failure_threshold",
                "must be at least 1 (the number of consecutive primary failures that open the circuit)",
            ));
        }
        if !(1..=60_000).contains(&self.primary_timeout_ms) {
            return Err(Error::config(
                "fallback.primary_timeout_ms",
                format!(
                    "must be 1 to 60000 milliseconds, got {}; a few hundred ms is typical",
                    self.primary_timeout_ms
                ),
            ));
        }
        if !(1..=3_600_000).contains(&self.probe_min_ms) {
            return Err(Error::config(
                "fallback.probe_min_ms",
                format!("must be 1 to 3600000 milliseconds, got {}", self.probe_min_ms),
            ));
        }
        if self.probe_max_ms < self.probe_min_ms || self.probe_max_ms > 3_600_000 {
            return Err(Error::config(
                "fallback.probe_max_ms",
                format!(
                    "must be at least fallback.probe_min_ms ({}) and at most 3600000 milliseconds, got {}",
                    self.probe_min_ms, self.probe_max_ms
                ),
            ));
        }
        if self.max_journal_keys == 0 {
            return Err(Error::config(
                "fallback.max_journal_keys",
                "must be at least 1 (sessions that may wait for replay during an outage)",
            ));
        }
        if !(1..=1024).contains(&self.replay_concurrency) {
            return Err(Error::config(
                "fallback.replay_concurrency",
                format!("must be 1 to 1024, got {}", self.replay_concurrency),
            ));
        }
        if self.startup_wait_ms > 600_000 {
            return Err(Error::config(
                "fallback.startup_wait_ms",
                format!(
                    "must be at most 600000 milliseconds, got {}",
                    self.startup_wait_ms
                ),
            ));
        }
        if !(1..=MAX_TOMBSTONE_TTL_MS).contains(&self.tombstone_ttl_ms) {
            return Err(Error::config(
                "fallback.tombstone_ttl_ms",
                format!(
                    "must be 1 to {MAX_TOMBSTONE_TTL_MS} milliseconds (30 days), got {}",
                    self.tombstone_ttl_ms
                ),
            ));
        }
        if self.name.is_empty() {
            return Err(Error::config(
                "fallback.name",
                "must not be empty (the `store` label of this store's metrics; default \"fallback\")",
            ));
        }
        if self.recovery_grace_ms > 3_600_000 {
            return Err(Error::config(
                "fallback.recovery_grace_ms",
                format!(
                    "must be at most 3600000 milliseconds (an hour), got {}; a little above \
                     fallback.probe_max_ms is typical, 0 turns it off",
                    self.recovery_grace_ms
                ),
            ));
        }
        if self.batch_keys_per_deadline == 0 {
            return Err(Error::config(
                "fallback.batch_keys_per_deadline",
                "must be at least 1 (keys covered by one primary_timeout_ms in a batch call)",
            ));
        }
        Ok(())
    }
}

/// The longest tombstone lifetime accepted: 30 days.
const MAX_TOMBSTONE_TTL_MS: u64 = 30 * 86_400_000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn defaults_are_valid() {
        FallbackConfig::default().validate().unwrap();
    }

    #[test]
    fn empty_table_gives_defaults() {
        let c: FallbackConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, FallbackConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<FallbackConfig>(r#"{"primary_timeout": 5}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        // The metrics name is set in code, not read as `fallback.name`.
        let e = serde_json::from_str::<FallbackConfig>(r#"{"name": "eu"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert_eq!(FallbackConfig::default().name, "fallback");
        assert_eq!(FallbackConfig::default().with_name("eu").name, "eu");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases: Vec<(FallbackConfig, &str)> = vec![
            (
                FallbackConfig::default().with_failure_threshold(0),
                "fallback.failure_threshold",
            ),
            (
                FallbackConfig::default().with_primary_timeout(Duration::ZERO),
                "fallback.primary_timeout_ms",
            ),
            (
                FallbackConfig::default().with_primary_timeout(Duration::from_secs(61)),
                "fallback.primary_timeout_ms",
            ),
            (
                FallbackConfig::default().with_probe_backoff(Duration::ZERO, Duration::from_secs(1)),
                "fallback.probe_min_ms",
            ),
            (
                FallbackConfig::default().with_probe_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "fallback.probe_max_ms",
            ),
            (
                FallbackConfig::default().with_max_journal_keys(0),
                "fallback.max_journal_keys",
            ),
            (
                FallbackConfig::default().with_replay_concurrency(0),
                "fallback.replay_concurrency",
            ),
            (
                FallbackConfig::default().with_replay_concurrency(5000),
                "fallback.replay_concurrency",
            ),
            (FallbackConfig::default().with_name(""), "fallback.name"),
        ];
        for (config, key) in cases {
            match config.validate() {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected a Config error, got {other:?}"),
            }
        }
    }
}

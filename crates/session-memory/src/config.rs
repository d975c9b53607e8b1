//! [`MemoryConfig`]: bounds, sweep interval, the policy at the bound and tombstone mode.
//! The key prefix and the per-session size limit are shared settings, given to the store
//! as [`StoreOptions`](session_core::StoreOptions).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::{Error, Result, StoreOptions, MAX_ID_LEN, MAX_NAMESPACE_LEN};

/// Bytes charged per entry on top of its key (prefix included) and envelope
/// (52-byte header + payload), so that `max_bytes` tracks resident memory: an
/// entry really costs its key without the prefix, its payload and 60 to 80
/// bytes (its 16-byte table slot at the table's fill, one allocation's header,
/// ~25 bytes of compact metadata), measured at 200,000 and 1,000,000 entries —
/// about the envelope header plus this. Counted in
/// [`StoreStats::bytes`](session_core::StoreStats) and against
/// [`MemoryConfig::max_bytes`].
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

/// Default [`MemoryConfig::max_entries`]: one million sessions.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Default [`MemoryConfig::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Default [`MemoryConfig::sweep_interval_ms`]: one second.
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 1000;

/// Largest [`MemoryConfig::tombstone_ttl_ms`]: 30 days. A tombstone only has
/// to outlast the longest outage journal that may still be replayed.
pub const MAX_TOMBSTONE_TTL_MS: u64 = 30 * 24 * 3_600_000;

/// What a write does when it would take the store past `max_entries` or `max_bytes`.
///
/// Either way, expired entries are reclaimed first; the policy only decides
/// what happens when the store is full of live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AtCapacity {
    /// Evict live sessions to make room: of a sample of entries (the target
    /// shard first, then other shards), the one whose deadline is soonest, as
    /// Redis' `volatile-ttl` does. Counted in `StoreStats::evicted`. The default.
    #[default]
    EvictSoonestExpiring,
    /// Refuse the write with [`Error::Full`], keeping every stored session.
    /// Counted in `StoreStats::rejected`.
    Reject,
}

/// Settings of a [`MemoryStore`](crate::MemoryStore). Field names are the
/// configuration keys under `memory.`.
///
/// Every field has a default, so an empty section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Most sessions stored at once, expired-but-unreclaimed ones included.
    /// Default 1,000,000 ([`DEFAULT_MAX_ENTRIES`]). At least 1.
    pub max_entries: u64,
    /// Most bytes stored at once, counted per entry as key length + envelope
    /// length + [`ENTRY_OVERHEAD_BYTES`]. Default 1 GiB ([`DEFAULT_MAX_BYTES`]).
    /// Must hold at least one session of the shared `max_session_bytes` under
    /// the longest key.
    pub max_bytes: u64,
    /// How often the background sweeper reclaims expired entries, in
    /// milliseconds. Default 1000. At least 1.
    pub sweep_interval_ms: u64,
    /// `evict_soonest_expiring` (default) or `reject`.
    pub at_capacity: AtCapacity,
    /// Tombstone mode, in milliseconds; `0` (the default) turns it off.
    ///
    /// When on, [`delete`](session_core::SessionStore::delete) leaves a
    /// tombstone instead of removing the session, so that another instance's
    /// replayed write cannot bring it back
    /// ([`reconcile`](session_core::SessionStore::reconcile)), and
    /// [`keeps_tombstones`](session_core::SessionStore::keeps_tombstones) is
    /// `true`. The tombstone lasts as long as the deleted session would have;
    /// a delete of a key holding no session leaves one lasting this long. At
    /// most [`MAX_TOMBSTONE_TTL_MS`] (30 days).
    pub tombstone_ttl_ms: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            sweep_interval_ms: DEFAULT_SWEEP_INTERVAL_MS,
            at_capacity: AtCapacity::default(),
            tombstone_ttl_ms: 0,
        }
    }
}

impl MemoryConfig {
    /// Sets [`max_entries`](Self::max_entries).
    pub fn with_max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`sweep_interval_ms`](Self::sweep_interval_ms).
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets [`at_capacity`](Self::at_capacity).
    pub fn with_at_capacity(mut self, at_capacity: AtCapacity) -> Self {
        self.at_capacity = at_capacity;
        self
    }

    /// Turns tombstone mode on, a delete of a key holding no session leaving
    /// a tombstone that lasts `ttl` (see
    /// [`tombstone_ttl_ms`](Self::tombstone_ttl_ms)). [`Duration::ZERO`]
    /// turns it off; a non-zero `ttl` under a millisecond counts as one.
    pub fn with_tombstones(mut self, ttl: Duration) -> Self {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.tombstone_ttl_ms = if ms == 0 && !ttl.is_zero() { 1 } else { ms };
        self
    }

    /// Whether tombstone mode is on ([`tombstone_ttl_ms`](Self::tombstone_ttl_ms) > 0).
    pub fn keeps_tombstones(&self) -> bool {
        self.tombstone_ttl_ms > 0
    }

    /// The smallest `max_bytes` accepted with these shared settings: one
    /// session of `max_session_bytes` under the longest possible key, plus the
    /// overhead.
    pub fn min_max_bytes(options: &StoreOptions) -> u64 {
        let longest_key = options.key_prefix().as_str().len() + MAX_NAMESPACE_LEN + 1 + MAX_ID_LEN;
        (options.max_session_bytes() as u64)
            .saturating_add(longest_key as u64)
            .saturating_add(ENTRY_OVERHEAD_BYTES)
    }

    /// Checks every value against the shared settings the store is built
    /// with, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, e.g. `memory.max_entries`.
    pub fn validate(&self, options: &StoreOptions) -> Result<()> {
        if self.max_entries == 0 {
            return Err(Error::config("memory.max_entries", "must be at least 1"));
        }
        let min = Self::min_max_bytes(options);
        if self.max_bytes < min {
            return Err(Error::config(
                "memory.max_bytes",
                format!(
                    "is {} but must be at least {min}: one session of max_session_bytes ({}) \
                     under the longest key, plus {ENTRY_OVERHEAD_BYTES} bytes of overhead; \
                     raise memory.max_bytes or lower max_session_bytes",
                    self.max_bytes,
                    options.max_session_bytes()
                ),
            ));
        }
        if self.sweep_interval_ms == 0 {
            return Err(Error::config(
                "memory.sweep_interval_ms",
                "must be at least 1 millisecond",
            ));
        }
        if self.tombstone_ttl_ms > MAX_TOMBSTONE_TTL_MS {
            return Err(Error::config(
                "memory.tombstone_ttl_ms",
                format!(
                    "is {} but must be at most {MAX_TOMBSTONE_TTL_MS} (30 days), or 0 to keep no tombstones",
                    self.tombstone_ttl_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: Error) -> String {
        match e {
            Error::Config { key, .. } => key,
            other => panic!("expected Config, got {other}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        MemoryConfig::default()
            .validate(&StoreOptions::default())
            .unwrap();
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let d = MemoryConfig::default;
        let cases = [
            (d().with_max_entries(0), "memory.max_entries"),
            (d().with_max_bytes(1000), "memory.max_bytes"),
            (
                d().with_sweep_interval(Duration::ZERO),
                "memory.sweep_interval_ms",
            ),
            (
                d().with_tombstones(Duration::from_millis(MAX_TOMBSTONE_TTL_MS + 1)),
                "memory.tombstone_ttl_ms",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(
                key_of(config.validate(&StoreOptions::default()).unwrap_err()),
                key
            );
        }
    }

    #[test]
    fn tombstone_mode_is_off_by_default_and_set_by_the_builder() {
        let d = MemoryConfig::default;
        assert!(!d().keeps_tombstones());
        let on = d().with_tombstones(Duration::from_secs(600));
        assert_eq!(on.tombstone_ttl_ms, 600_000);
        assert!(on.keeps_tombstones());
        on.validate(&StoreOptions::default()).unwrap();
        assert_eq!(d().with_tombstones(Duration::from_micros(10)).tombstone_ttl_ms, 1);
        assert!(!on.with_tombstones(Duration::ZERO).keeps_tombstones());
        d().with_tombstones(Duration::from_millis(MAX_TOMBSTONE_TTL_MS))
            .validate(&StoreOptions::default())
            .unwrap();
        let parsed: MemoryConfig = serde_json::from_str(r#"{"tombstone_ttl_ms": 5000}"#).unwrap();
        assert_eq!(parsed.tombstone_ttl_ms, 5000);
    }
}

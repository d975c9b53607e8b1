//! Expiry policies: absolute and sliding, with an optional lifetime cap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::envelope::Meta;
use crate::version::Version;

/// The default time to live: one hour.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Milliseconds since the Unix epoch by the system clock (`0` before 1970).
/// Without `as_millis`' 128-bit arithmetic: it runs on every operation.
#[inline]
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How a session's deadline moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ExpiryMode {
    /// Every write sets the deadline to now + TTL; reads do not move it.
    #[default]
    Absolute,
    /// Every write and every load moves the deadline to now + TTL (the idle
    /// timeout), never past created-at + max lifetime.
    Sliding,
}

/// When sessions of one namespace expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Absolute or sliding.
    pub mode: ExpiryMode,
    /// The TTL (absolute) or idle timeout (sliding).
    pub ttl: Duration,
    /// The longest a session may live from its creation, whatever the mode.
    pub max_lifetime: Option<Duration>,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        ExpiryPolicy::absolute(DEFAULT_TTL)
    }
}

impl ExpiryPolicy {
    /// Absolute expiry with the given TTL and no lifetime cap.
    pub fn absolute(ttl: Duration) -> Self {
        ExpiryPolicy {
            mode: ExpiryMode::Absolute,
            ttl,
            max_lifetime: None,
        }
    }

    /// Sliding expiry with the given idle timeout, capped at `max_lifetime`.
    pub fn sliding(idle: Duration, max_lifetime: Duration) -> Self {
        ExpiryPolicy {
            mode: ExpiryMode::Sliding,
            ttl: idle,
            max_lifetime: Some(max_lifetime),
        }
    }

    /// Metadata for a write at `now_ms` of a session that may be new.
    ///
    /// Stores keep `created_at` and `max_expires_at` of a session that already
    /// exists, so the lifetime cap counts from the first write.
    pub fn meta_for_write(&self, now_ms: u64) -> Meta {
        let max_expires_at = self
            .max_lifetime
            .map_or(0, |m| now_ms.saturating_add(ms(m)).max(1));
        Meta {
            version: Version::NONE,
            created_at: now_ms,
            updated_at: now_ms,
            expires_at: now_ms.saturating_add(ms(self.ttl)),
            max_expires_at,
        }
    }

    /// For a sliding policy, the deadline a load at `now_ms` should move the
    /// session to, or `None` when it should not be touched: absolute mode, or
    /// less than a tenth of the idle timeout has passed since the deadline was
    /// last set (saving a write per load costs at most 10% of the idle time).
    pub fn slide(&self, meta: &Meta, now_ms: u64) -> Option<u64> {
        if self.mode != ExpiryMode::Sliding {
            return None;
        }
        let idle = ms(self.ttl);
        let target = crate::envelope::cap_deadline(now_ms.saturating_add(idle), meta.max_expires_at);
        let current = meta.deadline();
        if target > current && target - current >= idle / 10 {
            Some(target)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_meta() {
        let p = ExpiryPolicy::absolute(Duration::from_secs(10));
        let m = p.meta_for_write(1000);
        assert_eq!(m.expires_at, 11_000);
        assert_eq!(m.max_expires_at, 0);
        assert_eq!(p.slide(&m, 5000), None);
    }

    #[test]
    fn sliding_moves_and_caps() {
        let p = ExpiryPolicy::sliding(Duration::from_secs(10), Duration::from_secs(15));
        let m = p.meta_for_write(0);
        assert_eq!(m.expires_at, 10_000);
        assert_eq!(m.max_expires_at, 15_000);
        assert_eq!(p.slide(&m, 500), None, "too soon to touch");
        assert_eq!(p.slide(&m, 3000), Some(13_000));
        assert_eq!(p.slide(&m, 9000), Some(15_000));
        let capped = Meta {
            expires_at: 15_000,
            ..m
        };
        assert_eq!(p.slide(&capped, 9000), None);
    }
}

//! The recovery grace: for a while after this instance's primary recovers from an outage, a
//! load that the primary answers with no trace of the session (neither the session nor its
//! tombstone) is "can't tell", not absent.
//!
//! Other instances cut off by the same outage journaled their own writes, and replay them
//! when they reconnect, which may be up to a probe interval later than this one. Meanwhile a
//! session created there during the outage is in no primary. Answering "absent" here would
//! let an application drop the user's cookie for good; answering "can't tell" makes it retry
//! (HTTP 503) until the other instance has replayed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::backend::{Entry, Record};
use session_core::{Error, Result, SessionKey, SessionStore};

use crate::state::Field;
use crate::store::{Inner, BACKEND};

/// When the current grace window ends, if one is open.
pub(crate) struct Grace {
    /// The window's length; zero: never open.
    window: Duration,
    /// The instant the offsets count from.
    base: Instant,
    /// The window's end, in ms after `base`; 0 while none was opened.
    until_ms: AtomicU64,
}

impl Grace {
    pub(crate) fn new(window: Duration) -> Self {
        Grace {
            window,
            base: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Opens (or extends) the window: a circuit has just closed.
    pub(crate) fn start(&self) {
        if self.window.is_zero() {
            return;
        }
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let until = self.now_ms().saturating_add(window).max(1);
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a window is open now (one atomic load while none was ever opened).
    pub(crate) fn open(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// A load answered `None` during the grace: asks the primary whether the session is known
    /// to be gone (a tombstone: a miss) or not known at all ("can't tell"). A key that this
    /// instance journaled, or whose partition is open, was answered by the outage path, which
    /// knows: its answer stands.
    pub(crate) async fn miss_in_grace(&self, key: &SessionKey) -> Result<Option<Record>> {
        if self.open_for(key) || self.journal.get(key).is_some() {
            return Ok(None);
        }
        match self.on_primary("load", self.primary.load_entry(key)).await? {
            Some(Entry::Live(record)) => Ok(Some(record)),
            Some(Entry::Tombstone(_)) => Ok(None),
            None => {
                self.counters.inc(Field::RecoveryUnknown);
                Err(self.not_known_after_recovery(key))
            }
        }
    }

    /// `load_entry`: the primary's answer while it is healthy (a miss within the grace is
    /// "can't tell", as for `load`); otherwise `load`'s answer, which cannot tell a tombstone
    /// from nothing.
    pub(crate) async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        if self.fast_path() {
            match self.on_primary("load", self.primary.load_entry(key)).await {
                Err(e) if e.is_temporary() => self.primary_failed(Some(self.primary.partition(key)), &e),
                Ok(None) if self.grace.open() => {
                    self.counters.inc(Field::RecoveryUnknown);
                    return Err(self.not_known_after_recovery(key));
                }
                other => {
                    self.primary_answered(key);
                    return other;
                }
            }
        }
        let found = match self.exec(key, crate::ops::Load).await {
            Ok(None) if self.grace.open() => self.miss_in_grace(key).await,
            other => other,
        };
        Ok(found?.map(Entry::Live))
    }

    /// [`miss_in_grace`](Self::miss_in_grace) for each miss of a batch, in place.
    pub(crate) async fn misses_in_grace(&self, keys: &[SessionKey], found: &mut [Result<Option<Record>>]) {
        for (key, slot) in keys.iter().zip(found.iter_mut()) {
            if matches!(slot, Ok(None)) {
                *slot = self.miss_in_grace(key).await;
            }
        }
    }

    fn not_known_after_recovery(&self, key: &SessionKey) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the {} primary has just recovered from an outage and holds no {} session under \
                 this id, but another instance cut off by the same outage may still be replaying \
                 it from its journal, so whether it exists is unknown; retry in a few seconds \
                 (fallback.recovery_grace_ms)",
                self.primary.backend(),
                key.ns()
            ),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_window_never_opens() {
        let g = Grace::new(Duration::ZERO);
        g.start();
        assert!(!g.open());
    }

    #[test]
    fn a_window_opens_on_start_and_closes_after_its_length() {
        let g = Grace::new(Duration::from_millis(50));
        assert!(!g.open(), "closed until a recovery");
        g.start();
        assert!(g.open());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!g.open());
    }
}

//! [`Clock`]: where a store or a typed handle reads the time, so tests can
//! skew it or move it by hand instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait TimeSource: Send + Sync + fmt::Debug + 'static {
    /// The time now, ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The time as one component sees it: the system clock (the default), the
/// system clock shifted by an offset (a host whose clock is off), or a
/// [`ManualClock`] moved by a test. Cheap to clone.
///
/// Which clock decides what is documented with each store: the memory store
/// judges expiry by its `Clock`, Redis by the server's own clock, and
/// [`Sessions`](crate::Sessions) computes the deadlines it asks for with its
/// `Clock`.
#[derive(Clone, Default)]
pub struct Clock {
    source: Option<Arc<dyn TimeSource>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { source: None }
    }

    /// A clock reading from `source`.
    pub fn from_source(source: Arc<dyn TimeSource>) -> Clock {
        Clock { source: Some(source) }
    }

    /// The system clock shifted by `offset_ms` (positive: ahead). For tests
    /// of hosts whose clocks disagree.
    pub fn offset(offset_ms: i64) -> Clock {
        Clock::from_source(Arc::new(Offset(AtomicI64::new(offset_ms))))
    }

    /// A clock that stands still at `start_ms` until the returned handle moves it.
    pub fn manual(start_ms: u64) -> (Clock, ManualClock) {
        let handle = ManualClock(Arc::new(AtomicU64::new(start_ms)));
        (Clock::from_source(Arc::new(handle.clone())), handle)
    }

    /// The time now, ms since the Unix epoch.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match &self.source {
            None => crate::expiry::now_ms(),
            Some(source) => source.now_ms(),
        }
    }

    /// Whether this is the plain system clock.
    pub fn is_system(&self) -> bool {
        self.source.is_none()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            None => f.write_str("Clock(system)"),
            Some(source) => write!(f, "Clock({source:?})"),
        }
    }
}

/// The system clock plus a fixed offset.
#[derive(Debug)]
struct Offset(AtomicI64);

impl TimeSource for Offset {
    fn now_ms(&self) -> u64 {
        let now = crate::expiry::now_ms();
        let offset = self.0.load(Ordering::Relaxed);
        if offset >= 0 {
            now.saturating_add(offset.unsigned_abs())
        } else {
            now.saturating_sub(offset.unsigned_abs())
        }
    }
}

/// The handle of a clock made by [`Clock::manual`]: it moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Sets the time, ms since the Unix epoch.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(ms)));
    }

    /// The time it shows.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TimeSource for ManualClock {
    fn now_ms(&self) -> u64 {
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_and_offset_clocks() {
        let (clock, hand) = Clock::manual(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        hand.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        hand.set(5);
        assert_eq!(clock.clone().now_ms(), 5);

        let ahead = Clock::offset(2_000).now_ms();
        let now = Clock::system().now_ms();
        assert!(ahead >= now + 1_900 && ahead <= now + 2_100, "{ahead} vs {now}");
        let behind = Clock::offset(-2_000).now_ms();
        assert!(
            behind + 1_900 <= now && behind + 2_100 >= now,
            "{behind} vs {now}"
        );
        assert!(Clock::default().is_system());
    }
}

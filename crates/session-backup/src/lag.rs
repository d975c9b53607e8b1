//! The backup lag: how long changes waited between the primary's acknowledgement and their
//! flush into the backup, over the last few thousand flushed changes.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples kept.
const WINDOW: usize = 4096;

/// The last flushed changes' waits, ms.
#[derive(Debug, Default)]
pub(crate) struct Lag {
    samples: VecDeque<u64>,
}

impl Lag {
    pub(crate) fn add(&mut self, waited: Duration) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples
            .push_back(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
    }

    /// The median and the 99th percentile, ms (0 before any flush).
    pub(crate) fn percentiles(&self) -> (u64, u64) {
        if self.samples.is_empty() {
            return (0, 0);
        }
        let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[i.min(sorted.len() - 1)]
        };
        (at(0.5), at(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_the_window() {
        let mut lag = Lag::default();
        assert_eq!(lag.percentiles(), (0, 0));
        for ms in 1..=100 {
            lag.add(Duration::from_millis(ms));
        }
        assert_eq!(lag.percentiles(), (51, 99));
        for _ in 0..WINDOW {
            lag.add(Duration::from_millis(7));
        }
        assert_eq!(lag.percentiles(), (7, 7));
    }
}

//! Small helpers the fault scenarios share: latency percentiles and a deterministic
//! generator for operation mixes.

use std::time::Duration;

/// The `fraction` (0.0 to 1.0) percentile of latencies, nearest rank, in milliseconds; `0.0`
/// for none. Sorts a copy, so the input's order does not matter.
pub fn percentile_ms(latencies: &[Duration], fraction: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    nearest_rank(&sorted, fraction).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The `fraction` (0.0 to 1.0) percentile of already sorted figures, nearest rank; `None` for
/// none.
pub fn nearest_rank<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    let rank = (sorted.len() as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// xorshift64*: a small deterministic generator for picking operations and keys (not for
/// anything that must be unpredictable).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (a zero seed is replaced: xorshift would stay at zero).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let lat = ms(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
        assert_eq!(percentile_ms(&lat, 0.5), 5.0);
        assert_eq!(percentile_ms(&lat, 0.99), 10.0);
        assert_eq!(percentile_ms(&lat, 1.0), 10.0);
        assert_eq!(percentile_ms(&lat, 0.0), 1.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
        assert_eq!(nearest_rank(&[1u32, 2, 3, 4], 0.5), Some(2));
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);
    }

    #[test]
    fn the_generator_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(10) < 10);
            b.below(10);
        }
        assert_eq!(Rng::new(0).below(0), 0);
    }
}

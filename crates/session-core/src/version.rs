//! [`Version`]: the opaque write token every stored session carries.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// An opaque token naming one write of a session.
///
/// Every write stores a new token; `save_if` compares tokens for equality
/// and for nothing else. Tokens are 64 random bits: unique across processes,
/// across incarnations of one id (delete, then create again) and across
/// outages, so a token read from one write never matches another write (no
/// ABA). They carry no order: a larger token is not a newer write.
///
/// Shown as 16 lowercase hex digits (`Display`, HTTP ETags) and parsed back
/// with [`FromStr`]. [`Version::NONE`] (all zeros) is never stored: a record
/// handed to a store with it gets a fresh token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Version(u64);

impl Version {
    /// "No version yet": a store gives a record with this version a fresh token.
    pub const NONE: Version = Version(0);

    /// A fresh token, never [`Version::NONE`].
    ///
    /// Within one process no two calls return the same token (a bijection of
    /// a counter); across processes the counter starts at a random point
    /// drawn from the OS, so two processes collide with probability ~2⁻⁶⁴
    /// per pair of writes to one session.
    pub fn generate() -> Version {
        loop {
            let state = counter().fetch_add(GOLDEN_GAMMA, Ordering::Relaxed);
            let v = mix(state.wrapping_add(GOLDEN_GAMMA));
            if v != 0 {
                return Version(v);
            }
        }
    }

    /// The token as stored in the envelope header.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// A token from its stored form (an envelope header, a journal).
    #[inline]
    pub const fn from_u64(raw: u64) -> Version {
        Version(raw)
    }

    /// Whether this is [`Version::NONE`].
    #[inline]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// `self`, or a fresh token if `self` is [`Version::NONE`].
    #[inline]
    pub fn or_generate(self) -> Version {
        if self.is_none() {
            Version::generate()
        } else {
            self
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:016x})", self.0)
    }
}

/// A string that is not a version: 1 to 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseVersionError;

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a session version: expected 1 to 16 hexadecimal digits")
    }
}

impl std::error::Error for ParseVersionError {}

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseVersionError);
        }
        u64::from_str_radix(s, 16)
            .map(Version)
            .map_err(|_| ParseVersionError)
    }
}

/// The splitmix64 increment (2⁶⁴ / φ, odd): the counter visits every value once per 2⁶⁴ steps.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The process-wide counter, started at a random point.
fn counter() -> &'static AtomicU64 {
    static COUNTER: OnceLock<AtomicU64> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let mut seed = [0u8; 8];
        // Without OS randomness, fall back to time and pid: still distinct per process in practice.
        if getrandom::fill(&mut seed).is_err() {
            let t = crate::expiry::now_ms() ^ (u64::from(std::process::id()) << 32);
            seed = mix(t).to_le_bytes();
        }
        AtomicU64::new(u64::from_le_bytes(seed))
    })
}

/// splitmix64's finalizer: a bijection on `u64` that spreads a counter over all bits.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fresh_tokens_are_distinct_and_never_none() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let v = Version::generate();
            assert!(!v.is_none());
            assert!(seen.insert(v), "a token repeated");
        }
    }

    #[test]
    fn display_and_parse_round_trip() {
        let v = Version::from_u64(0x00ab_cdef_0123_4567);
        assert_eq!(v.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<Version>().unwrap(), v);
        assert_eq!("7".parse::<Version>().unwrap(), Version::from_u64(7));
        for bad in ["", "x", "0x12", "12345678901234567", " 1", "-1"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn or_generate_keeps_a_token() {
        let v = Version::from_u64(5);
        assert_eq!(v.or_generate(), v);
        assert!(!Version::NONE.or_generate().is_none());
    }
}

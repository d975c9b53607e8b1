//! Outage versions: how the versions of sessions served by the secondary are
//! kept apart from the primary's.
//!
//! The secondary counts versions from `1` each time a session enters the
//! journal, so its numbers overlap the primary's. Handing them out as they are
//! would let a compare-and-set with a stale version from one store succeed on
//! a different value in the other (an ABA lost update). So a version read from
//! or written to the secondary is reported as an *outage version*: the top bit
//! set, then 31 bits of the key's journal generation (fresh each time the key
//! enters the journal), then the secondary's 32-bit counter. A `save_if` is
//! passed on to the secondary only with an outage version of the key's current
//! generation; any other version is a [`Conflict`](session_core::Error::Conflict).
//! After replay the primary counts on from its own version, which is far below
//! any outage version, so a client holding an outage version gets `Conflict`
//! and reloads.

/// The bit set in every outage version.
pub const OUTAGE_VERSION_BIT: u64 = 1 << 63;

const GENERATION_MASK: u64 = (1 << 31) - 1;
const COUNTER_MASK: u64 = (1 << 32) - 1;

/// The outage version reported for the secondary's `version` of a key in its
/// journal `generation`.
pub(crate) fn outward(generation: u64, version: u64) -> u64 {
    OUTAGE_VERSION_BIT | ((generation & GENERATION_MASK) << 32) | (version & COUNTER_MASK)
}

/// The secondary's version for an outage version the caller holds, if it is
/// one of this generation.
pub(crate) fn inward(generation: u64, version: u64) -> Option<u64> {
    let matches = version & OUTAGE_VERSION_BIT != 0
        && (version >> 32) & GENERATION_MASK == generation & GENERATION_MASK;
    matches.then_some(version & COUNTER_MASK)
}

/// Whether a version is an outage version.
pub fn is_outage_version(version: u64) -> bool {
    version & OUTAGE_VERSION_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_a_generation_only() {
        let v = outward(7, 3);
        assert!(is_outage_version(v));
        assert_eq!(inward(7, v), Some(3));
        assert_eq!(inward(8, v), None);
        assert_eq!(inward(7, 3), None, "a primary version is not an outage version");
        assert!(outward(7, 4) > v);
        assert!(!is_outage_version(3));
    }
}

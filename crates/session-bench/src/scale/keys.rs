//! The keys of the curve's sessions: session number `i`'s id, derived from `i`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use session_core::{Namespace, SessionId, SessionKey};

const SEED: u64 = 0x5345_5353_494f_4e53;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The id of session number `i`: 128 bits derived from `i` (distinct for every `i`: the first
/// 64 are a bijection of it), in base64url without padding, 22 characters as a generated id.
pub(super) fn id_for(i: usize) -> SessionId {
    let a = splitmix(SEED ^ i as u64);
    let b = splitmix(a ^ SEED.rotate_left(17));
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&a.to_le_bytes());
    raw[8..].copy_from_slice(&b.to_le_bytes());
    let id = URL_SAFE_NO_PAD.encode(raw);
    SessionId::parse(&id).unwrap_or_else(|e| panic!("a derived id is invalid: {e}"))
}

pub(super) fn key_for(namespace: &Namespace, i: usize) -> SessionKey {
    SessionKey::new(namespace.clone(), id_for(i))
}

#[cfg(test)]
mod tests {
    use super::id_for;

    #[test]
    fn derived_ids_are_valid_distinct_and_stable() {
        let a: Vec<String> = (0..1000).map(|i| id_for(i).as_str().to_owned()).collect();
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(a.iter().all(|id| id.len() == 22));
        assert_eq!(id_for(7).as_str(), a[7]);
    }
}

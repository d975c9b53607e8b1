//! Shared by the test targets: fixed test secrets (base64 of 32 bytes each) and the
//! configurations several targets run.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different part of this module"
)]

use session_secure::{Secret, SecureConfig};

/// A hashing secret.
pub const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// The hashing secret that replaces [`SECRET`].
pub const NEW_SECRET: &str = "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=";
/// A hashing secret used before [`SECRET`].
pub const OLD_SECRET: &str = "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ=";
/// Encryption key 1.
pub const KEY_1: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
/// Encryption key 2.
pub const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3bzI=";

/// Ids hashed and payloads sealed: what a service runs with.
pub fn both() -> SecureConfig {
    SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1)])
}

/// Both on, with every transition setting: an older secret read, plain ids read, plaintext
/// accepted, two keys.
pub fn transition() -> SecureConfig {
    let mut c = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1), (2, KEY_2)]);
    c.hashed_ids.previous_secrets = vec![Secret::new(OLD_SECRET)];
    c.hashed_ids.read_plain_ids = true;
    c.encryption.accept_plaintext = true;
    c
}

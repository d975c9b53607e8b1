#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod hashing;
mod keyring;
mod layout;
mod revoke;
mod rotate;
mod secret;
mod session_store;
mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use config::{EncryptionConfig, HashedIdsConfig, KeyEntry, SecureConfig};
pub use hashing::{HASHED_ID_LEN, MIN_SECRET_BYTES};
pub use keyring::{Keyring, INDEX_KEY_ID, KEY_BYTES, SEAL_OVERHEAD};
pub use secret::Secret;
pub use store::SecureStore;

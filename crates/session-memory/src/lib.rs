#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod compact;
mod config;
mod entry;
mod room;
mod session_store;
mod shard;
mod store;
mod sweeper;
mod table;
#[cfg(feature = "testing")]
mod testing;

pub use config::{
    AtCapacity, MemoryConfig, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_SWEEP_INTERVAL_MS,
    ENTRY_OVERHEAD_BYTES, MAX_TOMBSTONE_TTL_MS,
};
pub use store::MemoryStore;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use testing::MemoryHarness;

#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Without a driver feature the crate holds only its configuration.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod apply;
mod config;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod db;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod error;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod ops;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod statements;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod store;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sweeper;
#[cfg(all(feature = "testing", any(feature = "postgres", feature = "sqlite")))]
mod testing;

pub use config::{
    SqlConfig, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_POOL_SIZE, DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_INTERVAL_MS,
    DEFAULT_TABLE, DEFAULT_TIMEOUT_MS, MAX_TABLE_LEN, MAX_TOMBSTONE_TTL_MS,
};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use store::SqlStore;

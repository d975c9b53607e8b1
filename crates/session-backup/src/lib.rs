#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod copy;
mod flusher;
mod lag;
mod queue;
mod restore;
mod revoke;
mod session_store;
mod snapshot;
mod store;
mod writes;

pub use config::{
    BackupConfig, DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_MAX_PENDING, DEFAULT_MAX_RETRY_MS,
    DEFAULT_WRITE_TIMEOUT_MS,
};
pub use copy::{copy_sessions, CopyMode, CopyOptions, CopyProgress};
pub use snapshot::{read_snapshot, write_snapshot, SnapshotReport};
pub use store::{BackupStats, BackupStore};

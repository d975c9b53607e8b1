//! Core of the session storage family: session ids, keys, the versioned
//! envelope, codecs, expiry, the [`SessionStore`] trait, the typed
//! [`Sessions<T>`] handle, errors and (feature `testing`) the conformance
//! suite every backend runs.
//!
//! This crate depends on no backend. Backends (`session-memory`,
//! `session-redis`, `session-fallback`) implement [`SessionStore`]; the
//! `session-store` facade builds one from configuration.
//!
//! # Example
//!
//! A store deals in [`Record`]s; [`Sessions<T>`] adds your type, a codec, the
//! expiry policy and the size limit:
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{CoreConfig, SessionStore};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct TaskSession { task_id: String, state: String }
//!
//! async fn handler(store: Arc<dyn SessionStore>) -> session_core::Result<()> {
//!     let config = CoreConfig::default();
//!     let tasks = config.sessions::<TaskSession>(store, "task")?;
//!     let (id, meta) = tasks
//!         .create(&TaskSession { task_id: "t1".into(), state: "new".into() })
//!         .await?;
//!     assert_eq!(meta.version, 1);
//!     // Compare-and-set: fails with Error::Conflict if someone wrote in between.
//!     tasks
//!         .save_if(&id, meta.version, &TaskSession { task_id: "t1".into(), state: "done".into() })
//!         .await?;
//!     let new_id = tasks.rotate(&id).await?; // after login: fixation defence
//!     assert!(tasks.load(&id).await?.is_none());
//!     assert!(tasks.delete(&new_id).await?);
//!     Ok(())
//! }
//! ```
//!
//! # Implementing a store
//!
//! Implement [`SessionStore`] following its `# Contract`, then run the
//! conformance suite against it with `conformance_tests!`
//! (feature `testing`). [`next_meta`] and [`check_size`] hold the rules every
//! backend shares.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod config;
mod envelope;
mod error;
mod expiry;
mod id;
mod key;
mod store;
mod typed;

#[cfg(feature = "instrument")]
pub mod instrument;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "bincode")]
pub use codec::Bincode;
#[cfg(feature = "json")]
pub use codec::Json;
pub use codec::{decode_payload, Codec, CodecId, CodecKind};
pub use config::{CoreConfig, NamespaceConfig, DEFAULT_SLIDING_MAX_LIFETIME};
pub use envelope::{
    cap_deadline, decode_header, Meta, Record, CREATED_AT_OFFSET, EXPIRES_AT_OFFSET, FORMAT_VERSION,
    HEADER_LEN, MAGIC, MAX_EXPIRES_AT_OFFSET, UPDATED_AT_OFFSET, VERSION_OFFSET,
};
pub use error::{BoxError, Error, ErrorClass, ErrorKind, Result};
pub use expiry::{now_ms, ExpiryMode, ExpiryPolicy, DEFAULT_TTL};
pub use id::{SessionId, MAX_ID_LEN, MIN_ID_LEN};
pub use key::{KeyPrefix, Namespace, SessionKey, DEFAULT_KEY_PREFIX, MAX_NAMESPACE_LEN, MAX_PREFIX_LEN};
pub use store::{
    check_size, next_meta, Health, HealthStatus, SessionStore, StoreStats, DEFAULT_MAX_SESSION_BYTES,
};
pub use typed::{Session, Sessions};

pub use async_trait::async_trait;
pub use bytes::Bytes;

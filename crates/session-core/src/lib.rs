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
//! A store deals in records; [`Sessions<T>`] adds your type, a codec, the
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
//!     let mut task = tasks
//!         .create(TaskSession { task_id: "t1".into(), state: "new".into() })
//!         .await?;
//!     // Compare-and-set: fails with Error::Conflict if someone wrote in between.
//!     task.value.state = "done".into();
//!     tasks.save_if(&mut task).await?;
//!     let new_id = tasks.rotate(&task.id).await?; // after login: fixation defence
//!     assert!(tasks.load(&task.id).await?.is_none());
//!     assert!(tasks.delete(&new_id).await?);
//!     Ok(())
//! }
//! ```
//!
//! # Log out everywhere
//!
//! Bind a session to its user at login; end every session of that user at once later
//! (after a password change, a stolen device), on every instance and every backend:
//!
//! ```
//! # use std::sync::Arc;
//! # async fn login(store: Arc<dyn session_core::SessionStore>) -> session_core::Result<()> {
//! use session_core::{Namespace, Principal, Sessions};
//!
//! let web: Sessions<String> = Sessions::new(store, Namespace::new("web")?);
//! let alice = Principal::new("user-42")?;
//! let mut session = web.create("signed in".to_owned()).await?;
//! web.bind(&mut session, &alice).await?;         // listed and revocable from now on
//! assert_eq!(web.list(&alice).await?.len(), 1); // "your devices"
//! assert_eq!(web.revoke_all(&alice).await?.ended, 1); // log out everywhere
//! assert!(web.load(&session.id).await?.is_none());
//! # Ok(()) }
//! ```
//!
//! # What users call and what backends implement
//!
//! The crate root holds what an application uses: [`Sessions<T>`] and
//! [`Session<T>`], ids, namespaces, [`Version`], [`Meta`], errors,
//! configuration, the [`Clock`], and the [`SessionStore`] trait it holds as
//! `Arc<dyn SessionStore>`. A backend implements [`SessionStore`] with what
//! [`backend`] holds: [`backend::Record`], the envelope's layout and the
//! rules every store shares ([`backend::stamp`], [`backend::check_size`]),
//! and [`backend::Partition`] for a store made of parts that fail
//! independently (a Redis Cluster's nodes: see the trait's **Partitions**).
//! It follows the trait's `# Contract` and runs the conformance suite
//! against itself with `conformance_tests!` (feature `testing`).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod clock;
mod codec;
mod config;
mod envelope;
mod error;
mod expiry;
mod id;
mod key;
mod options;
mod partition;
mod principal;
mod principals;
mod reconcile;
mod redact;
mod scan;
mod store;
mod typed;
mod version;

#[cfg(feature = "instrument")]
pub mod instrument;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, ManualClock, TimeSource};
#[cfg(feature = "bincode")]
pub use codec::Bincode;
#[cfg(feature = "json")]
pub use codec::Json;
pub use codec::{Codec, CodecKind};
pub use config::{CoreConfig, NamespaceConfig, DEFAULT_SLIDING_MAX_LIFETIME};
pub use envelope::Meta;
pub use error::{BoxError, Error, ErrorClass, ErrorKind, Result};
pub use expiry::{ExpiryMode, ExpiryPolicy, DEFAULT_TTL};
pub use id::{SessionId, MAX_ID_LEN, MIN_ID_LEN};
pub use key::{KeyPrefix, Namespace, SessionKey, DEFAULT_KEY_PREFIX, MAX_NAMESPACE_LEN, MAX_PREFIX_LEN};
pub use options::StoreOptions;
pub use principal::{Principal, MAX_PRINCIPAL_LEN};
pub use principals::{Revocation, Revoked, REVOKE_SKEW_MS};
pub use scan::{ScanCursor, ScanPage};
pub use store::{Health, HealthStatus, SessionStore, StoreStats, DEFAULT_MAX_SESSION_BYTES};
pub use typed::{Session, Sessions, Undecodable};
pub use version::{ParseVersionError, Version};

pub use async_trait::async_trait;
pub use bytes::Bytes;

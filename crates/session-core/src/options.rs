//! [`StoreOptions`]: the settings every backend is given at construction.

use crate::envelope::HEADER_LEN;
use crate::error::{Error, Result};
use crate::key::KeyPrefix;
use crate::store::DEFAULT_MAX_SESSION_BYTES;

/// What every backend needs from the shared configuration: where its keys
/// live and how large one stored session may be.
///
/// Its one configuration home is [`CoreConfig`](crate::CoreConfig)
/// (`key_prefix`, `max_session_bytes`), which makes it with
/// [`CoreConfig::store_options`](crate::CoreConfig::store_options); a
/// backend's own configuration section does not repeat these keys.
///
/// ```
/// use session_core::{KeyPrefix, StoreOptions};
/// let options = StoreOptions::new(KeyPrefix::new("app:session:")?).with_max_session_bytes(64 * 1024)?;
/// assert_eq!(options.key_prefix().as_str(), "app:session:");
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    key_prefix: KeyPrefix,
    max_session_bytes: usize,
}

impl Default for StoreOptions {
    /// Prefix `session:`, 1 MiB per session.
    fn default() -> Self {
        StoreOptions {
            key_prefix: KeyPrefix::default(),
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }
}

impl StoreOptions {
    /// Options with this key prefix and the default size limit (1 MiB).
    pub fn new(key_prefix: KeyPrefix) -> Self {
        StoreOptions {
            key_prefix,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }

    /// Sets the largest encoded session a store accepts, envelope header included.
    ///
    /// # Errors
    /// [`Error::Config`] for `max_session_bytes` when it cannot hold the
    /// envelope header and one byte.
    pub fn with_max_session_bytes(mut self, max_session_bytes: usize) -> Result<Self> {
        check_max_session_bytes(max_session_bytes)?;
        self.max_session_bytes = max_session_bytes;
        Ok(self)
    }

    /// The prefix of every key.
    pub fn key_prefix(&self) -> &KeyPrefix {
        &self.key_prefix
    }

    /// The largest encoded session accepted, in bytes.
    pub fn max_session_bytes(&self) -> usize {
        self.max_session_bytes
    }
}

/// `max_session_bytes` must hold the envelope header and one byte.
pub(crate) fn check_max_session_bytes(max_session_bytes: usize) -> Result<()> {
    if max_session_bytes <= HEADER_LEN {
        return Err(Error::config(
            "max_session_bytes",
            format!("must be more than the {HEADER_LEN}-byte envelope header, not {max_session_bytes}"),
        ));
    }
    Ok(())
}

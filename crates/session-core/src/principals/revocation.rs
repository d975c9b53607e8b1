//! The revocation types: what `revoke_all` answers ([`Revoked`]) and what it hands a store
//! ([`Revocation`], made as a [`PrincipalRevocation`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::envelope::Record;
use crate::error::Result;
use crate::key::{Namespace, SessionKey};
use crate::principal::Principal;
use crate::store::SessionStore;

use super::revoke::Indexes;
use super::{is_principal_index, REVOKE_SKEW_MS};

/// What [`Sessions::revoke_all`] did.
///
/// [`Sessions::revoke_all`]: crate::Sessions::revoke_all
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoked {
    /// Sessions ended by this call.
    pub ended: u64,
    /// Whether the store kept the revocation to apply it later (its index was unreachable: a
    /// fallback's outage). Every session bound before the call ends when it is applied; until
    /// then the instances that still reach the index may serve them.
    pub pending: bool,
}

impl Revoked {
    /// The answer of a store that kept the revocation to apply it later
    /// ([`SessionStore::revoke_principal`]), having ended `ended` sessions at once.
    pub fn kept(ended: u64) -> Revoked {
        Revoked { ended, pending: true }
    }
}

/// One principal's sessions to end, as [`Sessions::revoke_all`] hands it to a store
/// ([`SessionStore::revoke_principal`]). A wrapper that changes keys or values on their way
/// (hashed ids, sealed payloads, a write-behind copy) wraps the revocation in turn, so that
/// whichever store below keeps it can apply it to its own inner store and tell its own
/// records apart.
///
/// [`Sessions::revoke_all`]: crate::Sessions::revoke_all
#[async_trait]
pub trait Revocation: Send + Sync + fmt::Debug {
    /// The principal index's key, as the store this revocation was handed to stores it.
    fn index(&self) -> &SessionKey;

    /// When the revocation was asked for, ms since the Unix epoch (the asking instance's
    /// clock).
    fn revoked_at(&self) -> u64;

    /// Whether `record`, stored under `key` in the store this revocation was handed to, is a
    /// session bound to the principal (unreadable or unbound: `false`).
    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool;

    /// Called by a store that keeps this revocation for each session of the principal it is
    /// about to end on its own, before applying the revocation (a fallback's own copies during
    /// an outage), with the key as that store holds it: a wrapper between treats it as a
    /// delete made through it (a write-behind backup queues it). The default does nothing.
    fn ending(&self, key: &SessionKey) {
        let _ = key;
    }

    /// Ends the principal's sessions in `store` (the store this revocation was handed to, or
    /// the one it wraps). `later`: the revocation is applied after the call that asked for
    /// it (a kept revocation): only sessions bound by [`revoked_at`](Self::revoked_at) (and up
    /// to [`REVOKE_SKEW_MS`] after, for clock skew between instances) end, with the sessions
    /// rotated from them. Returns how many sessions it ended.
    ///
    /// # Errors
    /// Store errors ([`Error::Corrupt`] for an index that does not parse); applying it again
    /// is safe.
    ///
    /// [`Error::Corrupt`]: crate::Error::Corrupt
    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64>;
}

/// The revocation [`Sessions::revoke_all`] makes.
///
/// [`Sessions::revoke_all`]: crate::Sessions::revoke_all
pub(super) struct PrincipalRevocation {
    pub(super) namespace: Namespace,
    pub(super) principal: Principal,
    pub(super) clock: Clock,
    pub(super) at: u64,
    pub(super) index: SessionKey,
}

impl fmt::Debug for PrincipalRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalRevocation")
            .field("namespace", &self.namespace)
            .field("principal", &self.principal)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Revocation for PrincipalRevocation {
    fn index(&self) -> &SessionKey {
        &self.index
    }

    fn revoked_at(&self) -> u64 {
        self.at
    }

    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool {
        key.namespace == self.namespace
            && !is_principal_index(key)
            && matches!(record.principal(key.ns()), Ok(Some(p)) if p == self.principal)
    }

    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64> {
        let indexes = Indexes {
            store: &*store,
            namespace: &self.namespace,
            clock: &self.clock,
        };
        indexes
            .revoke(
                &self.principal,
                later.then(|| self.at.saturating_add(REVOKE_SKEW_MS)),
            )
            .await
    }
}

//! Revoking a principal's sessions while the primary holding its index is down: the
//! revocation is journaled under the index's key and applied to the primary by replay (before
//! its circuit closes), and what this instance holds of the principal's sessions — outage
//! writes in the secondary, warm copies — ends at once, each as a logout journaled like any
//! other. A revocation kept here never undoes a later login: replay ends only the sessions
//! bound by the time it was asked for (and those rotated from them), and by the delete-wins
//! rule a replayed write of an ended session loses to its tombstone whichever instance
//! replays first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_core::backend::{now_ms, Tombstone};
use session_core::{Result, Revocation, Revoked, SessionKey, SessionStore, Version};

use crate::journal::PendingOp;
use crate::ops::Delete;
use crate::store::Inner;

/// The revocations waiting for replay, by principal index key (one per principal: a later
/// revocation of the same principal covers everything an earlier one did).
#[derive(Default)]
pub(crate) struct Revocations {
    map: Mutex<HashMap<SessionKey, Arc<dyn Revocation>>>,
}

impl Revocations {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Arc<dyn Revocation>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `revocation` for `key`, unless an later one is kept already.
    fn keep(&self, key: &SessionKey, revocation: Arc<dyn Revocation>) {
        let mut map = self.map();
        match map.get(key) {
            Some(kept) if kept.revoked_at() > revocation.revoked_at() => {}
            _ => {
                map.insert(key.clone(), revocation);
            }
        }
    }

    /// The revocation kept for `key`.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<Arc<dyn Revocation>> {
        self.map().get(key).cloned()
    }

    /// Forgets `applied` (if no other revocation replaced it meanwhile).
    pub(crate) fn applied(&self, key: &SessionKey, applied: &Arc<dyn Revocation>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|kept| Arc::ptr_eq(kept, applied)) {
            map.remove(key);
        }
    }
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// [`SessionStore::revoke_principal`]: `Ok(None)` while the index's partition answers (the
    /// caller applies the revocation through this store, to the primary); otherwise journaled,
    /// and this instance's own copies of the principal's sessions end now.
    pub(crate) async fn keep_revocation(&self, revocation: Arc<dyn Revocation>) -> Result<Option<Revoked>> {
        let index = revocation.index().clone();
        if self.fast_path() {
            return Ok(None);
        }
        {
            let _guard = self.locks.lock(&index).await;
            if !self.open_for(&index) && self.journal.get(&index).is_none() {
                return Ok(None);
            }
            let at = revocation.revoked_at();
            let reservation = self
                .journal
                .admit(&index, PendingOp::Revoke, at, Version::NONE)
                .map_err(|full| self.journal_full(&index, "revoke", full))?;
            self.revocations.keep(&index, Arc::clone(&revocation));
            reservation.commit(PendingOp::Revoke, at);
        }
        self.journaled(&index);
        tracing::warn!(
            primary = self.primary.backend(),
            namespace = index.ns(),
            "session fallback: a principal's sessions were revoked while its index is unreachable; \
             the revocation is journaled and applied when the primary answers"
        );
        let ended = self.end_local_copies(&*revocation).await?;
        Ok(Some(Revoked::kept(ended)))
    }

    /// Ends the sessions bound to the revoked principal that this instance holds: outage
    /// writes in the secondary and warm copies, each deleted as by a logout (journaled, so
    /// replay deletes it in the primary too). Returns how many it ended; the first error, if
    /// any, after trying every one.
    async fn end_local_copies(&self, revocation: &dyn Revocation) -> Result<u64> {
        let mut keys: HashSet<SessionKey> = HashSet::new();
        for key in self.journal.keys() {
            if !matches!(self.journal.get(&key), Some(e) if e.op == PendingOp::Write) {
                continue;
            }
            if let Ok(Some(record)) = self.secondary.load(&key).await {
                if revocation.is_bound(&key, &record) {
                    keys.insert(key);
                }
            }
        }
        if self.warm.enabled() {
            keys.extend(
                self.warm
                    .live_matching(|key, record| revocation.is_bound(key, record)),
            );
        }
        let (mut ended, mut first_error) = (0, None);
        for key in keys {
            let now = now_ms();
            let tombstone = Tombstone::new(now, now.saturating_add(self.config.tombstone_ttl_ms));
            revocation.ending(&key);
            match self.exec(&key, Delete(tombstone)).await {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ended),
        }
    }
}

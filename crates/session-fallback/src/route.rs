//! Where a keyed call goes. On the healthy path (every circuit closed, the journal empty) it
//! goes straight to the primary: two atomic loads, no lock, no partition looked up. Otherwise
//! a journaled key, or a key of an open partition, goes to the secondary under the key's
//! lock; any other key to the primary. A call the primary fails with a temporary error is
//! failed over to the secondary.
//!
//! [`Inner::exec`] does this for the single-key operations, generic over the operation
//! ([`KeyOp`]); `rotate` (two keys) and `reconcile` are routed here on their own.

use session_core::backend::{is_principal_index, now_ms, Change, Reconciled, Record, Tombstone};
use session_core::{Error, Meta, Result, SessionId, SessionKey, SessionStore, Version};

use crate::journal::KeyGuard;
use crate::ops::{Delete, KeyOp};
use crate::state::{CircuitState, Field};
use crate::store::Inner;

/// Where a call goes.
enum Route<'a> {
    /// To the primary, without a key lock.
    Primary,
    /// To the secondary, under the key's lock.
    Secondary(KeyGuard<'a>),
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// True when every call may go straight to the primary without a lock: every circuit
    /// closed and the journal empty (two atomic loads, as with one circuit).
    pub(crate) fn fast_path(&self) -> bool {
        self.circuits.aggregate() == CircuitState::Closed && self.journal.len() == 0
    }

    /// Whether `key`'s partition has its circuit open (calls on it skip the primary). The
    /// key's partition is looked up only while some partition is open.
    pub(crate) fn open_for(&self, key: &SessionKey) -> bool {
        self.circuits.open_count() != 0 && self.circuits.is_open(self.primary.partition(key))
    }

    async fn route(&self, key: &SessionKey) -> Route<'_> {
        if self.fast_path() {
            return Route::Primary;
        }
        let guard = self.locks.lock(key).await;
        if self.journal.get(key).is_some() || self.open_for(key) {
            self.counters.inc(Field::SecondaryCalls);
            Route::Secondary(guard)
        } else {
            Route::Primary
        }
    }

    /// Runs one single-key operation wherever it belongs; its answer is the operation's own
    /// type.
    pub(crate) async fn exec<O: KeyOp>(&self, key: &SessionKey, op: O) -> Result<O::Output> {
        // A principal's session index lives on the primary only (see `index_unavailable`).
        let index = is_principal_index(key);
        match self.route(key).await {
            Route::Secondary(_) if index => Err(self.index_unavailable(key)),
            // Boxed: the outage path is the larger future, and the healthy path should not
            // carry (and copy) its size on every call.
            Route::Secondary(guard) => Box::pin(self.on_secondary(key, op, None, guard)).await,
            Route::Primary => match self.on_primary(O::NAME, op.call(&self.primary, key)).await {
                Err(e) if e.is_temporary() && index => {
                    self.primary_failed(Some(self.primary.partition(key)), &e);
                    Err(self.index_unavailable(key))
                }
                Err(e) if e.is_temporary() => {
                    self.failed_over(O::NAME, Some(key), Some(self.primary.partition(key)), &e);
                    let guard = self.locks.lock(key).await;
                    Box::pin(self.on_secondary(key, op, Some(e), guard)).await
                }
                other => {
                    self.primary_answered(key);
                    if self.warm.enabled() {
                        op.keep_warm(&self.warm, key, &other);
                    }
                    other
                }
            },
        }
    }

    /// A delete made now, routed as any keyed call; its tombstone lasts
    /// `fallback.tombstone_ttl_ms` where the store holds no session to take a deadline from.
    pub(crate) async fn delete_now(&self, key: &SessionKey) -> Result<bool> {
        let now = now_ms();
        let tombstone = Tombstone::new(now, now.saturating_add(self.config.tombstone_ttl_ms));
        self.exec(key, Delete(tombstone)).await
    }

    /// `rotate`: on the secondary when either id's partition is open (or the old id is
    /// journaled), on the primary otherwise, failed over when it fails. The warm copy moves
    /// with the session.
    pub(crate) async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        if !self.fast_path() {
            let guards = self.locks.lock_many([key, &new_key]).await;
            if self.journal.get(key).is_some() || self.open_for(key) || self.open_for(&new_key) {
                self.counters.inc(Field::SecondaryCalls);
                return self.rotate_on_secondary(key, &new_key, None).await;
            }
            if self.journal.get(&new_key).is_some() {
                // The new id has an outage write or delete waiting for
                // replay: refuse rather than race it.
                return Err(Error::AlreadyExists {
                    namespace: key.ns().to_owned(),
                });
            }
            drop(guards);
        }
        match self.on_primary("rotate", self.primary.rotate(key, new_id)).await {
            Err(e) if e.is_temporary() => {
                // Two keys: the failure is a partition's only when both are on it.
                let p = self.primary.partition(key);
                let blamed = (self.primary.partition(&new_key) == p).then_some(p);
                self.failed_over("rotate", Some(key), blamed, &e);
                let _guards = self.locks.lock_many([key, &new_key]).await;
                self.rotate_on_secondary(key, &new_key, Some(e)).await
            }
            other => {
                self.primary_answered(key);
                // The copy moves with the session.
                let moved = self.warm.get(key, 0);
                self.warm.remove(key);
                match (&other, moved) {
                    (Ok(meta), Some(w)) => self.warm.put(&new_key, &Record { meta: *meta, ..w }),
                    _ => self.warm.remove(&new_key),
                }
                other
            }
        }
    }

    /// `reconcile` (a fallback stacked on a fallback): applied by the primary while it
    /// answers; otherwise a temporary error, so the caller keeps the change.
    pub(crate) async fn reconcile(
        &self,
        key: &SessionKey,
        base: Version,
        change: Change<'_>,
    ) -> Result<Reconciled> {
        if !self.fast_path() {
            let _guard = self.locks.lock(key).await;
            if self.open_for(key) || self.journal.get(key).is_some() {
                return Err(self.cannot_tell(key));
            }
        }
        match self
            .on_primary("reconcile", self.primary.reconcile(key, base, change))
            .await
        {
            Err(e) if e.is_temporary() => {
                self.primary_failed(Some(self.primary.partition(key)), &e);
                Err(e)
            }
            other => {
                self.primary_answered(key);
                other
            }
        }
    }
}

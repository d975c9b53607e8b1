//! The write side of the [`SessionStore`] contract as [`BackupStore`](crate::BackupStore)
//! does it, on any target store: the call is the target's, and what it acknowledged is
//! queued for the backup. The store's own calls target its primary; a revocation applied by a
//! store below it targets that store (see `revoke`).

use session_core::backend::{Change as Replay, Reconciled, Record, Tombstone};
use session_core::{Meta, Result, SessionId, SessionKey, SessionStore, Version};

use crate::queue::Change;
use crate::store::Shared;

impl<P: SessionStore, B: SessionStore> Shared<P, B> {
    pub(crate) async fn save_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        record: &Record,
    ) -> Result<Meta> {
        self.put_on(key, record, target.save(key, record)).await
    }

    pub(crate) async fn create_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        record: &Record,
    ) -> Result<Meta> {
        self.put_on(key, record, target.create(key, record)).await
    }

    pub(crate) async fn update_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        record: &Record,
    ) -> Result<Meta> {
        self.put_on(key, record, target.update(key, record)).await
    }

    pub(crate) async fn save_if_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        expected_version: Version,
        record: &Record,
    ) -> Result<Meta> {
        self.put_on(key, record, target.save_if(key, expected_version, record))
            .await
    }

    /// A write of `record` under `key` (the target's `call`): queued for the backup once
    /// acknowledged; an error leaves its outcome unknown (rechecked at flush time).
    async fn put_on(
        &self,
        key: &SessionKey,
        record: &Record,
        call: impl std::future::Future<Output = Result<Meta>>,
    ) -> Result<Meta> {
        let meta = call.await.inspect_err(|e| self.record_unknown(key, e))?;
        self.record_put(key, record, meta);
        Ok(meta)
    }

    /// The delete is queued before the target is asked, so that no read-through on this
    /// instance can restore the session from the backup meanwhile. It stays queued if the
    /// target's answer is an error: a logout is never undone by the backup, at worst a session
    /// whose logout failed is missing from it until its next write.
    pub(crate) async fn delete_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        tombstone: Option<Tombstone>,
    ) -> Result<bool> {
        self.record_delete(key, tombstone);
        match tombstone {
            Some(t) => target.delete_leaving(key, t).await,
            None => target.delete(key).await,
        }
    }

    pub(crate) async fn touch_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        expires_at: u64,
    ) -> Result<bool> {
        let found = target
            .touch(key, expires_at)
            .await
            .inspect_err(|e| self.record_unknown(key, e))?;
        if found {
            self.record(key, Change::Retime(expires_at));
        }
        Ok(found)
    }

    /// Like a delete for the old id (queued first: a read-through must not restore it), and the
    /// new id's state read from the primary at flush time.
    pub(crate) async fn rotate_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        new_id: &SessionId,
    ) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        if new_id != &key.id {
            self.record_delete(key, None);
        }
        let moved = target.rotate(key, new_id).await;
        match &moved {
            Ok(_) => self.record(&new_key, Change::Refresh(None)),
            // Moved or not: the new id is backed up if the primary holds it; the old id's delete
            // stays queued (a session is never restored under an id it left).
            Err(e) => self.record_unknown(&new_key, e),
        }
        moved
    }

    pub(crate) async fn save_many_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        items: &[(SessionKey, Record)],
    ) -> Result<Vec<Meta>> {
        let metas = target.save_many(items).await.inspect_err(|e| {
            for (key, _) in items {
                self.record_unknown(key, e);
            }
        })?;
        for ((key, record), meta) in items.iter().zip(&metas) {
            self.record_put(key, record, *meta);
        }
        Ok(metas)
    }

    pub(crate) async fn reconcile_on<T: SessionStore + ?Sized>(
        &self,
        target: &T,
        key: &SessionKey,
        base: Version,
        change: Replay<'_>,
    ) -> Result<Reconciled> {
        let outcome = target
            .reconcile(key, base, change)
            .await
            .inspect_err(|e| self.record_unknown(key, e))?;
        self.record_replay(key, &change, outcome);
        Ok(outcome)
    }
}

//! The [`SessionStore`] contract through a [`SecureStore`]: each call maps the key to the
//! layout(s) that may hold it, seals what it writes and opens what it reads.

use async_trait::async_trait;
use session_core::backend::{check_size, Change, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    Error, Health, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey, SessionStore,
    StoreStats, Version,
};

use crate::store::SecureStore;

#[async_trait]
impl<S: SessionStore> SessionStore for SecureStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn revoke_principal(
        &self,
        revocation: std::sync::Arc<dyn session_core::Revocation>,
    ) -> Result<Option<session_core::Revoked>> {
        self.keep_revocation(revocation).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.layouts.check(key)?;
        if !self.layouts.has_legacy() {
            let stored = self.layouts.written(key);
            return match self.inner.load(&stored).await? {
                Some(record) => self.open_from(&stored, record).map(Some),
                None => Ok(None),
            };
        }
        // As `load_entry`: a live session under any layout, else nothing.
        match self.load_entry(key).await? {
            Some(Entry::Live(record)) => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.layouts.check(key)?;
        // A live session under any layout wins over a tombstone under another: a delete ends
        // every layout's copy, while a move between layouts (a principal's index leaving an
        // old one) leaves a tombstone behind.
        let mut tombstone = None;
        for stored in self.layouts.every(key) {
            match self.inner.load_entry(&stored).await? {
                Some(Entry::Live(record)) => {
                    return self.open_from(&stored, record).map(|r| Some(Entry::Live(r)))
                }
                Some(t @ Entry::Tombstone(_)) => {
                    tombstone.get_or_insert(t);
                }
                None => {}
            }
        }
        Ok(tombstone)
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        if !self.layouts.has_legacy() {
            return self.inner.save(&written, &sealed).await;
        }
        // While layouts change, a session lives under one of them only: one stored the old
        // way is overwritten in place (a copy under the new layout would leave the old one
        // for instances that read it first); so is a value that is not a session.
        for stored in self.layouts.every(key) {
            let sealed = self.seal_for(&stored, record)?;
            match self.inner.update(&stored, &sealed).await {
                Err(e) if Self::absent(&e) => {}
                Err(Error::Corrupt { .. }) => return self.inner.save(&stored, &sealed).await,
                other => return other,
            }
        }
        self.inner.save(&written, &sealed).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        // Not atomic across layouts: two instances in different steps of a transition could
        // each create a copy of one caller-chosen id at the same moment (`rotate` and `delete`
        // end every copy). Generated ids never meet.
        for stored in self.layouts.legacy(key) {
            if self.inner.load(&stored).await?.is_some() {
                return Err(Error::AlreadyExists {
                    namespace: key.ns().to_owned(),
                });
            }
        }
        self.inner.create(&written, &sealed).await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write_in_place(key, record, |inner, k, r| {
            Box::pin(async move { inner.update(&k, &r).await })
        })
        .await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.write_in_place(key, record, move |inner, k, r| {
            Box::pin(async move { inner.save_if(&k, expected_version, &r).await })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.delete_every(key, None).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.delete_every(key, Some(tombstone)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.layouts.check(key)?;
        for stored in self.layouts.every(key) {
            if self.inner.touch(&stored, expires_at).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.rotate_secure(key, new_id).await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let written: Vec<SessionKey> = keys.iter().map(|k| self.layouts.written(k)).collect();
        let mut out: Vec<Result<Option<Record>>> = self
            .inner
            .load_many(&written)
            .await?
            .into_iter()
            .zip(&written)
            .map(|(result, stored)| {
                result.and_then(|found| found.map(|r| self.open_from(stored, r)).transpose())
            })
            .collect();
        for (slot, key) in out.iter_mut().zip(keys) {
            if let Err(e) = self.layouts.check(key) {
                *slot = Err(e);
            }
        }
        if !self.layouts.has_legacy() {
            return Ok(out);
        }
        // Misses may be stored under another layout: one call per key (only while a
        // transition is configured); a key's own error stays in its slot.
        for (slot, key) in out.iter_mut().zip(keys) {
            if !matches!(slot, Ok(None)) {
                continue;
            }
            for stored in self.layouts.legacy(key) {
                match self.inner.load_entry(&stored).await {
                    Ok(Some(Entry::Live(record))) => {
                        *slot = self.open_from(&stored, record).map(Some);
                        break;
                    }
                    Ok(Some(Entry::Tombstone(_))) => break,
                    Ok(None) => {}
                    Err(e) if e.is_temporary() => return Err(e),
                    Err(e) => {
                        *slot = Err(e);
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        if self.layouts.has_legacy() {
            // One `save` each (in place, see `save`), every key and size checked first.
            for (key, record) in items {
                self.layouts.check(key)?;
                check_size(key, record, self.max_session_bytes)?;
            }
            let mut metas = Vec::with_capacity(items.len());
            for (key, record) in items {
                metas.push(self.save(key, record).await?);
            }
            return Ok(metas);
        }
        let sealed = items
            .iter()
            .map(|(key, record)| {
                self.layouts.check(key)?;
                let written = self.layouts.written(key);
                self.seal_for(&written, record).map(|r| (written, r))
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.save_many(&sealed).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.inner.count(namespace).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.layouts.check(key)?;
        // In place, under the layout that holds the key now (see `save`).
        let target = self.holding(key).await?;
        match change {
            Change::Write(record) => {
                let sealed = self.seal_for(&target, record)?;
                self.inner.reconcile(&target, base, Change::Write(&sealed)).await
            }
            Change::Delete(tombstone) => {
                let done = self
                    .inner
                    .reconcile(&target, base, Change::Delete(tombstone))
                    .await?;
                for stored in self.layouts.every(key) {
                    if stored != target {
                        self.inner
                            .reconcile(&stored, base, Change::Delete(tombstone))
                            .await?;
                    }
                }
                Ok(done)
            }
            Change::Expire => self.inner.reconcile(&target, base, Change::Expire).await,
        }
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        if self.layouts.any_hashed() {
            return Err(Error::Backend {
                backend: self.inner.backend(),
                message: "a store with hashed ids cannot list the ids of its sessions; copy or back up the \
                          store it wraps (the same secrets read the copy)"
                    .to_owned(),
                source: None,
            });
        }
        let page = self.inner.scan(cursor, limit).await?;
        let mut sessions = Vec::with_capacity(page.sessions.len());
        let mut skipped = page.skipped;
        for (key, record) in page.sessions {
            match self.open_from(&key, record) {
                Ok(record) => sessions.push((key, record)),
                Err(_) => skipped += 1,
            }
        }
        Ok(ScanPage::new(sessions, page.next, skipped))
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }

    fn evicts(&self) -> bool {
        self.inner.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        // While a transition is configured a call may touch keys of several partitions.
        if self.layouts.has_legacy() {
            return Partition::WHOLE;
        }
        self.inner.partition(&self.layouts.written(key))
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.inner.partition_health(partition).await
    }
}

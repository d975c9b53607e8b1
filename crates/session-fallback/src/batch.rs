//! Batches: `load_many` and `save_many`.
//!
//! On the healthy path a batch goes to the primary whole. Otherwise `load_many` reads the
//! journaled keys and the keys of open partitions as the secondary sees them and the others
//! from the primary; `save_many` with any such key goes wholly to the secondary (so a record
//! over the size limit is refused before anything is written). A batch spanning partitions
//! that the primary fails is sent again per partition, so that only the failing partitions'
//! keys are served by the secondary (one failing node must not cost the others' keys).

use session_core::backend::{is_principal_index, now_ms, Partition, Record};
use session_core::{Error, Meta, Result, SessionKey, SessionStore};

use crate::journal::PendingOp;
use crate::state::Field;
use crate::store::{Inner, BACKEND};
use crate::warm::Known;

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// `load_many`: journaled keys and keys of open partitions as the secondary sees them,
    /// the others from the primary.
    pub(crate) async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        if self.fast_path() {
            return self.load_many_on_primary(keys).await;
        }
        let mut out;
        let primary_slots: Vec<usize>;
        {
            let _guards = self.locks.lock_many(keys).await;
            // Keys of open partitions and journaled keys from the secondary, the others from
            // the primary.
            let mut open = false;
            let mut slots = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                if self.journal.get(k).is_some() {
                    continue;
                }
                if self.open_for(k) {
                    open = true;
                } else {
                    slots.push(i);
                }
            }
            if open {
                self.counters.inc(Field::SecondaryCalls);
            }
            out = self.secondary_view(keys).await?;
            primary_slots = slots;
        }
        if primary_slots.is_empty() {
            return Ok(out);
        }
        let primary_keys: Vec<SessionKey> = primary_slots.iter().map(|&i| keys[i].clone()).collect();
        let got = self.load_many_on_primary(&primary_keys).await?;
        for (i, r) in primary_slots.into_iter().zip(got) {
            out[i] = r;
        }
        Ok(out)
    }

    /// `save_many`: wholly on the secondary when any key is journaled or of an open
    /// partition, else on the primary.
    pub(crate) async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if !self.fast_path() {
            let guards = self.locks.lock_many(items.iter().map(|(k, _)| k)).await;
            if items
                .iter()
                .any(|(k, _)| self.journal.get(k).is_some() || self.open_for(k))
            {
                // The whole batch goes to the secondary, so a record over the
                // size limit is refused before anything is written.
                self.counters.inc(Field::SecondaryCalls);
                return self.save_many_on_secondary(items).await;
            }
            drop(guards);
        }
        self.save_many_on_primary(items).await
    }

    /// Reads keys as the secondary's view (journaled keys from the secondary, keys in the
    /// warm copy from it, "can't tell" for the others). The caller holds the keys' locks.
    async fn secondary_view(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let mut out: Vec<Result<Option<Record>>> = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        let mut slots = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if self.journal.get(k).is_some() {
                out.push(Ok(None));
                pending.push(k.clone());
                slots.push(i);
            } else if let Some(known) = self.warm.known(k, now_ms()) {
                out.push(Ok(match known {
                    Known::Live(w) => Some(w),
                    Known::Gone { .. } => None,
                }));
            } else {
                out.push(Err(self.cannot_tell(k)));
            }
        }
        if !pending.is_empty() {
            let got = self.secondary.load_many(&pending).await?;
            for (i, r) in slots.into_iter().zip(got) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// `save_many` on the secondary, with every key's lock held by the
    /// caller: every key is admitted to the journal first (all or none).
    async fn save_many_on_secondary(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        // A principal's index is the primary's alone (see `index_unavailable`).
        if let Some((k, _)) = items.iter().find(|(k, _)| is_principal_index(k)) {
            return Err(self.index_unavailable(k));
        }
        let mut reservations = Vec::with_capacity(items.len());
        for (k, r) in items {
            let res = self
                .journal
                .admit(k, PendingOp::Write, r.meta.updated_at, self.base_of(k))
                .map_err(|full| self.journal_full(k, "save_many", full))?;
            if res.is_new() {
                self.secondary.delete(k).await?;
            }
            reservations.push(res);
        }
        let metas = self.secondary.save_many(items).await?;
        let mut out = Vec::with_capacity(metas.len());
        for (res, meta) in reservations.into_iter().zip(metas) {
            res.commit(PendingOp::Write, meta.updated_at);
            out.push(meta);
        }
        self.ensure_worker();
        if items.iter().any(|(k, _)| !self.open_for(k)) {
            self.wake_worker();
        }
        Ok(out)
    }

    /// The indexes of `keys` by the partition serving each now, in first-seen order.
    fn by_partition<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k SessionKey>,
    ) -> Vec<(Partition, Vec<usize>)> {
        let mut groups: Vec<(Partition, Vec<usize>)> = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let p = self.primary.partition(key);
            match groups.iter_mut().find(|(q, _)| *q == p) {
                Some((_, members)) => members.push(i),
                None => groups.push((p, vec![i])),
            }
        }
        groups
    }

    /// `load_many` on the primary, failed over when it fails; a failed batch spanning
    /// partitions is sent again per partition.
    async fn load_many_on_primary(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let e = match self
            .on_primary_batch("load_many", keys.len(), self.primary.load_many(keys))
            .await
        {
            Err(e) if e.is_temporary() => e,
            other => {
                self.primary_answered_many(keys);
                if let Ok(found) = &other {
                    self.keep_warm_many(keys, found);
                }
                return other;
            }
        };
        let groups = self.by_partition(keys);
        if groups.len() <= 1 {
            let p = groups.first().map_or(Partition::WHOLE, |(p, _)| *p);
            self.failed_over("load_many", None, Some(p), &e);
            let _guards = self.locks.lock_many(keys).await;
            return self.secondary_view(keys).await;
        }
        let mut out: Vec<Result<Option<Record>>> = Vec::with_capacity(keys.len());
        out.resize_with(keys.len(), || Ok(None));
        for (p, members) in groups {
            let group: Vec<SessionKey> = members.iter().map(|&i| keys[i].clone()).collect();
            let got = match self
                .on_primary_batch("load_many", group.len(), self.primary.load_many(&group))
                .await
            {
                Err(e) if e.is_temporary() => {
                    self.failed_over("load_many", None, Some(p), &e);
                    let _guards = self.locks.lock_many(&group).await;
                    self.secondary_view(&group).await?
                }
                other => {
                    self.primary_answered_many(&group);
                    let got = other?;
                    self.keep_warm_many(&group, &got);
                    got
                }
            };
            for (i, r) in members.into_iter().zip(got) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// `save_many` on the primary, failed over when it fails; a failed batch spanning
    /// partitions is sent again per partition, as for
    /// [`load_many_on_primary`](Self::load_many_on_primary).
    async fn save_many_on_primary(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let e = match self
            .on_primary_batch("save_many", items.len(), self.primary.save_many(items))
            .await
        {
            Err(e) if e.is_temporary() => e,
            other => {
                self.primary_answered_many(items.iter().map(|(k, _)| k));
                if let Ok(metas) = &other {
                    self.keep_warm_saved(items, metas);
                }
                return other;
            }
        };
        let groups = self.by_partition(items.iter().map(|(k, _)| k));
        if groups.len() <= 1 {
            let p = groups.first().map_or(Partition::WHOLE, |(p, _)| *p);
            self.failed_over("save_many", None, Some(p), &e);
            let _guards = self.locks.lock_many(items.iter().map(|(k, _)| k)).await;
            return self.save_many_on_secondary(items).await;
        }
        // (index in `items`, its meta): the groups cover every index once.
        let mut out: Vec<(usize, Meta)> = Vec::with_capacity(items.len());
        for (p, members) in groups {
            let group: Vec<(SessionKey, Record)> = members.iter().map(|&i| items[i].clone()).collect();
            let (metas, by) = match self
                .on_primary_batch("save_many", group.len(), self.primary.save_many(&group))
                .await
            {
                Err(e) if e.is_temporary() => {
                    self.failed_over("save_many", None, Some(p), &e);
                    let _guards = self.locks.lock_many(group.iter().map(|(k, _)| k)).await;
                    (
                        self.save_many_on_secondary(&group).await?,
                        self.secondary.backend(),
                    )
                }
                other => {
                    self.primary_answered_many(group.iter().map(|(k, _)| k));
                    let metas = other?;
                    self.keep_warm_saved(&group, &metas);
                    (metas, self.primary.backend())
                }
            };
            if metas.len() < group.len() {
                return Err(short_answer(by, group.len(), metas.len()));
            }
            out.extend(members.into_iter().zip(metas));
        }
        out.sort_unstable_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, meta)| meta).collect())
    }

    /// [`KeyOp::keep_warm`](crate::ops::KeyOp::keep_warm) for a batch of loads.
    fn keep_warm_many(&self, keys: &[SessionKey], found: &[Result<Option<Record>>]) {
        if !self.warm.enabled() {
            return;
        }
        for (k, r) in keys.iter().zip(found) {
            match r {
                Ok(Some(r)) => self.warm.put(k, r),
                _ => self.warm.remove(k),
            }
        }
    }

    /// The warm copy after the primary stored `items` with `metas`.
    fn keep_warm_saved(&self, items: &[(SessionKey, Record)], metas: &[Meta]) {
        for ((k, r), meta) in items.iter().zip(metas) {
            self.warm.put(
                k,
                &Record {
                    meta: *meta,
                    codec: r.codec,
                    payload: r.payload.clone(),
                },
            );
        }
    }
}

/// A store answered `save_many` of `sent` sessions with only `got` metas: it broke the
/// trait's contract (one per item, in order), and which were stored cannot be told.
fn short_answer(backend: &'static str, sent: usize, got: usize) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "the {backend} store answered save_many of {sent} sessions with {got} results; which of them \
             were stored is unknown"
        ),
        source: None,
    }
}

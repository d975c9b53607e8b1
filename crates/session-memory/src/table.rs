//! The operations on the table: the one write path (`apply`) and the reads, deletes,
//! rotation and reconciliation built on it.

use std::sync::atomic::Ordering;

use session_core::backend::{
    decide, parse_stored_id, stamp, Change, Decision, Entry as Envelope, Reconciled, Record, Stored,
    Tombstone,
};
use session_core::{Error, Meta, Namespace, Result, SessionId, SessionKey, StoreStats, Version};

use crate::entry::{charge, deadline, Entry, State, Value};

use crate::store::{Inner, Outcome, Removal, BACKEND};

/// Attempts a write makes to find room in other shards before giving up.
const MAX_ROUNDS: usize = 32;

impl Inner {
    /// The one write path: under the key's shard lock, finds the entry,
    /// reclaims it if expired, lets `decide` choose, and writes within the
    /// bounds. `decide` may run again (on a fresh look) if room had to be made
    /// in other shards.
    pub(crate) fn apply<'a, R>(
        &self,
        key: &SessionKey,
        decide: impl FnMut(State, Option<&Entry>) -> Result<Outcome<'a, R>>,
    ) -> Result<R> {
        self.apply_at(key, self.clock.now_ms(), decide)
    }

    /// [`apply`](Self::apply), judging expiry at `now` (the time `decide` judges by too).
    pub(crate) fn apply_at<'a, R>(
        &self,
        key: &SessionKey,
        now: u64,
        mut decide: impl FnMut(State, Option<&Entry>) -> Result<Outcome<'a, R>>,
    ) -> Result<R> {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let si = self.shard_of(hash);
        let shard = &self.shards[si];
        let prefix_len = self.prefix_len();
        for _ in 0..MAX_ROUNDS {
            let mut table = shard.write();
            let mut index = table.find_bucket_index(hash, |e| e.is(namespace, id));
            let state = match index.and_then(|i| table.get_bucket(i)) {
                Some(e) => e.state(namespace, now),
                None => State::Absent,
            };
            if matches!(state, State::Expired) {
                if let Some(i) = index.take() {
                    self.remove_at(&mut table, i, Removal::Expired);
                }
            }
            let current = index.and_then(|i| table.get_bucket(i));
            let (value, meta, answer) = match decide(state, current)? {
                Outcome::Keep(answer) => return Ok(answer),
                Outcome::Remove(answer) => {
                    let old = index.and_then(|i| self.remove_at(&mut table, i, Removal::Caller));
                    drop(table);
                    drop(old);
                    return Ok(answer);
                }
                Outcome::Write(value, answer) => (Some(value), None, answer),
                // Retiming needs a session to retime.
                Outcome::Retime(_, answer) if index.is_none() => return Ok(answer),
                Outcome::Retime(meta, answer) => (None, Some(meta), answer),
            };
            let deadline = match (&value, &meta) {
                (Some(v), _) => v.deadline(),
                (None, Some(m)) => deadline(m),
                (None, None) => return Ok(answer),
            };
            if deadline <= now {
                // Written already expired: the session no longer exists.
                let old = index.and_then(|i| self.remove_at(&mut table, i, Removal::Expired));
                drop(table);
                drop(old);
                return Ok(answer);
            }
            let old = index
                .and_then(|i| table.get_bucket(i))
                .map_or(0, |e| e.charge(prefix_len));
            let new = match &value {
                Some(v) => charge(prefix_len, namespace.len() + 1 + id.len(), v),
                // Retiming keeps the key and the payload.
                None => old,
            };
            let new_entry = index.is_none();
            if self.reserve(new_entry, old, new)
                || self.make_room_in(shard, &mut table, index, new_entry, old, new, now)
            {
                // In place when the entry's allocation is free and large enough; otherwise a
                // new allocation, the old one freed after the lock is released.
                let replaced = match (index.and_then(|i| table.get_bucket_mut(i)), &value, &meta) {
                    (Some(e), Some(v), _) => {
                        if e.overwrite(v) {
                            None
                        } else {
                            Some(std::mem::replace(e, Entry::new(namespace, id, v)))
                        }
                    }
                    (Some(e), None, Some(m)) => {
                        if e.retime(m) {
                            None
                        } else {
                            let rebuilt = e.rebuilt(namespace, id, Some(*m));
                            Some(std::mem::replace(e, rebuilt))
                        }
                    }
                    (Some(_), None, None) => None,
                    (None, Some(v), _) => {
                        table.insert_unique(hash, Entry::new(namespace, id, v), |e| self.hash_entry(e));
                        None
                    }
                    (None, None, _) => None,
                };
                shard.note_deadline(deadline);
                drop(table);
                drop(replaced);
                return Ok(answer);
            }
            drop(table);
            if !self.make_room_elsewhere(si, new_entry, old, new, now) {
                break;
            }
        }
        Err(self.full())
    }

    pub(crate) fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        // A tombstone reads as absent.
        Ok(match self.load_entry(key)? {
            Some(Envelope::Live(record)) => Some(record),
            Some(Envelope::Tombstone(_)) | None => None,
        })
    }

    /// The session or tombstone under `key`, if it is not past its deadline.
    pub(crate) fn load_entry(&self, key: &SessionKey) -> Result<Option<Envelope>> {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let shard = &self.shards[self.shard_of(hash)];
        let now = self.clock.now_ms();
        let table = shard.read();
        let Some(entry) = table.find(hash, |e| e.is(namespace, id)) else {
            return Ok(None);
        };
        if entry.deadline() <= now {
            drop(table);
            self.reclaim_key(key, hash, now);
            return Ok(None);
        }
        let found = entry.to_entry(namespace);
        drop(table);
        // A raw value's envelope has its own deadline.
        match found {
            Ok(Envelope::Live(r)) if deadline(&r.meta) <= now => Ok(None),
            Ok(Envelope::Tombstone(meta)) if deadline(&meta) <= now => Ok(None),
            Ok(e) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    /// Removes `key` if it is still expired (lazy reclaim after a load met it).
    pub(crate) fn reclaim_key(&self, key: &SessionKey, hash: u64, now: u64) {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let mut table = self.shards[self.shard_of(hash)].write();
        if let Some(i) = table.find_bucket_index(hash, |e| e.is(namespace, id)) {
            if table.get_bucket(i).is_some_and(|e| e.deadline() <= now) {
                let old = self.remove_at(&mut table, i, Removal::Expired);
                drop(table);
                drop(old);
            }
        }
    }

    pub(crate) fn delete(&self, key: &SessionKey) -> Result<bool> {
        if self.config.keeps_tombstones() {
            let now = self.clock.now_ms();
            return self.delete_leaving_tombstone(key, Tombstone::new(now, now));
        }
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let now = self.clock.now_ms();
        let mut table = self.shards[self.shard_of(hash)].write();
        let Some(i) = table.find_bucket_index(hash, |e| e.is(namespace, id)) else {
            return Ok(false);
        };
        let why = match table.get_bucket(i).map(|e| e.state(namespace, now)) {
            // A replayed delete's tombstone: no session to delete, and the tombstone stays (a
            // replayed write must still not pass it).
            Some(State::Tombstone(_)) => return Ok(false),
            Some(State::Expired) => Removal::Expired,
            _ => Removal::Caller,
        };
        let old = self.remove_at(&mut table, i, why);
        drop(table);
        Ok(old.is_some() && why == Removal::Caller)
    }

    /// `delete` in tombstone mode: the key's session (or nothing) is replaced by a tombstone, by
    /// the reconciliation rule — the session's own deadline, or `tombstone_ttl_ms` from now for
    /// a key holding none; a tombstone already there stays, extended to that if it is later.
    /// `true` if a live session (or a value that is not one, as a plain delete) was there.
    ///
    /// The tombstone stored carries `given`'s version and time; its lifetime is this store's.
    pub(crate) fn delete_leaving_tombstone(&self, key: &SessionKey, given: Tombstone) -> Result<bool> {
        let now = self.clock.now_ms();
        let tombstone = Tombstone {
            until: now.saturating_add(self.config.tombstone_ttl_ms),
            ..given
        };
        let change = Change::Delete(tombstone);
        self.apply_at(key, now, |state, current| {
            let (stored, deleted) = match state {
                State::Live(meta) => (Stored::Live(meta), true),
                State::Tombstone(meta) => (Stored::Tombstone(meta), false),
                State::Absent | State::Expired => (Stored::Absent, false),
                // Bytes that are not an envelope: deleted like a session, their own deadline kept.
                State::Corrupt(_) => {
                    let until = current.map_or(tombstone.until, Entry::deadline);
                    let meta = tombstone.meta(until);
                    return Ok(Outcome::Write(Value::Tomb { meta }, true));
                }
            };
            let (decision, _) = decide(stored, Version::NONE, &change, now);
            outcome(decision, &change, stored, deleted)
        })
    }

    /// [`SessionStore::reconcile`], after the size check: under the key's shard lock, reads what
    /// is stored, lets `session_core`'s rule decide, and acts on it within the bounds.
    pub(crate) fn reconcile(
        &self,
        key: &SessionKey,
        base: Version,
        change: Change<'_>,
    ) -> Result<Reconciled> {
        let now = self.clock.now_ms();
        self.apply_at(key, now, |state, _| {
            let stored = match state {
                State::Absent | State::Expired => Stored::Absent,
                State::Tombstone(meta) => Stored::Tombstone(meta),
                State::Live(meta) => Stored::Live(meta),
                // Left as it is.
                State::Corrupt(e) => return Err(e),
            };
            let (decision, reconciled) = decide(stored, base, &change, now);
            outcome(decision, &change, stored, reconciled)
        })
    }

    pub(crate) fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let namespace = key.ns();
        let now = self.clock.now_ms();
        let prefix_len = self.prefix_len();

        // 1. Take the session out of its old key, atomically. Its room stays
        //    reserved while it moves.
        let old_hash = self.hash(namespace, key.id.as_str());
        let old_shard = &self.shards[self.shard_of(old_hash)];
        let (meta, entry) = {
            let mut table = old_shard.write();
            let Some(i) = table.find_bucket_index(old_hash, |e| e.is(namespace, key.id.as_str())) else {
                return Err(Error::not_found(namespace));
            };
            let state = match table.get_bucket(i) {
                Some(e) => e.state(namespace, now),
                None => State::Absent,
            };
            match state {
                State::Live(meta) => match table.get_bucket_entry(i) {
                    Ok(occupied) => (meta, occupied.remove().0),
                    Err(_) => return Err(Error::not_found(namespace)),
                },
                State::Corrupt(e) => return Err(e),
                State::Expired => {
                    self.remove_at(&mut table, i, Removal::Expired);
                    return Err(Error::not_found(namespace));
                }
                // A deleted session: nothing to move, and the tombstone stays.
                State::Tombstone(_) | State::Absent => return Err(Error::not_found(namespace)),
            }
        };
        let old_charge = entry.charge(prefix_len);
        let deadline = entry.deadline();

        // 2. Insert it under the new id unless a live session is there.
        let new_hash = self.hash(namespace, new_id.as_str());
        let new_shard = &self.shards[self.shard_of(new_hash)];
        let moved = entry.rebuilt(namespace, new_id.as_str(), None);
        drop(entry);
        let moved = {
            let mut table = new_shard.write();
            let found = table.find_bucket_index(new_hash, |e| e.is(namespace, new_id.as_str()));
            let taken = match found {
                Some(i) => match table.get_bucket(i).map(|e| e.state(namespace, now)) {
                    Some(State::Expired) => {
                        self.remove_at(&mut table, i, Removal::Expired);
                        false
                    }
                    // A deleted session's tombstone: the id is free, as it is for `create`.
                    Some(State::Tombstone(_)) => {
                        self.remove_at(&mut table, i, Removal::Caller);
                        false
                    }
                    // The new id holds this very write (an interrupted move being retried):
                    // the move is complete once the old id is gone, as it now is.
                    Some(State::Live(there)) if there.version == meta.version => {
                        self.release(1, old_charge);
                        drop(table);
                        drop(moved);
                        self.leave_rotated(key, deadline);
                        return Ok(there);
                    }
                    Some(_) => true,
                    None => false,
                },
                None => false,
            };
            if !taken {
                // The key length may differ: adjust the reserved bytes.
                self.adjust_bytes(old_charge, moved.charge(prefix_len));
                table.insert_unique(new_hash, moved, |e| self.hash_entry(e));
                new_shard.note_deadline(deadline);
                drop(table);
                self.leave_rotated(key, deadline);
                return Ok(meta);
            }
            moved
        };

        // 3. The new id is taken: put the session back under its old id,
        //    unless a live session (or a delete's tombstone) was written there meanwhile.
        let back = moved.rebuilt(namespace, key.id.as_str(), None);
        drop(moved);
        let mut table = old_shard.write();
        let found = table.find_bucket_index(old_hash, |e| e.is(namespace, key.id.as_str()));
        let occupied = match found {
            Some(i) => match table.get_bucket(i).map(|e| e.state(namespace, now)) {
                Some(State::Expired) => {
                    self.remove_at(&mut table, i, Removal::Expired);
                    false
                }
                Some(_) => true,
                None => false,
            },
            None => false,
        };
        if occupied {
            self.release(1, old_charge);
            drop(table);
            drop(back);
        } else {
            table.insert_unique(old_hash, back, |e| self.hash_entry(e));
            old_shard.note_deadline(deadline);
        }
        Err(Error::AlreadyExists {
            namespace: namespace.to_owned(),
        })
    }

    /// After a rotate moved the session away from `key`: a store that keeps tombstones leaves
    /// one there (a token of its own, not the session's, so a replayed write based on the
    /// session as it was loses to it as to a logout; the session's deadline), unless something
    /// was written under the old id meanwhile. A tombstone the bounds refuse is not left: the
    /// session has moved either way.
    pub(crate) fn leave_rotated(&self, key: &SessionKey, deadline: u64) {
        if !self.config.keeps_tombstones() {
            return;
        }
        let now = self.clock.now_ms();
        let meta = Tombstone::new(now, deadline).meta(deadline);
        let _ = self.apply_at(key, now, |state, _| {
            Ok(match state {
                State::Absent | State::Expired => Outcome::Write(Value::Tomb { meta }, ()),
                _ => Outcome::Keep(()),
            })
        });
    }

    /// Moves the reserved bytes of an entry from `old` to `new` (no bound check:
    /// a rotated key differs only in its id's length).
    pub(crate) fn adjust_bytes(&self, old: u64, new: u64) {
        if new > old {
            self.usage.bytes.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.usage.bytes.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    pub(crate) fn count(&self, namespace: &Namespace) -> u64 {
        let namespace = namespace.as_str();
        let now = self.clock.now_ms();
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let table = shard.read();
            n += table
                .iter()
                .filter(|e| {
                    let (ns, id) = e.parts();
                    // A principal index (`p.…`) is not a session.
                    e.deadline() > now && ns == namespace && !e.is_tombstone() && !id.starts_with("p.")
                })
                .count() as u64;
        }
        n
    }

    /// The live sessions of shards `from..` until at least `limit` are collected (whole shards
    /// at a time), and the shard to go on from (`None`: the last was scanned). Also counts the
    /// entries passed over (bytes that are not an envelope).
    pub(crate) fn scan_shards(
        &self,
        from: usize,
        limit: usize,
    ) -> (Vec<(SessionKey, Record)>, Option<usize>, u64) {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        let mut skipped = 0u64;
        let mut shard = from;
        while shard < self.shards.len() && (out.is_empty() || out.len() < limit) {
            let table = self.shards[shard].read();
            for e in table.iter().filter(|e| e.deadline() > now && !e.is_tombstone()) {
                let (namespace, id) = e.parts();
                // Sessions, and principal indexes (`p.…`), which copies carry too.
                let (Ok(namespace), Some(id)) = (Namespace::new(namespace), parse_stored_id(id)) else {
                    skipped += 1;
                    continue;
                };
                let key = SessionKey::new(namespace, id);
                match e.to_entry(key.ns()) {
                    Ok(Envelope::Live(record)) if !record.meta.is_expired(now) => {
                        out.push((key, record));
                    }
                    Ok(_) => {}
                    Err(_) => skipped += 1,
                }
            }
            shard += 1;
        }
        let next = (shard < self.shards.len()).then_some(shard);
        (out, next, skipped)
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::new(BACKEND);
        stats.entries = Some(self.usage.entries.load(Ordering::Relaxed));
        stats.bytes = Some(self.usage.bytes.load(Ordering::Relaxed));
        stats.evicted = self.evicted.load(Ordering::Relaxed);
        stats.rejected = self.rejected.load(Ordering::Relaxed);
        stats.expired = self.expired.load(Ordering::Relaxed);
        stats.extra = vec![
            ("max_entries", self.config.max_entries),
            ("max_bytes", self.config.max_bytes),
            ("shards", self.shards.len() as u64),
        ];
        stats
    }
}

/// What a write does on `session_core`'s reconciliation `decision` for `change`, given what
/// was `stored`, answering `answer`.
pub(crate) fn outcome<'a, R>(
    decision: Decision,
    change: &Change<'a>,
    stored: Stored,
    answer: R,
) -> Result<Outcome<'a, R>> {
    Ok(match (decision, *change, stored) {
        (Decision::Keep, _, _) => Outcome::Keep(answer),
        (Decision::Remove, _, _) => Outcome::Remove(answer),
        // Its own metadata, as `save` stores it.
        (Decision::Write, Change::Write(record), _) => {
            let meta = stamp(record);
            Outcome::Write(Value::record(meta, record), answer)
        }
        (Decision::Tombstone(deadline), Change::Delete(tombstone), _) => Outcome::Write(
            Value::Tomb {
                meta: tombstone.meta(deadline),
            },
            answer,
        ),
        // The stored tombstone (its token and time) with the later deadline; a tombstone has
        // no lifetime cap.
        (Decision::Extend(deadline), _, Stored::Tombstone(meta)) => Outcome::Write(
            Value::Tomb {
                meta: Meta {
                    expires_at: deadline,
                    max_expires_at: 0,
                    ..meta
                },
            },
            answer,
        ),
        (decision, _, _) => {
            return Err(Error::Backend {
                backend: BACKEND,
                message: format!(
                    "reconciliation decided {decision:?}, which does not fit the change or the stored value"
                ),
                source: None,
            })
        }
    })
}

/// `decide` for `save`: last writer wins; a corrupt value or a tombstone is replaced.
pub(crate) fn save_decision<'r>(
    record: &'r Record,
) -> impl FnMut(State, Option<&Entry>) -> Result<Outcome<'r, Meta>> + 'r {
    let meta = stamp(record);
    move |_, _| Ok(Outcome::Write(Value::record(meta, record), meta))
}

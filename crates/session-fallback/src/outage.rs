//! The outage path: calls served by the secondary, under the key's lock, keeping the journal.
//!
//! The secondary is authoritative for keys in the journal. A key that is not there but in the
//! warm copy is served from that copy, and a change of it is journaled against the copy's
//! version. For any other key the answer is unknown: a temporary error (the primary's own,
//! when the call tried it), never a miss — unless this instance deleted it.

use session_core::backend::{now_ms, Record};
use session_core::{Error, Meta, Result, SessionKey, SessionStore, Version};

use crate::journal::{Entry, JournalFull, KeyGuard, PendingOp};
use crate::ops::KeyOp;
use crate::state::Field;
use crate::store::{Inner, BACKEND};
use crate::warm::Known;

/// What this instance knows of a key when a call on it is served by the secondary.
pub(crate) struct Seen {
    /// The key's journal entry: when there is one, the secondary holds the session's state.
    pub(crate) entry: Option<Entry>,
    /// The warm copy of a session the primary held (only for a key not in the journal).
    pub(crate) warm: Option<Record>,
    /// Deleted by this instance in the primary: known to be gone.
    pub(crate) gone: bool,
    /// The primary's version a change journaled now is based on (kept only by a new journal
    /// residency): the warm copy's, or none.
    pub(crate) base: Version,
    /// The primary's error, when this call tried it.
    pub(crate) primary_err: Option<Error>,
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// Runs a single-key operation on the secondary, under the key's lock (held by the
    /// caller in `_guard`), keeping the journal. `primary_err` is the primary's error when
    /// this call tried it. What the operation does is its [`KeyOp::outage`].
    pub(crate) async fn on_secondary<O: KeyOp>(
        &self,
        key: &SessionKey,
        op: O,
        primary_err: Option<Error>,
        _guard: KeyGuard<'_>,
    ) -> Result<O::Output> {
        let seen = self.seen(key, primary_err);
        op.outage(self, key, seen).await
    }

    /// What this instance knows of `key` now; counts a call served from the warm copy.
    fn seen(&self, key: &SessionKey, primary_err: Option<Error>) -> Seen {
        let entry = self.journal.get(key);
        let known = match entry {
            None => self.warm.known(key, now_ms()),
            Some(_) => None,
        };
        let base = known.as_ref().map_or(Version::NONE, Known::version);
        let gone = matches!(known, Some(Known::Gone { .. }));
        let warm = match known {
            Some(Known::Live(r)) => Some(r),
            _ => None,
        };
        if warm.is_some() {
            self.counters.inc(Field::WarmServed);
        }
        Seen {
            entry,
            warm,
            gone,
            base,
            primary_err,
        }
    }

    /// The answer for a key this instance holds no copy of while the primary is unreachable:
    /// not found if this instance deleted it, else the primary's error when the call tried
    /// it, else "can't tell".
    pub(crate) fn unknown(&self, key: &SessionKey, gone: bool, primary_err: Option<Error>) -> Error {
        if gone {
            return Error::not_found(key.ns());
        }
        primary_err.unwrap_or_else(|| self.cannot_tell(key))
    }

    /// Before a change of a session known only from the warm copy: the copy becomes the
    /// secondary's state ([`materialize`](Self::materialize)) and `seen` its journal entry.
    pub(crate) async fn adopt_warm(&self, key: &SessionKey, seen: &mut Seen, op: &'static str) -> Result<()> {
        if let Some(w) = &seen.warm {
            self.materialize(key, w, op).await?;
            seen.entry = self.journal.get(key);
        }
        Ok(())
    }

    /// `save` or `create` during an outage: journaled (a new residency based on `base`),
    /// with any leftover in the secondary cleared first, then made on the secondary.
    pub(crate) async fn journal_write<O: KeyOp<Output = Meta>>(
        &self,
        key: &SessionKey,
        op: O,
        record: &Record,
        base: Version,
    ) -> Result<Meta> {
        let res = self
            .journal
            .admit(key, PendingOp::Write, record.meta.updated_at, base)
            .map_err(|full| self.journal_full(key, O::NAME, full))?;
        if res.is_new() {
            // The secondary may hold a leftover from before; it is not this session.
            self.secondary.delete(key).await?;
        }
        let meta = op.call(&self.secondary, key).await?;
        let new = res.is_new();
        res.commit(PendingOp::Write, meta.updated_at);
        self.warm.remove(key);
        if new {
            self.journaled(key);
        }
        Ok(meta)
    }

    /// `update` or `save_if` during an outage: of a session the secondary holds (journaled,
    /// or adopted from the warm copy); of any other the answer is unknown.
    pub(crate) async fn journal_change<O: KeyOp<Output = Meta>>(
        &self,
        key: &SessionKey,
        op: O,
        record: &Record,
        mut seen: Seen,
    ) -> Result<Meta> {
        self.adopt_warm(key, &mut seen, O::NAME).await?;
        if seen.entry.is_none() {
            return Err(self.unknown(key, seen.gone, seen.primary_err));
        }
        let res = self
            .journal
            .admit(key, PendingOp::Write, record.meta.updated_at, seen.base)
            .map_err(|full| self.journal_full(key, O::NAME, full))?;
        let meta = op.call(&self.secondary, key).await?;
        res.commit(PendingOp::Write, meta.updated_at);
        Ok(meta)
    }

    /// `delete` during an outage: a tombstone is journaled, so the delete is applied on
    /// recovery.
    pub(crate) async fn journal_delete(&self, key: &SessionKey, seen: Seen) -> Result<bool> {
        let at = now_ms();
        let res = self
            .journal
            .admit(key, PendingOp::Tombstone, at, seen.base)
            .map_err(|full| self.journal_full(key, "delete", full))?;
        let existed = self.secondary.delete(key).await?;
        let new = res.is_new();
        res.commit(PendingOp::Tombstone, at);
        self.warm.remove(key);
        if new {
            self.journaled(key);
        }
        // A session this instance holds no copy of may well live in the primary: the
        // delete is recorded and applied on recovery, so the logout happens.
        Ok(existed || (seen.entry.is_none() && !seen.gone))
    }

    /// A change of a session known from healthy traffic, during an outage: the warm copy
    /// becomes the secondary's state, journaled against the copy's version. The caller holds
    /// the key's lock.
    pub(crate) async fn materialize(&self, key: &SessionKey, warm: &Record, op: &'static str) -> Result<()> {
        let res = self
            .journal
            .admit(key, PendingOp::Write, warm.meta.updated_at, warm.meta.version)
            .map_err(|full| self.journal_full(key, op, full))?;
        if res.is_new() {
            self.secondary.delete(key).await?;
        }
        self.secondary.save(key, warm).await?;
        res.commit(PendingOp::Write, warm.meta.updated_at);
        self.warm.remove(key);
        self.journaled(key);
        Ok(())
    }

    /// The primary version a change of `key` made here now would be based on.
    /// That is the warm copy's version (a session's, or the tombstone of this
    /// instance's delete), or none when this instance knows nothing of it.
    pub(crate) fn base_of(&self, key: &SessionKey) -> Version {
        self.warm
            .known(key, now_ms())
            .map_or(Version::NONE, |k| k.version())
    }

    /// The answer for a session this instance holds no copy of while the primary is
    /// unreachable: not a miss (the session may exist), a temporary error.
    pub(crate) fn cannot_tell(&self, key: &SessionKey) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the {} primary is unreachable and this instance holds no copy of this {} session, so \
                 whether it exists is unknown; retry later (nothing is lost)",
                self.primary.backend(),
                key.ns()
            ),
            source: None,
        }
    }

    /// The answer to a call on a principal's session index while its primary does not answer
    /// (or a revocation of it waits in the journal): the index is kept by the primary only, so
    /// that `list` never answers less than a principal has without saying so, and a revocation
    /// is journaled whole instead (see `revoke`).
    pub(crate) fn index_unavailable(&self, key: &SessionKey) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the {} primary is unreachable, and a principal's session index in namespace {} is kept by \
                 the primary only (binding and listing wait for it; a revoke is journaled and applied when it \
                 answers); retry later",
                self.primary.backend(),
                key.ns()
            ),
            source: None,
        }
    }

    /// The refusal of a write of a new key into a full journal: counted, logged (no session
    /// id, a short hash), and a temporary error saying nothing was stored.
    pub(crate) fn journal_full(&self, key: &SessionKey, op: &'static str, full: JournalFull) -> Error {
        self.counters.inc(Field::JournalRejected);
        tracing::warn!(
            primary = self.primary.backend(),
            op,
            namespace = key.ns(),
            sid = %key.id.short_hash(),
            max_journal_keys = full.max,
            "session fallback: journal full, write refused"
        );
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "fallback journal full: {} sessions are waiting for replay into the {} primary, so this {op} \
                 of a new session was refused and nothing was stored; restore the primary or raise \
                 fallback.max_journal_keys",
                full.max,
                self.primary.backend()
            ),
            source: None,
        }
    }

    /// `rotate` on the secondary, with both keys' locks held by the caller: a tombstone is
    /// journaled for the old id and a write for the new one.
    pub(crate) async fn rotate_on_secondary(
        &self,
        key: &SessionKey,
        new_key: &SessionKey,
        primary_err: Option<Error>,
    ) -> Result<Meta> {
        if self.journal.get(key).is_none() {
            match self.warm.known(key, now_ms()) {
                Some(Known::Live(w)) => self.materialize(key, &w, "rotate").await?,
                Some(Known::Gone { .. }) => return Err(Error::not_found(key.ns())),
                None => return Err(primary_err.unwrap_or_else(|| self.cannot_tell(key))),
            }
        }
        if key == new_key {
            return Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            });
        }
        let now = now_ms();
        let new_res = self
            .journal
            .admit(new_key, PendingOp::Write, now, self.base_of(new_key))
            .map_err(|full| self.journal_full(new_key, "rotate", full))?;
        let old_res = self
            .journal
            .admit(key, PendingOp::Tombstone, now, self.base_of(key))
            .map_err(|full| self.journal_full(key, "rotate", full))?;
        if new_res.is_new() {
            self.secondary.delete(new_key).await?;
        }
        let meta = self.secondary.rotate(key, &new_key.id).await?;
        old_res.commit(PendingOp::Tombstone, now);
        new_res.commit(PendingOp::Write, meta.updated_at);
        self.journaled(key);
        self.journaled(new_key);
        Ok(meta)
    }
}

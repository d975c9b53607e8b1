//! `rotate` through a [`SecureStore`]: the inner store's own move (never lost, never
//! duplicated), from whichever layout holds the session into the written layout, then the
//! seal renewed for the new id (a sealed value is bound to the id it is stored under).

use session_core::backend::{CodecId, Record};
use session_core::{Error, Meta, Result, SessionId, SessionKey, SessionStore};

use crate::store::SecureStore;

/// How many times the seal renewal re-reads the moved session when another write lands in
/// between, or a temporary error interrupts it.
const RESEAL_ATTEMPTS: usize = 5;

impl<S: SessionStore> SecureStore<S> {
    pub(crate) async fn rotate_secure(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.layouts.check(key)?;
        let target = SessionKey::new(key.namespace.clone(), new_id.clone());
        self.layouts.check(&target)?;
        let to = self.layouts.written(&target);
        let from = self.layouts.every(key);
        // The new id must not hold another session under an older layout (the inner store
        // checks the written one).
        for stored in self.layouts.legacy(&target) {
            if stored != to && self.inner.load(&stored).await?.is_some() {
                return Err(Error::AlreadyExists {
                    namespace: key.ns().to_owned(),
                });
            }
        }
        for (i, stored) in from.iter().enumerate() {
            // Opened first: a value this store cannot open is `Corrupt` before anything moves.
            let Some(found) = self.inner.load(stored).await? else {
                continue;
            };
            self.open_from(stored, found)?;
            match self.inner.rotate(stored, &to.id).await {
                Ok(meta) => {
                    // Any other copy of the old id (two instances in different steps of a
                    // transition may each have made one) ends with the move.
                    for (j, other) in from.iter().enumerate() {
                        if j != i && *other != to {
                            self.inner.delete(other).await?;
                        }
                    }
                    return match self.reseal_moved(&from, &to).await? {
                        Some((renewed, _)) => Ok(renewed),
                        // Moved, then deleted or expired at once: what the move stored.
                        None => Ok(meta),
                    };
                }
                Err(e) if Self::absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        // Nothing under the old id: an earlier call may have moved the session without
        // renewing its seal; finish that, else the move is complete (NotFound, as the contract
        // says).
        if let Some((meta, true)) = self.reseal_moved(&from, &to).await? {
            return Ok(meta);
        }
        Err(Error::not_found(key.ns()))
    }

    /// After the inner store moved a session to `to` (or was found to have), renews its seal
    /// for `to` when it is still sealed for one of `from`, keeping its metadata (the version
    /// too: the value did not change). `Some((meta, renewed))`, `None` when `to` holds
    /// nothing. Retries on a concurrent write and on temporary errors.
    pub(crate) async fn reseal_moved(
        &self,
        from: &[SessionKey],
        to: &SessionKey,
    ) -> Result<Option<(Meta, bool)>> {
        let mut last = None;
        for _ in 0..RESEAL_ATTEMPTS {
            match self.reseal_once(from, to).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => last = None,
                Err(e) if e.is_temporary() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            backend: self.inner.backend(),
            message: format!(
                "the rotated session was written {RESEAL_ATTEMPTS} times while its seal was renewed; call \
                 rotate again with the same new id to finish"
            ),
            source: None,
        }))
    }

    /// One attempt of [`reseal_moved`](Self::reseal_moved): `Ok(None)` when it lost a
    /// compare-and-set.
    async fn reseal_once(
        &self,
        from: &[SessionKey],
        to: &SessionKey,
    ) -> Result<Option<Option<(Meta, bool)>>> {
        let Some(stored) = self.inner.load(to).await? else {
            return Ok(Some(None));
        };
        if stored.codec != CodecId::SEALED || self.open_from(to, stored.clone()).is_ok() {
            return Ok(Some(Some((stored.meta, false))));
        }
        let Some(plain) = from.iter().find_map(|k| self.open_from(k, stored.clone()).ok()) else {
            return self.open_from(to, stored).map(|_| None);
        };
        let renewed: Record = self.seal_for(to, &plain)?;
        match self.inner.save_if(to, stored.meta.version, &renewed).await {
            Ok(meta) => Ok(Some(Some((meta, true)))),
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

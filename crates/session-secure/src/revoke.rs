//! A revocation of a principal's sessions as a store below a [`SecureStore`] sees it: the
//! index under its stored key, records opened before their binding is read, and applied
//! through the same settings (so that it hashes the ids it deletes and opens the index).

use std::sync::Arc;

use async_trait::async_trait;
use session_core::backend::Record;
use session_core::{Result, Revocation, Revoked, SessionKey, SessionStore};

use crate::store::SecureStore;

/// `base`, handed to the store a [`SecureStore`] wraps.
pub(crate) struct SecureRevocation {
    base: Arc<dyn Revocation>,
    /// The wrapping store's settings (over no store).
    secure: SecureStore<()>,
    /// The index's key as the wrapped store holds it.
    index: SessionKey,
}

impl std::fmt::Debug for SecureRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureRevocation")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Revocation for SecureRevocation {
    fn index(&self) -> &SessionKey {
        &self.index
    }

    fn revoked_at(&self) -> u64 {
        self.base.revoked_at()
    }

    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool {
        self.secure
            .open_from(key, record.clone())
            .is_ok_and(|opened| self.base.is_bound(key, &opened))
    }

    fn ending(&self, key: &SessionKey) {
        self.base.ending(key);
    }

    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64> {
        self.base.apply(Arc::new(self.secure.over(store)), later).await
    }
}

impl<S: SessionStore> SecureStore<S> {
    /// [`SessionStore::revoke_principal`]: handed to the wrapped store, wrapped.
    pub(crate) async fn keep_revocation(&self, revocation: Arc<dyn Revocation>) -> Result<Option<Revoked>> {
        let index = self.layouts.written(revocation.index());
        let wrapped = SecureRevocation {
            base: revocation,
            secure: self.over(()),
            index,
        };
        self.inner.revoke_principal(Arc::new(wrapped)).await
    }
}

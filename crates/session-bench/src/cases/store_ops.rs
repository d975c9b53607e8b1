//! The operations on this workspace's stores: `SessionStore` calls and `Sessions<T>`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use session_core::backend::Record;
use session_core::{Namespace, Session, SessionId, SessionKey, SessionStore, Sessions};

use super::setup::new_id;
use super::{CAS_VERSION, MANY};
use crate::harness::Op;
use crate::payload::{self, TaskSession};

/// `SessionStore::load` of a pre-filled key.
pub(crate) struct StoreLoad {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) keys: Arc<[SessionKey]>,
}

impl Op for StoreLoad {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move { matches!(self.store.load(&self.keys[idx]).await, Ok(Some(_))) }
    }
}

/// `SessionStore::save` (last writer wins) of a pre-filled key.
pub(crate) struct StoreSave {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) keys: Arc<[SessionKey]>,
    pub(crate) record: Record,
    /// Hand each save a payload buffer of its own, as a codec does (in-process stores keep
    /// what they are given; sharing one buffer between every session would be unreal).
    pub(crate) fresh: Option<Bytes>,
}

impl Op for StoreSave {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        if let Some(template) = &self.fresh {
            self.record.payload = Bytes::copy_from_slice(template);
        }
        async move { self.store.save(&self.keys[idx], &self.record).await.is_ok() }
    }
}

/// `SessionStore::update` (`SET … XX` on Redis: written only if present) of a pre-filled key.
pub(super) struct StoreUpdate {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) keys: Arc<[SessionKey]>,
    pub(super) record: Record,
}

impl Op for StoreUpdate {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move { self.store.update(&self.keys[idx], &self.record).await.is_ok() }
    }
}

/// `SessionStore::save_if(key, CAS_VERSION, record)` of a key in
/// [`CAS_NAMESPACE`](super::CAS_NAMESPACE).
///
/// Every key there holds a record of version [`CAS_VERSION`], and `record` carries that same
/// version: a store keeps a record's own token when it is not
/// [`Version::NONE`](session_core::Version::NONE), so each call finds the expected version,
/// writes, and leaves the key at that version for the next call.
/// Every call thus succeeds and does the whole compare-and-set (on Redis the script reads the
/// stored header, compares the token and `SET`s the value). A `Conflict` (the pre-fill or a
/// store did not keep the token) or any other error counts as a failed operation.
pub(super) struct StoreSaveIf {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) keys: Arc<[SessionKey]>,
    pub(super) record: Record,
}

impl Op for StoreSaveIf {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            self.store
                .save_if(&self.keys[idx], CAS_VERSION, &self.record)
                .await
                .is_ok()
        }
    }
}

/// `SessionStore::create` under a new random id (what `Sessions::create` does).
pub(super) struct StoreCreate {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) namespace: Namespace,
    pub(super) record: Record,
}

impl Op for StoreCreate {
    fn call(&mut self, _idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let Ok(id) = SessionId::generate() else {
                return false;
            };
            let key = SessionKey::new(self.namespace.clone(), id);
            self.store.create(&key, &self.record).await.is_ok()
        }
    }
}

/// `SessionStore::load_many` of [`MANY`] pre-filled keys.
pub(super) struct StoreLoadMany {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) keys: Arc<[SessionKey]>,
}

impl Op for StoreLoadMany {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let start = idx.min(self.keys.len().saturating_sub(MANY));
            match self.store.load_many(&self.keys[start..start + MANY]).await {
                Ok(found) => found.iter().all(|r| matches!(r, Ok(Some(_)))),
                Err(_) => false,
            }
        }
    }
}

/// `SessionStore::save_many` of [`MANY`] pre-filled keys (their items built once, at set-up:
/// the call is what is measured, not assembling its argument).
pub(super) struct StoreSaveMany {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) items: Arc<[(SessionKey, Record)]>,
}

impl Op for StoreSaveMany {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let start = idx.min(self.items.len().saturating_sub(MANY));
            self.store
                .save_many(&self.items[start..start + MANY])
                .await
                .is_ok()
        }
    }
}

/// `Sessions<T>::load`: the store's load and the payload's decoding.
pub(super) struct TypedLoad {
    pub(super) sessions: Sessions<TaskSession>,
    pub(super) ids: Arc<[SessionId]>,
}

impl Op for TypedLoad {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move { matches!(self.sessions.load(&self.ids[idx]).await, Ok(Some(_))) }
    }
}

/// `Sessions<T>::save`: encoding, the envelope, the store's save.
///
/// Each task writes one session value under every id in turn (an application
/// saves the session it loaded; here the lifetime carried over is that of the
/// task's previous save, which costs the same).
pub(super) struct TypedSave {
    sessions: Sessions<TaskSession>,
    ids: Arc<[SessionId]>,
    session: Session<TaskSession>,
}

impl TypedSave {
    pub(super) fn new(sessions: Sessions<TaskSession>, ids: Arc<[SessionId]>) -> Self {
        let session = Session::new(new_id(), payload::session());
        TypedSave {
            sessions,
            ids,
            session,
        }
    }
}

impl Op for TypedSave {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        self.session.id.clone_from(&self.ids[idx]);
        async move { self.sessions.save(&mut self.session).await.is_ok() }
    }
}

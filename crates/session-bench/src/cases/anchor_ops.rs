//! The anchors' operations: raw fred commands, a `DashMap` and tower-sessions' stores.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use session_core::SessionId;
use session_redis::fred::interfaces::KeysInterface;
use session_redis::fred::types::{Expiration, Key, SetOptions, Value};
use tower_sessions_core::session::{Id as TowerId, Record as TowerRecord};
use tower_sessions_core::SessionStore as TowerStore;

use crate::harness::Op;

/// Raw fred `GET` of a pre-filled key (the store's key, the same envelope bytes).
pub(super) struct RawGet<C> {
    pub(super) client: C,
    pub(super) keys: Arc<[Key]>,
}

impl<C: KeysInterface + Send + Sync + 'static> Op for RawGet<C> {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let found: Result<Option<Bytes>, _> = self.client.get(self.keys[idx].clone()).await;
            matches!(found, Ok(Some(_)))
        }
    }
}

/// Raw fred `SET key envelope PXAT deadline` of a pre-filled key, with `XX` (as the store's
/// `update`) when `options` says so; a nil reply (`XX` on a missing key) is a failure.
pub(super) struct RawSet<C> {
    pub(super) client: C,
    pub(super) keys: Arc<[Key]>,
    pub(super) value: Bytes,
    pub(super) deadline: i64,
    pub(super) options: Option<SetOptions>,
}

impl<C: KeysInterface + Send + Sync + 'static> Op for RawSet<C> {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let reply: Result<Value, _> = self
                .client
                .set(
                    self.keys[idx].clone(),
                    self.value.clone(),
                    Some(Expiration::PXAT(self.deadline)),
                    self.options.clone(),
                    false,
                )
                .await;
            matches!(reply, Ok(v) if !v.is_null())
        }
    }
}

/// Raw fred `SET key envelope NX PXAT deadline` under a new random id, as the store's `create`.
pub(super) struct RawSetNx<C> {
    pub(super) client: C,
    pub(super) prefix: String,
    pub(super) value: Bytes,
    pub(super) deadline: i64,
}

impl<C: KeysInterface + Send + Sync + 'static> Op for RawSetNx<C> {
    fn call(&mut self, _idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let Ok(id) = SessionId::generate() else {
                return false;
            };
            let mut key = String::with_capacity(self.prefix.len() + id.as_str().len());
            key.push_str(&self.prefix);
            key.push_str(id.as_str());
            let reply: Result<Value, _> = self
                .client
                .set(
                    key,
                    self.value.clone(),
                    Some(Expiration::PXAT(self.deadline)),
                    Some(SetOptions::NX),
                    false,
                )
                .await;
            matches!(reply, Ok(v) if !v.is_null())
        }
    }
}

/// `DashMap<String, Bytes>::get`, the payload handle cloned out.
pub(super) struct DashGet {
    pub(super) map: Arc<DashMap<String, Bytes>>,
    pub(super) keys: Arc<[String]>,
}

impl Op for DashGet {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        let found = self.map.get(self.keys[idx].as_str()).map(|v| v.value().clone());
        async move { std::hint::black_box(found).is_some() }
    }
}

/// An upsert into `DashMap<String, Bytes>` of a payload buffer of its own (as a codec hands
/// it over): replace in place, insert when absent.
pub(super) struct DashSet {
    pub(super) map: Arc<DashMap<String, Bytes>>,
    pub(super) keys: Arc<[String]>,
    pub(super) value: Bytes,
}

impl Op for DashSet {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        let key = self.keys[idx].as_str();
        let value = Bytes::copy_from_slice(&self.value);
        let old = match self.map.get_mut(key) {
            Some(mut slot) => Some(std::mem::replace(slot.value_mut(), value)),
            None => self.map.insert(key.to_owned(), value),
        };
        drop(old);
        async { true }
    }
}

/// An upsert into `DashMap<String, Bytes>` of one shared buffer (a reference-count bump, no
/// allocation): the bare table's limit, below what storing real sessions costs.
pub(super) struct DashSetShared {
    pub(super) map: Arc<DashMap<String, Bytes>>,
    pub(super) keys: Arc<[String]>,
    pub(super) value: Bytes,
}

impl Op for DashSetShared {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        let key = self.keys[idx].as_str();
        let old = match self.map.get_mut(key) {
            Some(mut slot) => Some(std::mem::replace(slot.value_mut(), self.value.clone())),
            None => self.map.insert(key.to_owned(), self.value.clone()),
        };
        drop(old);
        async { true }
    }
}

/// tower-sessions `SessionStore::load`.
pub(crate) struct TowerLoad<S> {
    pub(crate) store: S,
    pub(crate) ids: Arc<[TowerId]>,
}

impl<S: TowerStore + Clone> Op for TowerLoad<S> {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move { matches!(self.store.load(&self.ids[idx]).await, Ok(Some(_))) }
    }
}

/// tower-sessions `SessionStore::save` of a pre-filled id (its Redis store's save is `SET … XX`;
/// its sqlx stores' an upsert).
pub(crate) struct TowerSave<S> {
    pub(crate) store: S,
    pub(crate) ids: Arc<[TowerId]>,
    pub(crate) record: TowerRecord,
}

impl<S: TowerStore + Clone> Op for TowerSave<S> {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            self.record.id = self.ids[idx];
            self.store.save(&self.record).await.is_ok()
        }
    }
}

/// tower-sessions `SessionStore::create` under a new random id.
pub(super) struct TowerCreate<S> {
    pub(super) store: S,
    pub(super) record: TowerRecord,
}

impl<S: TowerStore + Clone> Op for TowerCreate<S> {
    fn call(&mut self, _idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            self.record.id = TowerId::default();
            self.store.create(&mut self.record).await.is_ok()
        }
    }
}

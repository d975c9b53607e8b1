//! The store's calls through the near cache: loads answered from it or filled from Redis, and
//! this store's own writes taking their keys' copies out.

use std::future::Future;

use bytes::Bytes;
use fred::types::Key;
use session_core::backend::{decode_entry, now_ms, Entry, Record};
use session_core::{Result, SessionKey};

use crate::cluster::Cmd;
use crate::near::cache::Lookup;
use crate::near::Near;
use crate::store::RedisStore;

impl RedisStore {
    /// `load_entry` through the near cache: a live copy held here, else `GET`, whose live
    /// session is kept unless an invalidation of the key (or a lost tracking connection) came
    /// while the read was in flight.
    pub(super) async fn load_entry_near(&self, near: &Near, key: &SessionKey) -> Result<Option<Entry>> {
        let rendered = self.inner.prefix.render(key);
        if let Lookup::Hit(record) = near.cache.get(&rendered, now_ms()) {
            return Ok(Some(Entry::Live(record)));
        }
        let ticket = near.cache.begin_read(&rendered);
        let k = Key::from(rendered.as_str());
        let value: Result<Option<Bytes>> = self.read(&k, "load", key.ns(), Cmd::Get(k.clone())).await;
        let entry = value.and_then(|v| v.map(|bytes| decode_entry(&bytes, key.ns())).transpose());
        if let Some(ticket) = ticket {
            let live = match &entry {
                Ok(Some(Entry::Live(record))) => Some(record),
                _ => None,
            };
            near.cache.finish_read(ticket, &rendered, live);
        }
        entry
    }

    /// `load_many` through the near cache: the copies held here, the rest in one `load_many`
    /// of the store, each kept as [`load_entry_near`](Self::load_entry_near) keeps one.
    pub(super) async fn load_many_near(
        &self,
        near: &Near,
        keys: &[SessionKey],
    ) -> Result<Vec<Result<Option<Record>>>> {
        let now = now_ms();
        let mut out: Vec<Option<Result<Option<Record>>>> = Vec::with_capacity(keys.len());
        let mut missed = Vec::new();
        let mut reads = Vec::new();
        for key in keys {
            let rendered = self.inner.prefix.render(key);
            match near.cache.get(&rendered, now) {
                Lookup::Hit(record) => out.push(Some(Ok(Some(record)))),
                Lookup::Miss => {
                    let ticket = near.cache.begin_read(&rendered);
                    reads.push((out.len(), rendered, ticket));
                    missed.push(key.clone());
                    out.push(None);
                }
            }
        }
        let loaded = if missed.is_empty() {
            Ok(Vec::new())
        } else {
            self.load_many_uncached(&missed).await
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                for (_, rendered, ticket) in reads {
                    if let Some(ticket) = ticket {
                        near.cache.finish_read(ticket, &rendered, None);
                    }
                }
                return Err(e);
            }
        };
        for ((i, rendered, ticket), result) in reads.into_iter().zip(loaded) {
            if let Some(ticket) = ticket {
                let live = result.as_ref().ok().and_then(Option::as_ref);
                near.cache.finish_read(ticket, &rendered, live);
            }
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(result);
            }
        }
        Ok(out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect())
    }

    /// This store's own write of `keys`: their copies go before the write is sent (a read in
    /// flight then is not kept) and again when it returns, whatever it returned (a read that
    /// ran beside it may have kept the value it replaced). Read-your-writes without waiting for
    /// Redis's invalidation.
    pub(super) async fn own_write<T>(&self, keys: &[&SessionKey], write: impl Future<Output = T>) -> T {
        let Some(near) = &self.inner.near else {
            return write.await;
        };
        let rendered: Vec<String> = keys.iter().map(|k| self.inner.prefix.render(k)).collect();
        for k in &rendered {
            near.cache.invalidate(k);
        }
        let out = write.await;
        for k in &rendered {
            near.cache.invalidate(k);
        }
        out
    }
}

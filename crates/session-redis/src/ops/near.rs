//! The store's calls through the near cache: loads answered from it or filled from Redis, and
//! this store's own writes taking their keys' copies out.

use std::future::Future;

use bytes::Bytes;
use fred::interfaces::KeysInterface;
use fred::types::Key;
use session_core::backend::{decode_entry, now_ms, Entry, Record};
use session_core::{Result, SessionKey};

use crate::cluster::Cmd;
use crate::near::cache::{Lookup, NearCache, Ticket};
use crate::near::Near;
use crate::store::{Nodes, RedisStore};

/// A read in flight whose reply the cache may keep; dropped unfinished (an error, a cancelled
/// load), it withdraws its ticket.
struct Read<'a> {
    cache: &'a NearCache,
    key: &'a str,
    ticket: Option<Ticket>,
}

impl Read<'_> {
    fn finish(&mut self, found: Option<&Record>) {
        if let Some(ticket) = self.ticket.take() {
            self.cache.finish_read(ticket, self.key, found);
        }
    }
}

impl Drop for Read<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl RedisStore {
    /// `load_entry` through the near cache: a live copy held here, else `GET`, whose live
    /// session is kept unless an invalidation of the key (or a lost tracking connection) came
    /// while the read was in flight.
    pub(super) async fn load_entry_near(&self, near: &Near, key: &SessionKey) -> Result<Option<Entry>> {
        let rendered = self.inner.prefix.render(key);
        if let Lookup::Hit(record) = near.cache.get(&rendered, now_ms()) {
            return Ok(Some(Entry::Live(record)));
        }
        let k = Key::from(rendered.as_str());
        // Kept only when read by a tracker's reader (Redis then reports the key's next change).
        if let Some(reader) = self.near_reader_for(rendered.as_bytes()) {
            if let Some(ticket) = near.cache.begin_read(&rendered) {
                let mut read = Read {
                    cache: &near.cache,
                    key: &rendered,
                    ticket: Some(ticket),
                };
                if let Ok(value) = reader.get::<Option<Bytes>, _>(k.clone()).await {
                    let entry = value.map(|bytes| decode_entry(&bytes, key.ns())).transpose();
                    let live = match &entry {
                        Ok(Some(Entry::Live(record))) => Some(record),
                        _ => None,
                    };
                    read.finish(live);
                    return entry;
                }
                // A refusal (MOVED or ASK on a cluster, a full queue, a timeout): the read is
                // not kept, and the usual route answers (and maps the error).
            }
        }
        let value: Option<Bytes> = self.read(&k, "load", key.ns(), Cmd::Get(k.clone())).await?;
        value.map(|bytes| decode_entry(&bytes, key.ns())).transpose()
    }

    /// The reader of the tracker of the node serving `key` (rendered), when that tracker is
    /// ready.
    fn near_reader_for(&self, key: &[u8]) -> Option<fred::clients::Client> {
        match &self.inner.nodes {
            Nodes::One(node) => node.near_reader(),
            Nodes::Cluster(cluster) => cluster
                .node_for(fred::util::redis_keyslot(key))
                .ok()?
                .near_reader(),
        }
    }

    /// `load_many` through the near cache: the copies held here, the rest in one `load_many`
    /// of the store (not kept: those reads are not tracked).
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
                    missed.push(key.clone());
                    reads.push(out.len());
                    out.push(None);
                }
            }
        }
        let loaded = if missed.is_empty() {
            Ok(Vec::new())
        } else {
            self.load_many_uncached(&missed).await
        };
        for (i, result) in reads.into_iter().zip(loaded?) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(result);
            }
        }
        Ok(out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect())
    }

    /// This store's own write of `keys`: when it returns, whatever it returned, their copies go
    /// and no read of them then in flight is kept (a read that ran beside the write may have
    /// fetched the value it replaced). Read-your-writes without waiting for Redis's
    /// invalidation; while the write is in flight, a load may still answer the old value, as
    /// it could have before the write was sent.
    pub(super) async fn own_write<T>(&self, keys: &[&SessionKey], write: impl Future<Output = T>) -> T {
        let out = write.await;
        if let Some(near) = &self.inner.near {
            for key in keys {
                near.cache.invalidate(&self.inner.prefix.render(key));
            }
        }
        out
    }
}

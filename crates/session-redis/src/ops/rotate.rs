//! `rotate` on a cluster, where the old and the new key live in different slots: copy, then
//! delete the old key if it still holds the copied version, undoing the copy otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::types::{Key, Value};
use session_core::backend::{decode_entry, encode_tombstone, Entry, Tombstone};
use session_core::{Error, Meta, Result, SessionId, SessionKey, SessionStore, Version};

use crate::cluster::Cmd;
use crate::replies::ScriptReply;
use crate::store::{pxat, RedisStore};
use crate::BACKEND;

use super::{already_exists, unexpected};

/// How often a cluster `rotate` starts over when the old id changed under it.
const ROTATE_ATTEMPTS: usize = 3;
/// First and longest delay between background retries of a rotate's undo.
const UNDO_RETRY_MIN: Duration = Duration::from_millis(50);
const UNDO_RETRY_MAX: Duration = Duration::from_secs(2);
/// A rotate's undo is retried at most this long (the copy's deadline usually ends it first).
const UNDO_RETRY_FOR: Duration = Duration::from_secs(600);

impl RedisStore {
    /// `rotate` on a cluster, where the two keys live in different slots: copy to the new key
    /// (unless it holds another session), then delete the old key if it still holds the
    /// version copied. If the old key changed or went away in between, the copy is undone.
    pub(super) async fn rotate_in_two_steps(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let (old_k, new_k) = (self.key(key), self.key(&new_key));
        let scripts = &self.inner.scripts;
        for _ in 0..ROTATE_ATTEMPTS {
            let get = Cmd::Get(old_k.clone());
            let value: Option<Bytes> = self.read(&old_k, "rotate", key.ns(), get).await?;
            let Some(bytes) = value else {
                return Err(Error::not_found(key.ns()));
            };
            let meta = match decode_entry(&bytes, key.ns())? {
                Entry::Live(record) => record.meta,
                // A deleted session's tombstone: nothing to move.
                Entry::Tombstone(_) => return Err(Error::not_found(key.ns())),
            };
            let version = Value::Bytes(Bytes::copy_from_slice(&meta.version.as_u64().to_be_bytes()));
            let copy_args = vec![
                Value::Bytes(bytes.clone()),
                version.clone(),
                Value::Integer(pxat(meta.deadline())),
            ];
            let copy_to = Cmd::Script(&scripts.copy_to, std::slice::from_ref(&new_k), copy_args);
            let copy: Value = self.write(&new_k, "rotate", key.ns(), copy_to).await?;
            match ScriptReply::of(copy) {
                ScriptReply::Code(1) => {}
                ScriptReply::Code(-2) => return Err(already_exists(key)),
                _ => return Err(unexpected("rotate", key.ns())),
            }
            let mut args = vec![version.clone()];
            args.extend(self.rotate_tombstone());
            let del_if = Cmd::Script(&scripts.del_if, std::slice::from_ref(&old_k), args);
            let removed: Value = self.write(&old_k, "rotate", key.ns(), del_if).await?;
            match ScriptReply::of(removed) {
                ScriptReply::Code(1) => return Ok(meta),
                // The old id was deleted (a logout) or rewritten meanwhile: the copy must not
                // outlive it. Undo it, then report the logout or start over with the new value.
                ScriptReply::Code(code @ (0 | -2)) => {
                    let undo = Cmd::Script(
                        &scripts.del_if,
                        std::slice::from_ref(&new_k),
                        vec![version.clone()],
                    );
                    let undone: Result<Value> = self.write(&new_k, "rotate", key.ns(), undo).await;
                    if let Err(e) = undone {
                        // The copy must not outlive the logout: keep trying in the background
                        // until Redis answers (or the copy's own deadline removes it).
                        self.undo_copy_later(new_k.clone(), version, meta.deadline());
                        return Err(e);
                    }
                    if code == 0 {
                        return Err(Error::not_found(key.ns()));
                    }
                }
                _ => return Err(unexpected("rotate", key.ns())),
            }
        }
        Err(Error::Conflict {
            namespace: key.ns().to_owned(),
            expected: Version::NONE,
            actual: Version::NONE,
        })
    }

    /// What a store that keeps tombstones leaves under a rotated session's old id: a tombstone
    /// header with a token of its own (not the session's: a replayed write based on the session
    /// as it was must lose to it, as to a logout), its deadline set by the script to the
    /// session's. `None` for a store without tombstones (the old key is deleted).
    pub(super) fn rotate_tombstone(&self) -> Option<Value> {
        self.keeps_tombstones().then(|| {
            let now = session_core::backend::now_ms();
            Value::Bytes(encode_tombstone(&Tombstone::new(now, now).meta(0)))
        })
    }

    /// Deletes `key` if it still holds `version`, retried in the background until Redis
    /// answers or `deadline` (ms) has passed: the undo of a cluster rotate's copy whose old id
    /// was logged out meanwhile, when the first undo failed.
    fn undo_copy_later(&self, key: Key, version: Value, deadline: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let started = Instant::now();
        rt.spawn(async move {
            let mut delay = UNDO_RETRY_MIN;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(UNDO_RETRY_MAX);
                if session_core::backend::now_ms() >= deadline || started.elapsed() >= UNDO_RETRY_FOR {
                    return;
                }
                let Some(inner) = weak.upgrade() else { return };
                let store = RedisStore { inner };
                let script = &store.inner.scripts.del_if;
                let undo = Cmd::Script(script, std::slice::from_ref(&key), vec![version.clone()]);
                let undone: Result<Value> = store.write(&key, "rotate", "", undo).await;
                if undone.is_ok() {
                    tracing::debug!(backend = BACKEND, "redis: undid an interrupted rotate's copy");
                    return;
                }
            }
        });
    }
}

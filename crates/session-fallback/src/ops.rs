//! The single-key operations as types. Each [`KeyOp`] names itself, calls any store, keeps
//! the warm copy in step with the primary's answer, and says what it does during an outage.
//!
//! [`Inner::exec`] is generic over them, so an operation's answer keeps its own type
//! ([`KeyOp::Output`]) from the store's call to the caller: `load` answers
//! `Option<Record>` and nothing else, `save` a [`Meta`], `delete` a `bool`. There is no
//! shared result type to take apart again, and so no "wrong kind of answer" case. Each
//! operation is compiled on its own, and the healthy path holds no more than its own call.

use std::future::Future;
use std::pin::Pin;

use session_core::backend::{Record, Tombstone};
use session_core::{Error, Meta, Result, SessionKey, SessionStore, Version};

use crate::outage::Seen;
use crate::store::Inner;
use crate::warm::WarmCopy;

/// The boxed future of a [`SessionStore`] method, as `async_trait` declares it: handed on as
/// the store made it, never boxed again.
pub(crate) type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One single-key operation, routed as a unit by [`Inner::exec`].
pub(crate) trait KeyOp: Copy + Send + Sync {
    /// What the operation answers.
    type Output: Send;

    /// Its name in deadlines, logs and errors.
    const NAME: &'static str;

    /// The operation on `store`: the primary, or the secondary on the outage path.
    fn call<'a, St: SessionStore>(
        self,
        store: &'a St,
        key: &'a SessionKey,
    ) -> StoreFuture<'a, Result<Self::Output>>
    where
        Self: 'a;

    /// Keeps the warm copy in step with what the primary answered (called only while the
    /// copy is on).
    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Self::Output>);

    /// The operation on the secondary during an outage, under the key's lock, knowing what
    /// this instance has `seen` of the key (see [`Inner::on_secondary`]).
    fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// `load`.
#[derive(Clone, Copy)]
pub(crate) struct Load;

/// `save` of a record.
#[derive(Clone, Copy)]
pub(crate) struct Save<'r>(pub(crate) &'r Record);

/// `create` of a record.
#[derive(Clone, Copy)]
pub(crate) struct Create<'r>(pub(crate) &'r Record);

/// `update` with a record.
#[derive(Clone, Copy)]
pub(crate) struct Update<'r>(pub(crate) &'r Record);

/// `save_if` the stored version is the expected one.
#[derive(Clone, Copy)]
pub(crate) struct SaveIf<'r>(pub(crate) Version, pub(crate) &'r Record);

/// `delete`, leaving this tombstone (its version is what the warm copy remembers).
#[derive(Clone, Copy)]
pub(crate) struct Delete(pub(crate) Tombstone);

/// `touch` to a new deadline, ms.
#[derive(Clone, Copy)]
pub(crate) struct Touch(pub(crate) u64);

impl KeyOp for Load {
    type Output = Option<Record>;
    const NAME: &'static str = "load";

    fn call<'a, St: SessionStore>(
        self,
        store: &'a St,
        key: &'a SessionKey,
    ) -> StoreFuture<'a, Result<Self::Output>>
    where
        Self: 'a,
    {
        store.load(key)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Self::Output>) {
        match answer {
            Ok(Some(r)) => warm.put(key, r),
            // A miss, or an error: the copy is no longer current.
            _ => warm.remove(key),
        }
    }

    async fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> Result<Self::Output> {
        match (&seen.entry, seen.warm) {
            (Some(_), _) => inner.secondary.load(key).await,
            (None, Some(w)) => Ok(Some(w)),
            (None, None) if seen.gone => Ok(None),
            (None, None) => Err(inner.unknown(key, seen.gone, seen.primary_err)),
        }
    }
}

/// What every write (`save`, `create`, `update`, `save_if`) leaves in the warm copy: the
/// record as the primary stored it, or nothing when the primary refused it.
fn keep_written(warm: &WarmCopy, key: &SessionKey, record: &Record, answer: &Result<Meta>) {
    match answer {
        Ok(meta) => warm.put_written(key, *meta, record),
        // A refusal (`NotFound`, `Conflict`, ...): the copy is no longer current.
        Err(_) => warm.remove(key),
    }
}

impl<'r> KeyOp for Save<'r> {
    type Output = Meta;
    const NAME: &'static str = "save";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<Meta>>
    where
        Self: 'a,
    {
        store.save(key, self.0)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Meta>) {
        keep_written(warm, key, self.0, answer);
    }

    fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> impl Future<Output = Result<Meta>> + Send {
        inner.journal_write(key, self, self.0, seen.base)
    }
}

impl<'r> KeyOp for Create<'r> {
    type Output = Meta;
    const NAME: &'static str = "create";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<Meta>>
    where
        Self: 'a,
    {
        store.create(key, self.0)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Meta>) {
        keep_written(warm, key, self.0, answer);
    }

    async fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> Result<Meta> {
        // The primary held this session when this instance last saw it.
        if seen.warm.is_some() {
            return Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            });
        }
        inner.journal_write(key, self, self.0, seen.base).await
    }
}

impl<'r> KeyOp for Update<'r> {
    type Output = Meta;
    const NAME: &'static str = "update";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<Meta>>
    where
        Self: 'a,
    {
        store.update(key, self.0)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Meta>) {
        keep_written(warm, key, self.0, answer);
    }

    fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> impl Future<Output = Result<Meta>> + Send {
        inner.journal_change(key, self, self.0, seen)
    }
}

impl<'r> KeyOp for SaveIf<'r> {
    type Output = Meta;
    const NAME: &'static str = "save_if";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<Meta>>
    where
        Self: 'a,
    {
        store.save_if(key, self.0, self.1)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<Meta>) {
        keep_written(warm, key, self.1, answer);
    }

    /// Versions are unique tokens: one the secondary never stored matches nothing there.
    fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> impl Future<Output = Result<Meta>> + Send {
        inner.journal_change(key, self, self.1, seen)
    }
}

impl KeyOp for Delete {
    type Output = bool;
    const NAME: &'static str = "delete";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<bool>>
    where
        Self: 'a,
    {
        store.delete_leaving(key, self.0)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<bool>) {
        match answer {
            // Deleted here: the primary holds this delete's tombstone.
            Ok(_) => warm.put_gone(key, self.0.version, self.0.until),
            Err(_) => warm.remove(key),
        }
    }

    fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        seen: Seen,
    ) -> impl Future<Output = Result<bool>> + Send {
        inner.journal_delete(key, seen)
    }
}

impl KeyOp for Touch {
    type Output = bool;
    const NAME: &'static str = "touch";

    fn call<'a, St: SessionStore>(self, store: &'a St, key: &'a SessionKey) -> StoreFuture<'a, Result<bool>>
    where
        Self: 'a,
    {
        store.touch(key, self.0)
    }

    fn keep_warm(self, warm: &WarmCopy, key: &SessionKey, answer: &Result<bool>) {
        match answer {
            Ok(true) => warm.retime(key, self.0),
            // Not there (or an error): the copy is no longer current.
            _ => warm.remove(key),
        }
    }

    async fn outage<'a, P: SessionStore, S: SessionStore>(
        self,
        inner: &'a Inner<P, S>,
        key: &'a SessionKey,
        mut seen: Seen,
    ) -> Result<bool> {
        inner.adopt_warm(key, &mut seen, Self::NAME).await?;
        match seen.entry {
            // The entry stays as it is: replay copies whatever deadline the secondary holds.
            Some(_) => inner.secondary.touch(key, self.0).await,
            None if seen.gone => Ok(false),
            None => Err(inner.unknown(key, seen.gone, seen.primary_err)),
        }
    }
}

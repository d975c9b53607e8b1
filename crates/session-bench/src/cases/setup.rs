//! Set-up shared by the cases: the pre-filled key spaces, the records, and the pre-fills.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use session_core::backend::Record;
use session_core::{Namespace, SessionId, SessionKey, SessionStore};
use session_redis::fred::types::Key;
use tower_sessions_core::session::{Id as TowerId, Record as TowerRecord};
use tower_sessions_core::SessionStore as TowerStore;

use super::NAMESPACE;
use crate::payload;

/// The pre-filled key space in the forms the subjects take it.
#[derive(Clone)]
pub(crate) struct Keys {
    /// Store keys (`bench:{id}`).
    pub(crate) keys: Arc<[SessionKey]>,
    /// Their ids, for `Sessions<T>`.
    pub(crate) ids: Arc<[SessionId]>,
    /// The full Redis keys (`session:bench:{id}`), for raw fred.
    pub(crate) redis: Arc<[Key]>,
    /// `bench:{id}`, for the DashMap.
    pub(crate) strings: Arc<[String]>,
}

impl Keys {
    pub(crate) fn new(n: usize) -> Self {
        Keys::in_namespace(NAMESPACE, n)
    }

    /// `n` fresh ids in `name`.
    pub(crate) fn in_namespace(name: &str, n: usize) -> Self {
        let namespace = ns(name);
        let ids: Vec<SessionId> = (0..n).map(|_| new_id()).collect();
        let keys: Vec<SessionKey> = ids
            .iter()
            .map(|id| SessionKey::new(namespace.clone(), id.clone()))
            .collect();
        let strings: Vec<String> = ids.iter().map(|id| format!("{name}:{}", id.as_str())).collect();
        let redis: Vec<Key> = strings
            .iter()
            .map(|s| Key::from(format!("session:{s}")))
            .collect();
        Keys {
            keys: keys.into(),
            ids: ids.into(),
            redis: redis.into(),
            strings: strings.into(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

pub(crate) fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap_or_else(|e| panic!("namespace {name}: {e}"))
}

pub(super) fn new_id() -> SessionId {
    SessionId::generate().unwrap_or_else(|e| panic!("no session id: {e}"))
}

pub(crate) fn check<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Saves `record` (with a payload buffer of its own per key, as sessions really have) under every
/// key. A chunk that fails (a timeout on a busy machine: the stores keep their default 250 ms)
/// is saved again, up to four more times.
pub(crate) async fn prefill(store: &dyn SessionStore, keys: &Keys, record: &Record, own_payloads: bool) {
    for chunk in keys.keys.chunks(500) {
        let items: Vec<(SessionKey, Record)> = chunk
            .iter()
            .map(|k| {
                let mut r = record.clone();
                if own_payloads {
                    r.payload = Bytes::copy_from_slice(&record.payload);
                }
                (k.clone(), r)
            })
            .collect();
        let mut attempt = 0;
        loop {
            match store.save_many(&items).await {
                Ok(_) => break,
                Err(e) if attempt < 4 && e.is_temporary() => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => panic!("pre-filling a store: {e}"),
            }
        }
    }
}

/// Every key of `keys` with `record`, as `save_many` takes them.
pub(super) fn save_items(keys: &Keys, record: &Record) -> Arc<[(SessionKey, Record)]> {
    keys.keys.iter().map(|k| (k.clone(), record.clone())).collect()
}

/// A record with a payload buffer of its own (per task: no shared reference count between tasks).
pub(super) fn own_record(record: &Record) -> Record {
    let mut r = record.clone();
    r.payload = Bytes::copy_from_slice(&record.payload);
    r
}

pub(crate) fn tower_record(expiry_secs: i64) -> TowerRecord {
    TowerRecord {
        id: TowerId::default(),
        data: payload::tower_data(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(expiry_secs),
    }
}

/// Creates `n` tower-sessions records, `concurrency` at a time, and returns their ids.
pub(crate) async fn tower_prefill<S: TowerStore + Clone>(store: &S, n: usize) -> Vec<TowerId> {
    let template = tower_record(3 * 3600);
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(256);
        let creates = (0..batch).map(|_| {
            let store = store.clone();
            let mut record = template.clone();
            async move {
                record.id = TowerId::default();
                check("pre-filling tower-sessions", store.create(&mut record).await);
                record.id
            }
        });
        ids.extend(futures::future::join_all(creates).await);
        left -= batch;
    }
    ids
}

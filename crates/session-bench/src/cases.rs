//! Every case: the stores and anchors, their set-up and pre-filled key spaces, and their operations.

#![allow(
    clippy::manual_async_fn,
    reason = "the ops spell out the `Send` future the harness needs; the in-memory anchors do \
              their work before returning a ready future"
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use session_core::backend::Record;
use session_core::instrument::{Instrumented, LATENCY_BUCKETS};
use session_core::{CodecKind, Namespace, Session, SessionId, SessionKey, SessionStore, Sessions, Version};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::fred::clients::{Client, Pool};
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::fred::types::{CustomCommand, Expiration, Key, SetOptions, Value};
use session_redis::{RedisConfig, RedisStore};
use tower_sessions_core::session::{Id as TowerId, Record as TowerRecord};
use tower_sessions_core::SessionStore as TowerStore;

use crate::commandstats::ServerStats;
use crate::harness::{run_cell, Cell, Op, Plan};
use crate::payload::{self, TaskSession};

/// The namespace of the pre-filled key space.
pub(crate) const NAMESPACE: &str = "bench";
/// The namespace of the `save_if` cases' key space, pre-filled with records of version
/// [`CAS_VERSION`] (the other writes would give the keys fresh versions).
const CAS_NAMESPACE: &str = "bench_cas";
/// The fixed version token of every record in [`CAS_NAMESPACE`] (`SESSION1` in ASCII: not
/// [`Version::NONE`], so the stores keep it).
const CAS_VERSION: Version = Version::from_u64(0x5345_5353_494f_4e31);
/// The namespace `create` cases write to (in Redis database 1, emptied after each cell).
const CREATE_NAMESPACE: &str = "new";
/// The Redis database of the `create` cases.
const CREATE_DB: u8 = 1;
/// Keys per `load_many` and `save_many` call.
pub(crate) const MANY: usize = 16;
/// Connections of the `(pool 2)` subjects: fred's `Pool` of the raw anchors, and
/// `redis.pool_size` of the stores (per node on a cluster). The store's default is 1
/// (`session_redis::DEFAULT_POOL_SIZE`), which the `(1 connection)` subjects measure.
pub(crate) const POOL: usize = 2;

/// Where a case runs, which decides its cell length and latency sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    /// In-process stores.
    Memory,
    /// Redis, over loopback.
    Redis,
    /// PostgreSQL over loopback, or a SQLite file.
    Sql,
}

type CellFuture = Pin<Box<dyn Future<Output = Cell> + Send>>;
type Runner = Box<dyn Fn(Plan) -> CellFuture + Send + Sync>;
/// Run after each cell (outside the measured time).
pub(crate) type Cleanup = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One thing measured: a subject, an operation, a task count.
pub(crate) struct Case {
    /// What is measured, e.g. `RedisStore (pool 2)`.
    pub(crate) subject: &'static str,
    /// The operation, e.g. `load`.
    pub(crate) op: &'static str,
    /// Concurrent tasks.
    pub(crate) tasks: usize,
    /// Memory or Redis.
    pub(crate) group: Group,
    /// Sessions per operation (16 for `load_many`), for keys per second.
    pub(crate) items: u32,
    run: Runner,
    cleanup: Option<Cleanup>,
}

impl Case {
    /// Runs one cell of this case, then its clean-up (outside the measured time).
    pub(crate) async fn run(&self, plan: Plan) -> Cell {
        let cell = (self.run)(plan).await;
        if let Some(cleanup) = &self.cleanup {
            cleanup().await;
        }
        cell
    }

    /// This case with no rate for a cell in which any operation failed: its ops/s is then NaN
    /// (shown as "–" beside the failure count), and so is a paired ratio it takes part in, which
    /// the report shows as not measured. For cases whose failures mean the cell measured something
    /// else than it says (a request answered with an error page skips the work a success does).
    pub(crate) fn without_rate_on_failure(mut self) -> Self {
        let run = self.run;
        self.run = Box::new(move |plan| {
            let cell = run(plan);
            Box::pin(async move {
                let mut cell = cell.await;
                if cell.errors > 0 {
                    cell.ops_per_sec = f64::NAN;
                }
                cell
            })
        });
        self
    }

    /// This case with `cleanup` run after each of its cells and paired slices, outside the
    /// measured time.
    pub(crate) fn with_cleanup(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// `subject op @tasks`, the case's name in tables.
    pub(crate) fn id(&self) -> String {
        format!("{} {} @{}", self.subject, self.op, self.tasks)
    }
}

/// Builds a case from a per-task op factory.
pub(crate) fn case<O: Op, F>(
    subject: &'static str,
    op: &'static str,
    tasks: usize,
    group: Group,
    make: F,
) -> Case
where
    F: Fn(usize) -> O + Send + Sync + 'static,
{
    let make = Arc::new(make);
    Case {
        subject,
        op,
        tasks,
        group,
        items: 1,
        run: Box::new(move |plan| {
            let make = Arc::clone(&make);
            Box::pin(async move { run_cell(plan, |t| make(t)).await })
        }),
        cleanup: None,
    }
}

// ---------------------------------------------------------------- operations

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
struct StoreUpdate {
    store: Arc<dyn SessionStore>,
    keys: Arc<[SessionKey]>,
    record: Record,
}

impl Op for StoreUpdate {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move { self.store.update(&self.keys[idx], &self.record).await.is_ok() }
    }
}

/// `SessionStore::save_if(key, CAS_VERSION, record)` of a key in [`CAS_NAMESPACE`].
///
/// Every key there holds a record of version [`CAS_VERSION`], and `record` carries that same
/// version: a store keeps a record's own token when it is not [`Version::NONE`], so each call
/// finds the expected version, writes, and leaves the key at that version for the next call.
/// Every call thus succeeds and does the whole compare-and-set (on Redis the script reads the
/// stored header, compares the token and `SET`s the value). A `Conflict` (the pre-fill or a
/// store did not keep the token) or any other error counts as a failed operation.
struct StoreSaveIf {
    store: Arc<dyn SessionStore>,
    keys: Arc<[SessionKey]>,
    record: Record,
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
struct StoreCreate {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
    record: Record,
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
struct StoreLoadMany {
    store: Arc<dyn SessionStore>,
    keys: Arc<[SessionKey]>,
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
struct StoreSaveMany {
    store: Arc<dyn SessionStore>,
    items: Arc<[(SessionKey, Record)]>,
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

/// Every key of `keys` with `record`, as `save_many` takes them.
fn save_items(keys: &Keys, record: &Record) -> Arc<[(SessionKey, Record)]> {
    keys.keys.iter().map(|k| (k.clone(), record.clone())).collect()
}

/// `Sessions<T>::load`: the store's load and the payload's decoding.
struct TypedLoad {
    sessions: Sessions<TaskSession>,
    ids: Arc<[SessionId]>,
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
struct TypedSave {
    sessions: Sessions<TaskSession>,
    ids: Arc<[SessionId]>,
    session: Session<TaskSession>,
}

impl TypedSave {
    fn new(sessions: Sessions<TaskSession>, ids: Arc<[SessionId]>) -> Self {
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

/// Raw fred `GET` of a pre-filled key (the store's key, the same envelope bytes).
struct RawGet<C> {
    client: C,
    keys: Arc<[Key]>,
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
struct RawSet<C> {
    client: C,
    keys: Arc<[Key]>,
    value: Bytes,
    deadline: i64,
    options: Option<SetOptions>,
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
struct RawSetNx<C> {
    client: C,
    prefix: String,
    value: Bytes,
    deadline: i64,
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
struct DashGet {
    map: Arc<DashMap<String, Bytes>>,
    keys: Arc<[String]>,
}

impl Op for DashGet {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        let found = self.map.get(self.keys[idx].as_str()).map(|v| v.value().clone());
        async move { std::hint::black_box(found).is_some() }
    }
}

/// An upsert into `DashMap<String, Bytes>` of a payload buffer of its own (as a codec hands
/// it over): replace in place, insert when absent.
struct DashSet {
    map: Arc<DashMap<String, Bytes>>,
    keys: Arc<[String]>,
    value: Bytes,
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
struct DashSetShared {
    map: Arc<DashMap<String, Bytes>>,
    keys: Arc<[String]>,
    value: Bytes,
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
struct TowerCreate<S> {
    store: S,
    record: TowerRecord,
}

impl<S: TowerStore + Clone> Op for TowerCreate<S> {
    fn call(&mut self, _idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            self.record.id = TowerId::default();
            self.store.create(&mut self.record).await.is_ok()
        }
    }
}

// ---------------------------------------------------------------- set-up

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

fn new_id() -> SessionId {
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

/// A record with a payload buffer of its own (per task: no shared reference count between tasks).
fn own_record(record: &Record) -> Record {
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

/// The in-process subjects, pre-filled. Installs the Prometheus recorder and a tracing
/// subscriber (after registering the "no recorder" store's metric handles).
pub(crate) async fn memory_cases(keys: &Keys, record: &Record, task_counts: &[usize]) -> Vec<Case> {
    let memory: Arc<dyn SessionStore> =
        Arc::new(check("MemoryStore", MemoryStore::new(MemoryConfig::default())));
    prefill(memory.as_ref(), keys, record, true).await;

    // Registered (on its first call, here) before any recorder exists: its metric handles are
    // no-ops for the whole run. Spans are off either way (they are `debug`).
    let instrumented_noop: Arc<dyn SessionStore> = Arc::new(Instrumented::new(check(
        "MemoryStore",
        MemoryStore::new(MemoryConfig::default()),
    )));
    prefill(instrumented_noop.as_ref(), keys, record, true).await;
    install_observability();
    let instrumented_prom: Arc<dyn SessionStore> = Arc::new(Instrumented::new(check(
        "MemoryStore",
        MemoryStore::new(MemoryConfig::default()),
    )));
    prefill(instrumented_prom.as_ref(), keys, record, true).await;

    let dash: Arc<DashMap<String, Bytes>> = Arc::new(DashMap::new());
    for s in keys.strings.iter() {
        dash.insert(s.clone(), Bytes::copy_from_slice(&record.payload));
    }

    let tower_mem = tower_sessions_memory_store::MemoryStore::default();
    let tower_ids: Arc<[TowerId]> = tower_prefill(&tower_mem, keys.len()).await.into();

    let typed =
        Sessions::<TaskSession>::new(Arc::clone(&memory), ns(NAMESPACE)).with_codec(CodecKind::Bincode);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Memory;
        // load
        let (m, k) = (Arc::clone(&dash), Arc::clone(&keys.strings));
        cases.push(case("DashMap<String, Bytes>", "load", tasks, g, move |_| {
            DashGet {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
            }
        }));
        for (subject, store) in [
            ("MemoryStore", &memory),
            ("Instrumented<MemoryStore>, no recorder", &instrumented_noop),
            ("Instrumented<MemoryStore>, Prometheus", &instrumented_prom),
        ] {
            let (s, k) = (Arc::clone(store), Arc::clone(&keys.keys));
            cases.push(case(subject, "load", tasks, g, move |_| StoreLoad {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case("Sessions<T> on MemoryStore", "load", tasks, g, move |_| {
            TypedLoad {
                sessions: s.clone(),
                ids: Arc::clone(&i),
            }
        }));
        let (s, i) = (tower_mem.clone(), Arc::clone(&tower_ids));
        cases.push(case("tower-sessions MemoryStore", "load", tasks, g, move |_| {
            TowerLoad {
                store: s.clone(),
                ids: Arc::clone(&i),
            }
        }));
        // save
        let (m, k, p) = (
            Arc::clone(&dash),
            Arc::clone(&keys.strings),
            record.payload.clone(),
        );
        cases.push(case(
            "DashMap<String, Bytes>, fresh buffer",
            "save",
            tasks,
            g,
            move |_| DashSet {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
                value: p.clone(),
            },
        ));
        let (m, k, p) = (
            Arc::clone(&dash),
            Arc::clone(&keys.strings),
            record.payload.clone(),
        );
        cases.push(case(
            "DashMap<String, Bytes>, shared buffer",
            "save",
            tasks,
            g,
            move |_| DashSetShared {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
                value: Bytes::copy_from_slice(&p),
            },
        ));
        let (s, k, r) = (Arc::clone(&memory), Arc::clone(&keys.keys), record.clone());
        cases.push(case("MemoryStore", "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: own_record(&r),
            fresh: Some(r.payload.clone()),
        }));
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case("Sessions<T> on MemoryStore", "save", tasks, g, move |_| {
            TypedSave::new(s.clone(), Arc::clone(&i))
        }));
        let (s, i) = (tower_mem.clone(), Arc::clone(&tower_ids));
        cases.push(case("tower-sessions MemoryStore", "save", tasks, g, move |_| {
            TowerSave {
                store: s.clone(),
                ids: Arc::clone(&i),
                record: tower_record(3 * 3600),
            }
        }));
    }
    cases
}

/// Installs what a production service has: the Prometheus recorder as the demo configures it
/// (latency buckets, upkeep every 5 s) and a `fmt` subscriber at `info`.
fn install_observability() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| b.install_recorder());
    let handle = check("installing the Prometheus recorder", handle);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    let filter = tracing_subscriber::EnvFilter::new("info");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Redis figures that are not throughput: memory per key.
#[derive(Clone, Debug, Default)]
pub(crate) struct RedisMemory {
    /// `MEMORY USAGE key SAMPLES 0`, averaged over sampled keys.
    pub(crate) usage_per_key: f64,
    /// `used_memory` growth over the pre-fill, per key.
    pub(crate) used_memory_per_key: f64,
    /// The key's length in bytes.
    pub(crate) key_len: usize,
    /// The stored value's length (envelope: 52-byte header + payload).
    pub(crate) value_len: usize,
    /// The payload's length.
    pub(crate) payload_len: usize,
    /// `MEMORY USAGE` of a logged-out session's tombstone (tombstones on), averaged.
    pub(crate) tombstone_per_key: f64,
    /// The length of those tombstones' keys.
    pub(crate) tombstone_key_len: usize,
}

/// The Redis subjects, pre-filled, plus Redis' memory per key and a connection of its own for
/// reading the server's command statistics.
pub(crate) async fn redis_cases(
    url: &str,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> (Vec<Case>, RedisMemory, ServerStats) {
    let connect_with = |pool_size: usize, database: Option<u8>, tombstone_ttl_ms: u64| {
        let mut config = RedisConfig::new(url);
        config.pool_size = pool_size;
        config.database = database;
        config.tombstone_ttl_ms = tombstone_ttl_ms;
        async move { check("RedisStore::connect", RedisStore::connect(config).await) }
    };
    let connect = |pool_size: usize, database: Option<u8>| connect_with(pool_size, database, 0);
    // A fallback's primary keeps tombstones (an hour here), as the facade configures it.
    let connect_tombstoned = |database: Option<u8>| connect_with(POOL, database, 3_600_000);
    let fred_config = |database: Option<u8>| {
        let mut config = check("fred config", FredConfig::from_url(url));
        config.database = database;
        config
    };
    let raw_client = |database: Option<u8>| {
        let client = Client::new(fred_config(database), None, None, None);
        async move {
            check("fred connect", client.init().await);
            client
        }
    };
    let raw_pool = |database: Option<u8>| {
        let pool = check(
            "fred pool",
            Pool::new(fred_config(database), None, None, None, POOL),
        );
        async move {
            check("fred pool connect", pool.init().await);
            pool
        }
    };
    let fallback = |store: RedisStore| async move {
        // A fallback secondary must refuse at its bound (an evicting one could drop writes
        // acknowledged during an outage: `FallbackStore::new` refuses it).
        let config = MemoryConfig::default().with_at_capacity(AtCapacity::Reject);
        let secondary = check("MemoryStore", MemoryStore::new(config));
        let store = check(
            "FallbackStore::new",
            FallbackStore::new(store, secondary, FallbackConfig::default()).await,
        );
        Arc::new(store) as Arc<dyn SessionStore>
    };

    let single: Arc<dyn SessionStore> = Arc::new(connect(1, None).await);
    let pooled_store = connect(POOL, None).await;
    let pooled: Arc<dyn SessionStore> = Arc::new(pooled_store.clone());
    let fall = fallback(connect_tombstoned(None).await).await;
    let tombstoned: Arc<dyn SessionStore> = Arc::new(connect_tombstoned(None).await);
    let typed =
        Sessions::<TaskSession>::new(Arc::clone(&pooled), ns(NAMESPACE)).with_codec(CodecKind::Bincode);
    let raw1 = raw_client(None).await;
    let rawp = raw_pool(None).await;
    let tower_pool = raw_pool(None).await;
    let tower = tower_sessions_redis_store::RedisStore::new(tower_pool);

    let c_single: Arc<dyn SessionStore> = Arc::new(connect(1, Some(CREATE_DB)).await);
    let c_pooled: Arc<dyn SessionStore> = Arc::new(connect(POOL, Some(CREATE_DB)).await);
    let c_fall = fallback(connect_tombstoned(Some(CREATE_DB)).await).await;
    let c_raw1 = raw_client(Some(CREATE_DB)).await;
    let c_rawp = raw_pool(Some(CREATE_DB)).await;
    let c_tower = tower_sessions_redis_store::RedisStore::new(raw_pool(Some(CREATE_DB)).await);

    // Pre-fill, measuring Redis' memory per key on the way.
    let used_before = used_memory(&raw1).await;
    prefill(pooled.as_ref(), keys, record, false).await;
    let used_after = used_memory(&raw1).await;
    let tower_ids: Arc<[TowerId]> = tower_prefill(&tower, keys.len()).await.into();
    let value_len = record.encoded_len();
    let mut usage = Vec::new();
    for key in keys.redis.iter().step_by((keys.len() / 200).max(1)) {
        let args: Vec<Value> = vec!["USAGE".into(), key.clone().into(), "SAMPLES".into(), "0".into()];
        let reply: Result<i64, _> = raw1
            .custom(CustomCommand::new_static("MEMORY", None, false), args)
            .await;
        usage.push(check("MEMORY USAGE", reply) as f64);
    }
    // A logout's cost with tombstones on: sessions created and deleted through a store that
    // keeps tombstones, then each left key measured.
    let tomb_keys = Keys::in_namespace("bench_tomb", 200);
    prefill(tombstoned.as_ref(), &tomb_keys, record, false).await;
    let mut tomb_usage = Vec::new();
    for (key, full) in tomb_keys.keys.iter().zip(tomb_keys.redis.iter()) {
        check("deleting a session", tombstoned.delete(key).await);
        let args: Vec<Value> = vec!["USAGE".into(), full.clone().into(), "SAMPLES".into(), "0".into()];
        let reply: Result<i64, _> = raw1
            .custom(CustomCommand::new_static("MEMORY", None, false), args)
            .await;
        tomb_usage.push(check("MEMORY USAGE of a tombstone", reply) as f64);
    }
    let memory = RedisMemory {
        tombstone_per_key: tomb_usage.iter().sum::<f64>() / tomb_usage.len().max(1) as f64,
        tombstone_key_len: tomb_keys.redis.first().map_or(0, |k| k.as_bytes().len()),
        usage_per_key: usage.iter().sum::<f64>() / usage.len().max(1) as f64,
        used_memory_per_key: (used_after.saturating_sub(used_before)) as f64 / keys.len().max(1) as f64,
        key_len: keys.redis.first().map_or(0, |k| k.as_bytes().len()),
        value_len,
        payload_len: record.payload.len(),
    };

    // The save_if key space: every key at version CAS_VERSION (after the memory figures, which
    // are those of the main key space).
    let cas_keys = Keys::in_namespace(CAS_NAMESPACE, keys.len());
    let mut cas_record = record.clone();
    cas_record.meta.version = CAS_VERSION;
    prefill(pooled.as_ref(), &cas_keys, &cas_record, false).await;
    if let Some(key) = cas_keys.keys.first() {
        let stored = check("loading a save_if key", pooled.load(key).await);
        let version = stored.map(|r| r.meta.version);
        assert!(
            version == Some(CAS_VERSION),
            "the save_if key space was pre-filled with version {CAS_VERSION}, the store holds {version:?}"
        );
    }
    let stats = ServerStats::new(raw_client(None).await);

    let envelope = record.encode();
    let deadline = i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX);
    // Not FLUSHDB: Redis tells every client-side cache of every database to drop everything on
    // a flush (its table of tracked keys is not per database), which would empty the near-cache
    // subjects (docs/architecture.md). The created keys are unlinked instead.
    let flush: Cleanup = {
        let client = c_raw1.clone();
        Arc::new(move || {
            let client = client.clone();
            Box::pin(async move { unlink_all(&client).await })
        })
    };
    let create_prefix = format!("session:{CREATE_NAMESPACE}:");
    let many_items = save_items(keys, record);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Redis;
        // load
        let (c, k) = (raw1.clone(), Arc::clone(&keys.redis));
        cases.push(case("raw fred GET (1 connection)", "load", tasks, g, move |_| {
            RawGet {
                client: c.clone(),
                keys: Arc::clone(&k),
            }
        }));
        let (c, k) = (rawp.clone(), Arc::clone(&keys.redis));
        cases.push(case("raw fred GET (pool 2)", "load", tasks, g, move |_| RawGet {
            client: c.clone(),
            keys: Arc::clone(&k),
        }));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k) = (Arc::clone(store), Arc::clone(&keys.keys));
            cases.push(case(subject, "load", tasks, g, move |_| StoreLoad {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case(
            "Sessions<T> on RedisStore (pool 2)",
            "load",
            tasks,
            g,
            move |_| TypedLoad {
                sessions: s.clone(),
                ids: Arc::clone(&i),
            },
        ));
        let (s, i) = (tower.clone(), Arc::clone(&tower_ids));
        cases.push(case(
            "tower-sessions-redis-store (pool 2)",
            "load",
            tasks,
            g,
            move |_| TowerLoad {
                store: s.clone(),
                ids: Arc::clone(&i),
            },
        ));
        let (s, k) = (Arc::clone(&pooled), Arc::clone(&keys.keys));
        let mut many = case("RedisStore (pool 2)", "load_many(16)", tasks, g, move |_| {
            StoreLoadMany {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }
        });
        many.items = MANY as u32;
        cases.push(many);

        // save
        let (c, k, v) = (raw1.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET PXAT (1 connection)",
            "save",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: None,
            },
        ));
        let (c, k, v) = (rawp.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case("raw fred SET PXAT (pool 2)", "save", tasks, g, move |_| {
            RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: None,
            }
        }));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&keys.keys), record.clone());
            cases.push(case(subject, "save", tasks, g, move |_| StoreSave {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
                fresh: None,
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case(
            "Sessions<T> on RedisStore (pool 2)",
            "save",
            tasks,
            g,
            move |_| TypedSave::new(s.clone(), Arc::clone(&i)),
        ));
        let (s, i) = (tower.clone(), Arc::clone(&tower_ids));
        cases.push(case(
            "tower-sessions-redis-store (pool 2)",
            "save",
            tasks,
            g,
            move |_| TowerSave {
                store: s.clone(),
                ids: Arc::clone(&i),
                record: tower_record(3 * 3600),
            },
        ));

        // update (`SET … XX` on the pre-filled keys: each exists)
        let (c, k, v) = (raw1.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET XX PXAT (1 connection)",
            "update",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: Some(SetOptions::XX),
            },
        ));
        let (c, k, v) = (rawp.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET XX PXAT (pool 2)",
            "update",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: Some(SetOptions::XX),
            },
        ));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("RedisStore (pool 2, tombstones)", &tombstoned),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&keys.keys), record.clone());
            cases.push(case(subject, "update", tasks, g, move |_| StoreUpdate {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
            }));
        }

        // save_if (the fixed-version key space: every call finds its expected version)
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&cas_keys.keys), cas_record.clone());
            cases.push(case(subject, "save_if", tasks, g, move |_| StoreSaveIf {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
            }));
        }

        // save_many(16) (the main key space; 64 tasks only: the cluster's counterpart)
        if tasks > 1 {
            let (s, items) = (Arc::clone(&pooled), Arc::clone(&many_items));
            let mut many = case("RedisStore (pool 2)", "save_many(16)", tasks, g, move |_| {
                StoreSaveMany {
                    store: Arc::clone(&s),
                    items: Arc::clone(&items),
                }
            });
            many.items = MANY as u32;
            cases.push(many);
        }

        // create (database 1, flushed after each cell)
        let mut creates = Vec::new();
        let (c, p, v) = (c_raw1.clone(), create_prefix.clone(), envelope.clone());
        creates.push(case(
            "raw fred SET NX PXAT (1 connection)",
            "create",
            tasks,
            g,
            move |_| RawSetNx {
                client: c.clone(),
                prefix: p.clone(),
                value: v.clone(),
                deadline,
            },
        ));
        let (c, p, v) = (c_rawp.clone(), create_prefix.clone(), envelope.clone());
        creates.push(case(
            "raw fred SET NX PXAT (pool 2)",
            "create",
            tasks,
            g,
            move |_| RawSetNx {
                client: c.clone(),
                prefix: p.clone(),
                value: v.clone(),
                deadline,
            },
        ));
        for (subject, store) in [
            ("RedisStore (1 connection)", &c_single),
            ("RedisStore (pool 2)", &c_pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &c_fall),
        ] {
            let (s, r) = (Arc::clone(store), record.clone());
            creates.push(case(subject, "create", tasks, g, move |_| StoreCreate {
                store: Arc::clone(&s),
                namespace: ns(CREATE_NAMESPACE),
                record: r.clone(),
            }));
        }
        let s = c_tower.clone();
        creates.push(case(
            "tower-sessions-redis-store (pool 2)",
            "create",
            tasks,
            g,
            move |_| TowerCreate {
                store: s.clone(),
                record: tower_record(3 * 3600),
            },
        ));
        for mut c in creates {
            c.cleanup = Some(Arc::clone(&flush));
            cases.push(c);
        }
    }
    drop(pooled_store);
    (cases, memory, stats)
}

/// Unlinks every key of the client's database (the `create` cases' database), a `SCAN` page at
/// a time.
async fn unlink_all(client: &Client) {
    let mut cursor = String::from("0");
    loop {
        let args: Vec<Value> = vec![cursor.as_str().into(), "COUNT".into(), "10000".into()];
        let page: Value = check(
            "SCAN of the create database",
            client
                .custom(CustomCommand::new_static("SCAN", None, false), args)
                .await,
        );
        let Value::Array(mut parts) = page else {
            panic!("SCAN answered {page:?}")
        };
        let keys = parts.pop().unwrap_or(Value::Null);
        cursor = parts
            .pop()
            .and_then(|c| c.as_string())
            .unwrap_or_else(|| "0".to_owned());
        if let Value::Array(keys) = keys {
            if !keys.is_empty() {
                let unlinked: Result<Value, _> = client
                    .custom(CustomCommand::new_static("UNLINK", None, false), keys)
                    .await;
                check("UNLINK of created keys", unlinked);
            }
        }
        if cursor == "0" {
            return;
        }
    }
}

/// `used_memory` from `INFO memory`.
async fn used_memory(client: &Client) -> u64 {
    let reply: Result<String, _> = client
        .custom(CustomCommand::new_static("INFO", None, false), vec!["memory"])
        .await;
    let text = check("INFO memory", reply);
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The subject of the Redis Cluster cases.
pub(crate) const CLUSTER_SUBJECT: &str = "RedisStore cluster (pool 2)";
/// The cluster's raw anchors: fred's cluster client.
pub(crate) const CLUSTER_RAW_GET: &str = "raw fred cluster GET (pool 2)";
pub(crate) const CLUSTER_RAW_SET: &str = "raw fred cluster SET PXAT (pool 2)";

/// The subjects on a Redis Cluster: `RedisStore` given the cluster's URL, with a pool of
/// [`POOL`] connections per primary (its own router: each command goes to its key's slot
/// owner), its key spaces pre-filled as the standalone ones: the same keys and records, on
/// other servers. `load` and `save` at every task count; `save_if`, `save_many(16)` and
/// `load_many(16)` at 64 tasks.
pub(crate) async fn cluster_cases(
    url: &str,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> Vec<Case> {
    let mut config = RedisConfig::new(url);
    config.pool_size = POOL;
    let store: Arc<dyn SessionStore> = Arc::new(check(
        "RedisStore::connect (cluster)",
        RedisStore::connect(config).await,
    ));
    prefill(store.as_ref(), keys, record, false).await;
    let cas_keys = Keys::in_namespace(CAS_NAMESPACE, keys.len());
    let mut cas_record = record.clone();
    cas_record.meta.version = CAS_VERSION;
    prefill(store.as_ref(), &cas_keys, &cas_record, false).await;
    if let Some(key) = cas_keys.keys.first() {
        let stored = check("loading a save_if key (cluster)", store.load(key).await);
        let version = stored.map(|r| r.meta.version);
        assert!(
            version == Some(CAS_VERSION),
            "the cluster's save_if key space was pre-filled with version {CAS_VERSION}, it holds {version:?}"
        );
    }
    let many_items = save_items(keys, record);
    // The anchor: fred's own cluster client (its router: one connection per node), a pool of
    // POOL of them, sending the store's commands with the same bytes.
    let raw = check(
        "fred cluster pool",
        Pool::new(
            check("fred cluster config", FredConfig::from_url(url)),
            None,
            None,
            None,
            POOL,
        ),
    );
    check("fred cluster pool connect", raw.init().await);
    let envelope = record.encode();
    let deadline = i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Redis;
        let (c, k) = (raw.clone(), Arc::clone(&keys.redis));
        cases.push(case(CLUSTER_RAW_GET, "load", tasks, g, move |_| RawGet {
            client: c.clone(),
            keys: Arc::clone(&k),
        }));
        let (c, k, v) = (raw.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(CLUSTER_RAW_SET, "save", tasks, g, move |_| RawSet {
            client: c.clone(),
            keys: Arc::clone(&k),
            value: v.clone(),
            deadline,
            options: None,
        }));
        let (s, k) = (Arc::clone(&store), Arc::clone(&keys.keys));
        cases.push(case(CLUSTER_SUBJECT, "load", tasks, g, move |_| StoreLoad {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
        }));
        let (s, k, r) = (Arc::clone(&store), Arc::clone(&keys.keys), record.clone());
        cases.push(case(CLUSTER_SUBJECT, "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
            fresh: None,
        }));
        if tasks == 1 {
            continue;
        }
        let (s, k, r) = (Arc::clone(&store), Arc::clone(&cas_keys.keys), cas_record.clone());
        cases.push(case(CLUSTER_SUBJECT, "save_if", tasks, g, move |_| StoreSaveIf {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
        }));
        let (s, items) = (Arc::clone(&store), Arc::clone(&many_items));
        let mut many = case(CLUSTER_SUBJECT, "save_many(16)", tasks, g, move |_| {
            StoreSaveMany {
                store: Arc::clone(&s),
                items: Arc::clone(&items),
            }
        });
        many.items = MANY as u32;
        cases.push(many);
        let (s, k) = (Arc::clone(&store), Arc::clone(&keys.keys));
        let mut many = case(CLUSTER_SUBJECT, "load_many(16)", tasks, g, move |_| {
            StoreLoadMany {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }
        });
        many.items = MANY as u32;
        cases.push(many);
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails on odd keys.
    struct HalfFails;

    impl Op for HalfFails {
        fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
            async move { idx.is_multiple_of(2) }
        }
    }

    #[tokio::test]
    async fn a_cell_with_failures_reports_no_rate() {
        let plan = Plan {
            tasks: 2,
            duration: Duration::from_millis(20),
            keyspace: 10,
            sample_every: 1,
        };
        let failing = case("x", "op", 2, Group::Memory, |_| HalfFails).without_rate_on_failure();
        let cell = failing.run(plan).await;
        assert!(cell.errors > 0 && cell.ops_per_sec.is_nan(), "{cell:?}");
        let counted = case("x", "op", 2, Group::Memory, |_| HalfFails);
        let cell = counted.run(plan).await;
        assert!(cell.errors > 0 && cell.ops_per_sec > 0.0, "{cell:?}");
    }
}

//! Binding sessions to principals and revoking them: `create` + `bind` beside `create` alone,
//! and four sessions created and bound then ended by one `revoke_all` beside the same four
//! ended by four `delete`s (a logout each) — on `MemoryStore` and on `RedisStore` (pool 2).
//! The ratios are what a bind, and a revoke against plain deletes, cost.

#![allow(
    clippy::manual_async_fn,
    reason = "the ops spell out the `Send` future the harness needs, as in `cases`"
)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use session_core::{Principal, SessionStore, Sessions};
use session_memory::{MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};

use crate::cases::{case, check, ns, Case, Group, POOL};
use crate::harness::Op;
use crate::payload::{self, TaskSession};

/// Principals the bind cases spread over (so that two tasks rarely change one index at once).
const PRINCIPALS: usize = 10_000;
/// Sessions per principal in the revoke cases.
pub(crate) const DEVICES: usize = 4;

/// `create`, then (with `bind`) `bind` to one of [`PRINCIPALS`].
struct CreateBind {
    sessions: Sessions<TaskSession>,
    bind: bool,
}

impl Op for CreateBind {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let Ok(mut session) = self.sessions.create(payload::session()).await else {
                return false;
            };
            if !self.bind {
                return true;
            }
            let Ok(principal) = Principal::new(&format!("user-{}", idx % PRINCIPALS)) else {
                return false;
            };
            self.sessions.bind(&mut session, &principal).await.is_ok()
        }
    }
}

/// [`DEVICES`] sessions created and bound to a principal of their own, then all ended: by one
/// `revoke_all` (with `revoke`), else by one `delete` each.
struct Devices {
    sessions: Sessions<TaskSession>,
    revoke: bool,
    next: Arc<AtomicU64>,
}

impl Op for Devices {
    fn call(&mut self, _idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let Ok(principal) = Principal::new(&format!("owner-{n}")) else {
                return false;
            };
            let mut ids = Vec::with_capacity(DEVICES);
            for _ in 0..DEVICES {
                let Ok(mut session) = self.sessions.create(payload::session()).await else {
                    return false;
                };
                if self.sessions.bind(&mut session, &principal).await.is_err() {
                    return false;
                }
                ids.push(session.id);
            }
            if self.revoke {
                return matches!(self.sessions.revoke_all(&principal).await, Ok(r) if r.ended == DEVICES as u64);
            }
            for id in &ids {
                if !matches!(self.sessions.delete(id).await, Ok(true)) {
                    return false;
                }
            }
            true
        }
    }
}

/// The subjects' names.
pub(crate) const ON_MEMORY: &str = "Sessions<T> on MemoryStore";
pub(crate) const ON_REDIS: &str = "Sessions<T> on RedisStore (pool 2)";
pub(crate) const CREATE: &str = "create";
pub(crate) const CREATE_BIND: &str = "create + bind";
pub(crate) const DEVICES_DELETED: &str = "4 × (create + bind) + 4 × delete";
pub(crate) const DEVICES_REVOKED: &str = "4 × (create + bind) + revoke_all";

/// The bind and revoke cases, on memory and (with `redis_url`) on Redis.
pub(crate) async fn principal_cases(redis_url: Option<&str>, task_counts: &[usize]) -> Vec<Case> {
    let memory: Arc<dyn SessionStore> =
        Arc::new(check("MemoryStore", MemoryStore::new(MemoryConfig::default())));
    let mut subjects = vec![(ON_MEMORY, Group::Memory, memory)];
    if let Some(url) = redis_url {
        let mut config = RedisConfig::new(url);
        config.pool_size = POOL;
        let redis: Arc<dyn SessionStore> =
            Arc::new(check("RedisStore::connect", RedisStore::connect(config).await));
        subjects.push((ON_REDIS, Group::Redis, redis));
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut cases = Vec::new();
    for &tasks in task_counts {
        for (subject, group, store) in &subjects {
            let sessions = Sessions::<TaskSession>::new(Arc::clone(store), ns("bench_principal"));
            for (op, bind) in [(CREATE, false), (CREATE_BIND, true)] {
                let s = sessions.clone();
                cases.push(case(subject, op, tasks, *group, move |_| CreateBind {
                    sessions: s.clone(),
                    bind,
                }));
            }
            for (op, revoke) in [(DEVICES_DELETED, false), (DEVICES_REVOKED, true)] {
                let (s, n) = (sessions.clone(), Arc::clone(&next));
                cases.push(case(subject, op, tasks, *group, move |_| Devices {
                    sessions: s.clone(),
                    revoke,
                    next: Arc::clone(&n),
                }));
            }
        }
    }
    cases
}

//! [`SessionStore`] for [`MemoryStore`]: each call validates its input and hands on to the
//! table operations.

use std::time::Instant;

use session_core::backend::{cap_deadline, check_size, stamp, Change, Entry, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Error, Health, HealthStatus, Meta, Namespace, Result, SessionId, SessionKey, SessionStore,
    StoreStats, Version,
};

use crate::config::AtCapacity;
use crate::entry::{State, Value};

use crate::store::{MemoryStore, Outcome, BACKEND};
use crate::table::save_decision;

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key)
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.inner.load_entry(key)
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, save_decision(record))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(_) | State::Corrupt(_) => Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            }),
            // A new session may take the id of a deleted one.
            State::Absent | State::Expired | State::Tombstone(_) => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
        })
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(_) => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
            State::Corrupt(e) => Err(e),
            State::Absent | State::Expired | State::Tombstone(_) => Err(Error::not_found(key.ns())),
        })
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(old) if old.version == expected_version => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
            State::Live(old) => Err(Error::Conflict {
                namespace: key.ns().to_owned(),
                expected: expected_version,
                actual: old.version,
            }),
            State::Corrupt(e) => Err(e),
            State::Absent | State::Expired | State::Tombstone(_) => Err(Error::not_found(key.ns())),
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key)
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        if self.inner.config.keeps_tombstones() {
            self.inner.delete_leaving_tombstone(key, tombstone)
        } else {
            self.inner.delete(key)
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.inner.apply(key, |state, current| match (state, current) {
            (State::Live(old), Some(_)) => {
                let meta = Meta {
                    expires_at: cap_deadline(expires_at, old.max_expires_at),
                    ..old
                };
                Ok(Outcome::Retime(meta, true))
            }
            (State::Corrupt(e), _) => Err(e),
            _ => Ok(Outcome::Keep(false)),
        })
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.inner.rotate(key, new_id)
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        if let Change::Write(record) = change {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        self.inner.reconcile(key, base, change)
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.config.keeps_tombstones()
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        Ok(keys.iter().map(|k| self.inner.load(k)).collect())
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        for (key, record) in items {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        items
            .iter()
            .map(|(key, record)| self.inner.apply(key, save_decision(record)))
            .collect()
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        Ok(self.inner.count(namespace))
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.inner.stats())
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        drop(self.inner.shards[0].read());
        Health::new(BACKEND, HealthStatus::Up).with_latency(start.elapsed())
    }

    fn evicts(&self) -> bool {
        self.inner.config.at_capacity == AtCapacity::EvictSoonestExpiring
    }
}

//! [`SessionStore`] for [`MemoryStore`]: each call validates its input and hands on to the
//! table operations.

use std::time::Instant;

use session_core::backend::{cap_deadline, check_size, stamp, Change, Entry, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Error, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId,
    SessionKey, SessionStore, StoreStats, Version,
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

    /// Whole shards a page: the cursor is `m:<next shard>/<shards>`, valid for this store only
    /// (a memory store's sessions live and die with its process).
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let shards = self.inner.shards.len();
        let from = match cursor {
            None => 0,
            Some(c) => parse_cursor(c.as_str(), shards).ok_or_else(|| Error::Backend {
                backend: BACKEND,
                message: "not a scan cursor of this memory store; start the scan again".to_owned(),
                source: None,
            })?,
        };
        let (sessions, next, skipped) = self.inner.scan_shards(from, limit.max(1));
        let next = next.map(|n| ScanCursor::new(format!("m:{n}/{shards}")));
        Ok(ScanPage::new(sessions, next, skipped))
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

/// The shard a cursor `m:<next>/<shards>` resumes at, if it is one of a store of `shards`.
fn parse_cursor(text: &str, shards: usize) -> Option<usize> {
    let (next, of) = text.strip_prefix("m:")?.split_once('/')?;
    let (next, of) = (next.parse::<usize>().ok()?, of.parse::<usize>().ok()?);
    (of == shards && next < shards).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_name_a_shard_of_this_store() {
        assert_eq!(parse_cursor("m:3/32", 32), Some(3));
        for bad in ["m:3/64", "m:32/32", "3/32", "m:x/32", "m:3", ""] {
            assert_eq!(parse_cursor(bad, 32), None, "{bad}");
        }
    }
}

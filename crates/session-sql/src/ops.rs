//! [`SessionStore`] for [`SqlStore`]: the plain calls are one statement each; the rest are
//! read-decide-write transactions (`apply.rs`).

use std::collections::HashMap;
use std::time::Instant;

use session_core::backend::{
    cap_deadline, check_size, decide, decode_entry, now_ms, parse_backend_key, stamp, Change, Decision,
    Entry, Reconciled, Record, Stored, Tombstone,
};
use session_core::{
    async_trait, Bytes, Error, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage,
    SessionId, SessionKey, SessionStore, StoreStats, Version,
};
use sqlx::Row as _;

#[cfg(feature = "postgres")]
use crate::config::Dialect;
use crate::db::on_db;
use crate::error::{from_sqlx, BACKEND};
use crate::store::{ms_to_sql, version_to_sql, Act, Inner, Row, SqlStore, State};

/// Keys per `load_many` / `save_many` statement: each chunk is one call with its own deadline.
const CHUNK: usize = 500;

impl Inner {
    /// What a live row holds, decoded (`None`: no live row).
    pub(crate) async fn load_row(&self, key: &SessionKey) -> Result<Option<State>> {
        Ok(self
            .load_value(key)
            .await?
            .map(|value| match decode_entry(&value, key.ns()) {
                Ok(Entry::Live(record)) => State::Live(record),
                Ok(Entry::Tombstone(meta)) => State::Tombstone(meta),
                Err(e) => State::Corrupt(e, 0),
            }))
    }

    async fn load_value(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        let k = self.key(key);
        let value: Option<Vec<u8>> = on_db!(self, "load", Read, |c| {
            sqlx::query_scalar(&self.st.load)
                .bind(&k)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| from_sqlx("load", e))
        })?;
        Ok(value.map(Bytes::from))
    }

    /// One plain write statement (`save`, `create`, `update`, `save_if`): rows it changed.
    async fn write(
        &self,
        op: &'static str,
        sql: &str,
        key: &SessionKey,
        record: &Record,
        expected: Option<Version>,
    ) -> Result<(Meta, u64)> {
        check_size(key, record, self.max_session_bytes)?;
        let meta = stamp(record);
        let value = record.encode_with(&meta);
        let k = self.key(key);
        let changed = on_db!(self, op, Write, |c| {
            let mut q = sqlx::query(sql)
                .bind(&k)
                .bind(&value[..])
                .bind(ms_to_sql(meta.deadline()))
                .bind(version_to_sql(meta.version));
            if let Some(expected) = expected {
                q = q.bind(version_to_sql(expected));
            }
            q.execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(|e| from_sqlx(op, e))
        })?;
        Ok((meta, changed))
    }

    async fn delete_plain(&self, key: &SessionKey) -> Result<bool> {
        let k = self.key(key);
        let live: Option<i32> = on_db!(self, "delete", Write, |c| {
            sqlx::query_scalar(&self.st.delete)
                .bind(&k)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| from_sqlx("delete", e))
        })?;
        Ok(live == Some(1))
    }

    /// `delete` in tombstone mode: the key's session (or nothing) becomes a tombstone by the
    /// reconciliation rule; `true` if a live session (or bytes that are not one) was there.
    async fn delete_leaving_tombstone(&self, key: &SessionKey, given: Tombstone) -> Result<bool> {
        let ttl = self.config.tombstone_ttl_ms;
        self.apply("delete", key, |state, now| {
            let tombstone = Tombstone {
                until: now.saturating_add(ttl),
                ..given
            };
            let change = Change::Delete(tombstone);
            let (stored, deleted) = match state {
                State::Live(r) => (Stored::Live(r.meta), true),
                State::Tombstone(meta) => (Stored::Tombstone(meta), false),
                State::Absent => (Stored::Absent, false),
                // Bytes that are not an envelope: deleted like a session, their deadline kept.
                State::Corrupt(_, deadline) => {
                    return Ok((Act::Put(Row::tombstone(&tombstone.meta(deadline))), true));
                }
            };
            let (decision, _) = decide(stored, Version::NONE, &change, now);
            Ok((act(decision, &change, stored), deleted))
        })
        .await
    }

    async fn load_chunk(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let rendered: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let rows: Vec<(String, Vec<u8>)> = match self.dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => crate::db::on_pg!(self, "load_many", Read, |c| {
                sqlx::query_as(&self.st.load_many)
                    .bind(&rendered)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(|e| from_sqlx("load_many", e))
            })?,
            _ => {
                let json = json_array(&rendered);
                on_db!(self, "load_many", Read, |c| {
                    sqlx::query_as(&self.st.load_many)
                        .bind(&json)
                        .fetch_all(&mut *c)
                        .await
                        .map_err(|e| from_sqlx("load_many", e))
                })?
            }
        };
        // A key asked for twice gets its answer twice.
        let found: HashMap<String, Bytes> = rows.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        Ok(keys
            .iter()
            .zip(&rendered)
            .map(|(key, k)| match found.get(k) {
                None => Ok(None),
                Some(value) => match decode_entry(value, key.ns())? {
                    Entry::Live(record) => Ok(Some(record)),
                    Entry::Tombstone(_) => Ok(None),
                },
            })
            .collect())
    }

    async fn save_chunk(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let metas: Vec<Meta> = items.iter().map(|(_, r)| stamp(r)).collect();
        let rows: Vec<(String, Bytes, i64, i64)> = items
            .iter()
            .zip(&metas)
            .map(|((key, record), meta)| {
                (
                    self.key(key),
                    record.encode_with(meta),
                    ms_to_sql(meta.deadline()),
                    version_to_sql(meta.version),
                )
            })
            .collect();
        match self.dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                // One statement: a key twice in it would be an error, and the later item wins
                // a plain save anyway.
                let mut last: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
                for (i, row) in rows.iter().enumerate() {
                    last.insert(row.0.as_str(), i);
                }
                let mut keys = Vec::with_capacity(last.len());
                let mut values: Vec<&[u8]> = Vec::with_capacity(last.len());
                let mut deadlines = Vec::with_capacity(last.len());
                let mut versions = Vec::with_capacity(last.len());
                for (i, row) in rows.iter().enumerate() {
                    if last.get(row.0.as_str()) == Some(&i) {
                        keys.push(row.0.as_str());
                        values.push(&row.1[..]);
                        deadlines.push(row.2);
                        versions.push(row.3);
                    }
                }
                let sql = format!(
                    "INSERT INTO {t} (key, value, expires_at, version, kind) \
                     SELECT k, v, e, n, 0 FROM unnest($1::TEXT[], $2::BYTEA[], $3::BIGINT[], $4::BIGINT[]) AS u(k, v, e, n) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
                     version = excluded.version, kind = excluded.kind",
                    t = self.config.table
                );
                crate::db::on_pg!(self, "save_many", Write, |c| {
                    sqlx::query(&sql)
                        .bind(&keys)
                        .bind(&values)
                        .bind(&deadlines)
                        .bind(&versions)
                        .execute(&mut *c)
                        .await
                        .map_err(|e| from_sqlx("save_many", e))
                })?;
            }
            _ => {
                // One statement for the chunk: SQLite applies its rows in order, so a key given
                // twice ends with the later record, as two saves would.
                let mut sql = format!(
                    "INSERT INTO {} (key, value, expires_at, version, kind) VALUES ",
                    self.config.table
                );
                for i in 0..rows.len() {
                    let p = i * 4;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("(${}, ${}, ${}, ${}, 0)", p + 1, p + 2, p + 3, p + 4));
                }
                sql.push_str(
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
                     version = excluded.version, kind = excluded.kind",
                );
                on_db!(self, "save_many", Write, |c| {
                    let mut q = sqlx::query(&sql);
                    for (k, value, deadline, version) in &rows {
                        q = q.bind(k).bind(&value[..]).bind(*deadline).bind(*version);
                    }
                    q.execute(&mut *c)
                        .await
                        .map(|_| ())
                        .map_err(|e| from_sqlx("save_many", e))
                })?;
            }
        }
        Ok(metas)
    }

    /// Live sessions whose keys start with `lo` and have no more than `colons` `:` after it
    /// (keys of a longer prefix that starts with this store's are another store's).
    async fn count_range(&self, op: &'static str, lo: &str, colons: usize) -> Result<u64> {
        let hi = range_end(lo);
        let mut not_like = like_escape(lo);
        for _ in 0..=colons {
            not_like.push_str("%:");
        }
        not_like.push('%');
        // A namespace's principal indexes (`{ns}:p.…`) are not sessions; the whole store's
        // entries (`colons` 1) count them.
        let indexes = if colons == 0 {
            format!("{}p.%", like_escape(lo))
        } else {
            String::new()
        };
        let n: i64 = on_db!(self, op, Read, |c| {
            sqlx::query_scalar(&self.st.count)
                .bind(lo)
                .bind(&hi)
                .bind(&not_like)
                .bind(&indexes)
                .fetch_one(&mut *c)
                .await
                .map_err(|e| from_sqlx(op, e))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// What the reconciliation rule's decision does to the row.
fn act(decision: Decision, change: &Change<'_>, stored: Stored) -> Act {
    match (decision, change) {
        (Decision::Write, Change::Write(record)) => Act::Put(Row::session(record.encode(), &record.meta)),
        (Decision::Tombstone(deadline), Change::Delete(t)) => Act::Put(Row::tombstone(&t.meta(deadline))),
        (Decision::Extend(deadline), _) => match stored {
            Stored::Tombstone(meta) => Act::Put(Row::tombstone(&Meta {
                expires_at: deadline,
                ..meta
            })),
            _ => Act::Keep,
        },
        (Decision::Remove, _) => Act::Remove,
        _ => Act::Keep,
    }
}

/// `keys` as a JSON array of strings (SQLite's `json_each`). Keys are printable ASCII; `"`
/// and `\` are escaped.
fn json_array(keys: &[String]) -> String {
    let mut out = String::with_capacity(keys.iter().map(|k| k.len() + 3).sum::<usize>() + 2);
    out.push('[');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in k.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// `text` as a literal part of a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The first key after every key that starts with `prefix` (keys are printable ASCII).
fn range_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    match bytes.pop() {
        Some(last) => {
            bytes.push(last.saturating_add(1));
            String::from_utf8(bytes).unwrap_or_else(|_| "\u{7f}".to_owned())
        }
        None => "\u{7f}".to_owned(),
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        match self.inner.load_value(key).await? {
            None => Ok(None),
            Some(value) => match decode_entry(&value, key.ns())? {
                Entry::Live(record) => Ok(Some(record)),
                Entry::Tombstone(_) => Ok(None),
            },
        }
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        match self.inner.load_value(key).await? {
            None => Ok(None),
            Some(value) => decode_entry(&value, key.ns()).map(Some),
        }
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        let inner = &self.inner;
        Ok(inner.write("save", &inner.st.save, key, record, None).await?.0)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        let inner = &self.inner;
        match inner.write("create", &inner.st.create, key, record, None).await? {
            (meta, 1..) => Ok(meta),
            (_, 0) => Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            }),
        }
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        let inner = &self.inner;
        match inner.write("update", &inner.st.update, key, record, None).await? {
            (meta, 1..) => Ok(meta),
            (_, 0) => Err(Error::not_found(key.ns())),
        }
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        let inner = &self.inner;
        match inner
            .write("save_if", &inner.st.save_if, key, record, Some(expected_version))
            .await?
        {
            (meta, 1..) => Ok(meta),
            // Not written: say why from what is there now.
            (_, 0) => match self.load_entry(key).await? {
                Some(Entry::Live(stored)) => Err(Error::Conflict {
                    namespace: key.ns().to_owned(),
                    expected: expected_version,
                    actual: stored.meta.version,
                }),
                Some(Entry::Tombstone(_)) | None => Err(Error::not_found(key.ns())),
            },
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        if self.inner.config.keeps_tombstones() {
            return self
                .inner
                .delete_leaving_tombstone(key, Tombstone::new(now_ms(), now_ms()))
                .await;
        }
        self.inner.delete_plain(key).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        if self.inner.config.keeps_tombstones() {
            self.inner.delete_leaving_tombstone(key, tombstone).await
        } else {
            self.inner.delete_plain(key).await
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.inner
            .apply("touch", key, |state, _| match state {
                State::Live(record) => {
                    let meta = Meta {
                        expires_at: cap_deadline(expires_at, record.meta.max_expires_at),
                        ..record.meta
                    };
                    Ok((Act::Put(Row::session(record.encode_with(&meta), &meta)), true))
                }
                State::Corrupt(e, _) => Err(e),
                State::Absent | State::Tombstone(_) => Ok((Act::Keep, false)),
            })
            .await
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.inner.rotate(key, new_id).await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            out.extend(self.inner.load_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        for (key, record) in items {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(CHUNK) {
            out.extend(self.inner.save_chunk(chunk).await?);
        }
        Ok(out)
    }

    /// Pages in key order: the cursor is `k:` and the last key listed, so a scan resumes in
    /// another process too.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let inner = &self.inner;
        let prefix = inner.prefix.as_str();
        let after = match cursor {
            None => prefix.to_owned(),
            Some(c) => match c.as_str().strip_prefix("k:") {
                Some(key) if key.starts_with(prefix) => key.to_owned(),
                _ => {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        message: "not a scan cursor of this store's key prefix; start the scan again"
                            .to_owned(),
                        source: None,
                    })
                }
            },
        };
        let end = range_end(prefix);
        let limit = limit.clamp(1, 10_000);
        let rows: Vec<(String, Vec<u8>)> = on_db!(inner, "scan", Read, |c| {
            sqlx::query_as(&inner.st.page)
                .bind(&after)
                .bind(&end)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *c)
                .await
                .map_err(|e| from_sqlx("scan", e))
        })?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(k, _)| ScanCursor::new(format!("k:{k}"))))
            .flatten();
        let mut sessions = Vec::with_capacity(rows.len());
        let mut skipped = 0;
        for (k, value) in rows {
            let Some(key) = parse_backend_key(&inner.prefix, &k) else {
                skipped += 1;
                continue;
            };
            match decode_entry(&Bytes::from(value), key.ns()) {
                Ok(Entry::Live(record)) => sessions.push((key, record)),
                Ok(Entry::Tombstone(_)) => {}
                Err(_) => skipped += 1,
            }
        }
        Ok(ScanPage::new(sessions, next, skipped))
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        let lo = self.inner.prefix.namespace_prefix(namespace);
        self.inner.count_range("count", &lo, 0).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let inner = &self.inner;
        let entries = inner.count_range("stats", inner.prefix.as_str(), 1).await?;
        let bytes: i64 = on_db!(inner, "stats", Read, |c| {
            sqlx::query_scalar(&inner.st.bytes)
                .fetch_one(&mut *c)
                .await
                .map_err(|e| from_sqlx("stats", e))
        })?;
        let mut stats = StoreStats::new(BACKEND);
        stats.entries = Some(entries);
        stats.bytes = u64::try_from(bytes).ok();
        stats.expired = inner.expired.load(std::sync::atomic::Ordering::Relaxed);
        stats
            .extra
            .push(("writes_fenced_off", u64::from(inner.db.writes_fenced_off())));
        Ok(stats)
    }

    async fn health(&self) -> Health {
        let inner = &self.inner;
        let start = Instant::now();
        let answer: Result<i64> = on_db!(inner, "health", Read, |c| {
            sqlx::query(&inner.st.now)
                .fetch_one(&mut *c)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| from_sqlx("health", e))
        });
        let latency = start.elapsed();
        match answer {
            Ok(_) if inner.db.writes_fenced_off() => Health::new(BACKEND, HealthStatus::Degraded)
                .with_latency(latency)
                .with_detail("writes paused: an abandoned write's connection is not yet confirmed closed"),
            Ok(_) => Health::new(BACKEND, HealthStatus::Up).with_latency(latency),
            Err(e) => Health::new(BACKEND, HealthStatus::Down)
                .with_latency(latency)
                .with_detail(e.to_string()),
        }
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        if let Change::Write(record) = change {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        self.inner
            .apply("reconcile", key, |state, now| {
                let stored = match state {
                    State::Absent => Stored::Absent,
                    State::Tombstone(meta) => Stored::Tombstone(meta),
                    State::Live(r) => Stored::Live(r.meta),
                    // Left as it is.
                    State::Corrupt(e, _) => return Err(e),
                };
                let (decision, reconciled) = decide(stored, base, &change, now);
                Ok((act(decision, &change, stored), reconciled))
            })
            .await
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.config.keeps_tombstones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_escape_quotes() {
        assert_eq!(json_array(&[]), "[]");
        assert_eq!(
            json_array(&["a:b".to_owned(), "q\"x\\".to_owned()]),
            r#"["a:b","q\"x\\"]"#
        );
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_escape("a_b%c:"), "a\\_b\\%c:");
    }

    #[test]
    fn range_ends_follow_every_key_of_the_prefix() {
        assert_eq!(range_end("session:task:"), "session:task;");
        assert!("session:task:zzz" < range_end("session:task:").as_str());
        assert_eq!(range_end(""), "\u{7f}");
    }
}

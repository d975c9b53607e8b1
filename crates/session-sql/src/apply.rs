//! Read-decide-write calls: one transaction that reads the key's row (locked on PostgreSQL,
//! under SQLite's write lock), lets a rule decide from what it found, and writes the outcome.
//! `touch`, `reconcile`, tombstone deletes and `rotate` are made of these.

use session_core::backend::Tombstone;
use session_core::{Error, Meta, Result, SessionId, SessionKey};
use sqlx::{Connection, Row as _};

use crate::db::on_db;
use crate::error::from_sqlx;
use crate::store::{ms_from_sql, ms_to_sql, state_of, Act, Inner, Row, State};

impl Inner {
    /// Runs `decide` on what `key` holds (and the database's clock, ms) and applies its
    /// [`Act`], atomically; answers what `decide` answered. `decide` may run more than once
    /// (PostgreSQL: when another call inserted the key between the read and an insert).
    pub(crate) async fn apply<R: Send>(
        &self,
        op: &'static str,
        key: &SessionKey,
        mut decide: impl FnMut(State, u64) -> Result<(Act, R)> + Send,
    ) -> Result<R> {
        let k = self.key(key);
        let ns = key.ns();
        let begin = self.db.begin();
        on_db!(self, op, Write, |c| {
            loop {
                let mut tx = c.begin_with(begin).await.map_err(|e| from_sqlx(op, e))?;
                let (now, exists, state) = {
                    let row = sqlx::query(&self.st.lock)
                        .bind(&k)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| from_sqlx(op, e))?;
                    let now: i64 = row.try_get(0).map_err(|e| from_sqlx(op, e))?;
                    let value: Option<Vec<u8>> = row.try_get(1).map_err(|e| from_sqlx(op, e))?;
                    let expires_at: Option<i64> = row.try_get(2).map_err(|e| from_sqlx(op, e))?;
                    let now = ms_from_sql(now);
                    (now, value.is_some(), state_of(value, expires_at, now, ns))
                };
                let (act, answer) = decide(state, now)?;
                match act {
                    Act::Keep => {}
                    Act::Remove => {
                        sqlx::query(&self.st.remove)
                            .bind(&k)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| from_sqlx(op, e))?;
                    }
                    Act::Put(row) => {
                        let sql = if exists { &self.st.replace } else { &self.st.insert };
                        let done = sqlx::query(sql)
                            .bind(&k)
                            .bind(&row.value[..])
                            .bind(ms_to_sql(row.expires_at))
                            .bind(row.version)
                            .bind(row.kind)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| from_sqlx(op, e))?;
                        if done.rows_affected() == 0 {
                            // Inserted meanwhile by another call: read it again, locked.
                            drop(tx);
                            continue;
                        }
                    }
                }
                tx.commit().await.map_err(|e| from_sqlx(op, e))?;
                break Ok(answer);
            }
        })
    }

    /// `rotate`: in one transaction, the session leaves its old key (a tombstone there in
    /// tombstone mode) and takes the new one, unless another session holds it. A new key that
    /// already holds this very session (same version) finishes an earlier interrupted move.
    pub(crate) async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        const OP: &str = "rotate";
        let old_k = self.key(key);
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let new_k = self.key(&new_key);
        let ns = key.ns();
        let begin = self.db.begin();
        let tombstones = self.config.keeps_tombstones();
        on_db!(self, OP, Write, |c| {
            loop {
                let mut tx = c.begin_with(begin).await.map_err(|e| from_sqlx(OP, e))?;
                let mut found = Vec::with_capacity(2);
                for k in [&old_k, &new_k] {
                    let row = sqlx::query(&self.st.lock)
                        .bind(k)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| from_sqlx(OP, e))?;
                    let now: i64 = row.try_get(0).map_err(|e| from_sqlx(OP, e))?;
                    let value: Option<Vec<u8>> = row.try_get(1).map_err(|e| from_sqlx(OP, e))?;
                    let expires_at: Option<i64> = row.try_get(2).map_err(|e| from_sqlx(OP, e))?;
                    let now = ms_from_sql(now);
                    found.push((now, value.is_some(), state_of(value, expires_at, now, ns)));
                }
                let (now, new_exists, new_state) = found.pop().ok_or_else(|| Error::not_found(ns))?;
                let (_, _, old_state) = found.pop().ok_or_else(|| Error::not_found(ns))?;
                let record = match old_state {
                    State::Live(record) => record,
                    State::Corrupt(e, _) => return Err(e),
                    State::Absent | State::Tombstone(_) => return Err(Error::not_found(ns)),
                };
                let meta = record.meta;
                let move_it = match new_state {
                    State::Live(there) if there.meta.version == meta.version => false,
                    State::Live(_) | State::Corrupt(..) => {
                        return Err(Error::AlreadyExists {
                            namespace: ns.to_owned(),
                        })
                    }
                    State::Absent | State::Tombstone(_) => true,
                };
                if move_it {
                    let row = Row::session(record.encode(), &meta);
                    let sql = if new_exists {
                        &self.st.replace
                    } else {
                        &self.st.insert
                    };
                    let done = sqlx::query(sql)
                        .bind(&new_k)
                        .bind(&row.value[..])
                        .bind(ms_to_sql(row.expires_at))
                        .bind(row.version)
                        .bind(row.kind)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| from_sqlx(OP, e))?;
                    if done.rows_affected() == 0 {
                        drop(tx);
                        continue;
                    }
                }
                if tombstones {
                    // The old id is logged out as a delete would log it out.
                    let gone = Tombstone::new(now, meta.deadline()).meta(meta.deadline());
                    let row = Row::tombstone(&gone);
                    sqlx::query(&self.st.replace)
                        .bind(&old_k)
                        .bind(&row.value[..])
                        .bind(ms_to_sql(row.expires_at))
                        .bind(row.version)
                        .bind(row.kind)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| from_sqlx(OP, e))?;
                } else {
                    sqlx::query(&self.st.remove)
                        .bind(&old_k)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| from_sqlx(OP, e))?;
                }
                tx.commit().await.map_err(|e| from_sqlx(OP, e))?;
                break Ok(meta);
            }
        })
    }
}

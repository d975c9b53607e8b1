//! Read-decide-write calls: one transaction that reads the key's row (locked on PostgreSQL,
//! under SQLite's write lock), lets a rule decide from what it found, and writes the outcome.
//! `touch`, `reconcile`, tombstone deletes and `rotate` are made of these.
//!
//! Every way out of a transaction ends it on the spot: `COMMIT`, or an explicit `ROLLBACK` on
//! an error or a retry — a transaction merely dropped would leave its `ROLLBACK` queued on a
//! pooled PostgreSQL connection, and its row locks held, until that connection is used again.

use session_core::backend::Tombstone;
use session_core::{Error, Meta, Result, SessionId, SessionKey};
use sqlx::{Connection, Row as _};

use crate::db::on_db;
use crate::error::from_sqlx;
use crate::store::{ms_from_sql, ms_to_sql, state_of, Act, Inner, Row, State};

/// How one attempt of a transaction ended, before `COMMIT`.
enum Step<R> {
    /// Commit, then answer this.
    Done(R),
    /// Another call inserted the key between the read and an insert: roll back, read again.
    Retry,
}

/// Reads the row of `$k` (locked on PostgreSQL) in transaction `$tx`: `(now, exists, state)`.
macro_rules! lock_row {
    ($tx:expr, $inner:expr, $k:expr, $ns:expr, $op:expr) => {{
        let row = sqlx::query(&$inner.st.lock)
            .bind($k)
            .fetch_one(&mut *$tx)
            .await
            .map_err(|e| from_sqlx($op, e))?;
        let now: i64 = row.try_get(0).map_err(|e| from_sqlx($op, e))?;
        let value: Option<Vec<u8>> = row.try_get(1).map_err(|e| from_sqlx($op, e))?;
        let expires_at: Option<i64> = row.try_get(2).map_err(|e| from_sqlx($op, e))?;
        let now = ms_from_sql(now);
        (now, value.is_some(), state_of(value, expires_at, now, $ns))
    }};
}

/// Stores `$row` under `$k` in `$tx` (an update of the row if it `$exists`, else an insert that
/// yields to a concurrent one): whether a row was written.
macro_rules! put_row {
    ($tx:expr, $inner:expr, $k:expr, $exists:expr, $row:expr, $op:expr) => {{
        let sql = if $exists {
            &$inner.st.replace
        } else {
            &$inner.st.insert
        };
        let row = $row;
        sqlx::query(sql)
            .bind($k)
            .bind(&row.value[..])
            .bind(ms_to_sql(row.expires_at))
            .bind(row.version)
            .bind(row.kind)
            .execute(&mut *$tx)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(|e| from_sqlx($op, e))
    }};
}

/// Ends transaction `$tx` after an attempt's `$outcome`: commits and answers, rolls back and
/// retries, or rolls back and answers the error.
macro_rules! finish {
    ($tx:expr, $outcome:expr, $op:expr) => {
        match $outcome {
            Ok(Step::Done(answer)) => {
                $tx.commit().await.map_err(|e| from_sqlx($op, e))?;
                break Ok(answer);
            }
            Ok(Step::Retry) => {
                $tx.rollback().await.map_err(|e| from_sqlx($op, e))?;
                continue;
            }
            Err(e) => {
                let _ = $tx.rollback().await;
                break Err(e);
            }
        }
    };
}

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
                let outcome: Result<Step<R>> = async {
                    let (now, exists, state) = lock_row!(tx, self, &k, ns, op);
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
                            if !put_row!(tx, self, &k, exists, row, op)? {
                                return Ok(Step::Retry);
                            }
                        }
                    }
                    Ok(Step::Done(answer))
                }
                .await;
                finish!(tx, outcome, op);
            }
        })
    }

    /// `rotate`: in one transaction, the session leaves its old key (a tombstone there in
    /// tombstone mode) and takes the new one, unless another session holds it. A new key that
    /// already holds this very session (same version) finishes an earlier interrupted move.
    pub(crate) async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        const OP: &str = "rotate";
        let ns = key.ns();
        if new_id == &key.id {
            // Nothing to move: the session as it is.
            return match self.load_row(key).await? {
                Some(State::Live(record)) => Ok(record.meta),
                Some(State::Corrupt(e, _)) => Err(e),
                _ => Err(Error::not_found(ns)),
            };
        }
        let old_k = self.key(key);
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let new_k = self.key(&new_key);
        let begin = self.db.begin();
        let tombstones = self.config.keeps_tombstones();
        on_db!(self, OP, Write, |c| {
            loop {
                let mut tx = c.begin_with(begin).await.map_err(|e| from_sqlx(OP, e))?;
                let outcome: Result<Step<Meta>> = async {
                    let (now, _, old_state) = lock_row!(tx, self, &old_k, ns, OP);
                    let (_, new_exists, new_state) = lock_row!(tx, self, &new_k, ns, OP);
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
                    if move_it
                        && !put_row!(
                            tx,
                            self,
                            &new_k,
                            new_exists,
                            Row::session(record.encode(), &meta),
                            OP
                        )?
                    {
                        return Ok(Step::Retry);
                    }
                    if tombstones {
                        // The old id is logged out as a delete would log it out.
                        let gone = Tombstone::new(now, meta.deadline()).meta(meta.deadline());
                        put_row!(tx, self, &old_k, true, Row::tombstone(&gone), OP)?;
                    } else {
                        sqlx::query(&self.st.remove)
                            .bind(&old_k)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| from_sqlx(OP, e))?;
                    }
                    Ok(Step::Done(meta))
                }
                .await;
                finish!(tx, outcome, OP);
            }
        })
    }
}

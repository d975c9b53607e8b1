//! [`RawAccess`] for the conformance suite (feature `testing`).

use session_core::testing::RawAccess;
use session_core::{async_trait, Bytes, Result, SessionKey};

use crate::db::on_db;
use crate::error::from_sqlx;
use crate::store::{ms_to_sql, Row};
use crate::SqlStore;

#[async_trait]
impl RawAccess for SqlStore {
    /// Stores `bytes` as they are, live for `ttl_ms` by the database's clock; a later `load`
    /// decodes them and reports `Corrupt` if they are not an envelope.
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()> {
        let inner = &self.inner;
        let k = inner.key(key);
        let row = Row::raw(bytes, key.ns());
        on_db!(inner, "put_raw", Write, |c| {
            sqlx::query(&inner.st.put_raw)
                .bind(&k)
                .bind(&row.value[..])
                .bind(ms_to_sql(ttl_ms))
                .bind(row.version)
                .bind(row.kind)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .map_err(|e| from_sqlx("put_raw", e))
        })
    }

    /// The live row's bytes, whatever they are.
    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        let inner = &self.inner;
        let k = inner.key(key);
        let value: Option<Vec<u8>> = on_db!(inner, "get_raw", Read, |c| {
            sqlx::query_scalar(&inner.st.load)
                .bind(&k)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| from_sqlx("get_raw", e))
        })?;
        Ok(value.map(Bytes::from))
    }
}

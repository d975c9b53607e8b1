//! Opening the store a `--from`/`--to` argument names.

use std::path::PathBuf;
use std::sync::Arc;

use session_core::{Error, KeyPrefix, Result, SessionStore, StoreOptions};

/// One side of a copy.
pub(crate) enum Side {
    /// A live store.
    Store(Arc<dyn SessionStore>),
    /// A snapshot file.
    Snapshot(PathBuf),
}

/// Opens what `spec` names (`redis…://`, `postgres://`, `sqlite://`, `snapshot:`).
pub(crate) async fn open(spec: &str, key_prefix: &str, table: Option<&str>) -> Result<Side> {
    if let Some(path) = spec.strip_prefix("snapshot:") {
        if path.is_empty() {
            return Err(Error::config("snapshot", "snapshot: needs a file path"));
        }
        return Ok(Side::Snapshot(PathBuf::from(path)));
    }
    let options = StoreOptions::new(KeyPrefix::new(key_prefix)?);
    let scheme = spec.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "redis" | "rediss" | "redis-cluster" | "redis-sentinel" => {
            let config = session_redis::RedisConfig::new(spec);
            let store = session_redis::RedisStore::builder(config).options(options).connect().await?;
            Ok(Side::Store(Arc::new(store)))
        }
        "postgres" | "postgresql" | "sqlite" => {
            let mut config = session_sql::SqlConfig::new(spec);
            if let Some(table) = table {
                config = config.with_table(table);
            }
            let store = session_sql::SqlStore::connect(config, options).await?;
            Ok(Side::Store(Arc::new(store)))
        }
        _ => Err(Error::config(
            "store",
            "expected redis://, rediss://, redis-cluster://, redis-sentinel://, postgres://, sqlite:// or snapshot:",
        )),
    }
}

//! The background reclaim of expired rows: a few batched deletes every `sweep_interval_ms`, by
//! the `expires_at` index. Reads never depend on it (every statement compares the deadline);
//! it only keeps the table from growing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use session_core::Result;

use crate::db::on_db;
use crate::error::from_sqlx;
use crate::store::Inner;

/// Starts the reclaim inside the current Tokio runtime (none outside one, or when turned off).
pub(crate) fn start(inner: &Arc<Inner>) -> Option<tokio::task::AbortHandle> {
    let interval = inner.config.sweep_interval_ms;
    if interval == 0 {
        return None;
    }
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let task = runtime.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = sweep(&inner).await {
                tracing::debug!(error = %e, "sql: reclaiming expired rows failed; trying again later");
            }
        }
    });
    Some(task.abort_handle())
}

/// Deletes expired rows in batches until a batch comes back short; answers how many.
pub(crate) async fn sweep(inner: &Inner) -> Result<u64> {
    let batch = i64::from(inner.config.sweep_batch);
    let mut total = 0u64;
    loop {
        let removed = on_db!(inner, "reclaim", Write, |c| {
            sqlx::query(&inner.st.sweep)
                .bind(batch)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(|e| from_sqlx("reclaim", e))
        })?;
        total += removed;
        inner.expired.fetch_add(removed, Ordering::Relaxed);
        if removed < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

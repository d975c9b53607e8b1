//! Filling the cluster: raw `SET … PXAT` pipelines of the record's envelope, on many tasks,
//! stopped when the machine's free memory runs low.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use session_core::backend::Record;
use session_core::Namespace;
use session_redis::fred::clients::Client;
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::fred::types::{Expiration, Value};

use super::keys::id_for;
use super::memory::{gib, mem_available};
use super::{CHUNK, FILL_TASKS, RESERVE};

/// What a fill did.
pub(super) struct Filled {
    pub(super) written: usize,
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
    /// Set when the machine's free memory fell to the reserve.
    pub(super) aborted: Option<String>,
}

/// What a fill writes: the record's envelope under each key, with its deadline.
pub(super) struct Filler {
    client: Client,
    namespace: Namespace,
    envelope: Bytes,
    deadline: i64,
}

impl Filler {
    /// A fred cluster client (it routes each command of a pipeline to its key's node).
    pub(super) async fn connect(url: &str, namespace: &Namespace, record: &Record) -> Result<Self, String> {
        let config = FredConfig::from_url(url).map_err(|e| format!("fred config for {url}: {e}"))?;
        let client = Client::new(config, None, None, None);
        client
            .init()
            .await
            .map_err(|e| format!("fred cluster client for {url}: {e}"))?;
        Ok(Filler {
            client,
            namespace: namespace.clone(),
            envelope: record.encode(),
            deadline: i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX),
        })
    }

    /// Sends `SET key envelope PXAT deadline` for sessions `range` as one pipeline; the
    /// sessions written, and the first error.
    async fn chunk(&self, range: std::ops::Range<usize>) -> (usize, Option<String>) {
        let pipeline = self.client.pipeline();
        let n = range.len();
        for i in range {
            let key = format!("session:{}:{}", self.namespace.as_str(), id_for(i).as_str());
            // Queued, not sent: a pipeline's calls only record their command.
            let queued: Result<(), _> = pipeline
                .set(
                    key,
                    self.envelope.clone(),
                    Some(Expiration::PXAT(self.deadline)),
                    None,
                    false,
                )
                .await;
            if let Err(e) = queued {
                return (0, Some(e.to_string()));
            }
        }
        let replies: Vec<Result<Value, _>> = pipeline.try_all().await;
        let first = replies
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(ToString::to_string);
        let ok = replies.iter().filter(|r| r.is_ok()).count();
        let first = first.or_else(|| (replies.len() != n).then(|| "a pipeline lost replies".to_owned()));
        (ok, first)
    }
}

/// Saves sessions `from..to`: pipelines of [`CHUNK`] `SET key envelope PXAT deadline` (the
/// command and bytes a `save` sends) on [`FILL_TASKS`] tasks; a pipeline with a failed
/// command is sent again once (a `SET` can be repeated).
pub(super) async fn fill(filler: &Arc<Filler>, from: usize, to: usize) -> Filled {
    let next = Arc::new(AtomicUsize::new(from));
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let aborted: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut handles = Vec::new();
    for _ in 0..FILL_TASKS {
        let (filler, next, written, stop, first_error) = (
            Arc::clone(filler),
            Arc::clone(&next),
            Arc::clone(&written),
            Arc::clone(&stop),
            Arc::clone(&first_error),
        );
        handles.push(tokio::spawn(async move {
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= to {
                    break;
                }
                let range = start..(start + CHUNK).min(to);
                let mut outcome = filler.chunk(range.clone()).await;
                if outcome.1.is_some() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    outcome = filler.chunk(range.clone()).await;
                }
                let (ok, error) = outcome;
                written.fetch_add(ok as u64, Ordering::Relaxed);
                if let Some(e) = error {
                    errors += range.len().saturating_sub(ok).max(1);
                    let mut first = first_error.lock().unwrap_or_else(PoisonError::into_inner);
                    first.get_or_insert(e);
                }
            }
            errors
        }));
    }
    // Progress, and the memory guard.
    let monitor = {
        let (written, stop, done, aborted) = (
            Arc::clone(&written),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&aborted),
        );
        tokio::spawn(async move {
            let began = Instant::now();
            let mut last_print = Instant::now();
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let available = mem_available();
                if available < RESERVE {
                    *aborted.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                        "the machine's available memory fell to {} during the fill to {to} sessions",
                        gib(available as f64)
                    ));
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    let w = written.load(Ordering::Relaxed);
                    println!(
                        "  scale: {} / {to} sessions ({:.0}/s, {} available)",
                        from as u64 + w,
                        w as f64 / began.elapsed().as_secs_f64(),
                        gib(available as f64)
                    );
                }
            }
        })
    };
    let mut errors = 0;
    for handle in handles {
        errors += handle
            .await
            .unwrap_or_else(|e| panic!("a fill task panicked: {e}"));
    }
    done.store(true, Ordering::Relaxed);
    let _ = monitor.await;
    let first_error = first_error.lock().unwrap_or_else(PoisonError::into_inner).take();
    let aborted = aborted.lock().unwrap_or_else(PoisonError::into_inner).take();
    Filled {
        written: written.load(Ordering::Relaxed) as usize,
        errors,
        first_error,
        aborted,
    }
}
